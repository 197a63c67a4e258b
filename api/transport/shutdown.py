"""Graceful shutdown: what must finish before the server closes its connections.

On SIGTERM (``tradestream serve``, :mod:`api.cli`), the server stops accepting connections and
ends every subscription at once (``SHUTTING_DOWN``). Queries and mutations already executing are
different: their answer is due, and a mutation's write may already be made. uvicorn waits for an
HTTP response in progress by itself, but it closes WebSockets (1012) at once, which would drop the
``next`` and ``complete`` of an operation still running on one. So WebSocket queries and mutations
are counted here while they run, answer included, and the server waits for none to be left (at
most ``SHUTDOWN_GRACE_S``) before it closes the sockets. Once shutdown has begun, an operation sent
on a socket still open is refused with ``SHUTTING_DOWN``: it should go to another server.

Then every graphql-transport-ws socket is closed here, before uvicorn would, with 1012 and a reason
that tells its client when to come back: ``Service Restart: reconnect in 2317 ms``, a delay drawn
for each socket between 0 and ``SHUTDOWN_RECONNECT_SPREAD_S``. A deploy that rolls thousands of
sockets then sees their reconnects spread over that window instead of all in the same second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

SHUTTING_DOWN_MESSAGE = "The server is shutting down: send the operation again on a new connection."


CLOSE_SERVICE_RESTART = 1012


def reconnect_reason(delay_ms: int) -> str:
    """The close reason of a socket closed at shutdown: when its client should come back."""
    return f"Service Restart: reconnect in {delay_ms} ms"


class Closable(Protocol):
    """An open WebSocket the shutdown closes (the graphql-transport-ws handler)."""

    async def close_for_restart(self, reason: str) -> None: ...


class Shutdown:
    def __init__(self) -> None:
        self.sockets: set[Closable] = set()
        """The open graphql-transport-ws sockets (each handler adds itself while it runs)."""
        self.begun = False
        self.running = 0
        """WebSocket queries and mutations executing or sending their answer now."""
        self._idle: asyncio.Event | None = None

    def begin(self) -> None:
        self.begun = True

    @contextlib.contextmanager
    def operation(self) -> Iterator[None]:
        """Around one WebSocket query or mutation, its answer included."""
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self.running == 0 and self._idle is not None:
                self._idle.set()

    async def finished(self, within_s: float) -> bool:
        """Wait until no operation runs (True), or ``within_s`` seconds (False)."""
        if self.running == 0:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(within_s):
                await self._idle.wait()
        except TimeoutError:
            return self.running == 0
        finally:
            self._idle = None
        return True

    async def close_sockets(self, spread_s: float, rng: random.Random | None = None) -> int:
        """Close every open socket with 1012 and its own reconnect delay, drawn uniformly from
        0 to ``spread_s``; the number closed."""
        draw = rng or random.Random()
        sockets = list(self.sockets)
        for socket in sockets:
            delay_ms = round(draw.uniform(0, spread_s) * 1000)
            try:
                await socket.close_for_restart(reconnect_reason(delay_ms))
            except Exception as exc:  # a socket that went away meanwhile: uvicorn ends the rest
                logger.debug("could not close a socket at shutdown: %s", exc)
        return len(sockets)
