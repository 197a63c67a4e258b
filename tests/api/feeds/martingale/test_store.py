"""PgMartingaleStore against a real PostgreSQL, and the wire format of the payloads it writes
(rounds, strategies' progress), pinned byte for byte: stored events and processes of other
versions read them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import pytest

from api.feeds.martingale.store import (
    PgMartingaleStore,
    progress_event_payload,
    progress_payload,
    round_payload,
)
from api.runtime.clock import SystemClock
from api.storage.migrate import migrate
from domain.martingale import (
    PROGRESS_UPDATE,
    ProgressUpdate,
    RoundOutcome,
    Strategy,
    StrategyConfig,
    progress,
)
from domain.mining_rounds import MiningRound, RoundResult

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


@pytest.fixture
async def pool(isolated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(isolated_database_url, min_size=1, max_size=2)
    await migrate(pool)
    yield pool
    await pool.close()


async def test_a_settlement_between_the_two_reads_does_not_tear_a_strategy(
    pool: asyncpg.Pool,
) -> None:
    """A strategy is read in two statements (its row, then its rounds): a round a settlement
    committed in between is past the row's last_round, and the strategy is read without it
    (it failed with "the last round must be the last round played", and the demo wallet's worker
    logged that error at every turn with fast rounds)."""
    store = PgMartingaleStore(pool, SystemClock())
    wallet = f"wallet-{uuid.uuid4().hex[:8]}"
    config = StrategyConfig(
        wallet_address=wallet, base_amount=Decimal("0.01"), multiplier=Decimal(2), total_rounds=10
    )
    strategy = Strategy(id=f"mg_{uuid.uuid4().hex[:16]}", config=config)
    await store.create(strategy, wallet)
    # What the second statement sees when a settlement of round 7 committed after the first.
    await pool.execute(
        """INSERT INTO martingale_rounds (strategy_id, round_number, amount, won, reward)
           VALUES ($1, 7, 0.01, true, 0.02)""",
        strategy.id,
    )
    [loaded] = await store.strategies(wallet, active_only=True)
    assert loaded.strategy.rounds == ()
    assert loaded.strategy.last_round is None
    found = await store.strategy(strategy.id)
    assert found is not None
    assert found.strategy == loaded.strategy


# --- payloads -------------------------------------------------------------------------------

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


def played() -> Strategy:
    s = strategy(stop_loss=Decimal("1.5"), take_profit=Decimal("2E+1"), budget=Decimal("5"))
    return s.settle(RoundOutcome(5, False)).settle(RoundOutcome(6, True, Decimal("0.40")))


CASES: dict[str, tuple[Callable[[], Any], Callable[[Any], dict[str, Any]], str]] = {
    "round, open": (
        lambda: MiningRound(7, AT, LATER),
        round_payload,
        (
            '{"number":7,"startsAt":"2024-03-01T12:30:15.123456+00:00","endsAt":"2024-03-01T12:31:1'
            '5.123456+00:00","settledAt":null,"won":null,"rewardMultiplier":null}'
        ),
    ),
    "round, settled": (
        lambda: MiningRound(7, AT, LATER, RoundResult(7, True, Decimal("1.50")), LATER),
        round_payload,
        (
            '{"number":7,"startsAt":"2024-03-01T12:30:15.123456+00:00","endsAt":"2024-03-01T12:31:1'
            '5.123456+00:00","settledAt":"2024-03-01T12:31:15.123456+00:00","won":true,"rewardMulti'
            'plier":"1.50"}'
        ),
    ),
    "martingale progress, new": (
        strategy,
        progress_payload,
        (
            '{"strategyId":"s-1","walletAddress":"wallet-1","currentRound":0,"totalRounds":3,"progr'
            'essPercentage":"0","currentAmountSol":"0.100000000","totalDeployedSol":"0","totalRewar'
            'dsSol":"0","totalLossSol":"0","profitLossSol":"0","status":"active","exitReason":null,'
            '"winRatePercentage":null,"riskLevel":"low","losingStreak":0,"lastRound":4,"baseAmountS'
            'ol":"0.10","multiplier":"2","stopLossSol":null,"takeProfitSol":null,"budgetSol":null}'
        ),
    ),
    "martingale progress, played": (
        played,
        progress_payload,
        (
            '{"strategyId":"s-1","walletAddress":"wallet-1","currentRound":2,"totalRounds":3,"progr'
            'essPercentage":"66.66666666666666666666666667","currentAmountSol":"0.100000000","total'
            'DeployedSol":"0.300000000","totalRewardsSol":"0.40","totalLossSol":"0.100000000","prof'
            'itLossSol":"0.100000000","status":"active","exitReason":null,"winRatePercentage":"50",'
            '"riskLevel":"low","losingStreak":0,"lastRound":6,"baseAmountSol":"0.10","multiplier":"'
            '2","stopLossSol":"1.5","takeProfitSol":"2E+1","budgetSol":"5"}'
        ),
    ),
    "martingale progress, stopped": (
        lambda: played().stop(),
        progress_payload,
        (
            '{"strategyId":"s-1","walletAddress":"wallet-1","currentRound":2,"totalRounds":3,"progr'
            'essPercentage":"66.66666666666666666666666667","currentAmountSol":"0","totalDeployedSo'
            'l":"0.300000000","totalRewardsSol":"0.40","totalLossSol":"0.100000000","profitLossSol"'
            ':"0.100000000","status":"stopped","exitReason":"stopped_by_owner","winRatePercentage":'
            '"50","riskLevel":"low","losingStreak":0,"lastRound":6,"baseAmountSol":"0.10","multipli'
            'er":"2","stopLossSol":"1.5","takeProfitSol":"2E+1","budgetSol":"5"}'
        ),
    ),
    "progress event of a wallet": (
        lambda: ("wallet-1", [strategy()]),
        lambda made: progress_event_payload(*made),
        (
            '{"wallet":"wallet-1","strategies":[{"strategyId":"s-1","walletAddress":"wallet-1","current'
            'Round":0,"totalRounds":3,"progressPercentage":"0","currentAmountSol":"0.100000000","totalD'
            'eployedSol":"0","totalRewardsSol":"0","totalLossSol":"0","profitLossSol":"0","status":"act'
            'ive","exitReason":null,"winRatePercentage":null,"riskLevel":"low","losingStreak":0,"lastRo'
            'und":4,"baseAmountSol":"0.10","multiplier":"2","stopLossSol":null,"takeProfitSol":null,"bu'
            'dgetSol":null}]}'
        ),
    ),
    "progress event of everyone": (
        lambda: (None, [strategy(), played()]),
        lambda made: progress_event_payload(*made),
        (
            '{"strategies":[{"strategyId":"s-1","walletAddress":"wallet-1","currentRound":0,"totalRound'
            's":3,"progressPercentage":"0","currentAmountSol":"0.100000000","totalDeployedSol":"0","tot'
            'alRewardsSol":"0","totalLossSol":"0","profitLossSol":"0","status":"active","exitReason":nu'
            'll,"winRatePercentage":null,"riskLevel":"low","losingStreak":0,"lastRound":4,"baseAmountSo'
            'l":"0.10","multiplier":"2","stopLossSol":null,"takeProfitSol":null,"budgetSol":null},{"str'
            'ategyId":"s-1","walletAddress":"wallet-1","currentRound":2,"totalRounds":3,"progressPercen'
            'tage":"66.66666666666666666666666667","currentAmountSol":"0.100000000","totalDeployedSol":'
            '"0.300000000","totalRewardsSol":"0.40","totalLossSol":"0.100000000","profitLossSol":"0.100'
            '000000","status":"active","exitReason":null,"winRatePercentage":"50","riskLevel":"low","lo'
            'singStreak":0,"lastRound":6,"baseAmountSol":"0.10","multiplier":"2","stopLossSol":"1.5","t'
            'akeProfitSol":"2E+1","budgetSol":"5"}]}'
        ),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_payload_json_is_unchanged(name: str) -> None:
    make, encode, golden = CASES[name]
    assert orjson.dumps(encode(make())).decode() == golden


@pytest.mark.parametrize("name", ["progress event of a wallet", "progress event of everyone"])
def test_a_golden_progress_event_reads_back(name: str) -> None:
    make, _, golden = CASES[name]
    wallet, strategies = make()
    expected = ProgressUpdate(tuple(progress(s) for s in strategies), wallet)
    assert PROGRESS_UPDATE.decode(orjson.loads(golden)) == expected
