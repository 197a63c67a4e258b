"""The runner between a real Pyth source (httpx-sse against the local Hermes stand-in) and the
in-memory price store and publisher of the domain's tests: what it publishes together, what it
conflates while a publish is in flight, and what it drops as out of order."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from api.runtime.clock import SystemClock
from api.sources.pyth import PythHermes
from api.sources.runner import SourceRunner
from domain.prices import OraclePrice
from tests.domain.fakes import FakePrices, ManualClock, RecordingPublisher, Sequences
from tests.standins.hermes import BTC, ETH, HermesStandIn, serving, update

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from domain.events import Event


class GatedPrices(FakePrices):
    """Keeps each batch it records; each waits for ``gate`` while it is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[tuple[str, Decimal]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.entered = asyncio.Event()

    async def record(self, prices: Sequence[OraclePrice]) -> list[Event]:
        self.entered.set()
        await self.gate.wait()
        self.batches.append([(p.market, p.price) for p in prices])
        return await super().record(prices)


@contextlib.asynccontextmanager
async def running(prices: GatedPrices) -> AsyncIterator[tuple[HermesStandIn, RecordingPublisher]]:
    publisher = RecordingPublisher(ManualClock(), Sequences())
    async with serving(HermesStandIn(keepalive_s=0.5)) as hermes:
        source = PythHermes(hermes.url, {BTC: ("BTC-PERP",), ETH: ("ETH-PERP",)}, read_timeout_s=5)
        runner = SourceRunner(
            [source], publisher=publisher, prices=prices, clock=SystemClock(), backoff_max_s=1
        )
        task = asyncio.create_task(runner.run())
        try:
            yield hermes, publisher
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_feeds_of_one_event_are_published_in_one_round_trip() -> None:
    prices = GatedPrices()
    now = int(time.time())
    async with running(prices) as (hermes, publisher):
        hermes.send(
            update(
                "btc_eth",
                prices={BTC: ("2920000000000", "1", now), ETH: ("184000000000", "1", now)},
            )
        )
        await until(lambda: len(publisher.events) == 2)
    assert prices.batches == [
        [("BTC-PERP", Decimal("29200.00000000")), ("ETH-PERP", Decimal("1840.00000000"))]
    ]


async def test_what_arrives_during_a_publish_goes_out_next_the_newest_per_market() -> None:
    prices = GatedPrices()
    now = int(time.time())
    async with running(prices) as (hermes, publisher):
        prices.gate.clear()
        hermes.send(update("btc", prices={BTC: ("100000000", "1", now)}))
        await prices.entered.wait()  # the first publish is in flight, and held
        for i in range(1, 4):
            hermes.send(update("btc", prices={BTC: (f"{i + 1}00000000", "1", now + i)}))
        await asyncio.sleep(0.5)  # they arrive meanwhile
        prices.gate.set()
        await until(lambda: len(publisher.events) == 2)
        await asyncio.sleep(0.2)
    assert prices.batches == [
        [("BTC-PERP", Decimal("1.00000000"))],
        [("BTC-PERP", Decimal("4.00000000"))],
    ]
    assert [e.sequence for e in publisher.events] == [1, 2]


async def test_an_update_not_newer_than_the_stored_price_is_dropped() -> None:
    prices = GatedPrices()
    now = int(time.time())
    stored = OraclePrice("BTC-PERP", Decimal(29000), Decimal(1), datetime.fromtimestamp(now, UTC))
    await prices.save(stored, 7)
    async with running(prices) as (hermes, publisher):
        hermes.send(update("btc", prices={BTC: ("2800000000000", "1", now - 5)}))
        hermes.send(update("btc", prices={BTC: ("2810000000000", "1", now)}))
        await asyncio.sleep(0.5)
        assert publisher.events == []  # older, then as old: neither is newer
        hermes.send(update("btc", prices={BTC: ("2820000000000", "1", now + 1)}))
        await until(lambda: len(publisher.events) == 1)
        await asyncio.sleep(0.3)
    assert prices.batches == [[("BTC-PERP", Decimal("28200.00000000"))]]
    assert [e.sequence for e in publisher.events] == [8]
