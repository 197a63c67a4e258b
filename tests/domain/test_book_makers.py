"""The simulated market makers' worker: a new book is announced whole, then each move of the
price is one delta with the whole book as the newest state beside it; an unmoved price
publishes nothing; a failed step rebuilds and announces the books anew."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from domain.book_makers import ORDER_ENDS, ORDER_RESTS, BookMakers, RestingOrder, order_flow
from domain.markets import MarketCatalog
from domain.order_book import DELTA_EVENT, SNAPSHOT_EVENT, BookSide, BookSnapshot, Level
from domain.paper_exchange import Changes, Order, OrderSide, OrderStatus, OrderType
from domain.prices import OraclePrice
from domain.topics import book_orders_topic, book_state_topic, book_topic
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


def resting(id: str, price: str, size: str, side: BookSide = BookSide.BID) -> dict[str, Any]:
    return RestingOrder(id, "BTC-PERP", side, D(price), D(size)).to_payload()


async def test_users_orders_rest_in_the_book_and_leave_it() -> None:
    makers, prices, publisher, clock = rig()
    await makers.load_orders([RestingOrder("ann/1", "BTC-PERP", BookSide.BID, D(50000), D(2))])
    await price(prices, clock, "BTC-PERP", "65000")
    await makers.step()
    announced = BookSnapshot.from_payload(publisher.events[-2].payload)
    assert Level(D(50000), D(2)) in announced.bids  # loaded before the first quotes

    assert await makers.on_order(ORDER_RESTS, resting("bob/1", "50000", "3")) == 2
    delta = publisher.events[-2]
    assert delta.type == DELTA_EVENT
    assert delta.payload["changes"] == [{"side": "BID", "price": "50000.0", "size": "5.000"}]
    # The same order again (its size changed): replaced, not added twice.
    await makers.on_order(ORDER_RESTS, resting("bob/1", "50000", "1"))
    assert makers.books["BTC-PERP"].size_at(BookSide.BID, D(50000)) == D(3)
    await makers.on_order(ORDER_ENDS, {"id": "bob/1", "market": "BTC-PERP"})
    assert makers.books["BTC-PERP"].size_at(BookSide.BID, D(50000)) == D(2)
    published = len(publisher.events)
    # An order that never rested (filled at once) ends: nothing to publish.
    assert await makers.on_order(ORDER_ENDS, {"id": "cat/9", "market": "BTC-PERP"}) == 0
    assert len(publisher.events) == published
    # A rebuilt book keeps the users' orders.
    makers.rebuild()
    assert makers.books["BTC-PERP"].size_at(BookSide.BID, D(50000)) == D(2)


def test_an_account_change_tells_the_book_which_limit_orders_rest_and_end() -> None:
    at = datetime(2026, 12, 6, tzinfo=UTC)

    def order(id: str, type: OrderType, status: OrderStatus) -> Order:
        return Order(id, "ETH-PERP", OrderSide.SELL, type, D(4), status, at, at, price=D(3100))

    changes = Changes(
        orders=(
            order("1", OrderType.LIMIT, OrderStatus.NEW),
            order("2", OrderType.LIMIT, OrderStatus.CANCELED),
            order("3", OrderType.MARKET, OrderStatus.FILLED),
            order("4", OrderType.TAKE_PROFIT, OrderStatus.NEW),
        )
    )
    events = order_flow("dan", changes)
    assert [(e.topic, e.type) for e in events] == [
        (book_orders_topic("ETH-PERP"), ORDER_RESTS),
        (book_orders_topic("ETH-PERP"), ORDER_ENDS),
    ]
    assert RestingOrder.from_payload(events[0].payload) == RestingOrder(
        "dan/1", "ETH-PERP", BookSide.ASK, D(3100), D(4)
    )
    assert events[1].payload == {"id": "dan/2", "market": "ETH-PERP"}
