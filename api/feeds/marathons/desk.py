"""What the marathon mutations, the RabbitMQ consumer and the simulator do: store, then announce
on the marathon feed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from decimal import Decimal

    from api.feeds.marathons.store import PgMarathonStore
    from domain.marathons import AccountSnapshot, Enroller, Marathon
    from domain.ports import Publisher


class MarathonDesk:
    def __init__(self, store: PgMarathonStore, publisher: Publisher) -> None:
        self.store = store
        self.publisher = publisher

    async def ingest(self, snapshot: AccountSnapshot) -> bool:
        """Store and announce ``snapshot``; False when a snapshot as new was already stored (a
        redelivery): nothing is announced then."""
        return await self.ingest_many([snapshot]) == 1

    async def ingest_many(self, snapshots: Sequence[AccountSnapshot]) -> int:
        """Store and announce a batch of snapshots in one transaction (each login's newest, unless
        a snapshot as new is stored already); how many were stored, the others ignored (stale,
        duplicates, redeliveries: never announced twice). Returns only once they are stored and
        their events sent, so a consumer may acknowledge their messages."""
        ingested = await self.store.ingest(snapshots)
        for event in ingested.events:
            await self.publisher.send(event)
        return ingested.stored

    async def create(self, marathon: Marathon) -> None:
        await self.publisher.send(await self.store.create(marathon))

    async def add_participant(
        self,
        marathon_id: str,
        login: int,
        participant: str,
        initial_balance: Decimal | None,
        enroller: Enroller,
    ) -> None:
        event = await self.store.add_participant(
            marathon_id, login, participant, initial_balance, enroller
        )
        await self.publisher.send(event)

    async def remove_participant(self, marathon_id: str, login: int) -> bool:
        event = await self.store.remove_participant(marathon_id, login)
        if event is None:
            return False
        await self.publisher.send(event)
        return True
