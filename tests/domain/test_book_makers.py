"""The simulated market makers' worker: a new book is announced whole, then each move of the
price is one delta with the whole book as the newest state beside it; an unmoved price
publishes nothing; a failed step rebuilds and announces the books anew."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from domain.book_makers import BookMakers
from domain.markets import MarketCatalog
from domain.order_book import DELTA_EVENT, SNAPSHOT_EVENT, BookSnapshot
from domain.prices import OraclePrice
from domain.topics import book_state_topic, book_topic
from tests.domain.factories import make_market
from tests.domain.fakes import FakePrices, ManualClock, RecordingPublisher, Sequences

if TYPE_CHECKING:
    from domain.events import Event

D = Decimal


def rig() -> tuple[BookMakers, FakePrices, RecordingPublisher, ManualClock]:
    clock, prices = ManualClock(), FakePrices()
    publisher = RecordingPublisher(clock, Sequences())
    markets = MarketCatalog([make_market("BTC-PERP"), make_market("ETH-PERP")])
    makers = BookMakers(markets, prices=prices, publisher=publisher, clock=clock, levels=5, seed=7)
    return makers, prices, publisher, clock


async def price(prices: FakePrices, clock: ManualClock, market: str, value: str) -> None:
    await prices.record([OraclePrice(market, D(value), D(1), clock.now())])


async def test_a_book_is_announced_whole_then_each_move_is_a_delta_with_the_state() -> None:
    makers, prices, publisher, clock = rig()
    assert await makers.step() == 0  # no price yet: nothing to quote around
    await price(prices, clock, "BTC-PERP", "65000")
    assert await makers.step() == 2
    first, state = publisher.events
    assert (first.topic, first.type) == (book_topic("BTC-PERP"), SNAPSHOT_EVENT)
    assert (state.topic, state.type) == (book_state_topic("BTC-PERP"), SNAPSHOT_EVENT)
    book = BookSnapshot.from_payload(first.payload)
    assert len(book.bids) == len(book.asks) == 5
    assert book.bids[0].price < D(65000) < book.asks[0].price
    assert publisher.latest[book_state_topic("BTC-PERP")] == state

    assert await makers.step() == 0  # the price did not move
    await price(prices, clock, "BTC-PERP", "65010")
    assert await makers.step() == 2
    delta, state = publisher.events[2:]
    assert (delta.topic, delta.type, delta.sequence) == (book_topic("BTC-PERP"), DELTA_EVENT, 2)
    assert delta.payload["changes"]
    moved = BookSnapshot.from_payload(state.payload)
    assert moved.bids[0].price > book.bids[0].price
    assert publisher.latest[book_state_topic("BTC-PERP")] == state
    assert publisher.on(book_topic("ETH-PERP")) == []


async def test_a_failed_step_rebuilds_the_books_and_announces_them_again() -> None:
    makers, prices, publisher, clock = rig()
    await price(prices, clock, "BTC-PERP", "65000")
    await makers.step()
    real = publisher.prepare_all
    failed = False

    async def failing_once(events: Any, *, keep_latest: bool = False) -> list[Event]:
        nonlocal failed
        if not failed:
            failed = True
            raise ConnectionError("the database went away")
        return await real(events, keep_latest=keep_latest)

    steps = 0

    async def sleep(seconds: float) -> None:
        nonlocal steps
        steps += 1
        if steps == 2:
            raise asyncio.CancelledError  # end run() after the step that follows the failure

    publisher.prepare_all = failing_once  # type: ignore[method-assign]
    clock.sleep = sleep  # type: ignore[method-assign]
    await price(prices, clock, "BTC-PERP", "65010")
    with pytest.raises(asyncio.CancelledError):
        await makers.run()
    # The failed step's move was never published: the next announced the book whole again.
    assert [e.type for e in publisher.events] == [SNAPSHOT_EVENT] * 4
    assert BookSnapshot.from_payload(publisher.events[-1].payload).bids[0].price > D(64990)
