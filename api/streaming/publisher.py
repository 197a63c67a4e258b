"""The real :class:`domain.ports.Publisher`: numbered (and kept in history) by PostgreSQL,
delivered by broadcaster."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import asyncpg
from redis.exceptions import RedisError

from api.ops.metrics import counts
from api.storage.history import number_event, number_events
from api.streaming.envelope import encode_event
from domain.topics import kind_of

if TYPE_CHECKING:
    from collections.abc import Sequence

    from api.streaming.broadcast import Broadcast
    from domain.events import Event, Unnumbered
    from domain.ports import Clock

logger = logging.getLogger(__name__)


class BroadcastPublisher:
    def __init__(self, broadcast: Broadcast, pool: asyncpg.Pool, clock: Clock) -> None:
        self.broadcast = broadcast
        self.pool = pool
        self.clock = clock
        self.failures = 0
        """Events the broker could not take."""

    async def prepare(self, topic: str, type: str, payload: dict[str, Any]) -> Event:
        return await number_event(self.pool, self.clock, topic, type, payload)

    async def prepare_all(
        self, events: Sequence[Unnumbered], *, keep_latest: bool = False
    ) -> list[Event]:
        return await number_events(self.pool, self.clock, events, keep_latest=keep_latest)

    async def send(self, event: Event) -> None:
        """Deliver ``event``; a broker that cannot be reached is logged, not raised.

        The change the event announces is stored already, and so is the event (stream topics keep
        it in their history, latest-value topics their newest state): when the broker is back,
        each process's hub reads what it missed from there. Failing the caller instead would
        report a stored change as failed.
        """
        try:
            await self.broadcast.publish(event.topic, encode_event(event))
            counts.published[kind_of(event.topic).value] += 1
        except (OSError, RedisError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.failures += 1
            logger.warning(
                "could not publish %s #%d (%s); subscribers will read it from storage",
                event.topic,
                event.sequence,
                exc,
            )
