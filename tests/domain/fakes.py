"""In-memory fakes the domain's workers are driven with in tests: a manual clock, a price store,
event numbering, a recording publisher and a latest-value store."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from domain.events import DeliveryPolicy, Event, Unnumbered
from domain.prices import PRICE_UPDATE
from domain.topics import policy_of, price_topic

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
    """A publisher that numbers with ``sequences`` and keeps every event it is given to send, and
    the newest state of each latest-value topic it was asked to keep."""

    def __init__(self, clock: ManualClock, sequences: Sequences) -> None:
        self.clock = clock
        self.sequences = sequences
        self.events: list[Event] = []
        self.kept: list[Event] = []
        """Every event prepared with ``keep_latest``, in order."""
        self.latest: dict[str, Event] = {}

    async def prepare(self, topic: str, type: str, payload: dict[str, Any]) -> Event:
        return Event(topic, self.sequences.next(topic), self.clock.now(), type, payload)

    async def prepare_all(
        self, events: Sequence[Unnumbered], *, keep_latest: bool = False
    ) -> list[Event]:
        prepared = [await self.prepare(e.topic, e.type, e.payload) for e in events]
        if keep_latest:
            for event in prepared:
                if policy_of(event.topic) is DeliveryPolicy.LATEST_VALUE:
                    self.kept.append(event)
                    self.latest[event.topic] = event
        return prepared

    async def send(self, event: Event) -> None:
        self.events.append(event)

    def on(self, topic: str, type: str | None = None) -> list[Event]:
        return [e for e in self.events if e.topic == topic and type in (None, e.type)]
