"""The wire format of the payloads the feeds' stores write, pinned byte for byte (the domain's
are in tests/domain/test_payloads.py, which says why)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from api.feeds.marathons.store import (
    Participant,
    marathon_from_payload,
    marathon_payload,
    participant_from_payload,
)
from api.feeds.marathons.types import stored_row
from api.feeds.martingale.store import progress_payload, round_payload
from domain.marathons import LeaderboardRow, Marathon, OpenTrade, TradeSide
from domain.martingale import RoundOutcome, Strategy, StrategyConfig
from domain.mining_rounds import MiningRound, RoundResult

if TYPE_CHECKING:
    from collections.abc import Callable

AT = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
LATER = AT + timedelta(minutes=1)


def strategy(**config: Any) -> Strategy:
    values: dict[str, Any] = {
        "wallet_address": "wallet-1",
        "base_amount": Decimal("0.10"),
        "multiplier": Decimal("2"),
        "total_rounds": 3,
    }
    return Strategy("s-1", StrategyConfig(**(values | config)), last_round=4)


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


def played() -> Strategy:
    s = strategy(stop_loss=Decimal("1.5"), take_profit=Decimal("2E+1"), budget=Decimal("5"))
    return s.settle(RoundOutcome(5, False)).settle(RoundOutcome(6, True, Decimal("0.40")))


CASES: dict[str, tuple[Callable[[], Any], Callable[[Any], dict[str, Any]], str]] = {
    "round, open": (
        lambda: MiningRound(7, AT, LATER),
        round_payload,
        '{"number":7,"startsAt":"2024-03-01T12:30:15.123456+00:00","endsAt":"2024-03-01T12:31:15.123456+00:00","settledAt":null,"won":null,"rewardMultiplier":null}',
    ),
    "round, settled": (
        lambda: MiningRound(7, AT, LATER, RoundResult(7, True, Decimal("1.50")), LATER),
        round_payload,
        '{"number":7,"startsAt":"2024-03-01T12:30:15.123456+00:00","endsAt":"2024-03-01T12:31:15.123456+00:00","settledAt":"2024-03-01T12:31:15.123456+00:00","won":true,"rewardMultiplier":"1.50"}',
    ),
    "martingale progress, new": (
        strategy,
        progress_payload,
        '{"strategyId":"s-1","walletAddress":"wallet-1","currentRound":0,"totalRounds":3,"progressPercentage":"0","currentAmountSol":"0.100000000","totalDeployedSol":"0","totalRewardsSol":"0","totalLossSol":"0","profitLossSol":"0","status":"active","exitReason":null,"winRatePercentage":null,"riskLevel":"low","losingStreak":0,"lastRound":4,"baseAmountSol":"0.10","multiplier":"2","stopLossSol":null,"takeProfitSol":null,"budgetSol":null}',
    ),
    "martingale progress, played": (
        played,
        progress_payload,
        '{"strategyId":"s-1","walletAddress":"wallet-1","currentRound":2,"totalRounds":3,"progressPercentage":"66.66666666666666666666666667","currentAmountSol":"0.100000000","totalDeployedSol":"0.300000000","totalRewardsSol":"0.40","totalLossSol":"0.100000000","profitLossSol":"0.100000000","status":"active","exitReason":null,"winRatePercentage":"50","riskLevel":"low","losingStreak":0,"lastRound":6,"baseAmountSol":"0.10","multiplier":"2","stopLossSol":"1.5","takeProfitSol":"2E+1","budgetSol":"5"}',
    ),
    "martingale progress, stopped": (
        lambda: played().stop(),
        progress_payload,
        '{"strategyId":"s-1","walletAddress":"wallet-1","currentRound":2,"totalRounds":3,"progressPercentage":"66.66666666666666666666666667","currentAmountSol":"0","totalDeployedSol":"0.300000000","totalRewardsSol":"0.40","totalLossSol":"0.100000000","profitLossSol":"0.100000000","status":"stopped","exitReason":"stopped_by_owner","winRatePercentage":"50","riskLevel":"low","losingStreak":0,"lastRound":6,"baseAmountSol":"0.10","multiplier":"2","stopLossSol":"1.5","takeProfitSol":"2E+1","budgetSol":"5"}',
    ),
    "marathon": (
        lambda: Marathon("m-1", "Spring", AT, LATER, True, "org"),
        marathon_payload,
        '{"id":"m-1","name":"Spring","startsAt":"2024-03-01T12:30:15.123456+00:00","endsAt":"2024-03-01T12:31:15.123456+00:00","public":true,"organiser":"org"}',
    ),
    "participant": (
        lambda: Participant("m-1", 1001, "alice", Decimal("1E+3"), True, AT),
        Participant.to_payload,
        '{"marathonId":"m-1","login":1001,"participant":"alice","initialBalance":"1E+3","initialExplicit":true,"registeredAt":"2024-03-01T12:30:15.123456+00:00"}',
    ),
    "stored leaderboard row": (
        lambda: row(Decimal("1.0000")),
        stored_row,
        (
            '{"rank":2,"login":1001,"profit":"1E+1","profitPercentage":"1.0000","equity":"1010.00","b'
            'alance":"1008","margin":"1E-8","freeMargin":"1000","openPositionsCount":1,"pendingOrders'
            'Count":0,"updatedAt":"2024-03-01T12:31:15.123456+00:00"}'
        ),
    ),
    "stored leaderboard row without a percentage": (
        lambda: row(None),
        stored_row,
        (
            '{"rank":2,"login":1001,"profit":"1E+1","profitPercentage":null,"equity":"1010.00","balan'
            'ce":"1008","margin":"1E-8","freeMargin":"1000","openPositionsCount":1,"pendingOrdersCoun'
            't":0,"updatedAt":"2024-03-01T12:31:15.123456+00:00"}'
        ),
    ),
    "participant, derived initial balance": (
        lambda: Participant("m-1", 1001, "alice", None, False, AT),
        Participant.to_payload,
        '{"marathonId":"m-1","login":1001,"participant":"alice","initialBalance":null,"initialExplicit":false,"registeredAt":"2024-03-01T12:30:15.123456+00:00"}',
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_payload_json_is_unchanged(name: str) -> None:
    make, encode, golden = CASES[name]
    assert orjson.dumps(encode(make())).decode() == golden


@pytest.mark.parametrize(
    ("name", "decode"),
    [
        ("marathon", marathon_from_payload),
        ("participant", participant_from_payload),
        ("participant, derived initial balance", participant_from_payload),
    ],
)
def test_golden_payload_reads_back(name: str, decode: Callable[[dict[str, Any]], Any]) -> None:
    make, _, golden = CASES[name]
    assert decode(orjson.loads(golden)) == make()
