"""A stored leaderboard's row (``stored_row``), its wire format pinned byte for byte: stored
leaderboards are read by processes of other versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest

from api.feeds.marathons.types import stored_row
from domain.marathons import LeaderboardRow, OpenTrade, TradeSide

AT = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
LATER = AT + timedelta(minutes=1)


def row(percentage: Decimal | None) -> LeaderboardRow:
    trade = OpenTrade(5, "EURUSD", TradeSide.BUY, Decimal("0.1"), Decimal("1.085"), Decimal(2))
    return LeaderboardRow(
        rank=2,
        login=1001,
        profit=Decimal("1E+1"),
        profit_percentage=percentage,
        initial_balance=Decimal("1000"),
        equity=Decimal("1010.00"),
        balance=Decimal("1008"),
        credit=Decimal("0"),
        margin=Decimal("0.00000001"),
        free_margin=Decimal("1000"),
        margin_level=None,
        open_positions=(trade,),
        pending_orders=(),
        registered_at=AT,
        updated_at=LATER,
    )


@pytest.mark.parametrize(
    ("percentage", "golden"),
    [
        pytest.param(
            Decimal("1.0000"),
            (
                '{"rank":2,"login":1001,"profit":"1E+1","profitPercentage":"1.0000","equity":"1010.00",'
                '"balance":"1008","margin":"1E-8","freeMargin":"1000","openPositionsCount":1,"pendingOr'
                'dersCount":0,"updatedAt":"2024-03-01T12:31:15.123456+00:00"}'
            ),
            id="with a percentage",
        ),
        pytest.param(
            None,
            (
                '{"rank":2,"login":1001,"profit":"1E+1","profitPercentage":null,"equity":"1010.00","bal'
                'ance":"1008","margin":"1E-8","freeMargin":"1000","openPositionsCount":1,"pendingOrders'
                'Count":0,"updatedAt":"2024-03-01T12:31:15.123456+00:00"}'
            ),
            id="without",
        ),
    ],
)
def test_a_stored_row_is_unchanged(percentage: Decimal | None, golden: str) -> None:
    assert orjson.dumps(stored_row(row(percentage))).decode() == golden
