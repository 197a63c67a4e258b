"""The newest event of every latest-value topic that keeps one (``latest_events``): what a
subscriber gets first, and what a process that missed an event reads back."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from domain.events import Event

if TYPE_CHECKING:
    from api.storage.database import Executor


class PgLatestEvents:
    """The newest event per latest-value topic. A save never replaces a newer event."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool

    async def latest(self, topic: str) -> Event | None:
        row = await self.pool.fetchrow(
            """SELECT sequence, type, payload::text AS payload, published_at
               FROM latest_events WHERE topic = $1""",
            topic,
        )
        if row is None:
            return None
        return Event(
            topic, row["sequence"], row["published_at"], row["type"], orjson.loads(row["payload"])
        )
