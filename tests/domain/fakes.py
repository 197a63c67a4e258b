"""In-memory fakes the domain's workers are driven with in tests: a manual clock and a price
store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from domain.events import Event
from domain.prices import PRICE_UPDATE
from domain.topics import price_topic

if TYPE_CHECKING:
    from collections.abc import Sequence

    from domain.prices import OraclePrice

START = datetime(2024, 1, 1, tzinfo=UTC)


class ManualClock:
    """Wall and monotonic time that move together, only when a test advances them."""

    def __init__(self) -> None:
        self.wall = START
        self.mono = 100.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        pass


class FakePrices:
    def __init__(self) -> None:
        self.stored: dict[str, tuple[OraclePrice, int]] = {}

    async def save(self, price: OraclePrice, sequence: int) -> None:
        """Set a market's stored price (the tests' set-up)."""
        self.stored[price.market] = (price, sequence)

    async def record(self, prices: Sequence[OraclePrice]) -> list[Event]:
        events = []
        for price in prices:
            sequence = self.stored[price.market][1] + 1 if price.market in self.stored else 1
            self.stored[price.market] = (price, sequence)
            topic = price_topic(price.market)
            events.append(
                Event(topic, sequence, price.published_at, PRICE_UPDATE, price.to_payload())
            )
        return events

    async def latest(self, market: str) -> tuple[OraclePrice, int] | None:
        return self.stored.get(market)

    async def latest_of(self, markets: Sequence[str]) -> dict[str, OraclePrice]:
        return {m: self.stored[m][0] for m in markets if m in self.stored}
