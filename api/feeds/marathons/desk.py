"""What the marathon mutations, the RabbitMQ consumer and the simulator do: store, then announce
on the marathon feed."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
        redelivery): nothing is announced then. Returns only once the snapshot is stored, so a
        consumer may acknowledge its message."""
        event = await self.store.ingest(snapshot)
        if event is None:
            return False
        await self.publisher.send(event)
        return True

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
