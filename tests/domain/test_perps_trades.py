"""Trades on perpetual positions against hand-computed cases, and one accounting property.

BTC-PERP from the factory: maintenance margin 3%, liquidation fee 1.5%, step and minimum size 0.001,
max leverage 20x, taker fee 0.05%.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.perps import Position, Side
from domain.perps_trades import (
    FillKind,
    TradeError,
    check_leverage,
    check_size,
    close_position,
    liquidate_position,
    modify_position,
    open_position,
)
from tests.domain.factories import make_market

D = Decimal
BTC = make_market("BTC-PERP", "0.1")
AT = datetime(2024, 1, 1, tzinfo=UTC)


def position(
    side: Side = Side.LONG,
    size: str = "1",
    entry: str = "50000",
    collateral: str = "5000",
    revision: int = 1,
) -> Position:
    return Position(
        "p1", "alice", "BTC-PERP", side, D(size), D(entry), D(collateral), revision=revision
    )


def open_btc(side: Side = Side.LONG, size: str = "1", leverage: str = "10") -> Position:
    trade = open_position(
        id="p1",
        owner="alice",
        market=BTC,
        side=side,
        size=D(size),
        leverage=D(leverage),
        price=D("50000"),
        at=AT,
    )
    return trade.position


def modify(p: Position, price: str, size: str = "0", collateral: str = "0") -> Position:
    return modify_position(
        p, market=BTC, price=D(price), size_delta=D(size), collateral_delta=D(collateral), at=AT
    ).position


def code_of(error: pytest.ExceptionInfo[TradeError]) -> str:
    return error.value.code


# --- open ---------------------------------------------------------------------------------------


def test_open_long_1_btc_at_10x_by_hand() -> None:
    trade = open_position(
        id="p1",
        owner="alice",
        market=BTC,
        side=Side.LONG,
        size=D("1"),
        leverage=D("10"),
        price=D("50000"),
        at=AT,
    )
    p, fill = trade.position, trade.fill
    assert (p.size, p.entry_price, p.collateral) == (D("1"), D("50000"), D("5000"))
    assert p.realized_pnl == D("-25")  # 0.05% of 50,000
    assert p.revision == 1
    assert p.opened_at == AT
    assert p.leverage == D("10")
    assert fill.kind is FillKind.OPEN
    assert (fill.size, fill.price, fill.fee, fill.realized_pnl) == (
        D("1"),
        D("50000"),
        D("25"),
        D("-25"),
    )
    assert fill.notional == D("50000")
    assert trade.returned == 0
    assert trade.reward == 0


def test_open_short_at_5x_mirrors_long() -> None:
    p = open_btc(Side.SHORT, size="1", leverage="5")
    assert p.side is Side.SHORT
    assert p.collateral == D("10000")
    assert p.realized_pnl == D("-25")


@pytest.mark.parametrize("leverage", ["1", "20"])
def test_open_accepts_leverage_bounds(leverage: str) -> None:
    assert open_btc(leverage=leverage).collateral == D("50000") / D(leverage)


@pytest.mark.parametrize(
    "size", ["0", "-1", "0.0009", "0.0015", "1.0001", "NaN", "sNaN", "Infinity", "-Infinity"]
)
def test_open_refuses_invalid_size(size: str) -> None:
    with pytest.raises(TradeError) as error:
        open_btc(size=size)
    assert code_of(error) == "INVALID_SIZE"


@pytest.mark.parametrize("leverage", ["0.5", "0", "21", "20.01", "NaN", "Infinity"])
def test_open_refuses_invalid_leverage(leverage: str) -> None:
    with pytest.raises(TradeError) as error:
        open_btc(leverage=leverage)
    assert code_of(error) == "INVALID_LEVERAGE"


def test_check_size_accepts_minimum_and_step_multiples() -> None:
    for size in ("0.001", "0.002", "1", "12.345"):
        check_size(D(size), BTC)


def test_check_leverage_accepts_fractional_leverage_in_range() -> None:
    check_leverage(D("1.5"), BTC)
    check_leverage(D("19.99"), BTC)


def test_check_size_refuses_huge_size_with_a_trade_error() -> None:
    with pytest.raises(TradeError):
        check_size(D("1E+26"), BTC)


# --- modify: refusals ---------------------------------------------------------------------------


def test_modify_with_both_deltas_zero_is_nothing_to_do() -> None:
    with pytest.raises(TradeError) as error:
        modify(position(), "50000")
    assert code_of(error) == "NOTHING_TO_DO"


@pytest.mark.parametrize(("size", "collateral"), [("NaN", "0"), ("0", "-Infinity")])
def test_modify_refuses_non_finite_amounts(size: str, collateral: str) -> None:
    with pytest.raises(TradeError) as error:
        modify(position(), "50000", size=size, collateral=collateral)
    assert code_of(error) == "INVALID_AMOUNT"


def test_modify_refuses_signaling_nan_with_a_trade_error() -> None:
    with pytest.raises(TradeError) as error:
        modify(position(), "50000", size="sNaN")
    assert code_of(error) == "INVALID_AMOUNT"


@pytest.mark.parametrize("size", ["-1", "-1.5"])
def test_reduction_to_zero_or_beyond_is_refused(size: str) -> None:
    with pytest.raises(TradeError) as error:
        modify(position(), "50000", size=size)
    assert code_of(error) == "INVALID_SIZE"


@pytest.mark.parametrize("size", ["0.0005", "-0.0005", "0.0015"])
def test_modify_refuses_size_delta_off_the_step(size: str) -> None:
    with pytest.raises(TradeError) as error:
        modify(position(size="2", collateral="10000"), "50000", size=size)
    assert code_of(error) == "INVALID_SIZE"


def test_withdrawing_more_than_the_collateral_is_refused() -> None:
    with pytest.raises(TradeError) as error:
        modify(position(), "50000", collateral="-5001")
    assert code_of(error) == "INVALID_COLLATERAL"


def test_withdrawing_all_collateral_is_refused_as_leverage() -> None:
    with pytest.raises(TradeError) as error:
        modify(position(), "50000", collateral="-5000")
    assert code_of(error) == "INVALID_LEVERAGE"


def test_withdrawal_past_max_leverage_is_refused() -> None:
    # 5,000 - 3,000 leaves 2,000 against 50,000 entry notional: 25x.
    with pytest.raises(TradeError) as error:
        modify(position(), "50000", collateral="-3000")
    assert code_of(error) == "INVALID_LEVERAGE"


def test_withdrawal_that_leaves_health_below_one_is_refused() -> None:
    # At 47,000: equity 4,000 - 3,000 = 1,000 against 1,410 maintenance: health 0.71 (12.5x).
    with pytest.raises(TradeError) as error:
        modify(position(), "47000", collateral="-1000")
    assert code_of(error) == "WOULD_BE_LIQUIDATABLE"


def test_withdrawal_that_keeps_health_above_one_is_allowed() -> None:
    # At 47,000: equity 4,500 - 3,000 = 1,500 against 1,410 maintenance: health 1.06.
    trade = modify_position(
        position(), market=BTC, price=D("47000"), collateral_delta=D("-500"), at=AT
    )
    assert trade.position.collateral == D("4500")
    assert trade.returned == D("500")
    assert trade.fill.kind is FillKind.COLLATERAL
    assert (trade.fill.size, trade.fill.fee, trade.fill.realized_pnl) == (D(0), D(0), D(0))
    assert trade.position.revision == 2


def test_deposit_adds_collateral_and_returns_nothing() -> None:
    trade = modify_position(
        position(), market=BTC, price=D("50000"), collateral_delta=D("1000"), at=AT
    )
    assert trade.position.collateral == D("6000")
    assert trade.position.realized_pnl == 0
    assert trade.returned == 0
    assert trade.position.revision == 2


# --- modify: size changes -----------------------------------------------------------------------


def test_increase_long_averages_entry_and_adds_collateral_at_current_leverage() -> None:
    opened = open_btc()  # 1 BTC at 50,000, 5,000 collateral, realized -25
    trade = modify_position(opened, market=BTC, price=D("52000"), size_delta=D("1"), at=AT)
    p = trade.position
    assert p.size == D("2")
    assert p.entry_price == D("51000")  # (50,000 + 52,000) / 2
    assert p.collateral == D("10200")  # 5,000 + 52,000 / 10
    assert p.leverage == D("10")
    assert p.realized_pnl == D("-51")  # -25 - 26
    assert p.revision == 2
    assert trade.fill.kind is FillKind.INCREASE
    assert (trade.fill.size, trade.fill.fee, trade.fill.realized_pnl) == (
        D("1"),
        D("26"),
        D("-26"),
    )
    assert trade.returned == 0


def test_increase_short_averages_entry() -> None:
    p = modify(position(Side.SHORT), "48000", size="1")
    assert p.entry_price == D("49000")
    assert p.collateral == D("9800")  # 5,000 + 48,000 / 10
    assert p.realized_pnl == D("-24")


def test_reduce_long_realizes_pnl_releases_collateral_and_keeps_entry() -> None:
    p0 = position(size="2", collateral="10000", revision=3)
    trade = modify_position(p0, market=BTC, price=D("54000"), size_delta=D("-0.5"), at=AT)
    p = trade.position
    assert p.size == D("1.5")
    assert p.entry_price == D("50000")
    assert p.collateral == D("7500")  # a quarter of 10,000 released
    # realized 0.5 * (54,000 - 50,000) = 2,000; fee 0.5 * 54,000 * 0.0005 = 13.5
    assert p.realized_pnl == D("1986.5")
    assert p.revision == 4
    assert trade.fill.kind is FillKind.REDUCE
    assert (trade.fill.size, trade.fill.fee, trade.fill.realized_pnl) == (
        D("0.5"),
        D("13.5"),
        D("1986.5"),
    )
    assert trade.returned == D("4486.5")  # 2,500 released + 2,000 realized - 13.5 fee


def test_reduce_short_realizes_pnl_with_the_opposite_sign() -> None:
    p0 = position(Side.SHORT, size="2", collateral="10000")
    trade = modify_position(p0, market=BTC, price=D("46000"), size_delta=D("-0.5"), at=AT)
    # realized -1 * 0.5 * (46,000 - 50,000) = 2,000; fee 0.5 * 46,000 * 0.0005 = 11.5
    assert trade.position.entry_price == D("50000")
    assert trade.position.collateral == D("7500")
    assert trade.fill.realized_pnl == D("1988.5")
    assert trade.returned == D("4488.5")


def test_reduce_long_at_a_loss_realizes_the_loss() -> None:
    p0 = position(size="2", collateral="10000")
    trade = modify_position(p0, market=BTC, price=D("49000"), size_delta=D("-1"), at=AT)
    # realized 1 * (49,000 - 50,000) = -1,000; fee 24.5; 5,000 released
    assert trade.fill.realized_pnl == D("-1024.5")
    assert trade.returned == D("3975.5")
    assert trade.position.collateral == D("5000")


# --- close --------------------------------------------------------------------------------------


def test_close_long_in_profit_returns_collateral_plus_pnl_minus_fee() -> None:
    trade = close_position(open_btc(), market=BTC, price=D("52000"), at=AT)
    # upnl 2,000, fee 26: 5,000 + 2,000 - 26
    assert trade.returned == D("6974")
    assert trade.fill.kind is FillKind.CLOSE
    assert (trade.fill.size, trade.fill.price, trade.fill.fee) == (D("1"), D("52000"), D("26"))
    assert trade.fill.realized_pnl == D("1974")  # returned - collateral
    assert trade.position.realized_pnl == D("1949")  # -25 at open + 1,974
    assert trade.position.revision == 2


def test_close_short_in_profit_mirrors_long() -> None:
    trade = close_position(open_btc(Side.SHORT), market=BTC, price=D("48000"), at=AT)
    # upnl 2,000, fee 24
    assert trade.returned == D("6976")
    assert trade.fill.realized_pnl == D("1976")


def test_close_short_at_a_loss() -> None:
    trade = close_position(position(Side.SHORT), market=BTC, price=D("51000"), at=AT)
    # upnl -1,000, fee 25.5
    assert trade.returned == D("3974.5")
    assert trade.fill.realized_pnl == D("-1025.5")


def test_close_under_water_returns_nothing_and_realizes_minus_collateral() -> None:
    trade = close_position(position(), market=BTC, price=D("44000"), at=AT)
    # 5,000 - 6,000 - 22 is negative: floored at 0
    assert trade.returned == 0
    assert trade.fill.realized_pnl == D("-5000")
    assert trade.position.realized_pnl == D("-5000")


# --- liquidate ----------------------------------------------------------------------------------


def test_liquidate_refuses_a_healthy_long() -> None:
    # At 48,000: equity 3,000 against 1,440 maintenance, health 2.08.
    with pytest.raises(TradeError) as error:
        liquidate_position(position(), market=BTC, price=D("48000"), at=AT)
    assert code_of(error) == "NOT_LIQUIDATABLE"


def test_liquidate_long_pays_the_reward_out_of_equity() -> None:
    # At 46,000: equity 1,000 against 1,380 maintenance (health 0.72); reward 1.5% * 46,000.
    trade = liquidate_position(position(), market=BTC, price=D("46000"), at=AT)
    assert trade.reward == D("690")
    assert trade.returned == D("310")
    assert trade.fill.kind is FillKind.LIQUIDATION
    assert (trade.fill.size, trade.fill.price, trade.fill.fee) == (D("1"), D("46000"), D("0"))
    assert trade.fill.realized_pnl == D("-4690")  # returned - collateral
    assert trade.position.realized_pnl == D("-4690")
    assert trade.position.revision == 2


def test_liquidate_when_equity_does_not_cover_the_reward() -> None:
    # At 45,500: equity 500 < reward 682.5: the owner gets nothing, the reward is what is left.
    trade = liquidate_position(position(), market=BTC, price=D("45500"), at=AT)
    assert trade.returned == 0
    assert trade.reward == D("500")
    assert trade.fill.realized_pnl == D("-5000")


def test_liquidate_with_negative_equity_pays_no_reward() -> None:
    trade = liquidate_position(position(), market=BTC, price=D("44000"), at=AT)
    assert trade.returned == 0
    assert trade.reward == 0
    assert trade.fill.realized_pnl == D("-5000")


def test_liquidate_refuses_a_healthy_short() -> None:
    with pytest.raises(TradeError) as error:
        liquidate_position(position(Side.SHORT), market=BTC, price=D("52000"), at=AT)
    assert code_of(error) == "NOT_LIQUIDATABLE"


def test_liquidate_short_mirrors_long() -> None:
    # At 54,000: equity 5,000 - 4,000 = 1,000 against 1,620 maintenance; reward 810.
    trade = liquidate_position(position(Side.SHORT), market=BTC, price=D("54000"), at=AT)
    assert trade.reward == D("810")
    assert trade.returned == D("190")
    assert trade.fill.realized_pnl == D("-4810")
    assert trade.position.revision == 2


# --- revisions ----------------------------------------------------------------------------------


def test_each_operation_bumps_the_revision_by_one() -> None:
    p = open_btc()
    assert p.revision == 1
    p = modify(p, "50000", size="1")
    assert p.revision == 2
    p = modify(p, "50000", size="-0.5")
    assert p.revision == 3
    p = modify(p, "50000", collateral="100")
    assert p.revision == 4
    closed = close_position(p, market=BTC, price=D("50000"), at=AT).position
    assert closed.revision == 5
    liquidated = liquidate_position(p, market=BTC, price=D("40000"), at=AT).position
    assert liquidated.revision == 5


# --- property -----------------------------------------------------------------------------------

sizes = st.integers(min_value=1, max_value=1_000_000).map(lambda n: n * BTC.step_size)
leverages = st.decimals(min_value=1, max_value=20, places=2)
prices = st.decimals(min_value=D("0.01"), max_value=D("10000000"), places=2)


@given(
    side=st.sampled_from(Side),
    size=sizes,
    leverage=leverages,
    open_price=prices,
    close_price=prices,
)
def test_close_realizes_returned_minus_collateral_and_never_returns_less_than_zero(
    side: Side, size: Decimal, leverage: Decimal, open_price: Decimal, close_price: Decimal
) -> None:
    opened = open_position(
        id="p1",
        owner="alice",
        market=BTC,
        side=side,
        size=size,
        leverage=leverage,
        price=open_price,
        at=AT,
    ).position
    trade = close_position(opened, market=BTC, price=close_price, at=AT)
    assert trade.fill.realized_pnl == trade.returned - opened.collateral
    assert trade.returned >= 0
    assert trade.position.revision == opened.revision + 1
