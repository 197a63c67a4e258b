"""In-memory fakes the domain's workers are driven with in tests: a manual clock, a price store,
event numbering, a recording publisher and a latest-value store."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

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


class Sequences:
    """Numbers events 1, 2, 3... per topic, shared by a publisher and a book."""

    def __init__(self) -> None:
        self._last: defaultdict[str, int] = defaultdict(int)

    def next(self, topic: str) -> int:
        self._last[topic] += 1
        return self._last[topic]


class RecordingPublisher:
    """A publisher that numbers with ``sequences`` and keeps every event it is given to send."""

    def __init__(self, clock: ManualClock, sequences: Sequences) -> None:
        self.clock = clock
        self.sequences = sequences
        self.events: list[Event] = []

    async def prepare(self, topic: str, type: str, payload: dict[str, Any]) -> Event:
        return Event(topic, self.sequences.next(topic), self.clock.now(), type, payload)

    async def send(self, event: Event) -> None:
        self.events.append(event)

    def on(self, topic: str, type: str | None = None) -> list[Event]:
        return [e for e in self.events if e.topic == topic and type in (None, e.type)]


class FakeLatestEvents:
    """The newest event of each latest-value topic, and every one saved."""

    def __init__(self) -> None:
        self.by_topic: dict[str, Event] = {}
        self.saved: list[Event] = []

    async def save(self, event: Event) -> None:
        self.by_topic[event.topic] = event
        self.saved.append(event)

    async def latest(self, topic: str) -> Event | None:
        return self.by_topic.get(topic)
