"""The order book: levels from makers and resting orders, its deltas and their sequence, the
depth-limited views, conflation, the simulated makers, and the payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.order_book import (
    BookDelta,
    BookError,
    BookSide,
    BookSnapshot,
    Conflator,
    DepthView,
    Level,
    LevelChange,
    MarketMaker,
    OrderBook,
    PublicTrade,
    SequenceGapError,
)
from domain.paper_exchange import OrderSide
from tests.domain.factories import make_market

D = Decimal
BID, ASK = BookSide.BID, BookSide.ASK
BTC = make_market("BTC-PERP")  # tick 0.1, step 0.001


def book_with(*orders: tuple[str, BookSide, str, str]) -> OrderBook:
    book = OrderBook(BTC)
    for order_id, side, price, size in orders:
        book.add_order(order_id, side, D(price), D(size))
    return book


def levels(*pairs: tuple[str, str]) -> tuple[Level, ...]:
    return tuple(Level(D(p), D(s)) for p, s in pairs)


def change(side: BookSide, price: str, size: str) -> LevelChange:
    return LevelChange(side, D(price), D(size))


def quotes(*pairs: tuple[str, str]) -> dict[Decimal, Decimal]:
    return {D(p): D(s) for p, s in pairs}


# --- resting orders -------------------------------------------------------------------------------


def test_an_order_makes_a_level_and_a_delta_with_the_next_sequence() -> None:
    book = OrderBook(BTC)
    delta = book.add_order("o1", BID, D("64999.9"), D("1.5"))
    assert delta == BookDelta("BTC-PERP", 0, 1, (change(BID, "64999.9", "1.5"),))
    assert book.sequence == 1
    assert book.snapshot() == BookSnapshot("BTC-PERP", 1, levels(("64999.9", "1.5")), ())


def test_orders_at_one_price_add_up_and_each_leaves_its_own_size() -> None:
    book = book_with(("o1", ASK, "65000.1", "1"), ("o2", ASK, "65000.1", "0.25"))
    assert book.size_at(ASK, D("65000.1")) == D("1.25")
    delta = book.remove_order("o1")
    assert delta.changes == (change(ASK, "65000.1", "0.25"),)
    assert (delta.previous, delta.sequence) == (2, 3)
    assert book.remove_order("o2").changes == (change(ASK, "65000.1", "0"),)
    assert book.snapshot().asks == ()


def test_a_reduction_takes_size_off_and_all_of_it_removes_the_order() -> None:
    book = book_with(("o1", BID, "100", "2"))
    assert book.reduce_order("o1", D("0.5")).changes == (change(BID, "100", "1.5"),)
    assert book.reduce_order("o1", D("1.5")).changes == (change(BID, "100", "0"),)
    with pytest.raises(BookError) as caught:
        book.remove_order("o1")
    assert caught.value.code == "UNKNOWN_ORDER"


def test_a_reduction_past_what_the_order_has_is_refused() -> None:
    book = book_with(("o1", BID, "100", "2"))
    with pytest.raises(BookError) as caught:
        book.reduce_order("o1", D("2.001"))
    assert caught.value.code == "INVALID_SIZE"
    assert book.size_at(BID, D(100)) == D(2)
    assert book.sequence == 1


def test_an_unknown_order_is_refused() -> None:
    book = book_with(("o1", BID, "100", "2"))
    with pytest.raises(BookError) as reduced:
        book.reduce_order("o2", D(1))
    with pytest.raises(BookError) as removed:
        book.remove_order("o2")
    assert reduced.value.code == removed.value.code == "UNKNOWN_ORDER"
    assert "'o2'" in str(removed.value)


def test_an_order_id_already_resting_is_refused() -> None:
    book = book_with(("o1", BID, "100", "2"))
    with pytest.raises(BookError) as caught:
        book.add_order("o1", ASK, D(101), D(1))
    assert caught.value.code == "DUPLICATE_ORDER"
    assert book.snapshot().asks == ()


@pytest.mark.parametrize(
    "price", ["100.05", "0", "-0.1", "NaN", "Infinity", "-Infinity", "1E+15", "2E+15"]
)
def test_a_price_off_the_tick_or_out_of_range_is_refused(price: str) -> None:
    book = OrderBook(BTC)
    with pytest.raises(BookError) as caught:
        book.add_order("o1", BID, D(price), D(1))
    assert caught.value.code == "INVALID_PRICE"
    assert book.sequence == 0


@pytest.mark.parametrize("size", ["0.0005", "0", "-1", "NaN", "Infinity", "1E+15"])
def test_a_size_off_the_step_or_not_positive_is_refused(size: str) -> None:
    book = book_with(("o1", BID, "100", "2"))
    with pytest.raises(BookError) as added:
        book.add_order("o2", BID, D(100), D(size))
    with pytest.raises(BookError) as reduced:
        book.reduce_order("o1", D(size))
    with pytest.raises(BookError) as quoted:
        book.set_quotes("mm", {D(100): D(size)}, {})
    assert added.value.code == reduced.value.code == quoted.value.code == "INVALID_SIZE"
    assert book.sequence == 1
    assert book.size_at(BID, D(100)) == D(2)


def test_prices_and_sizes_keep_the_markets_decimal_places() -> None:
    # 65000.10 and 65000.1 are one level, sent as the tick writes it: a price keys a level.
    book = book_with(("o1", BID, "65000.10", "1.5000"), ("o2", BID, "65000.1", "1"))
    snapshot = book.snapshot()
    assert [(str(level.price), str(level.size)) for level in snapshot.bids] == [
        ("65000.1", "2.500")
    ]


def test_a_side_of_an_order_is_the_side_of_the_book_it_rests_on() -> None:
    assert BookSide.of(OrderSide.BUY) is BID
    assert BookSide.of(OrderSide.SELL) is ASK


# --- market makers' quotes ------------------------------------------------------------------------


def test_the_first_quotes_send_every_level_bids_best_first_then_asks_best_first() -> None:
    book = OrderBook(BTC)
    delta = book.set_quotes(
        "mm", quotes(("99.8", "1"), ("99.9", "2")), quotes(("100.2", "4"), ("100.1", "3"))
    )
    assert delta is not None
    assert delta.changes == (
        change(BID, "99.9", "2"),
        change(BID, "99.8", "1"),
        change(ASK, "100.1", "3"),
        change(ASK, "100.2", "4"),
    )


def test_new_quotes_send_only_the_levels_that_moved() -> None:
    book = OrderBook(BTC)
    book.set_quotes("mm", quotes(("99.8", "1"), ("99.9", "2")), quotes(("100.1", "3")))
    delta = book.set_quotes("mm", quotes(("99.9", "2"), ("99.7", "5")), quotes(("100.1", "4")))
    assert delta is not None
    assert delta.changes == (
        change(BID, "99.8", "0"),
        change(BID, "99.7", "5"),
        change(ASK, "100.1", "4"),
    )
    assert (delta.previous, delta.sequence) == (1, 2)


def test_the_same_quotes_again_change_nothing_and_take_no_sequence() -> None:
    book = OrderBook(BTC)
    book.set_quotes("mm", quotes(("99.9", "2")), quotes(("100.1", "3")))
    assert book.set_quotes("mm", quotes(("99.90", "2.0")), quotes(("100.1", "3"))) is None
    assert book.sequence == 1


def test_makers_and_orders_add_up_at_a_level_and_withdrawing_leaves_the_rest() -> None:
    book = book_with(("o1", BID, "99.9", "0.5"))
    book.set_quotes("mm-1", quotes(("99.9", "2")), {})
    book.set_quotes("mm-2", quotes(("99.9", "1"), ("99.8", "1")), {})
    assert book.size_at(BID, D("99.9")) == D("3.5")
    delta = book.set_quotes("mm-1", {}, {})
    assert delta is not None
    assert delta.changes == (change(BID, "99.9", "1.5"),)
    assert book.quotes("mm-1").bids == {}
    assert book.quotes("mm-2").bids == quotes(("99.9", "1"), ("99.8", "1"))


@pytest.mark.parametrize(("bid", "ask"), [("100.1", "100.1"), ("100.2", "100.1")])
def test_a_sources_crossed_quotes_are_refused_and_change_nothing(bid: str, ask: str) -> None:
    book = OrderBook(BTC)
    book.set_quotes("mm", quotes(("99.9", "1")), quotes(("100.1", "1")))
    with pytest.raises(BookError) as caught:
        book.set_quotes("mm", quotes((bid, "1"), ("99", "1")), quotes((ask, "1"), ("101", "1")))
    assert caught.value.code == "CROSSED_QUOTES"
    assert book.snapshot() == BookSnapshot(
        "BTC-PERP", 1, levels(("99.9", "1")), levels(("100.1", "1"))
    )


def test_one_bad_level_refuses_the_whole_ladder() -> None:
    book = OrderBook(BTC)
    with pytest.raises(BookError) as caught:
        book.set_quotes("mm", quotes(("99.9", "1")), quotes(("100.1", "1"), ("100.15", "1")))
    assert caught.value.code == "INVALID_PRICE"
    assert book.snapshot() == BookSnapshot("BTC-PERP", 0, (), ())


def test_the_book_itself_may_cross_across_sources() -> None:
    # The book does not match: the exchange fills users' orders against the mark.
    book = OrderBook(BTC)
    book.set_quotes("mm", quotes(("99.9", "1")), quotes(("100.1", "1")))
    assert book.add_order("o1", BID, D("100.5"), D(1)).sequence == 2


def test_a_snapshot_gives_the_best_levels_first_to_a_depth() -> None:
    book = OrderBook(BTC)
    book.set_quotes(
        "mm",
        quotes(("99.7", "3"), ("99.9", "1"), ("99.8", "2")),
        quotes(("100.3", "6"), ("100.1", "4"), ("100.2", "5")),
    )
    snapshot = book.snapshot(2)
    assert snapshot.bids == levels(("99.9", "1"), ("99.8", "2"))
    assert snapshot.asks == levels(("100.1", "4"), ("100.2", "5"))
    assert len(book.snapshot().bids) == 3
    with pytest.raises(ValueError, match="depth"):
        book.snapshot(0)


# --- depth views ----------------------------------------------------------------------------------


def three_levels_a_side() -> OrderBook:
    book = OrderBook(BTC)
    book.set_quotes(
        "mm",
        quotes(("99.9", "1"), ("99.8", "2"), ("99.7", "3")),
        quotes(("100.1", "4"), ("100.2", "5"), ("100.3", "6")),
    )
    return book


def test_a_view_shows_the_top_levels_at_the_books_sequence() -> None:
    book = three_levels_a_side()
    view = DepthView(2, book.snapshot())
    assert view.snapshot() == book.snapshot(2)


def test_a_level_below_the_view_changes_nothing_it_shows() -> None:
    book = three_levels_a_side()
    view = DepthView(2, book.snapshot())
    assert view.apply(book.add_order("o1", BID, D("99.7"), D(1))) is None
    assert view.apply(book.add_order("o2", ASK, D("100.5"), D(1))) is None
    assert view.sequence == 1
    assert view.book_sequence == 3
    top = book.snapshot(2)
    assert view.snapshot() == BookSnapshot("BTC-PERP", 1, top.bids, top.asks)


def test_a_view_sends_a_level_that_enters_and_one_pushed_out() -> None:
    book = three_levels_a_side()
    view = DepthView(2, book.snapshot())
    gone = view.apply(
        book.set_quotes(
            "mm",
            quotes(("99.8", "2"), ("99.7", "3")),
            quotes(("100.1", "4"), ("100.2", "5"), ("100.3", "6")),
        )
        or pytest.fail("no delta")
    )
    assert gone == BookDelta("BTC-PERP", 1, 2, (change(BID, "99.9", "0"), change(BID, "99.7", "3")))
    pushed = view.apply(book.add_order("o1", ASK, D("100.0"), D(1)))
    assert pushed == BookDelta(
        "BTC-PERP", 2, 3, (change(ASK, "100.0", "1"), change(ASK, "100.2", "0"))
    )
    assert view.snapshot() == book.snapshot(2)


def test_a_view_deltas_chain_over_the_sequences_it_skips() -> None:
    book = three_levels_a_side()
    view = DepthView(1, book.snapshot())
    assert view.apply(book.add_order("o1", BID, D("99.8"), D(1))) is None
    shown = view.apply(book.add_order("o2", BID, D("99.9"), D(1)))
    assert shown == BookDelta("BTC-PERP", 1, 3, (change(BID, "99.9", "2"),))


def test_a_view_of_a_side_shorter_than_its_depth_shows_every_new_level() -> None:
    book = OrderBook(BTC)
    view = DepthView(3, book.snapshot())
    for n, price in enumerate(["99", "98", "97", "96"], start=1):
        shown = view.apply(book.add_order(f"o{n}", BID, D(price), D(1)))
        if n <= 3:
            assert shown is not None
            assert shown.changes == (change(BID, price, "1"),)
        else:
            assert shown is None
    assert view.snapshot().bids == book.snapshot(3).bids


def test_a_view_refuses_a_delta_that_does_not_follow() -> None:
    book = three_levels_a_side()
    view = DepthView(2, book.snapshot())
    book.add_order("o1", BID, D(99), D(1))
    with pytest.raises(SequenceGapError) as caught:
        view.apply(book.add_order("o2", BID, D(99), D(1)))
    assert (caught.value.code, caught.value.expected, caught.value.previous) == (
        "SEQUENCE_GAP",
        1,
        2,
    )
    with pytest.raises(ValueError, match="depth"):
        DepthView(0, book.snapshot())


# --- conflation -----------------------------------------------------------------------------------


def test_conflation_keeps_the_newest_size_of_each_level_from_the_subscribers_sequence() -> None:
    book = OrderBook(BTC)
    conflator = Conflator(book.sequence)
    assert conflator.flush() is None
    conflator.push(book.add_order("o1", BID, D(99), D(1)))
    conflator.push(book.add_order("o2", ASK, D(101), D(1)))
    conflator.push(book.add_order("o3", BID, D(99), D(2)))
    conflator.push(book.add_order("o4", BID, D(100), D(1)))
    assert len(conflator) == 3
    assert conflator.flush() == BookDelta(
        "BTC-PERP",
        0,
        4,
        (change(BID, "100", "1"), change(BID, "99", "3"), change(ASK, "101", "1")),
    )
    assert conflator.flush() is None
    assert conflator.sequence == 4


def test_a_level_that_came_and_went_while_pending_is_sent_as_a_removal() -> None:
    book = book_with(("o0", BID, "98", "1"))
    conflator = Conflator(book.sequence)
    conflator.push(book.add_order("o1", BID, D(99), D(1)))
    conflator.push(book.remove_order("o1"))
    assert conflator.flush() == BookDelta("BTC-PERP", 1, 3, (change(BID, "99", "0"),))


def test_conflation_refuses_a_delta_that_does_not_follow() -> None:
    book = OrderBook(BTC)
    conflator = Conflator(0)
    book.add_order("o1", BID, D(99), D(1))
    with pytest.raises(SequenceGapError):
        conflator.push(book.add_order("o2", BID, D(99), D(1)))


# --- simulated market makers ----------------------------------------------------------------------


def test_a_maker_quotes_a_ladder_on_tick_and_step_around_the_price() -> None:
    maker = MarketMaker(BTC, "mm", levels=5, spread_ticks=4, spacing_ticks=2, seed=1)
    bids, asks = maker.quote(D("65000.04"))
    assert list(bids) == [D("64999.8"), D("64999.6"), D("64999.4"), D("64999.2"), D("64999.0")]
    assert list(asks) == [D("65000.2"), D("65000.4"), D("65000.6"), D("65000.8"), D("65001.0")]
    for size in [*bids.values(), *asks.values()]:
        assert D("0.001") <= size <= D(1)
        assert size % BTC.step_size == 0
        assert size.as_tuple().exponent == -3


def test_a_maker_with_a_seed_quotes_the_same_every_run() -> None:
    prices = [D(100), D("100.3"), D("99.1")]
    runs = [[MarketMaker(BTC, "mm", seed=7).quote(p) for p in prices] for _ in range(2)]
    assert runs[0] == runs[1]


def test_a_small_move_changes_only_a_few_levels_of_the_book() -> None:
    maker = MarketMaker(BTC, "mm", levels=50, resize=0.05, seed=3)
    book = OrderBook(BTC)
    book.set_quotes("mm", *maker.quote(D(65000)))
    delta = book.set_quotes("mm", *maker.quote(D("65000.2")))
    assert delta is not None
    assert 4 <= len(delta.changes) < 20  # 2 levels in and out a side, and ~5% redrawn
    assert len(book.snapshot().bids) == len(book.snapshot().asks) == 50


def test_a_maker_without_resizing_and_without_a_move_changes_nothing() -> None:
    maker = MarketMaker(BTC, "mm", resize=0, seed=3)
    book = OrderBook(BTC)
    book.set_quotes("mm", *maker.quote(D(65000)))
    assert book.set_quotes("mm", *maker.quote(D("65000.01"))) is None


def test_a_makers_bids_stay_above_zero() -> None:
    bids, asks = MarketMaker(BTC, "mm", levels=10, spread_ticks=2, seed=1).quote(D("0.3"))
    assert list(bids) == [D("0.2"), D("0.1")]
    assert len(asks) == 10


@pytest.mark.parametrize(
    "arguments",
    [
        {"levels": 0},
        {"spread_ticks": 0},
        {"spacing_ticks": 0},
        {"min_size_steps": 0},
        {"min_size_steps": 5, "max_size_steps": 4},
        {"resize": 1.5},
    ],
)
def test_a_maker_refuses_parameters_that_make_no_ladder(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"must|chance"):
        MarketMaker(BTC, "mm", **arguments)


@pytest.mark.parametrize("price", ["0", "-1", "NaN"])
def test_a_maker_refuses_a_price_it_cannot_quote_around(price: str) -> None:
    with pytest.raises(ValueError, match="price"):
        MarketMaker(BTC, "mm").quote(D(price))


# --- payloads -------------------------------------------------------------------------------------


def test_the_snapshot_payload() -> None:
    snapshot = book_with(("o1", BID, "99.9", "1.5"), ("o2", ASK, "100.1", "2")).snapshot()
    payload = snapshot.to_payload()
    assert payload == {
        "market": "BTC-PERP",
        "sequence": 2,
        "bids": [{"price": "99.9", "size": "1.500"}],
        "asks": [{"price": "100.1", "size": "2.000"}],
    }
    assert BookSnapshot.from_payload(payload) == snapshot


def test_the_delta_payload() -> None:
    book = book_with(("o1", BID, "99.9", "1.5"))
    delta = book.remove_order("o1")
    payload = delta.to_payload()
    assert payload == {
        "market": "BTC-PERP",
        "previous": 1,
        "sequence": 2,
        "changes": [{"side": "BID", "price": "99.9", "size": "0"}],
    }
    assert BookDelta.from_payload(payload) == delta


def test_the_public_trade_payload() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    trade = PublicTrade("t1", "BTC-PERP", OrderSide.SELL, D("65000.1"), D("0.250"), at)
    payload = trade.to_payload()
    assert payload == {
        "id": "t1",
        "market": "BTC-PERP",
        "side": "SELL",
        "price": "65000.1",
        "size": "0.250",
        "at": "2026-01-02T03:04:05+00:00",
    }
    assert PublicTrade.from_payload(payload) == trade


# --- property: a client's copy equals the server's book -------------------------------------------

TEST = make_market("TEST-PERP", tick_size="0.5")
MAKERS = 2


class Client:
    """A subscriber as a JSON client holds the book: price text -> size text per side, from the
    payloads it was sent, applying a delta only if it follows the sequence it has."""

    def __init__(self, snapshot: BookSnapshot) -> None:
        payload = snapshot.to_payload()
        self.sequence: int = payload["sequence"]
        self.sides: dict[str, dict[str, str]] = {
            side: {level["price"]: level["size"] for level in payload[key]}
            for side, key in (("BID", "bids"), ("ASK", "asks"))
        }

    def apply(self, delta: BookDelta) -> None:
        payload = delta.to_payload()
        assert payload["previous"] == self.sequence, "a gap in the client's sequence"
        assert payload["sequence"] > payload["previous"]
        for level in payload["changes"]:
            if D(level["size"]) == 0:
                self.sides[level["side"]].pop(level["price"], None)
            else:
                self.sides[level["side"]][level["price"]] = level["size"]
        self.sequence = payload["sequence"]

    def levels(self, side: str) -> list[dict[str, str]]:
        best_first = sorted(self.sides[side], key=D, reverse=side == "BID")
        return [{"price": p, "size": self.sides[side][p]} for p in best_first]


def shown(snapshot: BookSnapshot) -> dict[str, list[dict[str, str]]]:
    payload = snapshot.to_payload()
    return {"BID": payload["bids"], "ASK": payload["asks"]}


def held(client: Client) -> dict[str, list[dict[str, str]]]:
    return {side: client.levels(side) for side in ("BID", "ASK")}


ticks = st.integers(180, 220)  # prices 90 to 110 on a 0.5 tick: makers and orders share levels
OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("quote"), st.integers(0, MAKERS - 1), ticks),
        st.tuples(st.just("withdraw"), st.integers(0, MAKERS - 1)),
        st.tuples(st.just("add"), st.sampled_from(BookSide), ticks, st.integers(1, 3)),
        st.tuples(st.just("reduce"), st.integers(0, 30), st.integers(1, 3)),
        st.tuples(st.just("remove"), st.integers(0, 30)),
        st.tuples(st.just("join")),
        st.tuples(st.just("flush")),
    ),
    max_size=60,
)


class Server:
    """The book, its makers and the orders resting in it (id -> size in steps)."""

    def __init__(self) -> None:
        self.book = OrderBook(TEST)
        self.makers = [
            MarketMaker(
                TEST, f"mm-{n}", levels=6, spread_ticks=2, max_size_steps=4, resize=0.3, seed=n
            )
            for n in range(MAKERS)
        ]
        self.orders: dict[str, int] = {}
        self.placed = 0

    def run(self, op: tuple[Any, ...]) -> BookDelta | None:
        """One operation on the book, and its delta."""
        kind, book = op[0], self.book
        if kind == "quote":
            maker = self.makers[op[1]]
            return book.set_quotes(maker.source, *maker.quote(TEST.tick_size * op[2]))
        if kind == "withdraw":
            return book.set_quotes(self.makers[op[1]].source, {}, {})
        if kind == "add":
            self.placed += 1
            order_id = f"o{self.placed}"
            self.orders[order_id] = op[3]
            return book.add_order(order_id, op[1], TEST.tick_size * op[2], TEST.step_size * op[3])
        if not self.orders:
            return None
        order_id = sorted(self.orders)[op[1] % len(self.orders)]
        if kind == "reduce" and op[2] < self.orders[order_id]:
            self.orders[order_id] -= op[2]
            return book.reduce_order(order_id, TEST.step_size * op[2])
        steps = self.orders.pop(order_id)
        if kind == "reduce":  # all of it
            return book.reduce_order(order_id, TEST.step_size * steps)
        return book.remove_order(order_id)


class Subscribers:
    """The clients that join at one point of the run: one sent a view's deltas as they come, one
    sent them conflated (flushed at random moments), one sent the deltas of a view that starts
    from the book as it is then."""

    def __init__(self, book: OrderBook, view: DepthView) -> None:
        self.direct = Client(view.snapshot())
        self.conflated = Client(view.snapshot())
        self.conflator = Conflator(view.sequence)
        self.late_view = DepthView(view.depth, book.snapshot())
        self.late = Client(self.late_view.snapshot())

    def send(self, delta: BookDelta, shown: BookDelta | None) -> None:
        if shown is not None:
            self.direct.apply(shown)
            self.conflator.push(shown)
        late = self.late_view.apply(delta)
        if late is not None:
            self.late.apply(late)

    def flush(self) -> None:
        merged = self.conflator.flush()
        if merged is not None:
            self.conflated.apply(merged)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(operations=OPERATIONS, depth=st.integers(1, 8))
def test_clients_that_apply_the_deltas_hold_the_servers_book(
    operations: list[tuple[Any, ...]], depth: int
) -> None:
    server = Server()
    book = server.book
    full = Client(book.snapshot())
    view = DepthView(depth, book.snapshot())  # the view runs from the start
    joined: Subscribers | None = None
    for op in [*operations, ("join",)]:
        if op[0] == "join":
            joined = joined or Subscribers(book, view)
        elif op[0] == "flush":
            if joined is not None:
                joined.flush()
        else:
            sequence = book.sequence
            delta = server.run(op)
            if delta is None:
                assert book.sequence == sequence
                continue
            assert (delta.previous, delta.sequence) == (sequence, sequence + 1)
            full.apply(delta)
            shown_delta = view.apply(delta)
            if joined is not None:
                joined.send(delta, shown_delta)
    assert joined is not None
    joined.flush()

    assert held(full) == shown(book.snapshot())
    assert full.sequence == book.sequence
    top = shown(book.snapshot(depth))
    assert shown(view.snapshot()) == top
    for client in (joined.direct, joined.conflated, joined.late):
        assert held(client) == top
    assert joined.direct.sequence == joined.conflated.sequence == view.sequence
