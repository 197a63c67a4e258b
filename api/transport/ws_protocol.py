"""uvicorn's sans-io WebSocket protocol, with two changes: a socket it has closed is dropped in
bounded time, and per-message compression (``WS_PER_MESSAGE_DEFLATE``) is negotiated without
context takeover, so that a shared result is compressed once (:mod:`api.streaming.deflate`).

uvicorn closes a WebSocket's transport gracefully (``transport.close()``) after the keepalive's
pong timeout and after the close handshake's time-out. A graceful close waits until the write
buffer has gone out, and a client that stopped reading never takes it: the socket, its buffer, the
ASGI task and every subscription of that connection would stay until the process ends. Here the
transport is aborted (a TCP reset) if it is still open ``CLOSE_GRACE_S`` after either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from api.streaming.connection import CLOSE_GRACE_S
from api.streaming.deflate import SERVER_EXTENSIONS

if TYPE_CHECKING:
    from asyncio import AbstractEventLoop, TimerHandle

    from uvicorn._types import ASGISendEvent
    from uvicorn.config import Config
    from uvicorn.server import ServerState


class WebSocketProtocol(WebSocketsSansIOProtocol):
    _drop_timer: TimerHandle | None = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if config.ws_per_message_deflate:
            # In place of uvicorn's offer (context takeover, a compressor kept per socket).
            self.conn.available_extensions = SERVER_EXTENSIONS

    def keepalive_timeout(self) -> None:
        """No pong in time: uvicorn sends 1011 and closes; drop the socket if that hangs."""
        super().keepalive_timeout()
        self.drop_later(CLOSE_GRACE_S)

    async def send(self, message: ASGISendEvent) -> None:
        closing = self.close_sent
        await super().send(message)
        if self.close_sent and not closing:
            # uvicorn waits close_timeout for the client's answer, then closes gracefully.
            self.drop_later(self.close_timeout + CLOSE_GRACE_S)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._drop_timer is not None:
            self._drop_timer.cancel()
            self._drop_timer = None
        super().connection_lost(exc)

    def drop_later(self, delay: float) -> None:
        """Abort the transport in ``delay`` seconds unless the socket is gone by then."""
        if self._drop_timer is None and not self.disconnected:
            self._drop_timer = self.loop.call_later(delay, self.transport.abort)
