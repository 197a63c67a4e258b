from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from domain.events import Event, Unnumbered
from domain.price_feed import PriceFeed
from domain.prices import (
    DEFAULT_START_PRICES,
    FALLBACK_START_PRICE,
    PRICE_UPDATE,
    OraclePrice,
    RandomWalkOracle,
    RandomWalkParams,
)
from domain.topics import price_topic
from tests.domain.factories import make_market

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from domain.markets import Market


BTC = make_market("BTC-PERP", "0.1")
ETH = make_market("ETH-PERP", "0.01")
STILL = RandomWalkParams(volatility=0)
"""A walk that never moves: every tick publishes the start price."""


class FakeClock:
    """Monotonic time that only moves when the feed sleeps (or a test says so)."""

    def __init__(self, stop_after_sleeps: int | None = None) -> None:
        self.start = 1_000.0
        self.time = self.start
        self.sleeps: list[float] = []
        self.stop_after_sleeps = stop_after_sleeps

    def now(self) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=self.time - self.start)

    def monotonic(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(seconds)
        if self.stop_after_sleeps is not None and len(self.sleeps) >= self.stop_after_sleeps:
            raise asyncio.CancelledError
        await asyncio.sleep(0)


class FakePublisher:
    """Records the events it is given to deliver."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.repository: FakePriceRepository | None = None

    async def prepare(self, topic: str, type: str, payload: dict[str, object]) -> Event:
        raise AssertionError("a price's event is numbered by the price repository, with the price")

    async def prepare_all(
        self, events: Sequence[Unnumbered], *, keep_latest: bool = False
    ) -> list[Event]:
        raise AssertionError("a price's event is numbered by the price repository, with the price")

    async def send(self, event: Event) -> None:
        if self.repository is not None:
            # Stored first, then sent: a subscriber reading the store never misses this event.
            assert self.repository.stored[event.payload["market"]][1] == event.sequence
        self.events.append(event)

    def on(self, topic: str) -> list[Event]:
        return [e for e in self.events if e.topic == topic]


class FakePriceRepository:
    """Numbers each price's event 1, 2, 3... per topic and stores the price with it, like the
    real repository (a batch at a time); ``fail_next`` batches fail as a database that is down."""

    def __init__(
        self, clock: FakeClock, stored: dict[str, tuple[OraclePrice, int]] | None = None
    ) -> None:
        self.clock = clock
        self.stored: dict[str, tuple[OraclePrice, int]] = dict(stored or {})
        self._sequences: defaultdict[str, int] = defaultdict(int)
        self.fail_next = 0
        self.on_record: Callable[[int], None] | None = None
        self.calls = 0

    async def record(self, prices: Sequence[OraclePrice]) -> list[Event]:
        self.calls += 1
        if self.on_record is not None:
            self.on_record(self.calls)
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("database down")
        events = []
        for price in prices:
            topic = price_topic(price.market)
            self._sequences[topic] += 1
            sequence = self._sequences[topic]
            self.stored[price.market] = (price, sequence)
            payload = price.to_payload()
            events.append(Event(topic, sequence, self.clock.now(), PRICE_UPDATE, payload))
        return events

    async def latest(self, market: str) -> tuple[OraclePrice, int] | None:
        return self.stored.get(market)

    async def latest_of(self, markets: Sequence[str]) -> dict[str, OraclePrice]:
        return {m: self.stored[m][0] for m in markets if m in self.stored}


def make_feed(
    markets: list[Market], clock: FakeClock, *, hz: float = 4.0
) -> tuple[PriceFeed, FakePublisher, FakePriceRepository]:
    publisher = FakePublisher()
    repository = FakePriceRepository(clock)
    publisher.repository = repository
    oracles = [RandomWalkOracle(m, DEFAULT_START_PRICES[m.id], seed=1) for m in markets]
    feed = PriceFeed(oracles, publisher=publisher, prices=repository, clock=clock, hz=hz)
    return feed, publisher, repository


async def test_tick_publishes_one_price_per_market_and_stores_it() -> None:
    clock = FakeClock()
    feed, publisher, repository = make_feed([BTC, ETH], clock)

    for expected_sequence in (1, 2, 3):
        prices = await feed.tick()

        assert [p.market for p in prices] == ["BTC-PERP", "ETH-PERP"]
        for price in prices:
            topic = price_topic(price.market)
            event = publisher.on(topic)[-1]
            assert event.sequence == expected_sequence
            assert event.type == PRICE_UPDATE
            assert event.topic == topic
            assert event.payload == price.to_payload()
            assert repository.stored[price.market] == (price, expected_sequence)
        clock.advance(0.25)

    assert len(publisher.events) == 6
    assert repository.calls == 3  # every market of a tick numbered and stored together
    assert [e.sequence for e in publisher.on("price:BTC-PERP")] == [1, 2, 3]
    assert [e.sequence for e in publisher.on("price:ETH-PERP")] == [1, 2, 3]


async def test_tick_stamps_prices_with_the_clock() -> None:
    clock = FakeClock()
    feed, _, _ = make_feed([BTC], clock)
    clock.advance(5)
    (price,) = await feed.tick()
    assert price.published_at == datetime(2024, 1, 1, 0, 0, 5, tzinfo=UTC)


async def test_resume_starts_from_stored_price_else_default() -> None:
    stored_btc = OraclePrice("BTC-PERP", Decimal("70000.5"), Decimal("7"), datetime.now(UTC))
    clock = FakeClock()
    repository = FakePriceRepository(clock, {"BTC-PERP": (stored_btc, 41)})
    publisher = FakePublisher()
    doge = make_market("DOGE-PERP", "0.0001")

    feed = await PriceFeed.resume(
        [BTC, ETH, doge],
        publisher=publisher,
        prices=repository,
        clock=clock,
        hz=1,
        seed=3,
        params=STILL,
    )
    prices = {p.market: p.price for p in await feed.tick()}

    assert prices == {
        "BTC-PERP": Decimal("70000.5"),
        "ETH-PERP": DEFAULT_START_PRICES["ETH-PERP"],
        "DOGE-PERP": FALLBACK_START_PRICE,
    }
    assert feed.interval == 1.0


async def test_resume_is_deterministic_for_a_seed() -> None:
    async def first_prices(seed: int) -> list[Decimal]:
        clock = FakeClock()
        feed = await PriceFeed.resume(
            [BTC, ETH],
            publisher=FakePublisher(),
            prices=FakePriceRepository(clock),
            clock=clock,
            hz=1,
            seed=seed,
        )
        return [p.price for _ in range(5) for p in await feed.tick()]

    assert await first_prices(1) == await first_prices(1)
    assert await first_prices(1) != await first_prices(2)


async def test_run_ticks_on_schedule() -> None:
    clock = FakeClock(stop_after_sleeps=10)
    feed, publisher, _ = make_feed([BTC, ETH], clock, hz=4)

    with pytest.raises(asyncio.CancelledError):
        await feed.run()

    assert clock.sleeps == pytest.approx([0.25] * 10)
    assert [e.sequence for e in publisher.on("price:BTC-PERP")] == list(range(1, 11))
    assert [e.sequence for e in publisher.on("price:ETH-PERP")] == list(range(1, 11))


async def test_run_as_task_stops_on_cancel() -> None:
    three_ticks = asyncio.Event()

    class RealSleepClock(FakeClock):
        async def sleep(self, seconds: float) -> None:
            self.sleeps.append(seconds)
            if len(self.sleeps) == 3:
                three_ticks.set()
            await asyncio.sleep(0.001)

    clock = RealSleepClock()
    feed, publisher, _ = make_feed([BTC], clock, hz=1000)
    task = asyncio.create_task(feed.run())
    await asyncio.wait_for(three_ticks.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert len(publisher.events) >= 3


async def test_failing_tick_is_logged_and_feed_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock(stop_after_sleeps=5)
    feed, publisher, repository = make_feed([BTC], clock, hz=4)
    repository.fail_next = 1

    with (
        caplog.at_level(logging.ERROR, logger="domain.price_feed"),
        pytest.raises(asyncio.CancelledError),
    ):
        await feed.run()

    failures = [r for r in caplog.records if r.name == "domain.price_feed"]
    assert len(failures) == 1
    assert "tick failed" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], ConnectionError)
    # The failed tick stored and published nothing; the four after it did, and the schedule held.
    assert [e.sequence for e in publisher.events] == [1, 2, 3, 4]
    assert repository.stored["BTC-PERP"][1] == 4
    assert clock.sleeps == pytest.approx([0.25] * 5)


async def test_feed_that_falls_far_behind_skips_ahead_without_bursting() -> None:
    clock = FakeClock(stop_after_sleeps=8)
    feed, _, repository = make_feed([BTC], clock, hz=4)

    def slow_third_tick(call: int) -> None:
        if call == 3:
            clock.advance(5 * feed.interval)  # the database stalls for five intervals

    repository.on_record = slow_third_tick
    with pytest.raises(asyncio.CancelledError):
        await feed.run()

    assert all(delay >= 0 for delay in clock.sleeps)
    # One immediate tick after the stall, then back on the 1/hz schedule: no catch-up burst.
    assert clock.sleeps == pytest.approx([0.25, 0.25, 0.0, 0.25, 0.25, 0.25, 0.25, 0.25])


async def test_feed_slightly_behind_keeps_its_schedule() -> None:
    clock = FakeClock(stop_after_sleeps=5)
    feed, _, repository = make_feed([BTC], clock, hz=4)

    def slow_second_tick(call: int) -> None:
        if call == 2:
            clock.advance(1.5 * feed.interval)

    repository.on_record = slow_second_tick
    with pytest.raises(asyncio.CancelledError):
        await feed.run()

    # Behind by half an interval: tick at once, then the next tick lands on the old grid.
    assert clock.sleeps == pytest.approx([0.25, 0.0, 0.125, 0.25, 0.25])


async def test_feed_that_is_always_slow_never_sleeps_a_negative_delay() -> None:
    clock = FakeClock(stop_after_sleeps=20)
    feed, publisher, repository = make_feed([BTC], clock, hz=4)
    repository.on_record = lambda _call: clock.advance(0.6)  # every tick takes 2.4 intervals

    with pytest.raises(asyncio.CancelledError):
        await feed.run()

    assert all(delay >= 0 for delay in clock.sleeps)
    assert len(publisher.events) == 20


@pytest.mark.parametrize("hz", [0, -1, -0.5])
def test_non_positive_hz_refused(hz: float) -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="hz must be positive"):
        PriceFeed(
            [], publisher=FakePublisher(), prices=FakePriceRepository(clock), clock=clock, hz=hz
        )
