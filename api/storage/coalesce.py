"""Identical reads in flight share one database read (singleflight).

When a replica restarts or a deploy rolls, every client it held resumes within seconds, and many of
them ask for the same thing: where a public topic stands, the events of one topic after one cursor.
Without merging, each asks PostgreSQL itself, and the reads cost grows with clients instead of
topics (Centrifugo merges identical history reads for the same reason). A :class:`ReadCoalescer`
keys each read by what it asks; a read asked while an identical one is in flight waits for that
one's answer instead of issuing its own. Nothing is kept once the read completes: a later read
asks the database again, so no answer is ever staler than the reads it was merged with.

A waiter that is cancelled (its client went away) does not cancel the read the others wait for;
a read that fails fails every waiter with the same error.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeVar

from api.ops.metrics import counts

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Hashable

T = TypeVar("T")


class ReadCoalescer:
    """Merges concurrent identical reads. Counts each read issued and each one merged into a read
    already in flight (``counts.reads_issued`` / ``counts.reads_merged``, by ``kind``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    async def read(self, key: Hashable, fetch: Callable[[], Awaitable[T]]) -> T:
        """``fetch()``'s answer, shared with every identical (same ``key``) read asked before it
        completes."""
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(fetch())
            self._flights[key] = flight
            flight.add_done_callback(lambda done: self._landed(key, done))
            counts.reads_issued[self.kind] += 1
        else:
            counts.reads_merged[self.kind] += 1
        result: T = await asyncio.shield(flight)
        return result

    def _landed(self, key: Hashable, flight: asyncio.Future[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: waiters that were cancelled meanwhile don't log it
