"""What the martingale mutations and the round clock do: store, then announce."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from api.feeds.martingale.store import RoundError
from domain.martingale import Strategy

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from api.feeds.martingale.store import PgMartingaleStore
    from domain.events import Event
    from domain.martingale import StrategyConfig
    from domain.mining_rounds import MiningRound, RoundResult
    from domain.ports import Clock, Publisher


class MartingaleDesk:
    """Also the round clock's :class:`domain.round_clock.RoundBook`."""

    def __init__(self, store: PgMartingaleStore, publisher: Publisher, clock: Clock) -> None:
        self.store = store
        self.publisher = publisher
        self.clock = clock

    async def _send(self, events: list[Event]) -> None:
        for event in events:
            await self.publisher.send(event)

    async def latest_round(self) -> MiningRound | None:
        return await self.store.latest_round()

    async def open_round(self, number: int, starts_at: datetime, ends_at: datetime) -> None:
        await self._send(await self.store.open_round(number, starts_at, ends_at))

    async def settle(self, result: RoundResult) -> None:
        """The round clock's settlement: a round another process settled first is no error."""
        try:
            await self.settle_reported(result)
        except RoundError as exc:
            if exc.code != "ROUND_ALREADY_SETTLED":
                raise

    async def settle_reported(self, result: RoundResult) -> None:
        """A reported outcome: RoundError says why a round cannot take it."""
        await self._send(await self.store.settle(result, self.clock.now()))

    async def start(self, owner: str, config: StrategyConfig) -> Strategy:
        strategy = Strategy(id=f"mg_{uuid.uuid4().hex[:16]}", config=config)
        await self._send(await self.store.create(strategy, owner))
        return strategy

    async def change(
        self, strategy_id: str, owner: str | None, change: Callable[[Strategy], Strategy]
    ) -> Strategy:
        strategy, events = await self.store.change(strategy_id, owner, change)
        await self._send(events)
        return strategy
