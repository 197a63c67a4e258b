"""The threshold index: the prices at which a position's health crosses a level, which positions
a price move selects, and open interest kept as running sums."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.perps import Position, Side, mark_to_market, open_interest
from domain.perps_index import MarketIndex, PositionIndex, SideTotal, threshold_prices
from tests.domain.factories import make_market

if TYPE_CHECKING:
    from domain.markets import Market

D = Decimal
BTC = make_market("BTC-PERP")  # maintenance margin rate 3%


def position(
    id: str = "p1",
    side: Side = Side.LONG,
    size: str = "1",
    entry: str = "50000",
    collateral: str = "5000",
    market: str = "BTC-PERP",
) -> Position:
    return Position(id, "alice", market, side, D(size), D(entry), D(collateral), revision=1)


# --- threshold prices -----------------------------------------------------------------------------


def test_a_long_crosses_the_warning_then_the_liquidation_level_on_the_way_down() -> None:
    # (50,000 - 5,000) / (1 - 1.2 * 0.03) and / (1 - 0.03): the engine tests' 46,680.50, 46,391.75.
    warning, liquidation = threshold_prices(position(), BTC.maintenance_margin_rate) or []
    assert warning == pytest.approx(45000 / 0.964, rel=1e-12)
    assert liquidation == pytest.approx(45000 / 0.97, rel=1e-12)


def test_a_short_crosses_them_on_the_way_up() -> None:
    short = position(side=Side.SHORT)
    warning, liquidation = threshold_prices(short, BTC.maintenance_margin_rate) or []
    assert warning == pytest.approx(55000 / 1.036, rel=1e-12)
    assert liquidation == pytest.approx(55000 / 1.03, rel=1e-12)


def test_a_long_without_leverage_never_crosses() -> None:
    # collateral = size * entry: health is 1 / mmr at every price.
    assert threshold_prices(position(collateral="50000"), D("0.03")) == []


def test_a_long_with_more_collateral_than_notional_never_crosses() -> None:
    assert threshold_prices(position(collateral="60000"), D("0.03")) == []


def test_ill_conditioned_thresholds_are_volatile() -> None:
    assert threshold_prices(position(), D(0)) is None  # no requirement, no health
    assert threshold_prices(position(), D(1) / D("1.2")) is None  # 1.2 * mmr = 1
    assert threshold_prices(position(collateral="49999.99"), D("0.03")) is None  # c/s ~ entry


# --- which positions a move selects ---------------------------------------------------------------


def test_the_first_observation_values_every_position_then_none_while_the_price_stands() -> None:
    index = MarketIndex(BTC)
    for i in range(3):
        index.put(position(f"p{i}"))
    assert {p.id for p in index.to_observe(D(48000))} == {"p0", "p1", "p2"}
    assert index.to_observe(D(48000)) == []


def test_a_move_selects_only_the_positions_whose_threshold_it_passes() -> None:
    index = MarketIndex(BTC)
    index.put(position("safe", collateral="20000"))  # thresholds near 31,000
    index.put(position("near"))  # warning 46,680.50
    index.to_observe(D(48000))
    assert index.to_observe(D(47000)) == []
    assert [p.id for p in index.to_observe(D(46600))] == ["near"]
    assert [p.id for p in index.to_observe(D(48000))] == ["near"]  # and back up


def test_a_changed_position_is_valued_on_the_next_observation_whatever_the_price() -> None:
    index = MarketIndex(BTC)
    held = position()
    index.put(held)
    index.to_observe(D(48000))
    assert index.put(held) is False  # the same: nothing to do
    assert index.put(replace(held, collateral=D(4000), revision=2)) is True
    assert [p.revision for p in index.to_observe(D(48000))] == [2]


def test_a_removed_position_is_gone_from_every_part_of_the_index() -> None:
    index = PositionIndex([BTC])
    index.put(position())
    index.markets["BTC-PERP"].to_observe(D(48000))
    assert index.remove("p1") is True
    assert index.remove("p1") is False
    assert "p1" not in index
    assert index.markets["BTC-PERP"].to_observe(D(40000)) == []
    assert index.markets["BTC-PERP"].open_interest().long == 0


def test_positions_of_markets_not_in_the_catalog_are_left_out() -> None:
    index = PositionIndex([BTC])
    assert index.put(position(market="DOGE-PERP")) is False
    assert len(index) == 0


def states(p: Position, price: Decimal, market: Market) -> tuple[bool, bool]:
    valuation = mark_to_market(p, price, market)
    return valuation.warned, valuation.liquidatable


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from(Side),
    size=st.decimals(D("0.001"), D(100), places=3),
    entry=st.decimals(D(1), D(100000), places=2),
    leverage=st.integers(1, 50),
    mmr=st.sampled_from([D("0.005"), D("0.03"), D("0.1"), D("0.5")]),
    a=st.floats(0.5, 1.5),
    b=st.floats(0.5, 1.5),
    exactly=st.sampled_from([None, 0, 1]),
    nudge=st.sampled_from([D(0), D("1e-20"), D("-1e-20"), D("1e-12"), D("-1e-12")]),
)
def test_every_position_whose_state_a_move_changes_is_selected(
    side: Side,
    size: Decimal,
    entry: Decimal,
    leverage: int,
    mmr: Decimal,
    a: float,
    b: float,
    exactly: int | None,
    nudge: Decimal,
) -> None:
    """Including moves that end exactly on a threshold, or a hair's breadth either side."""
    market = replace(BTC, maintenance_margin_rate=mmr)
    collateral = str(size * entry / leverage)
    p = position(side=side, size=str(size), entry=str(entry), collateral=collateral)
    before, after = entry * D(str(a)), entry * D(str(b))
    thresholds = threshold_prices(p, mmr)
    if exactly is not None and thresholds and len(thresholds) > exactly:
        after = D(thresholds[exactly]) * (1 + nudge)
    index = MarketIndex(market)
    index.put(p)
    index.to_observe(before)
    selected = bool(index.to_observe(after))
    if states(p, before, market) != states(p, after, market):
        assert selected


# --- open interest --------------------------------------------------------------------------------


def test_open_interest_has_the_digits_and_exponent_a_fresh_sum_has() -> None:
    total = SideTotal()
    total.add(D("2"))
    total.add(D("0.500"))
    assert str(total.value()) == "2.500"
    total.remove(D("0.500"))
    assert str(total.value()) == "2"  # a fresh sum of ["2"] from Decimal(0)
    total.remove(D("2"))
    assert str(total.value()) == "0"


def test_open_interest_that_a_fresh_sum_would_round_is_summed_afresh() -> None:
    index = MarketIndex(BTC)
    sizes = ["123456789012345.123456789", "0.0000000000001", "7"]
    positions = [position(f"p{i}", size=s, collateral="1") for i, s in enumerate(sizes)]
    for p in positions:
        index.put(p)
    assert index.open_interest() == open_interest(positions, "BTC-PERP")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.booleans(), st.decimals(D("0.001"), D(1000), places=3), st.booleans()),
        max_size=30,
    )
)
def test_open_interest_is_the_sum_of_the_open_positions(
    moves: list[tuple[bool, Decimal, bool]],
) -> None:
    index = MarketIndex(BTC)
    held: dict[str, Position] = {}
    for i, (is_long, size, close_one) in enumerate(moves):
        side = Side.LONG if is_long else Side.SHORT
        p = position(f"p{i:03d}", side=side, size=str(size), collateral="1")
        index.put(p)
        held[p.id] = p
        if close_one and held:
            gone = sorted(held)[0]
            index.remove(gone)
            del held[gone]
        expected = open_interest([held[k] for k in sorted(held)], "BTC-PERP")
        got = index.open_interest()
        assert (str(got.long), str(got.short)) == (str(expected.long), str(expected.short))


def test_after_a_failed_observation_every_position_is_valued_again() -> None:
    index = MarketIndex(BTC)
    for i in range(3):
        index.put(position(f"p{i}"))
    index.to_observe(D(48000))
    index.forget_observations()
    assert len(index.to_observe(D(48000))) == 3


def test_a_size_beyond_the_running_sums_precision_falls_back_to_summing_afresh() -> None:
    index = MarketIndex(BTC)
    positions = [position("p0", size="1", collateral="1"), position("p1", size="1E-2000")]
    for p in positions:
        index.put(p)
    assert index.open_interest() == open_interest(positions, "BTC-PERP")
    index.remove("p1")
    assert index.open_interest() == open_interest(positions[:1], "BTC-PERP")


@pytest.mark.parametrize("changed", [1, 10])  # a few (keys left in place), all (list rebuilt)
def test_the_old_thresholds_of_a_changed_position_select_it_no_more(changed: int) -> None:
    index = MarketIndex(BTC)
    held = [position(f"p{i}") for i in range(10)]  # warning at 46,680.50
    for p in held:
        index.put(p)
    index.to_observe(D(48000))
    for p in held[:changed]:
        index.put(replace(p, collateral=D(20000), revision=2))  # thresholds near 31,000
    index.to_observe(D(48000))  # the changed ones, dirty
    selected = {p.id for p in index.to_observe(D(46600))}
    assert selected == {p.id for p in held[changed:]}
    assert {p.id for p in index.to_observe(D(30000))} == {p.id for p in held}
