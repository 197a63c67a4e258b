"""The paper exchange against hand-computed cases, and accounting properties over random runs.

Markets from the factory: BTC-PERP (tick 0.1) and ETH-PERP (tick 0.01), step and minimum 0.001,
max leverage 20x, maintenance margin 3%, taker fee 0.05%. Accounts start with 10,000 USD at the
default 10x unless a test says otherwise.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.markets import MarketCatalog
from domain.paper_exchange import (
    DEFAULT_PAPER_BALANCE,
    Changes,
    Fill,
    Order,
    OrderError,
    OrderRequest,
    OrderSide,
    OrderStatus,
    OrderType,
    PaperAccount,
    PaperPosition,
    PlaceResult,
)
from domain.perps_trades import TradeError
from tests.domain.factories import make_market

D = Decimal
BUY, SELL = OrderSide.BUY, OrderSide.SELL
BTC = make_market("BTC-PERP", "0.1")
ETH = make_market("ETH-PERP", "0.01")
MARKETS = MarketCatalog([BTC, ETH])
AT = datetime(2024, 1, 1, tzinfo=UTC)
LATER = AT + timedelta(minutes=1)


def new_account(balance: str = "10000", markets: MarketCatalog = MARKETS) -> PaperAccount:
    return PaperAccount("alice", markets, initial_balance=D(balance))


def dec(value: str | None) -> Decimal | None:
    return None if value is None else D(value)


def market(
    account: PaperAccount,
    side: OrderSide,
    quantity: str,
    mark: str,
    *,
    symbol: str = "BTC-PERP",
    tp: str | None = None,
    sl: str | None = None,
    client_id: str | None = None,
    at: datetime = AT,
) -> PlaceResult:
    request = OrderRequest(
        symbol,
        side,
        OrderType.MARKET,
        D(quantity),
        take_profit=dec(tp),
        stop_loss=dec(sl),
        client_order_id=client_id,
    )
    return account.place_order(request, {symbol: D(mark)}, at)


def limit(
    account: PaperAccount,
    side: OrderSide,
    quantity: str,
    price: str,
    mark: str | None,
    *,
    symbol: str = "BTC-PERP",
    tp: str | None = None,
    sl: str | None = None,
) -> PlaceResult:
    request = OrderRequest(
        symbol,
        side,
        OrderType.LIMIT,
        D(quantity),
        price=D(price),
        take_profit=dec(tp),
        stop_loss=dec(sl),
    )
    prices = {} if mark is None else {symbol: D(mark)}
    return account.place_order(request, prices, AT)


def refused(account: PaperAccount, request: OrderRequest, mark: str | None = "50000") -> OrderError:
    prices = {} if mark is None else {request.symbol: D(mark)}
    before = account.to_payload()
    with pytest.raises(OrderError) as error:
        account.place_order(request, prices, AT)
    assert account.to_payload() == before, "a refused order must change nothing"
    return error.value


def request(
    quantity: str = "1",
    *,
    side: OrderSide = BUY,
    type: OrderType = OrderType.MARKET,
    symbol: str = "BTC-PERP",
    price: str | None = None,
    tp: str | None = None,
    sl: str | None = None,
    client_id: str | None = None,
) -> OrderRequest:
    return OrderRequest(
        symbol, side, type, D(quantity), dec(price), dec(tp), dec(sl), client_order_id=client_id
    )


def size_of(account: PaperAccount, symbol: str = "BTC-PERP") -> Decimal:
    view = account.position(symbol, {})
    return D(0) if view is None else view.position.size


# --- fills and fees -----------------------------------------------------------------------------


def test_market_buy_fills_at_the_mark_with_the_taker_fee() -> None:
    account = new_account()
    result = market(account, BUY, "1", "50000")
    assert not result.duplicate
    order = result.order
    assert (order.status, order.filled, order.average_price) == (OrderStatus.FILLED, D(1), D(50000))
    assert order.price is None
    (fill,) = result.changes.fills
    assert (fill.order_id, fill.side, fill.quantity, fill.price) == (order.id, BUY, D(1), D(50000))
    assert fill.fee == D(25)  # 0.05% of 50,000
    assert (fill.pnl, fill.realized_pnl, fill.notional) == (D(0), D(-25), D(50000))
    (position,) = result.changes.positions
    assert (position.size, position.entry_price, position.realized_pnl) == (D(1), D(50000), D(-25))
    assert (position.opened_at, position.updated_at) == (AT, AT)
    assert account.wallet_balance == D("9975")
    assert account.realized_pnl == D("-25")
    assert account.total_fees_paid == D("25")
    assert account.revision == 1


def test_fees_round_up_to_six_places() -> None:
    account = new_account()
    # 0.001 * 50,000.1 * 0.0005 = 0.02500005 -> 0.025001
    fill = market(account, BUY, "0.001", "50000.1").changes.fills[0]
    assert fill.fee == D("0.025001")
    assert account.wallet_balance == D("9999.974999")


def test_short_sell_opens_a_negative_position() -> None:
    account = new_account()
    market(account, SELL, "0.5", "3000", symbol="ETH-PERP")
    view = account.position("ETH-PERP", {"ETH-PERP": D("2900")})
    assert view is not None
    assert view.position.size == D("-0.5")
    assert view.unrealized_pnl == D("50")  # -0.5 * (2,900 - 3,000)
    assert account.total_fees_paid == D("0.75")  # 0.5 * 3,000 * 0.0005


# --- average-cost PnL ---------------------------------------------------------------------------


def test_buy_buy_more_partial_sell_and_flip_by_hand() -> None:
    account = new_account("100000")
    market(account, BUY, "1", "50000")  # fee 25
    # Buy more: the entry moves to the size-weighted average.
    result = market(account, BUY, "1", "52000")  # fee 26
    (position,) = result.changes.positions
    assert (position.size, position.entry_price) == (D(2), D(51000))
    assert position.realized_pnl == D(-51)
    # Partial sell: realizes 0.5 * (53,000 - 51,000); the average stays.
    result = market(account, SELL, "0.5", "53000")  # fee 13.25
    (fill,) = result.changes.fills
    assert (fill.pnl, fill.fee, fill.realized_pnl) == (D(1000), D("13.25"), D("986.75"))
    (position,) = result.changes.positions
    assert (position.size, position.entry_price) == (D("1.5"), D(51000))
    assert position.realized_pnl == D("935.75")
    # Flip: sell 2.5 at 50,000 closes 1.5 (PnL -1,500) and opens a 1 short at 50,000.
    result = market(account, SELL, "2.5", "50000")  # fee 62.5: 37.5 closing, 25 opening
    (fill,) = result.changes.fills
    assert (fill.pnl, fill.fee) == (D(-1500), D("62.5"))
    (position,) = result.changes.positions
    assert (position.size, position.entry_price) == (D(-1), D(50000))
    assert position.realized_pnl == D(-25)  # a new position: only its share of the fee
    assert (position.opened_at, position.updated_at) == (AT, AT)
    # Totals: PnL 1,000 - 1,500, fees 25 + 26 + 13.25 + 62.5.
    assert account.total_fees_paid == D("126.75")
    assert account.realized_pnl == D("-626.75")
    assert account.wallet_balance == D("99373.25")


def test_closing_the_whole_position_reports_it_flat_and_forgets_it() -> None:
    account = new_account()
    market(account, BUY, "1", "50000")
    result = market(account, SELL, "1", "51000")
    (position,) = result.changes.positions
    assert position.size == 0
    assert position.side is None
    assert not position.is_open
    assert position.realized_pnl == D("949.5")  # -25 + 1,000 - 25.5
    assert account.positions({}) == []
    assert account.wallet_balance == D("10949.5")


def test_a_closed_position_still_has_a_dashboard_view() -> None:
    account = new_account()
    market(account, BUY, "1", "50000")
    (closed,) = market(account, SELL, "1", "51000").changes.positions
    payload = account.view(closed, {"BTC-PERP": D(51000)}).to_payload()
    assert (payload["side"], payload["size"], payload["unrealizedPnl"]) == (None, "0", "0")
    assert (payload["liquidationPrice"], payload["margin"]) == (None, "0")
    assert payload["realizedPnl"] == "949.500000"


def test_a_flip_through_a_closed_position_splits_the_fee_by_quantity() -> None:
    account = new_account()
    market(account, BUY, "0.3", "50000")
    # 1 at 50,000: fee 25; 0.3 closes (7.5), 0.7 opens (17.5).
    (position,) = market(account, SELL, "1", "50000").changes.positions
    assert (position.size, position.entry_price, position.realized_pnl) == (
        D("-0.7"),
        D(50000),
        D("-17.5"),
    )


def test_average_entry_rounds_against_the_trader() -> None:
    long = new_account("1000000")
    market(long, BUY, "1", "50000")
    market(long, BUY, "2", "50000.1")
    # (50,000 + 100,000.2) / 3 = 50,000.0666...: a long's entry rounds up, a short's down.
    assert long.position("BTC-PERP", {}) is not None
    assert long.positions({})[0].position.entry_price == D("50000.0666666667")
    short = new_account("1000000")
    market(short, SELL, "1", "50000")
    market(short, SELL, "2", "50000.1")
    assert short.positions({})[0].position.entry_price == D("50000.0666666666")


def test_realized_pnl_rounds_down() -> None:
    account = new_account("1000000")
    market(account, SELL, "1", "50000")
    market(account, SELL, "2", "50000.1")  # entry 50,000.0666666666
    # Buying back 0.001 at 50,000 gains 0.001 * 0.0666666666 = 0.0000666...: 0.000066.
    fill = market(account, BUY, "0.001", "50000").changes.fills[0]
    assert fill.pnl == D("0.000066")
    # A loss rounds away from zero: 0.001 * (50,000 - 50,000.1 + ...) on the short.
    fill = market(account, BUY, "0.001", "50000.1").changes.fills[0]
    assert fill.pnl == D("-0.000034")  # -0.001 * 0.0333333334 = -0.0000333...


# --- balance ------------------------------------------------------------------------------------


def test_balance_totals_after_a_sequence() -> None:
    account = new_account("100000")
    market(account, BUY, "1", "50000")  # fee 25
    market(account, SELL, "10", "3000", symbol="ETH-PERP")  # fee 15
    market(account, SELL, "0.5", "52000")  # PnL 1,000, fee 13
    prices = {"BTC-PERP": D("51000"), "ETH-PERP": D("3100")}
    balance = account.balance(prices)
    assert balance.wallet_balance == D("100947")  # 100,000 - 25 - 15 + 1,000 - 13
    assert balance.realized_pnl == D("947")
    assert balance.total_fees_paid == D("53")
    # BTC 0.5 * (51,000 - 50,000) = 500; ETH -10 * (3,100 - 3,000) = -1,000.
    assert balance.unrealized_pnl == D("-500")
    assert balance.net_balance == D("100447")
    assert balance.margin_used == D("5500")  # 0.5 * 50,000 / 10 + 10 * 3,000 / 10
    assert balance.order_margin == D(0)
    assert balance.available_balance == D("94947")
    assert balance.to_payload() == {
        "currency": "USD",
        "walletBalance": "100947.000000",
        "unrealizedPnl": "-500.000000",
        "realizedPnl": "947.000000",
        "totalFeesPaid": "53.000000",
        "netBalance": "100447.000000",
        "marginUsed": "5500.000000",
        "orderMargin": "0",
        "availableBalance": "94947.000000",
    }


def test_a_position_without_a_mark_counts_no_unrealized_pnl() -> None:
    account = new_account()
    market(account, BUY, "1", "50000")
    balance = account.balance({})
    assert (balance.unrealized_pnl, balance.net_balance) == (D(0), D("9975"))
    view = account.positions({})[0]
    assert view.mark is None
    assert view.unrealized_pnl == 0


def test_unrealized_pnl_rounds_down() -> None:
    account = new_account()
    market(account, BUY, "0.001", "50000")
    view = account.position("BTC-PERP", {"BTC-PERP": D("49999.9999")})
    assert view is not None
    assert view.unrealized_pnl == D("-0.000001")  # -0.0000001 rounded away from zero


def test_new_account_defaults() -> None:
    account = PaperAccount("bob", MARKETS)
    assert account.initial_balance == DEFAULT_PAPER_BALANCE == D(10_000)
    balance = account.balance({})
    assert balance.wallet_balance == balance.net_balance == balance.available_balance == D(10_000)
    assert account.leverage("BTC-PERP") == D(10)
    capped = PaperAccount("bob", MARKETS, default_leverage=D(50))
    assert capped.leverage("BTC-PERP") == D(20)  # the market's maximum


@pytest.mark.parametrize(
    ("balance", "leverage"),
    [("-1", "10"), ("NaN", "10"), ("1e15", "10"), ("0.0000001", "10"), ("1", "0.5")],
)
def test_constructor_refuses_bad_settings(balance: str, leverage: str) -> None:
    with pytest.raises(ValueError, match=r"must be|at most"):
        PaperAccount("bob", MARKETS, initial_balance=D(balance), default_leverage=D(leverage))


# --- positions, leverage, liquidation price ------------------------------------------------------


def test_position_view_and_payload() -> None:
    account = new_account()
    market(account, BUY, "0.5", "50000")
    view = account.position("BTC-PERP", {"BTC-PERP": D("50400")})
    assert view is not None
    assert (view.leverage, view.margin, view.unrealized_pnl) == (D(10), D(2500), D(200))
    # entry * (1 - 1/10) / (1 - 0.03) = 46,391.7525773195876..., rounded up
    assert view.liquidation_price == D("46391.7525773196")
    assert view.to_payload() == {
        "symbol": "BTC-PERP",
        "side": "LONG",
        "size": "0.5",
        "entryPrice": "50000",
        "markPrice": "50400",
        "unrealizedPnl": "200.000000",
        "realizedPnl": "-12.500000",
        "leverage": "10",
        "margin": "2500.000000",
        "liquidationPrice": "46391.7525773196",
        "openedAt": AT.isoformat(),
        "updatedAt": AT.isoformat(),
    }


def test_liquidation_price_matches_domain_md_check_values() -> None:
    btc = replace(BTC, maintenance_margin_rate=D("0.025"))
    markets = MarketCatalog([btc])
    long, short = new_account("100000", markets), new_account("100000", markets)
    market(long, BUY, "1", "50000")
    market(short, SELL, "1", "50000")
    long_price = long.positions({})[0].liquidation_price
    short_price = short.positions({})[0].liquidation_price
    assert long_price == D("46153.8461538462")  # 46,153.85; rounded up for a long
    assert short_price == D("53658.5365853658")  # 53,658.54; rounded down for a short
    assert short.positions({})[0].to_payload()["side"] == "SHORT"


def test_one_x_long_has_no_liquidation_price() -> None:
    account = PaperAccount("alice", MARKETS, initial_balance=D(100000), default_leverage=D(1))
    market(account, BUY, "1", "50000")
    assert account.positions({})[0].liquidation_price is None


# --- limit orders -------------------------------------------------------------------------------


def test_limit_buy_rests_reserving_margin_then_fills_when_crossed() -> None:
    account = new_account()
    result = limit(account, BUY, "1", "49000", "50000")
    order = result.order
    assert (order.status, order.type, order.price, order.filled) == (
        OrderStatus.NEW,
        OrderType.LIMIT,
        D(49000),
        D(0),
    )
    assert result.changes.fills == ()
    assert result.changes.positions == ()
    assert order.reserved_margin == D("4924.5")  # 49,000 / 10 + fee 24.5
    balance = account.balance({"BTC-PERP": D(50000)})
    assert (balance.order_margin, balance.available_balance) == (D("4924.5"), D("5075.5"))
    assert account.open_orders() == [order]

    assert account.on_price("BTC-PERP", D("49000.1"), LATER) == Changes()
    assert account.revision == 1  # nothing changed, nothing bumped

    changes = account.on_price("BTC-PERP", D("48800"), LATER)
    (filled,) = changes.orders
    assert (filled.status, filled.filled, filled.average_price) == (
        OrderStatus.FILLED,
        D(1),
        D(49000),  # at its limit, not at the price that crossed it
    )
    assert filled.updated_at == LATER
    (fill,) = changes.fills
    assert (fill.price, fill.fee, fill.at) == (D(49000), D("24.5"), LATER)
    (position,) = changes.positions
    assert (position.size, position.entry_price) == (D(1), D(49000))
    assert account.open_orders() == []
    assert account.balance({"BTC-PERP": D(49000)}).order_margin == 0
    assert account.wallet_balance == D("9975.5")
    assert account.revision == 2


def test_limit_sell_fills_at_or_above_its_price() -> None:
    account = new_account()
    limit(account, SELL, "2", "3100", "3000", symbol="ETH-PERP")
    assert account.on_price("ETH-PERP", D("3099.99"), LATER) == Changes()
    assert account.on_price("BTC-PERP", D("3100"), LATER) == Changes()  # another symbol
    (fill,) = account.on_price("ETH-PERP", D("3100"), LATER).fills  # touching fills
    assert (fill.side, fill.quantity, fill.price) == (SELL, D(2), D(3100))
    assert size_of(account, "ETH-PERP") == D(-2)


def test_marketable_limit_fills_at_once_at_the_mark() -> None:
    account = new_account()
    result = limit(account, BUY, "1", "51000", "50000")
    assert result.order.status is OrderStatus.FILLED
    assert result.order.average_price == D(50000)
    assert result.order.reserved_margin == 0
    assert result.changes.fills[0].price == D(50000)


def test_limit_without_a_mark_rests() -> None:
    account = new_account()
    order = limit(account, SELL, "1", "51000", None).order
    assert order.status is OrderStatus.NEW
    assert account.on_price("BTC-PERP", D(51000), LATER).fills[0].price == D(51000)


def test_resting_limits_fill_oldest_first() -> None:
    account = new_account("100000")
    first = limit(account, BUY, "0.1", "49000", "50000").order
    second = limit(account, BUY, "0.2", "49500", "50000").order
    changes = account.on_price("BTC-PERP", D(48000), LATER)
    assert [f.order_id for f in changes.fills] == [first.id, second.id]
    assert size_of(account) == D("0.3")


def test_canceling_a_resting_limit_releases_its_margin() -> None:
    account = new_account()
    order = limit(account, BUY, "1", "49000", "50000").order
    changes = account.cancel_order(order.id, LATER)
    (canceled,) = changes.orders
    assert (canceled.status, canceled.updated_at) == (OrderStatus.CANCELED, LATER)
    assert account.balance({}).available_balance == D(10000)
    assert account.on_price("BTC-PERP", D(40000), LATER) == Changes()
    assert account.order_history() == [canceled]


# --- take-profit and stop-loss ------------------------------------------------------------------


def test_market_entry_with_tp_and_sl_arms_two_reduce_only_children() -> None:
    account = new_account()
    result = market(account, BUY, "1", "50000", tp="55000", sl="48000")
    entry, tp, sl = result.changes.orders
    assert entry == result.order
    assert entry.status is OrderStatus.FILLED
    assert (entry.take_profit, entry.stop_loss) == (D(55000), D(48000))
    for child, kind, level in (
        (tp, OrderType.TAKE_PROFIT, 55000),
        (sl, OrderType.STOP_LOSS, 48000),
    ):
        assert (child.type, child.side, child.price, child.quantity) == (kind, SELL, D(level), D(1))
        assert child.reduce_only
        assert child.active
        assert child.status is OrderStatus.NEW
        assert child.parent_id == entry.id
        assert child.reserved_margin == 0
    assert account.children(entry.id) == [tp, sl]
    assert account.open_orders() == [tp, sl]
    assert account.balance({}).order_margin == 0


def test_take_profit_triggers_and_cancels_the_stop_loss() -> None:
    account = new_account()
    result = market(account, BUY, "1", "50000", tp="55000", sl="48000")
    _, tp, sl = result.changes.orders
    assert account.on_price("BTC-PERP", D(54999.9), LATER) == Changes()
    changes = account.on_price("BTC-PERP", D(55500), LATER)
    (fill,) = changes.fills
    assert (fill.order_id, fill.side, fill.quantity) == (tp.id, SELL, D(1))
    assert fill.price == D(55500)  # at the price that triggered it
    assert (fill.pnl, fill.fee) == (D(5500), D("27.75"))
    statuses = {o.id: o.status for o in changes.orders}
    assert statuses == {tp.id: OrderStatus.FILLED, sl.id: OrderStatus.CANCELED}
    (position,) = changes.positions
    assert position.size == 0
    assert position.realized_pnl == D("5447.25")  # -25 + 5,500 - 27.75
    assert account.wallet_balance == D("15447.25")
    assert account.open_orders() == []


def test_stop_loss_triggers_and_cancels_the_take_profit() -> None:
    account = new_account()
    _, tp, sl = market(account, BUY, "1", "50000", tp="55000", sl="48000").changes.orders
    changes = account.on_price("BTC-PERP", D(47500), LATER)  # a gap past the stop
    (fill,) = changes.fills
    assert (fill.order_id, fill.price, fill.pnl, fill.fee) == (
        sl.id,
        D(47500),
        D(-2500),
        D("23.75"),
    )
    assert {o.id: o.status for o in changes.orders} == {
        sl.id: OrderStatus.FILLED,
        tp.id: OrderStatus.CANCELED,
    }
    assert account.wallet_balance == D("7451.25")
    assert account.realized_pnl == D("-2548.75")


def test_short_entry_stop_loss_triggers_on_touch_above() -> None:
    account = new_account()
    _, tp, sl = market(account, SELL, "1", "50000", tp="45000", sl="52000").changes.orders
    assert (tp.side, sl.side) == (BUY, BUY)
    assert account.on_price("BTC-PERP", D("51999.9"), LATER) == Changes()
    (fill,) = account.on_price("BTC-PERP", D(52000), LATER).fills
    assert (fill.order_id, fill.pnl) == (sl.id, D(-2000))
    assert account.order(tp.id) is not None
    assert account.order(tp.id).status is OrderStatus.CANCELED  # type: ignore[union-attr]


def test_short_entry_take_profit_triggers_below() -> None:
    account = new_account()
    _, tp, _sl = market(account, SELL, "1", "50000", tp="45000", sl="52000").changes.orders
    changes = account.on_price("BTC-PERP", D(45000), LATER)
    assert changes.fills[0].order_id == tp.id
    assert changes.fills[0].pnl == D(5000)
    assert size_of(account) == 0


def test_only_a_take_profit_or_only_a_stop_loss() -> None:
    account = new_account()
    result = market(account, BUY, "0.1", "50000", sl="49000")
    assert [o.type for o in result.changes.orders] == [OrderType.MARKET, OrderType.STOP_LOSS]
    assert account.on_price("BTC-PERP", D(60000), LATER) == Changes()
    assert len(account.on_price("BTC-PERP", D(49000), LATER).fills) == 1


def test_limit_entry_children_wait_for_the_entry_then_trigger_in_the_same_tick() -> None:
    account = new_account()
    result = limit(account, BUY, "1", "49000", "50000", tp="52000", sl="48500")
    entry, tp, sl = result.changes.orders
    assert not tp.active
    assert not sl.active
    assert account.on_price("BTC-PERP", D(53000), LATER) == Changes()  # pending: no trigger
    # A jump to 47,000 fills the entry at its limit, arms the children and stops it out.
    changes = account.on_price("BTC-PERP", D(47000), LATER)
    assert [f.order_id for f in changes.fills] == [entry.id, sl.id]
    assert [f.price for f in changes.fills] == [D(49000), D(47000)]
    assert changes.fills[1].pnl == D(-2000)
    assert {o.id: o.status for o in changes.orders} == {
        entry.id: OrderStatus.FILLED,
        sl.id: OrderStatus.FILLED,
        tp.id: OrderStatus.CANCELED,
    }
    assert size_of(account) == 0


def test_limit_entry_children_arm_when_it_fills() -> None:
    account = new_account()
    _, tp, sl = limit(account, BUY, "1", "49000", "50000", tp="52000", sl="48500").changes.orders
    changes = account.on_price("BTC-PERP", D(49000), LATER)
    armed = {o.id: o for o in changes.orders}
    assert armed[tp.id].active
    assert armed[sl.id].active
    assert armed[tp.id].updated_at == LATER
    assert len(account.on_price("BTC-PERP", D(52000), LATER).fills) == 1
    assert account.order(sl.id).status is OrderStatus.CANCELED  # type: ignore[union-attr]


def test_canceling_an_unfilled_entry_cancels_its_children() -> None:
    account = new_account()
    entry, tp, sl = limit(
        account, BUY, "1", "49000", "50000", tp="52000", sl="48500"
    ).changes.orders
    changes = account.cancel_order(entry.id, LATER)
    assert [(o.id, o.status) for o in changes.orders] == [
        (entry.id, OrderStatus.CANCELED),
        (tp.id, OrderStatus.CANCELED),
        (sl.id, OrderStatus.CANCELED),
    ]
    assert account.open_orders() == []


def test_canceling_one_armed_child_keeps_the_other() -> None:
    account = new_account()
    _, tp, sl = market(account, BUY, "1", "50000", tp="55000", sl="48000").changes.orders
    (canceled,) = account.cancel_order(tp.id, LATER).orders
    assert canceled.id == tp.id
    assert account.open_orders() == [sl]
    assert account.on_price("BTC-PERP", D(60000), LATER) == Changes()
    assert account.on_price("BTC-PERP", D(48000), LATER).fills[0].order_id == sl.id


def test_closing_the_position_another_way_cancels_both_children() -> None:
    account = new_account()
    _, tp, sl = market(account, BUY, "1", "50000", tp="55000", sl="48000").changes.orders
    changes = market(account, SELL, "1", "51000").changes
    assert {o.id: o.status for o in changes.orders if o.id != changes.fills[0].order_id} == {
        tp.id: OrderStatus.CANCELED,
        sl.id: OrderStatus.CANCELED,
    }
    assert account.open_orders() == []


def test_flipping_the_position_cancels_the_old_sides_children() -> None:
    account = new_account()
    _, _tp, _sl = market(account, BUY, "1", "50000", tp="55000", sl="48000").changes.orders
    market(account, SELL, "1.5", "50000")
    assert account.open_orders() == []
    assert account.on_price("BTC-PERP", D(47000), LATER) == Changes()
    assert size_of(account) == D("-0.5")


def test_a_reduced_position_is_closed_by_a_child_only_as_far_as_it_goes() -> None:
    account = new_account()
    _, tp, _ = market(account, BUY, "1", "50000", tp="55000", sl="48000").changes.orders
    market(account, SELL, "0.4", "50000")  # children stay
    assert len(account.open_orders()) == 2
    changes = account.on_price("BTC-PERP", D(55000), LATER)
    (fill,) = changes.fills
    assert fill.quantity == D("0.6")
    filled = account.order(tp.id)
    assert filled is not None
    assert (filled.status, filled.quantity, filled.filled) == (OrderStatus.FILLED, D(1), D("0.6"))
    assert size_of(account) == 0


def test_children_cover_the_entry_not_a_larger_position() -> None:
    account = new_account("100000")
    market(account, BUY, "1", "50000")
    market(account, BUY, "0.5", "50000", tp="55000", sl="48000")
    (fill,) = account.on_price("BTC-PERP", D(56000), LATER).fills
    assert fill.quantity == D("0.5")
    assert size_of(account) == D(1)


def test_children_of_a_flip_cover_only_the_new_position() -> None:
    account = new_account("100000")
    market(account, BUY, "1", "50000")
    result = market(account, SELL, "1.5", "50000", tp="45000", sl="52000")
    children = [o for o in result.changes.orders if o.parent_id == result.order.id]
    assert [c.quantity for c in children] == [D("0.5"), D("0.5")]


def test_children_of_an_entry_that_only_reduces_are_canceled_when_it_fills() -> None:
    account = new_account()
    market(account, BUY, "1", "50000")
    # A SELL's TP/SL protect a short; this sell leaves a long, so they have nothing to protect.
    result = market(account, SELL, "0.5", "50000", tp="45000", sl="52000")
    children = [o for o in result.changes.orders if o.parent_id == result.order.id]
    assert [c.status for c in children] == [OrderStatus.CANCELED, OrderStatus.CANCELED]
    assert size_of(account) == D("0.5")


def test_two_pairs_on_one_symbol_the_first_trigger_ends_both() -> None:
    account = new_account("100000")
    market(account, BUY, "1", "50000", tp="56000", sl="48000")
    market(account, BUY, "1", "50000", tp="55000", sl="47000")
    changes = account.on_price("BTC-PERP", D(57000), LATER)
    assert [f.quantity for f in changes.fills] == [D(1), D(1)]  # both TPs, oldest first
    assert account.open_orders() == []
    assert size_of(account) == 0


# --- validation ---------------------------------------------------------------------------------


def test_unknown_symbol() -> None:
    error = refused(new_account(), request(symbol="DOGE-PERP"))
    assert (error.code, str(error)) == ("UNKNOWN_SYMBOL", "unknown symbol 'DOGE-PERP'")


@pytest.mark.parametrize("kind", [OrderType.TAKE_PROFIT, OrderType.STOP_LOSS])
def test_tp_and_sl_types_are_not_placed_alone(kind: OrderType) -> None:
    error = refused(new_account(), request(type=kind, price="55000"))
    assert error.code == "INVALID_ORDER_TYPE"
    assert str(error) == "take-profit and stop-loss are placed with a MARKET or LIMIT entry order"


@pytest.mark.parametrize(
    ("quantity", "message"),
    [
        ("0", "quantity must be a positive number"),
        ("-1", "quantity must be a positive number"),
        ("NaN", "quantity must be a positive number"),
        ("sNaN", "quantity must be a positive number"),
        ("Infinity", "quantity must be a positive number"),
        ("1E+15", "quantity must be below 1000000000000000"),
        ("0.0009", "quantity 0.0009 is below the minimum 0.001 of BTC-PERP"),
        ("0.0015", "quantity 0.0015 is not a multiple of BTC-PERP's step 0.001"),
    ],
)
def test_invalid_quantity(quantity: str, message: str) -> None:
    error = refused(new_account(), request(quantity))
    assert (error.code, str(error)) == ("INVALID_QUANTITY", message)


@pytest.mark.parametrize(
    ("type", "price", "message"),
    [
        (OrderType.LIMIT, None, "a limit order needs a price"),
        (OrderType.LIMIT, "0", "the limit price must be a positive number"),
        (OrderType.LIMIT, "-49000", "the limit price must be a positive number"),
        (OrderType.LIMIT, "NaN", "the limit price must be a positive number"),
        (OrderType.LIMIT, "1E+15", "the limit price must be below 1000000000000000"),
        (
            OrderType.LIMIT,
            "49000.05",
            "the limit price 49000.05 is not a multiple of BTC-PERP's tick 0.1",
        ),
        (OrderType.MARKET, "50000", "a market order takes no price; leave it out"),
    ],
)
def test_invalid_price(type: OrderType, price: str | None, message: str) -> None:
    error = refused(new_account(), request(type=type, price=price))
    assert (error.code, str(error)) == ("INVALID_PRICE", message)


@pytest.mark.parametrize("mark", [None, "0", "-1", "NaN"])
def test_market_order_without_a_price(mark: str | None) -> None:
    error = refused(new_account(), request(), mark=mark)
    assert (error.code, str(error)) == ("PRICE_UNAVAILABLE", "BTC-PERP has no price yet")


@pytest.mark.parametrize(
    ("side", "tp", "message"),
    [
        (BUY, "49000", "a BUY order's take-profit must be above its price 50000"),
        (BUY, "50000", "a BUY order's take-profit must be above its price 50000"),
        (SELL, "51000", "a SELL order's take-profit must be below its price 50000"),
        (SELL, "50000", "a SELL order's take-profit must be below its price 50000"),
        (BUY, "0", "the take-profit must be a positive number"),
        (BUY, "55000.01", "the take-profit 55000.01 is not a multiple of BTC-PERP's tick 0.1"),
    ],
)
def test_invalid_take_profit(side: OrderSide, tp: str, message: str) -> None:
    error = refused(new_account(), request(side=side, tp=tp))
    assert (error.code, str(error)) == ("INVALID_TAKE_PROFIT", message)


@pytest.mark.parametrize(
    ("side", "sl", "message"),
    [
        (BUY, "51000", "a BUY order's stop-loss must be below its price 50000"),
        (BUY, "50000", "a BUY order's stop-loss must be below its price 50000"),
        (SELL, "49000", "a SELL order's stop-loss must be above its price 50000"),
        (SELL, "50000", "a SELL order's stop-loss must be above its price 50000"),
        (SELL, "-1", "the stop-loss must be a positive number"),
        (SELL, "Infinity", "the stop-loss must be a positive number"),
        (SELL, "1E+15", "the stop-loss must be below 1000000000000000"),
    ],
)
def test_invalid_stop_loss(side: OrderSide, sl: str, message: str) -> None:
    error = refused(new_account(), request(side=side, sl=sl))
    assert (error.code, str(error)) == ("INVALID_STOP_LOSS", message)


def test_a_resting_limits_tp_and_sl_are_checked_against_its_limit_price() -> None:
    account = new_account()
    # Below the mark (50,000) but above the limit: wrong side of the price the entry fills at.
    error = refused(account, request(type=OrderType.LIMIT, price="49000", sl="49500"))
    assert str(error) == "a BUY order's stop-loss must be below its price 49000"
    assert limit(account, BUY, "1", "49000", "50000", tp="49500").order.status is OrderStatus.NEW


def test_a_marketable_limits_tp_and_sl_are_checked_against_the_mark() -> None:
    error = refused(new_account(), request(type=OrderType.LIMIT, price="51000", sl="50500"))
    assert str(error) == "a BUY order's stop-loss must be below its price 50000"


def test_insufficient_balance_for_a_market_order() -> None:
    error = refused(new_account(), request("2"))  # margin 10,000 + fee 50
    assert error.code == "INSUFFICIENT_BALANCE"
    assert str(error) == (
        "the order needs 10050.000000 USD of margin and fees; 10000 USD is available"
    )


def test_an_order_that_just_fits_is_accepted() -> None:
    account = new_account()
    market(account, BUY, "1.99", "50000")  # margin 9,950 + fee 49.75 = 9,999.75
    assert account.balance({"BTC-PERP": D(50000)}).available_balance == D("0.25")


def test_insufficient_balance_for_a_resting_limit_order() -> None:
    account = new_account()
    limit(account, BUY, "1", "49000", "50000")  # reserves 4,924.5
    error = refused(account, request("1.1", type=OrderType.LIMIT, price="48000"))
    assert error.code == "INSUFFICIENT_BALANCE"
    assert str(error) == (
        "the order needs 5306.400000 USD of margin and fees; 5075.500000 USD is available"
    )


def test_unrealized_losses_reduce_what_is_available() -> None:
    account = new_account()
    market(account, BUY, "1", "50000")
    # At 46,000: net 9,975 - 4,000 = 5,975, margin 5,000: 975 available.
    assert account.balance({"BTC-PERP": D(46000)}).available_balance == D(975)
    error = refused(account, request("0.22"), mark="46000")  # 1,012 + fee 5.06
    assert str(error) == (
        "the order needs 1017.060000 USD of margin and fees; 975.000000 USD is available"
    )
    market(account, BUY, "0.2", "46000")  # 920 + fee 4.6 fits
    # The entry averages up to 49,333.3333333334 (rounded against the long).
    assert account.positions({})[0].position.entry_price == D("49333.3333333334")


def test_a_reducing_order_is_accepted_even_when_underwater() -> None:
    account = new_account()
    market(account, BUY, "1.99", "50000")
    assert account.balance({"BTC-PERP": D(45000)}).available_balance < 0
    refused(account, request("0.001"), mark="45000")  # more exposure: refused
    result = market(account, SELL, "1.99", "45000")
    assert result.changes.fills[0].pnl == D(-9950)
    # 10,000 - 49.75 - 9,950 - 44.775: nothing liquidates a paper account, it can go negative.
    assert account.wallet_balance == D("-44.525")


def test_the_opening_part_of_a_flip_needs_margin() -> None:
    account = new_account()
    market(account, BUY, "1", "50000")
    # Selling 3 closes 1 and opens a 2 short: 10,000 margin + 75 fee > 4,975 available.
    assert refused(account, request("3", side=SELL)).code == "INSUFFICIENT_BALANCE"
    market(account, SELL, "1.9", "50000")  # opens 0.9: 4,500 + 47.5 fits
    assert size_of(account) == D("-0.9")


def test_errors_are_trade_errors() -> None:
    error = refused(new_account(), request("0"))
    assert isinstance(error, TradeError)
    assert isinstance(error, ValueError)


# --- idempotency --------------------------------------------------------------------------------


def test_same_client_order_id_twice_places_one_order() -> None:
    account = new_account()
    first = market(account, BUY, "1", "50000", tp="55000", client_id="req-1")
    second = market(account, BUY, "1", "50500", tp="55000", client_id="req-1")
    assert second.duplicate
    assert not first.duplicate
    assert second.order == first.order
    assert second.changes == Changes()
    assert not second.changes
    assert size_of(account) == D(1)
    assert account.wallet_balance == D("9975")
    assert account.revision == 1
    assert len(account.order_history()) == 1
    assert account.order_by_client_id("req-1") == first.order


def test_a_duplicate_returns_the_order_as_it_stands_now() -> None:
    account = new_account()
    retry = OrderRequest("BTC-PERP", BUY, OrderType.LIMIT, D(1), D(49000), client_order_id="abc")
    placed = account.place_order(retry, {"BTC-PERP": D(50000)}, AT)
    account.on_price("BTC-PERP", D(48000), LATER)
    again = account.place_order(retry, {"BTC-PERP": D(48000)}, LATER)
    assert again.duplicate
    assert again.order.id == placed.order.id
    assert again.order.status is OrderStatus.FILLED


def test_a_retry_is_recognised_even_if_it_could_not_be_placed_now() -> None:
    account = new_account()
    market(account, BUY, "1.9", "50000", client_id="x")
    # Only 452.5 is available now; the retry is still the same request, so it is no new order.
    assert refused(account, request("1.9")).code == "INSUFFICIENT_BALANCE"
    assert market(account, BUY, "1.9", "50000", client_id="x").duplicate


def test_numbers_compare_by_value_for_a_retry() -> None:
    account = new_account()
    market(account, BUY, "1", "50000", client_id="x")
    assert market(account, BUY, "1.000", "50000", client_id="x").duplicate


@pytest.mark.parametrize(
    "retry",
    [
        request("2", client_id="req-1"),
        request(side=SELL, client_id="req-1"),
        request(symbol="ETH-PERP", client_id="req-1"),
        request(type=OrderType.LIMIT, price="50000", client_id="req-1"),
        request(tp="56000", client_id="req-1"),
        request(sl="48000", client_id="req-1"),
        request("NaN", client_id="req-1"),
    ],
)
def test_same_client_order_id_with_different_fields_is_refused(retry: OrderRequest) -> None:
    account = new_account()
    original = market(account, BUY, "1", "50000", tp="55000", client_id="req-1").order
    error = refused(account, retry)
    assert error.code == "CLIENT_ORDER_ID_REUSED"
    assert str(error) == (
        f"client order id 'req-1' was already used for order {original.id}, with different fields"
    )


def test_a_refused_request_does_not_use_up_its_client_order_id() -> None:
    account = new_account()
    assert refused(account, request("3", client_id="x")).code == "INSUFFICIENT_BALANCE"
    result = market(account, BUY, "1", "50000", client_id="x")
    assert not result.duplicate
    assert result.order.client_order_id == "x"
    assert result.order.id == "1"


@pytest.mark.parametrize("client_id", ["", "a b", "x" * 65, "é", "id\n"])
def test_invalid_client_order_id(client_id: str) -> None:
    error = refused(new_account(), request(client_id=client_id))
    assert error.code == "INVALID_CLIENT_ORDER_ID"
    assert str(error) == "a client order id is 1 to 64 letters, digits or - _ . : /"


def test_a_uuid_is_a_valid_client_order_id() -> None:
    cid = "6f1c2e0a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
    assert market(new_account(), BUY, "1", "50000", client_id=cid).order.client_order_id == cid


# --- cancel -------------------------------------------------------------------------------------


def test_cancel_unknown_order() -> None:
    with pytest.raises(OrderError) as error:
        new_account().cancel_order("42", AT)
    assert (error.value.code, str(error.value)) == ("ORDER_NOT_FOUND", "you have no order '42'")


def test_cancel_a_filled_order() -> None:
    account = new_account()
    order = market(account, BUY, "1", "50000").order
    with pytest.raises(OrderError) as error:
        account.cancel_order(order.id, AT)
    assert error.value.code == "ORDER_NOT_OPEN"
    assert str(error.value) == "order 1 is filled; only open orders can be canceled"


def test_cancel_twice() -> None:
    account = new_account()
    order = limit(account, BUY, "1", "49000", "50000").order
    account.cancel_order(order.id, AT)
    with pytest.raises(OrderError) as error:
        account.cancel_order(order.id, AT)
    assert error.value.code == "ORDER_NOT_OPEN"
    assert str(error.value) == "order 1 is canceled; only open orders can be canceled"


# --- queries ------------------------------------------------------------------------------------


def test_open_orders_and_history() -> None:
    account = new_account("100000")
    a = market(account, BUY, "1", "50000").order
    b = limit(account, BUY, "1", "3000", "3100", symbol="ETH-PERP").order
    c = limit(account, SELL, "1", "60000", "50000").order
    account.cancel_order(c.id, LATER)
    assert account.open_orders() == [b]
    assert account.open_orders("BTC-PERP") == []
    history = account.order_history()
    assert [o.id for o in history] == [c.id, a.id]  # newest first, open orders left out
    assert [o.id for o in account.order_history(limit=1)] == [c.id]
    assert account.order_history("ETH-PERP") == []
    assert account.order("nope") is None
    assert account.order_by_client_id("nope") is None


def test_positions_are_listed_by_symbol() -> None:
    account = new_account("100000")
    market(account, BUY, "1", "3000", symbol="ETH-PERP")
    market(account, BUY, "1", "50000")
    assert [v.position.symbol for v in account.positions({})] == ["BTC-PERP", "ETH-PERP"]
    assert account.position("SOL-PERP", {}) is None


def test_on_price_for_an_unknown_symbol_changes_nothing() -> None:
    account = new_account()
    assert account.on_price("DOGE-PERP", D(1), AT) == Changes()


@pytest.mark.parametrize("price", ["0", "-1", "NaN", "1E+15"])
def test_on_price_refuses_an_impossible_price(price: str) -> None:
    with pytest.raises(ValueError, match="positive"):
        new_account().on_price("BTC-PERP", D(price), AT)


# --- payloads and persistence -------------------------------------------------------------------


def test_order_and_fill_payloads() -> None:
    account = new_account()
    result = market(account, BUY, "1", "50000", tp="55000", sl="48000", client_id="c-1")
    entry, tp, _ = result.changes.orders
    assert entry.to_payload() == {
        "id": "1",
        "clientOrderId": "c-1",
        "symbol": "BTC-PERP",
        "type": "MARKET",
        "side": "BUY",
        "status": "FILLED",
        "quantity": "1",
        "price": None,
        "filled": "1",
        "averagePrice": "50000",
        "reduceOnly": False,
        "parentId": None,
        "active": True,
        "reservedMargin": "0",
        "takeProfit": "55000",
        "stopLoss": "48000",
        "createdAt": AT.isoformat(),
        "updatedAt": AT.isoformat(),
    }
    tp_payload = tp.to_payload()
    assert (tp_payload["type"], tp_payload["side"], tp_payload["price"]) == (
        "TAKE_PROFIT",
        "SELL",
        "55000",
    )
    assert (tp_payload["reduceOnly"], tp_payload["parentId"]) == (True, "1")
    (fill,) = result.changes.fills
    assert fill.to_payload() == {
        "id": "4",
        "orderId": "1",
        "symbol": "BTC-PERP",
        "side": "BUY",
        "quantity": "1",
        "price": "50000",
        "fee": "25.000000",
        "pnl": "0",
        "realizedPnl": "-25.000000",
        "at": AT.isoformat(),
    }
    for item in (entry, tp):
        assert Order.from_payload(json.loads(json.dumps(item.to_payload()))) == item
    assert Fill.from_payload(fill.to_payload()) == fill
    (position,) = result.changes.positions
    assert PaperPosition.from_payload(position.to_payload()) == position


def test_decimals_are_fixed_point_in_payloads() -> None:
    account = new_account()
    market(account, BUY, "0.001", "50000")
    market(account, SELL, "0.001", "50000")
    payload = account.balance({}).to_payload()
    assert "E" not in json.dumps(payload)
    assert payload["realizedPnl"] == "-0.050000"


def test_an_account_survives_a_round_trip_through_its_payload() -> None:
    account = PaperAccount("alice", MARKETS, initial_balance=D(100000), default_leverage=D(5))
    market(account, BUY, "1", "50000", tp="55000", sl="48000", client_id="a")
    limit(account, SELL, "2", "3100", "3000", symbol="ETH-PERP", sl="3200")
    market(account, SELL, "1", "3000", symbol="ETH-PERP")
    payload = json.loads(json.dumps(account.to_payload()))
    reloaded = PaperAccount.from_payload(payload, MARKETS)
    assert reloaded.to_payload() == account.to_payload()
    prices = {"BTC-PERP": D(51000), "ETH-PERP": D(2900)}
    assert reloaded.balance(prices) == account.balance(prices)
    assert reloaded.positions(prices) == account.positions(prices)
    assert reloaded.open_orders() == account.open_orders()
    assert reloaded.leverage("ETH-PERP") == D(5)
    # Idempotency and ids carry over.
    assert market(reloaded, BUY, "1", "50000", tp="55000", sl="48000", client_id="a").duplicate
    assert market(reloaded, BUY, "0.1", "50000").order.id == str(
        int(max(payload["orders"], key=lambda o: int(o["id"]))["id"]) + 2
    )
    # Triggers still work.
    assert reloaded.on_price("BTC-PERP", D(55000), LATER).fills[0].quantity == D("1.1") - D("0.1")


# --- properties ---------------------------------------------------------------------------------

SYMBOLS = {"BTC-PERP": (BTC, D("0.1"), 50_000), "ETH-PERP": (ETH, D("0.01"), 3_000)}

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("market"),
            st.sampled_from(sorted(SYMBOLS)),
            st.sampled_from(OrderSide),
            st.integers(1, 10_000),  # thousandths
            st.one_of(st.none(), st.integers(1, 3_000)),  # TP distance in ticks x 100
            st.one_of(st.none(), st.integers(1, 3_000)),  # SL distance
        ),
        st.tuples(
            st.just("limit"),
            st.sampled_from(sorted(SYMBOLS)),
            st.sampled_from(OrderSide),
            st.integers(1, 10_000),
            st.integers(-2_000, 2_000),  # limit distance from the mark
            st.one_of(st.none(), st.integers(1, 3_000)),
        ),
        st.tuples(
            st.just("price"),
            st.sampled_from(sorted(SYMBOLS)),
            st.integers(-3_000, 3_000),  # move in ticks x 100
        ),
        st.tuples(st.just("cancel"), st.integers(0, 10)),
    ),
    max_size=40,
)


EXPECTED_REFUSALS = {
    "INSUFFICIENT_BALANCE",
    "INVALID_PRICE",
    "INVALID_TAKE_PROFIT",
    "INVALID_STOP_LOSS",
}
"""What a random run meets: orders it cannot afford, prices and levels pushed to <= 0."""


@settings(database=None, derandomize=True, max_examples=200, deadline=None)
@given(OPERATIONS)
def test_accounting_identities_hold_for_any_sequence(operations: list[tuple[object, ...]]) -> None:
    """Wallet = initial + sum of PnL - sum of fees, realized PnL and fees add up, each position's
    size is the sum of its signed fills, reservations are the open orders', no armed TP/SL is
    left protecting a side that is gone, and the account survives its payload."""
    initial = D(100_000)
    account = PaperAccount("p", MARKETS, initial_balance=initial)
    marks = {symbol: D(start) for symbol, (_, _, start) in SYMBOLS.items()}
    fills: list[Fill] = []
    refusals: list[str] = []
    now = AT
    for op in operations:
        now += timedelta(seconds=1)
        before = account.to_payload()
        try:
            if op[0] == "market":
                _, symbol, side, thousandths, tp, sl = op
                assert isinstance(symbol, str)
                assert isinstance(side, OrderSide)
                assert isinstance(thousandths, int)
                tick = SYMBOLS[symbol][1] * 100
                mark = marks[symbol]
                sign = side.sign
                result = account.place_order(
                    OrderRequest(
                        symbol,
                        side,
                        OrderType.MARKET,
                        D(thousandths) / 1000,
                        take_profit=None if tp is None else mark + sign * tick * int(str(tp)),
                        stop_loss=None if sl is None else mark - sign * tick * int(str(sl)),
                    ),
                    marks,
                    now,
                )
                fills += result.changes.fills
            elif op[0] == "limit":
                _, symbol, side, thousandths, distance, sl = op
                assert isinstance(symbol, str)
                assert isinstance(side, OrderSide)
                assert isinstance(thousandths, int)
                assert isinstance(distance, int)
                tick = SYMBOLS[symbol][1] * 100
                price = marks[symbol] + tick * distance
                result = account.place_order(
                    OrderRequest(
                        symbol,
                        side,
                        OrderType.LIMIT,
                        D(thousandths) / 1000,
                        price=price,
                        stop_loss=None if sl is None else price - side.sign * tick * int(str(sl)),
                    ),
                    marks,
                    now,
                )
                fills += result.changes.fills
            elif op[0] == "price":
                _, symbol, move = op
                assert isinstance(symbol, str)
                assert isinstance(move, int)
                tick = SYMBOLS[symbol][1] * 100
                marks[symbol] = max(marks[symbol] + tick * move, tick)
                fills += account.on_price(symbol, marks[symbol], now).fills
            else:
                open_orders = account.open_orders()
                index = op[1]
                assert isinstance(index, int)
                if open_orders:
                    account.cancel_order(open_orders[index % len(open_orders)].id, now)
        except OrderError as error:
            refusals.append(error.code)
            assert account.to_payload() == before, "a refused order changed the account"
        assert set(refusals) <= EXPECTED_REFUSALS, refusals

        pnl = sum((f.pnl for f in fills), D(0))
        fees = sum((f.fee for f in fills), D(0))
        assert account.wallet_balance == initial + pnl - fees
        assert account.realized_pnl == pnl - fees
        assert account.total_fees_paid == fees
        for symbol in SYMBOLS:
            signed = sum((f.signed_quantity for f in fills if f.symbol == symbol), D(0))
            assert size_of(account, symbol) == signed
            for order in account.open_orders(symbol):
                if order.reduce_only and order.active:
                    assert size_of(account, symbol) * order.side.sign < 0
        balance = account.balance(marks)
        assert balance.order_margin == sum((o.reserved_margin for o in account.open_orders()), D(0))
        assert balance.net_balance == balance.wallet_balance + balance.unrealized_pnl
        assert all(f.fee >= 0 for f in fills)
    assert PaperAccount.from_payload(account.to_payload(), MARKETS).to_payload() == (
        account.to_payload()
    )
