"""Perpetuals math against hand-computed cases, and its invariants as properties."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.perps import (
    FundingAccumulator,
    FundingParams,
    LiquidationWatch,
    Position,
    Side,
    Signal,
    funding_payment,
    liquidation_price,
    mark_to_market,
    open_interest,
    ranked_candidates,
)
from tests.domain.factories import make_market

D = Decimal
BTC = make_market("BTC-PERP", "0.1")  # maintenance margin 3%, liquidation fee 1.5%


def position(
    side: Side = Side.LONG,
    size: str = "2",
    entry: str = "50000",
    collateral: str = "10000",
    id: str = "p1",
) -> Position:
    return Position(id, "alice", "BTC-PERP", side, D(size), D(entry), D(collateral))


def test_long_marked_by_hand() -> None:
    # 2 BTC long at 50,000 with 10,000 collateral (10x), marked at 52,000.
    v = mark_to_market(position(), D("52000"), BTC)
    assert v.notional == D("104000")
    assert v.unrealized_pnl == D("4000")
    assert v.equity == D("14000")
    assert v.maintenance_requirement == D("3120")  # 104,000 * 3%
    assert v.health == D("14000") / D("3120")
    assert v.margin_ratio == D("3120") / D("14000")
    assert v.liquidation_reward == D("1560")  # 1.5% of 104,000
    assert position().leverage == D("10")


def test_short_loses_when_price_rises() -> None:
    v = mark_to_market(position(Side.SHORT), D("52000"), BTC)
    assert v.unrealized_pnl == D("-4000")
    assert v.equity == D("6000")


def test_textbook_liquidation_prices() -> None:
    """DOMAIN.md's check: entry 50,000, 10x, MMR 2.5% -> 46,153.85 long, 53,658.54 short."""
    long = liquidation_price(position(collateral="10000"), D("0.025"))
    short = liquidation_price(position(Side.SHORT, collateral="10000"), D("0.025"))
    assert long is not None
    assert short is not None
    assert long.quantize(D("0.01")) == D("46153.85")
    assert short.quantize(D("0.01")) == D("53658.54")


def test_no_liquidation_price_when_it_would_not_be_positive() -> None:
    # Fully collateralised long (1x): it cannot be liquidated by any positive price.
    assert liquidation_price(position(collateral="100000"), D("0.03")) is None


def test_guards_instead_of_dividing_by_zero() -> None:
    broke = mark_to_market(position(collateral="0"), D("40000"), BTC)
    assert broke.margin_ratio is None  # equity <= 0
    assert broke.health is not None
    assert broke.health < 0
    assert position(collateral="0").leverage is None
    with pytest.raises(ValueError, match="positive"):
        mark_to_market(position(), D("0"), BTC)


def test_a_warning_is_sent_once_per_crossing_and_re_armed_on_recovery() -> None:
    watch = LiquidationWatch()
    # Health crosses 1.2 at 46,680.5 and 1 at 46,391.75 (the liquidation price at MMR 3%).
    p = position(collateral="10000")
    prices = ["50000", "46600", "46500", "50000", "46600", "46300", "46200", "50000"]
    signals = [watch.observe(mark_to_market(p, D(x), BTC)) for x in prices]
    assert signals == [
        [],
        [Signal.WARNING],  # health 1.14
        [],  # still below 1.2: no repeat
        [Signal.RECOVERED],
        [Signal.WARNING],
        [Signal.CANDIDATE],  # health 0.94
        [],
        [Signal.RECOVERED],
    ]


def test_candidates_are_ranked_by_reward() -> None:
    small = position(size="1", collateral="3000", id="small")
    large = position(size="3", collateral="9000", id="large")
    safe = position(size="5", collateral="250000", id="safe")
    valuations = [mark_to_market(p, D("48000"), BTC) for p in (small, large, safe)]
    ranked = ranked_candidates(valuations)
    assert [v.position.id for v in ranked] == ["large", "small"]
    assert [v.position.id for v in ranked_candidates(valuations, limit=1)] == ["large"]


def test_open_interest_counts_each_side() -> None:
    positions = [
        position(size="2"),
        position(Side.SHORT, size="1.5", id="p2"),
        Position("p3", "bob", "ETH-PERP", Side.LONG, D("10"), D("3000"), D("3000")),
    ]
    oi = open_interest(positions, "BTC-PERP")
    assert (oi.long, oi.short) == (D("2"), D("1.5"))


def test_funding_by_hand() -> None:
    funding = FundingAccumulator()
    for mark in ("50050", "50100", "50150"):  # premiums 0.1%, 0.2%, 0.3%: average 0.2%
        funding.sample(D(mark), D("50000"))
    rate = funding.settle()
    # 0.002 + clamp(0.0001 - 0.002, -0.0005, 0.0005) = 0.0015
    assert rate == D("0.0015")
    assert funding.settle() is None  # a fresh interval
    assert funding_payment(position(), D("50000"), D("0.0015")) == D("150")  # long pays
    assert funding_payment(position(Side.SHORT), D("50000"), D("0.0015")) == D("-150")


def test_funding_is_capped() -> None:
    funding = FundingAccumulator(FundingParams(cap=D("0.001")))
    funding.sample(D("60000"), D("50000"))
    assert funding.settle() == D("0.001")
    funding.sample(D("40000"), D("50000"))
    assert funding.settle() == D("-0.001")


prices = st.decimals(min_value=D("0.01"), max_value=D("1000000"), places=2)
sizes = st.decimals(min_value=D("0.001"), max_value=D("1000"), places=3)
rates = st.decimals(min_value=D("0.001"), max_value=D("0.2"), places=4)


@given(size=sizes, entry=prices, mark=prices, collateral=prices)
def test_pnl_of_long_and_short_are_opposite(
    size: Decimal, entry: Decimal, mark: Decimal, collateral: Decimal
) -> None:
    long = mark_to_market(position(Side.LONG, str(size), str(entry), str(collateral)), mark, BTC)
    short = mark_to_market(position(Side.SHORT, str(size), str(entry), str(collateral)), mark, BTC)
    assert long.unrealized_pnl == -short.unrealized_pnl
    assert (long.unrealized_pnl > 0) == (mark > entry)


@given(size=sizes, entry=prices, collateral=prices, mmr=rates, side=st.sampled_from(Side))
def test_health_is_one_at_the_liquidation_price(
    size: Decimal, entry: Decimal, collateral: Decimal, mmr: Decimal, side: Side
) -> None:
    p = position(side, str(size), str(entry), str(collateral))
    price = liquidation_price(p, mmr)
    if price is None:
        return
    market = replace(BTC, maintenance_margin_rate=mmr)
    health = mark_to_market(p, price, market).health
    assert health is not None
    assert abs(health - 1) < D("1e-20")
