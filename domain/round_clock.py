"""The round clock: a worker that turns mining rounds on a fixed period and, with a simulated
outcome source, settles each round as it ends. With no source (outcomes come from a ``service``
caller), ended rounds wait for their settlement and the clock goes on opening the next ones.

After a restart the clock continues from the newest stored round: a round that ended while the
server was down is settled (if simulated) and the next one opens at once; rounds are not
back-filled for the time the server was down.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from domain.mining_rounds import MiningRound, RoundResult, SimulatedOutcomes
    from domain.ports import Clock

logger = logging.getLogger(__name__)


class RoundBook(Protocol):
    async def latest_round(self) -> MiningRound | None: ...

    async def open_round(self, number: int, starts_at: datetime, ends_at: datetime) -> None: ...

    async def settle(self, result: RoundResult) -> None: ...


class RoundClock:
    def __init__(
        self,
        book: RoundBook,
        *,
        clock: Clock,
        period_s: float,
        outcomes: SimulatedOutcomes | None,
    ) -> None:
        if period_s <= 0:
            raise ValueError("the round period must be positive")
        self.book = book
        self.clock = clock
        self.period = timedelta(seconds=period_s)
        self.outcomes = outcomes

    async def tick(self) -> float:
        """Settle and open what is due; the seconds until the current round ends."""
        current = await self.book.latest_round()
        now = self.clock.now()
        if current is not None and current.ends_at > now:
            return (current.ends_at - now).total_seconds()
        if current is not None and current.result is None and self.outcomes is not None:
            await self.book.settle(self.outcomes.outcome(current.number))
        number = 1 if current is None else current.number + 1
        await self.book.open_round(number, now, now + self.period)
        return self.period.total_seconds()

    async def run(self) -> None:
        while True:
            try:
                delay = await self.tick()
            except Exception:
                logger.exception("round clock tick failed; trying again")
                delay = 1.0
            await self.clock.sleep(max(delay, 0.01))
