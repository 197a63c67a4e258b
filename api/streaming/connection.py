"""The outgoing side of one WebSocket: every frame the server sends on it, in order, through one
bounded queue.

While the socket takes data, a frame is written at once and synchronously: the fan-out loop writes
a whole group's frames without a task switch. When the client reads slower than the server sends,
the transport pauses writing and frames wait here instead:

- a frame with a ``key`` (a latest-value subscription's result, keyed by its operation id) replaces
  the waiting frame with the same key: a slow client gets the newest state (conflation);
- a frame with a ``key`` and a ``merge`` (a change that the one before it can absorb, such as an
  order book's level changes) is merged into the waiting frame with the same key, if ``merge``
  can: a slow client gets one change holding all the others, each level at its newest (the order
  book's per-socket conflation); one ``merge`` cannot absorb waits behind it instead;
- any other frame (stream events, protocol messages) waits in order; when what waits exceeds
  ``max_pending_bytes``, the connection is closed with code 4008 rather than skip one.

So a client that stops reading holds at most ``max_pending_bytes`` here plus the transport's
write buffer (its high-water mark, 64 KiB), and never slows anyone else.

Writing directly needs uvicorn's ``websockets-sansio`` protocol (the default with
``uvicorn[standard]``); under any other server, frames go through the ASGI ``send`` from a
writer task, with the same queue and policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from typing import TYPE_CHECKING, Any, TypeAlias

from api.ops.metrics import counts
from api.streaming.deflate import negotiated

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # another uvicorn layout: every connection takes the ASGI path
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from collections.abc import Callable, MutableMapping

    from starlette.types import Send

    from api.streaming.deflate import Deflate

    Merge: TypeAlias = Callable[[bytes, bytes], bytes | None]
    """Merges a waiting message (the first bytes) and a newer one of the same key into one
    message meaning both, or says it cannot (None)."""

logger = logging.getLogger(__name__)

CLOSE_SLOW_CONSUMER = 4008
"""Close code for a client that fell too far behind a stream; graphql-ws reconnects on it."""
CLOSE_GRACE_S = 5.0
"""How long a closed slow consumer has to read its close frame before the socket is dropped."""


class _Frame:
    __slots__ = ("built", "counted", "key", "payload")

    def __init__(
        self, payload: bytes, key: str | None, built: bytes | None, *, counted: bool
    ) -> None:
        self.payload = payload
        self.key = key
        self.built = built
        """The frame as the caller built it, if it did (on a compressed socket, compressed)."""
        self.counted = counted
        """Whether its bytes count towards ``max_pending_bytes``: every frame but a latest-value
        result, which the next one replaces. A mergeable change counts, as one that cannot be
        merged waits behind it, but is never late: it holds all the changes since it was queued."""


class Connection:
    # Slots and queues made only when needed: an idle subscribed connection should cost little.
    __slots__ = (
        "_by_key",
        "_drained",
        "_flusher",
        "_handshake_released",
        "_pending",
        "_pending_bytes",
        "_protocol",
        "_send",
        "_unkeyed_bytes",
        "_waiting_since",
        "closed",
        "conflated",
        "deflate",
        "max_lag_s",
        "max_pending_bytes",
    )

    def __init__(
        self, send: Send, *, max_pending_bytes: int, max_lag_s: float | None = None
    ) -> None:
        protocol = getattr(send, "__self__", None)
        direct = WebSocketsSansIOProtocol is not None and isinstance(
            protocol, WebSocketsSansIOProtocol
        )
        self._protocol = protocol if direct else None
        self._send = send
        self.deflate: Deflate | None = (
            None if self._protocol is None else negotiated(self._protocol.conn.extensions)
        )
        """The socket's permessage-deflate (:mod:`api.streaming.deflate`), negotiated in the
        handshake, before the application runs; None when it was not (or frames go through the
        ASGI ``send``, which compresses by itself)."""
        self.max_pending_bytes = max_pending_bytes
        self.max_lag_s = max_lag_s
        """A frame that cannot be replaced waiting longer than this (seconds) closes the socket
        with 4008 too, before the bytes bound is reached (``SUBSCRIBER_MAX_LAG_S``)."""
        self._waiting_since: deque[float] | None = None
        """When each waiting frame that cannot be replaced was queued, oldest first."""
        self._pending: deque[_Frame] | None = None
        self._by_key: dict[str, _Frame] = {}
        self._pending_bytes = 0
        self._unkeyed_bytes = 0
        self._flusher: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self._handshake_released = False
        self.closed = False
        self.conflated = 0

    @property
    def direct(self) -> bool:
        """Whether frames are written straight to the transport (the fast path)."""
        return self._protocol is not None

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def waiting(self, key: str) -> bool:
        """Whether a frame with ``key`` waits to be sent (the next one with it would replace it)."""
        return key in self._by_key

    def write(
        self,
        payload: bytes,
        *,
        key: str | None = None,
        frame: bytes | None = None,
        merge: Merge | None = None,
    ) -> None:
        """Send one text frame holding ``payload`` (UTF-8 JSON) now, or queue it by the policy.

        ``frame`` is that frame already built as this connection sends it (:func:`text_frame`,
        or on a compressed socket :meth:`api.streaming.deflate.Deflate.frame`), when the
        caller shares it between connections. ``merge`` (with a ``key``): the payload is a
        change that a waiting frame of the same key may absorb (see the module's docstring).
        """
        if self.closed:
            return
        if not self._pending and self._write_now(payload, frame):
            return
        if self.closed:
            return
        protocol = self._protocol
        if protocol is not None and (protocol.close_sent or protocol.disconnected):
            # Closed while frames waited (the keepalive's time-out, say): none will go out.
            self.closed = True
            self._clear()
            return
        waiting = self._by_key.get(key) if key is not None else None
        if waiting is not None:
            merged = payload if merge is None else merge(waiting.payload, payload)
            if merged is not None:
                grown = len(merged) - len(waiting.payload)
                self._pending_bytes += grown
                waiting.payload = merged
                waiting.built = frame if merge is None else None
                self.conflated += 1
                counts.send_conflated += 1
                if waiting.counted:
                    self._unkeyed_bytes += grown
                    if self._unkeyed_bytes > self.max_pending_bytes:
                        self._overflow()
                return
            del self._by_key[key]  # type: ignore[arg-type]  # it waits behind the one it could not join
        counted = key is None or merge is not None
        waiting = _Frame(payload, key, frame, counted=counted)
        if self._pending is None:
            self._pending = deque()
        self._pending.append(waiting)
        self._pending_bytes += len(payload)
        if key is not None:
            self._by_key[key] = waiting
        if counted:
            # Frames that cannot be replaced count: latest-value ones are one per operation.
            self._unkeyed_bytes += len(payload)
            if self._unkeyed_bytes > self.max_pending_bytes:
                self._overflow()
                return
        if key is None and self.max_lag_s is not None:
            now = time.monotonic()
            since = self._waiting_since
            if since is None:
                since = self._waiting_since = deque()
            since.append(now)
            if now - since[0] > self.max_lag_s:
                self._overflow(
                    f"slow consumer: a stream event waited more than {self.max_lag_s:g} s "
                    "to be sent"
                )
                return
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="connection-flush")

    async def drained(self) -> None:
        """Wait until nothing is queued: backpressure for senders that can wait."""
        if not self._pending:
            return
        if self._drained is None:
            self._drained = asyncio.Event()
        await self._drained.wait()

    async def close(self) -> None:
        """Stop writing; frames still queued are dropped."""
        self.closed = True
        self._clear()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher

    def _write_now(self, payload: bytes, frame: bytes | None = None) -> bool:
        """Write at once if the socket takes data; False if it is paused (queue instead).

        The hot path of the fan-out: it runs once per subscriber per event, so it reads plain
        attributes only.
        """
        protocol = self._protocol
        if protocol is None:
            return False
        if protocol.close_sent or protocol.disconnected:
            self.closed = True
            self._clear()
            return True
        if not protocol.writable.is_set():
            return False
        if not self._handshake_released:
            self._release_handshake(protocol)
        if frame is None:
            deflate = self.deflate
            if deflate is not None:
                frame = deflate.message_frame(payload)
            if frame is None:
                frame = text_frame(payload)
        protocol.transport.write(frame)
        return True

    def _release_handshake(self, protocol: WebSocketsSansIOProtocol) -> None:
        """uvicorn keeps the handshake's request and response for the socket's life, and the
        websockets parser's frame keeps the request too, though nothing reads either once the
        socket is open: their headers are a few KB per connection. The ASGI scope keeps its own
        copy of the request headers for the application."""
        request = getattr(protocol, "request", None)
        if request is not None:
            request.headers.clear()
        protocol.request = None  # type: ignore[assignment]
        protocol.response = None  # type: ignore[assignment]
        self._handshake_released = True

    async def _flush(self) -> None:
        try:
            while self._pending and not self.closed:
                if self._protocol is not None:
                    await self._protocol.writable.wait()
                    if not self._pending or self.closed:
                        break
                    # The head frame may have been replaced by a newer result while we waited.
                    head = self._pending[0]
                    if not self._write_now(head.payload, head.built):
                        continue
                    if self.closed:
                        break
                    self._pop()
                else:
                    # Out of the queue before the send: a newer result for the same key must
                    # queue anew, not replace a frame already on its way.
                    payload = self._pop()
                    await self._send({"type": "websocket.send", "text": payload.decode()})
        except Exception as exc:  # the client went away mid-send
            logger.debug("connection flush ended: %s", exc)
            self.closed = True
            self._clear()
        finally:
            self._flusher = None
            if not self._pending:
                self._release_waiters()

    def _pop(self) -> bytes:
        assert self._pending is not None
        frame = self._pending.popleft()
        if frame.key is not None and self._by_key.get(frame.key) is frame:
            del self._by_key[frame.key]
        self._pending_bytes -= len(frame.payload)
        if frame.counted:
            self._unkeyed_bytes -= len(frame.payload)
        if frame.key is None and self._waiting_since:
            self._waiting_since.popleft()
        if not self._pending:
            self._pending = None
            self._release_waiters()
        return frame.payload

    def _clear(self) -> None:
        self._pending = None
        self._by_key.clear()
        self._pending_bytes = 0
        self._unkeyed_bytes = 0
        self._waiting_since = None
        self._release_waiters()

    def _release_waiters(self) -> None:
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    def _overflow(self, reason: str | None = None) -> None:
        if reason is None:
            reason = f"slow consumer: more than {self.max_pending_bytes} bytes waiting to be sent"
        logger.info("closing a WebSocket: %s", reason)
        counts.slow_consumer_closes += 1
        self.closed = True
        self._clear()
        protocol = self._protocol
        if protocol is None:
            asyncio.create_task(self._send_close(reason))  # noqa: RUF006 (ends by itself)
            return
        if protocol.close_sent or protocol.disconnected:
            return
        # The client is not reading, so the close frame may never get out: write it past the
        # pause anyway, and drop the socket if the client has not taken it in time.
        protocol.conn.send_close(CLOSE_SLOW_CONSUMER, reason)
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
        protocol.close_sent = True
        asyncio.get_running_loop().call_later(CLOSE_GRACE_S, protocol.transport.abort)

    async def _send_close(self, reason: str) -> None:
        with contextlib.suppress(Exception):
            await self._send(
                {"type": "websocket.close", "code": CLOSE_SLOW_CONSUMER, "reason": reason}
            )


def text_frame(payload: bytes, *, tail: bytes = b"", head: bytes = b"") -> bytes:
    """An unmasked, unfragmented WebSocket text frame (server to client, RFC 6455 §5.2) holding
    ``head + payload + tail``."""
    n = len(head) + len(payload) + len(tail)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = _HEADER_16.pack(0x81, 126, n)
    else:
        header = _HEADER_64.pack(0x81, 127, n)
    return b"".join((header, head, payload, tail))


_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def scope_connection(scope: MutableMapping[str, Any]) -> Connection | None:
    """The connection the view stored in a WebSocket's ASGI scope."""
    connection = scope.get(SCOPE_KEY)
    return connection if isinstance(connection, Connection) else None


SCOPE_KEY = "tradestream.connection"
