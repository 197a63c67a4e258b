"""Graceful shutdown: what must finish before the server closes its connections.

On SIGTERM (``tradestream serve``, :mod:`api.cli`), the server stops accepting connections and
ends every subscription at once (``SHUTTING_DOWN``). Queries and mutations already executing are
different: their answer is due, and a mutation's write may already be made. uvicorn waits for an
HTTP response in progress by itself, but it closes WebSockets (1012) at once, which would drop the
``next`` and ``complete`` of an operation still running on one. So WebSocket queries and mutations
are counted here while they run, answer included, and the server waits for none to be left (at
most ``SHUTDOWN_GRACE_S``) before it closes the sockets. Once shutdown has begun, an operation sent
on a socket still open is refused with ``SHUTTING_DOWN``: it should go to another server.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

SHUTTING_DOWN_MESSAGE = "The server is shutting down: send the operation again on a new connection."


class Shutdown:
    def __init__(self) -> None:
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
