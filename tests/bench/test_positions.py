"""The positions scenarios' set-up against a real server: users given their position through
ingestPositionChange with the benchmark's own tokens, and the oracle's prices."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

import httpx
import pytest

from bench import positions
from bench.processes import BenchError
from tests.support import TEST_JWT_SECRET

if TYPE_CHECKING:
    from tests.support import ServerProcess

BTC_MAINTENANCE_MARGIN_RATE = Decimal("0.03")
"""BTC-PERP's, from the markets table."""
WARNING_HEALTH = Decimal("1.2")
TOKENS = positions.Tokens.signed(TEST_JWT_SECRET)


async def test_users_get_their_position_through_the_public_api(
    oracle_server: ServerProcess,
) -> None:
    url = oracle_server.url
    async with httpx.AsyncClient(timeout=30) as http:
        # 12 users in batches of 5: two full requests and a short one, two in flight at once.
        setup = await positions.create_positions(
            http, url, TOKENS, 12, publish_if_missing=True, batch=5, concurrency=2
        )
        assert (setup.users, setup.stored, setup.price) == (12, 12, positions.FALLBACK_PRICE)
        query = (
            "query($u: String!) { positions(user: $u) { id owner side size entryPrice collateral "
            "healthFactor } }"
        )
        data = await positions.graphql(http, url, TOKENS.admin, query, {"u": "user-11"})
        expected = positions.position_of(11, positions.FALLBACK_PRICE)
        assert data["positions"] == [
            {
                "id": "bench-user-11-btc",
                "owner": "user-11",
                "side": "SHORT",
                "size": "0.02",
                "entryPrice": str(expected.entry_price),
                "collateral": str(expected.collateral),
                "healthFactor": data["positions"][0]["healthFactor"],
            }
        ]
        assert Decimal(data["positions"][0]["healthFactor"]) > WARNING_HEALTH
        again = await positions.create_positions(http, url, TOKENS, 12, publish_if_missing=True)
        assert (again.stored, again.price) == (0, positions.FALLBACK_PRICE)


async def test_a_refused_set_up_names_the_error(oracle_server: ServerProcess) -> None:
    wrong = positions.Tokens(service=TOKENS.admin, admin=TOKENS.admin)
    async with httpx.AsyncClient(timeout=30) as http:
        with pytest.raises(BenchError, match="ingestPositionChange needs the role"):
            await positions.create_positions(
                http, oracle_server.url, wrong, 3, publish_if_missing=True
            )


def _health(p: positions.BenchPosition, mark: Decimal) -> Decimal:
    sign = 1 if p.side == "LONG" else -1
    equity = p.collateral + sign * p.size * (mark - p.entry_price)
    return equity / (p.size * mark * BTC_MAINTENANCE_MARGIN_RATE)


@pytest.mark.parametrize("move", [Decimal("-0.02"), Decimal(0), Decimal("0.02")])
def test_every_position_stays_above_the_warning_within_two_percent(move: Decimal) -> None:
    start = Decimal(65000)
    mark = start * (1 + move)
    worst = min(_health(positions.position_of(i, start), mark) for i in range(10_000))
    assert worst > WARNING_HEALTH


def test_the_reference_shape_is_kept() -> None:
    """Side, size and the entry's offset are the reference's; collateral is twice its own."""
    p = positions.position_of(7, Decimal(100))
    assert (p.owner, p.side, p.size, p.entry_price) == (
        "user-7",
        "SHORT",
        Decimal("0.03"),
        Decimal(97),
    )
    assert p.collateral == (Decimal("0.03") * 97 / Decimal(12) * 2).quantize(positions.MONEY)


def test_oracle_prices_move_a_tick_each_time_within_the_band() -> None:
    start = Decimal(1000)  # a band of 100 ticks
    prices = [positions.oracle_price(start, k) for k in range(400)]
    assert all(abs(b - a) == positions.TICK for a, b in zip([start, *prices], prices, strict=False))
    assert min(prices) == start
    assert max(prices) == start * (1 + positions.PRICE_BAND)
    assert len(set(prices[:100])) == 100
