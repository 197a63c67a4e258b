from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.prices import OraclePrice, RandomWalkOracle, RandomWalkParams, _reflect
from tests.domain.factories import make_market

if TYPE_CHECKING:
    from domain.markets import Market

NOW = datetime(2024, 1, 1, tzinfo=UTC)


def walk(oracle: RandomWalkOracle, steps: int, dt: float = 1.0) -> list[OraclePrice]:
    return [oracle.step(dt, NOW + timedelta(seconds=i)) for i in range(steps)]


def is_multiple(value: Decimal, tick: Decimal) -> bool:
    return value % tick == 0


MARKETS = [
    pytest.param("BTC-PERP", "0.1", "65000", id="btc"),
    pytest.param("ETH-PERP", "0.01", "3200", id="eth"),
    pytest.param("SOL-PERP", "0.001", "150", id="sol"),
    pytest.param("PENNY-PERP", "0.1", "0.7", id="few-ticks-wide"),
]


@pytest.mark.parametrize(("market_id", "tick", "start"), MARKETS)
@pytest.mark.parametrize("volatility", [0.3, 5.0])
def test_prices_stay_in_band_and_on_ticks(
    market_id: str, tick: str, start: str, volatility: float
) -> None:
    market = make_market(market_id, tick)
    oracle = RandomWalkOracle(
        market, Decimal(start), seed=7, params=RandomWalkParams(volatility=volatility)
    )
    assert oracle.lower <= Decimal(start) <= oracle.upper

    prices = [p.price for p in walk(oracle, 5_000)]

    assert all(oracle.lower <= p <= oracle.upper for p in prices)
    assert all(is_multiple(p, market.tick_size) for p in prices)
    # The walk really reaches both walls, so the reflection is exercised, not just the middle.
    band = oracle.upper - oracle.lower
    assert min(prices) <= oracle.lower + band / 10
    assert max(prices) >= oracle.upper - band / 10


def test_band_follows_the_params() -> None:
    params = RandomWalkParams(lower_bound_ratio=Decimal("0.8"), upper_bound_ratio=Decimal("1.25"))
    oracle = RandomWalkOracle(make_market(), Decimal("1000"), seed=1, params=params)
    assert (oracle.lower, oracle.upper) == (Decimal("800"), Decimal("1250"))


def test_zero_volatility_stays_at_the_start() -> None:
    oracle = RandomWalkOracle(
        make_market(), Decimal("65000.1"), seed=1, params=RandomWalkParams(volatility=0)
    )
    assert {p.price for p in walk(oracle, 50)} == {Decimal("65000.1")}


def test_step_reports_market_and_publish_time() -> None:
    oracle = RandomWalkOracle(make_market("ETH-PERP", "0.01"), Decimal("3200"), seed=1)
    price = oracle.step(1.0, NOW)
    assert price.market == "ETH-PERP"
    assert price.published_at == NOW


def test_band_narrower_than_a_tick_is_still_a_band() -> None:
    params = RandomWalkParams(lower_bound_ratio=Decimal(1), upper_bound_ratio=Decimal(1))
    oracle = RandomWalkOracle(make_market(), Decimal("0.25"), seed=1, params=params)
    price = oracle.step(1.0, NOW).price
    assert oracle.lower <= price <= oracle.upper


@pytest.mark.parametrize(("market_id", "tick", "start"), MARKETS)
@pytest.mark.parametrize(("min_bps", "max_bps"), [(1.0, 10.0), (5.0, 50.0), (0.0, 0.0)])
def test_confidence_is_on_ticks_and_within_the_bps_band(
    market_id: str, tick: str, start: str, min_bps: float, max_bps: float
) -> None:
    market = make_market(market_id, tick)
    params = RandomWalkParams(
        volatility=0.05, confidence_min_bps=min_bps, confidence_max_bps=max_bps
    )
    oracle = RandomWalkOracle(market, Decimal(start), seed=3, params=params)

    for p in walk(oracle, 2_000):
        assert p.confidence >= market.tick_size
        assert is_multiple(p.confidence, market.tick_size)
        assert p.confidence >= p.price * Decimal(repr(min_bps)) / 10_000
        assert p.confidence <= p.price * Decimal(repr(max_bps)) / 10_000 + market.tick_size


def test_confidence_spreads_over_the_band() -> None:
    # On BTC at ~65,000, 1..10 bps is 6.5..65: wide enough in ticks to see the spread.
    params = RandomWalkParams(volatility=0, confidence_min_bps=1, confidence_max_bps=10)
    oracle = RandomWalkOracle(make_market(), Decimal("65000"), seed=5, params=params)
    confidences = [p.confidence for p in walk(oracle, 1_000)]
    assert min(confidences) < Decimal("10")
    assert max(confidences) > Decimal("60")


def sequence(
    seed: int | str | None, market: Market | None = None, steps: int = 50
) -> list[tuple[Decimal, Decimal]]:
    oracle = RandomWalkOracle(
        market or make_market(), Decimal("65000"), seed=seed, params=RandomWalkParams(0.01)
    )
    return [(p.price, p.confidence) for p in walk(oracle, steps)]


def test_same_seed_same_sequence() -> None:
    assert sequence(42) == sequence(42)
    assert sequence("demo") == sequence("demo")


def test_different_seeds_different_sequences() -> None:
    assert sequence(42) != sequence(43)


def test_no_seed_is_not_reproducible() -> None:
    assert sequence(None) != sequence(None)


def test_seed_is_per_market() -> None:
    # Same seed, same tick and start: only the market id differs.
    btc = make_market("BTC-PERP", "0.1")
    other = make_market("XBT-PERP", "0.1")
    assert sequence(42, btc) != sequence(42, other)
    assert sequence(42, other) == sequence(42, other)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"volatility": -0.001}, "volatility"),
        ({"lower_bound_ratio": Decimal(0)}, "bounds"),
        ({"lower_bound_ratio": Decimal("-0.5")}, "bounds"),
        ({"lower_bound_ratio": Decimal("1.1")}, "bounds"),
        ({"upper_bound_ratio": Decimal("0.9")}, "bounds"),
        ({"confidence_min_bps": -1.0}, "confidence"),
        ({"confidence_min_bps": 5.0, "confidence_max_bps": 4.0}, "confidence"),
    ],
)
def test_params_refuse_invalid_values(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RandomWalkParams(**kwargs)


def test_params_accept_edge_values() -> None:
    RandomWalkParams(
        volatility=0,
        lower_bound_ratio=Decimal(1),
        upper_bound_ratio=Decimal(1),
        confidence_min_bps=0,
        confidence_max_bps=0,
    )


@pytest.mark.parametrize("start", [Decimal(0), Decimal("-1")])
def test_non_positive_start_refused(start: Decimal) -> None:
    with pytest.raises(ValueError, match="start price must be positive"):
        RandomWalkOracle(make_market(), start)


def test_payload_round_trip() -> None:
    price = OraclePrice(
        "BTC-PERP",
        Decimal("65000.1"),
        Decimal("6.6"),
        datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    )
    payload = price.to_payload()

    assert payload == {
        "market": "BTC-PERP",
        "price": "65000.1",
        "confidence": "6.6",
        "published_at": "2024-05-06T07:08:09.123456+00:00",
    }
    assert all(isinstance(value, str) for value in payload.values())
    assert OraclePrice.from_payload(json.loads(json.dumps(payload))) == price


def test_payload_round_trip_of_walked_prices() -> None:
    oracle = RandomWalkOracle(make_market("SOL-PERP", "0.001"), Decimal("150"), seed=9)
    for price in walk(oracle, 100):
        restored = OraclePrice.from_payload(json.loads(json.dumps(price.to_payload())))
        assert restored == price
        assert str(restored.price) == str(price.price)


def _ulps(*values: float) -> float:
    return 4 * math.ulp(max(abs(v) for v in values))


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(database=None, derandomize=True, max_examples=500)
@given(x=finite, a=finite, b=finite)
def test_reflect_stays_within_bounds(x: float, a: float, b: float) -> None:
    lower, upper = min(a, b), max(a, b)
    result = _reflect(x, lower, upper)
    # Exact in real arithmetic; floats may land an ulp outside (e.g. lower=-1.0,
    # upper=-1e-191 gives 0.0). The oracle clamps the rounded price, so that is harmless.
    tolerance = _ulps(lower, upper)
    assert lower - tolerance <= result <= upper + tolerance


@settings(database=None, derandomize=True, max_examples=500)
@given(a=finite, b=finite, t=st.floats(min_value=0, max_value=1))
def test_reflect_is_identity_inside_the_band(a: float, b: float, t: float) -> None:
    lower, upper = min(a, b), max(a, b)
    x = min(max(lower + t * (upper - lower), lower), upper)
    # Identity up to float rounding: _reflect(-1.9, -6.0, 0.0) is -1.9000000000000004.
    assert _reflect(x, lower, upper) == pytest.approx(x, rel=0, abs=_ulps(lower, upper, x))


def test_reflect_mirrors_at_the_walls() -> None:
    assert _reflect(12.5, 0.0, 10.0) == pytest.approx(7.5)
    assert _reflect(-2.5, 0.0, 10.0) == pytest.approx(2.5)
    assert _reflect(25.0, 0.0, 10.0) == pytest.approx(5.0)  # twice across the band
    assert _reflect(3.0, 2.0, 2.0) == 2.0  # a degenerate band is a point
