"""Limits a process enforces on what clients send and hold, each with a clear answer."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


class TokenBucket:
    """At most ``rate`` actions a second on average, ``burst`` at once."""

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


CLOSE_TRY_AGAIN_LATER = 1013
"""RFC 6455 "Try Again Later": the process is at its connection limit."""


class _BodyTooLargeError(Exception):
    pass


class BodySizeLimit:
    """HTTP request bodies over ``max_bytes`` get 413, announced by Content-Length or not."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLargeError:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = PlainTextResponse(
            f"Request body larger than {self.max_bytes} bytes (MAX_MESSAGE_BYTES)", status_code=413
        )
        await response(scope, receive, send)


CLOSE_TOO_MANY_CONNECTIONS = 4029
"""One client holds MAX_CONNECTIONS_PER_CLIENT connections (429 in the private range, like
graphql-transport-ws's own 44xx codes; graphql-ws retries it, as it does 1013, and a client that
closed another connection meanwhile gets in)."""
RETRY_AFTER_S = 5
"""``Retry-After`` of a stream refused at a connection limit."""


async def refuse_websocket(
    scope: Scope, receive: Receive, send: Send, code: int, reason: str
) -> None:
    """Accept, then close with ``code`` and ``reason``: a refused handshake would tell the client
    nothing (browsers see a bare failure), a close code says to come back later."""
    websocket = WebSocket(scope, receive, send)
    offered = scope.get("subprotocols", [])
    await websocket.accept(
        subprotocol="graphql-transport-ws" if "graphql-transport-ws" in offered else None
    )
    await websocket.close(code, reason)


class CallerLimits:
    """A token bucket per caller (by authorization scope), for mutations: one caller's bursts
    never spend another's allowance. The least recently used buckets are forgotten past
    ``max_callers``, so memory stays bounded whoever calls."""

    def __init__(self, rate: float, burst: int, max_callers: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, caller: str) -> bool:
        bucket = self._buckets.get(caller)
        if bucket is None:
            bucket = self._buckets[caller] = TokenBucket(self.rate, self.burst)
            if len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(caller)
        return bucket.take()
