"""PgMartingaleStore against a real PostgreSQL, and the wire format of the payloads it writes
(rounds, strategies' progress), pinned byte for byte: stored events and processes of other
versions read them."""

from __future__ import annotations

import gc
import random
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
import pytest

from api.feeds.martingale.store import (
    PgMartingaleStore,
    RoundError,
    _collector_paused,
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
    StrategyStatus,
    progress,
)
from domain.martingale_summary import SUMMARY, StatusTotals, Summary
from domain.mining_rounds import MiningRound, RoundResult, settle_round
from domain.topics import martingale_topic, rounds_topic

if TYPE_CHECKING:
    from collections.abc import Callable


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


def varied_config(rng: random.Random, wallet: str) -> StrategyConfig:
    """A strategy that may end in a few rounds in any of the ways a settlement ends one."""
    base = Decimal(rng.choice(["0.01", "0.05", "1", "0.000000007"]))
    return StrategyConfig(
        wallet_address=wallet,
        base_amount=base,
        multiplier=Decimal(rng.choice(["1", "1.5", "2", "3"])),
        total_rounds=rng.choice([2, 3, 5, 50]),
        stop_loss=rng.choice([None, base * 2, base * 10]),
        take_profit=rng.choice([None, base, base * 4]),
        budget=rng.choice([None, base * 3, base * 100]),
    )


async def test_a_batched_settlement_stores_and_announces_what_the_domain_computes(
    pool: asyncpg.Pool,
) -> None:
    """Hundreds of strategies over many wallets, three rounds: after each settlement every
    strategy's stored row and rounds equal the domain's settlement of the whole strategy (what
    the store did one statement at a time before), each wallet that played gets exactly one
    event with its strategies, and the admin summary adds up the stored strategies."""
    rng = random.Random(19)
    store = PgMartingaleStore(pool, SystemClock())
    wallets = [f"w{n:03d}-{uuid.uuid4().hex[:6]}" for n in range(60)]
    expected: dict[str, Strategy] = {}
    first_round: dict[str, int] = {}

    async def start(count: int) -> None:
        for _ in range(count):
            wallet = rng.choice(wallets[:50])  # the last ten wallets play nothing
            strategy = Strategy(f"mg_{uuid.uuid4().hex[:16]}", varied_config(rng, wallet))
            events = await store.create(strategy, wallet)
            [event] = events
            assert event.topic == martingale_topic(wallet)
            expected[strategy.id] = strategy
            latest = await store.latest_round()
            first_round[strategy.id] = 1 if latest is None else latest.number + 1

    await start(300)
    now = datetime.now(UTC)
    for number in (1, 2, 3):
        await store.open_round(number, now - timedelta(minutes=2), now - timedelta(minutes=1))
        if number == 2:
            await start(40)  # these play from round 3; meanwhile their wallets' events show them
        [stopped] = rng.sample(sorted(i for i, s in expected.items() if s.next_amount), 1)
        expected[stopped] = (await store.change(stopped, None, lambda s: s.stop()))[0]
        result = RoundResult(number, number != 2, Decimal("1.5"))
        playing = [s for i, s in expected.items() if first_round[i] <= number and s.next_amount]
        changed = settle_round(playing, result)
        for _, after in changed:
            expected[after.id] = after

        events = await store.settle(result, datetime.now(UTC))

        for strategy_id, strategy in expected.items():
            found = await store.strategy(strategy_id)
            assert found is not None
            assert found.strategy == strategy
        rows = await pool.fetch("SELECT id, rounds_played FROM martingale_strategies")
        played = {r["id"]: r["rounds_played"] for r in rows}
        assert {i: played[i] for i in expected} == {i: len(s.rounds) for i, s in expected.items()}
        assert events[0].topic == rounds_topic()
        assert events[0].payload["number"] == number
        playing_wallets = {after.config.wallet_address for _, after in changed}
        by_topic = {e.topic: e for e in events[1:-1]}
        assert len(by_topic) == len(events) - 2
        assert set(by_topic) == {martingale_topic(w) for w in playing_wallets}
        for wallet in playing_wallets:
            mine = [s for s in expected.values() if s.config.wallet_address == wallet]
            active = sorted((s for s in mine if s.next_amount), key=lambda s: s.id)
            ended = sorted(
                (a for _, a in changed if a.config.wallet_address == wallet and not a.next_amount),
                key=lambda s: s.id,
            )
            assert by_topic[martingale_topic(wallet)].payload == progress_event_payload(
                wallet, [*active, *ended]
            )
        summary = events[-1]
        assert summary.topic == martingale_topic()
        assert SUMMARY.decode(summary.payload) == expected_summary(expected.values(), number)
        assert await store.summary() == expected_summary(expected.values(), number)

        with pytest.raises(RoundError) as again:
            await store.settle(result, datetime.now(UTC))
        assert again.value.code == "ROUND_ALREADY_SETTLED"
    statuses = Counter(s.status for s in expected.values())
    assert len(statuses) == 4, statuses  # the cases cover every way a strategy ends


def expected_summary(strategies: Any, last_settled_round: int) -> Summary:
    totals: dict[StrategyStatus, StatusTotals] = {}
    for s in strategies:
        t = totals.get(s.status, StatusTotals(s.status))
        totals[s.status] = StatusTotals(
            s.status,
            t.strategies + 1,
            t.total_deployed_sol + s.total_deployed,
            t.total_rewards_sol + s.total_rewards,
            t.total_loss_sol + s.total_loss,
        )
    return Summary.of(totals, last_settled_round)


async def test_a_settlement_with_nothing_to_settle_still_settles_the_round(
    pool: asyncpg.Pool,
) -> None:
    store = PgMartingaleStore(pool, SystemClock())
    now = datetime.now(UTC)
    await store.open_round(1, now - timedelta(minutes=2), now - timedelta(minutes=1))
    events = await store.settle(RoundResult(1, True, Decimal(2)), now)
    assert [e.topic for e in events] == [rounds_topic(), martingale_topic()]
    assert await store.summary() == Summary.of({}, 1)
    with pytest.raises(RoundError) as unknown:
        await store.settle(RoundResult(2, True, Decimal(2)), now)
    assert unknown.value.code == "UNKNOWN_ROUND"


async def test_pages_go_through_every_strategy_once_in_id_order(pool: asyncpg.Pool) -> None:
    store = PgMartingaleStore(pool, SystemClock())
    rng = random.Random(5)
    ids = []
    for n in range(23):
        wallet = f"pw{n % 3}"
        strategy = Strategy(f"mg_{uuid.uuid4().hex[:16]}", varied_config(rng, wallet))
        await store.create(strategy, wallet)
        ids.append(strategy.id)
    stopped = ids[4]
    await store.change(stopped, None, lambda s: s.stop())

    async def every(wallet: str | None, *, active_only: bool) -> list[str]:
        seen: list[str] = []
        after = None
        while True:
            page, more = await store.page(wallet, active_only=active_only, first=5, after=after)
            seen += [o.strategy.id for o in page]
            assert len(page) == 5 or not more
            if not more:
                return seen
            after = page[-1].strategy.id

    assert await every(None, active_only=False) == sorted(ids)
    assert await every(None, active_only=True) == sorted(set(ids) - {stopped})
    assert await every("pw1", active_only=False) == sorted(ids[1::3])
    assert await store.page("nobody", active_only=False, first=5, after=None) == ([], False)
    # A page carries each strategy's counters, not its rounds.
    [first], _ = await store.page(None, active_only=False, first=1, after=sorted(ids)[6])
    assert first.strategy.rounds == ()
    assert progress(first.strategy) == progress((await store.strategy(sorted(ids)[7])).strategy)  # type: ignore[union-attr]


@pytest.mark.parametrize("strategies", [3, 150])
async def test_a_settlement_takes_the_same_statements_whatever_the_number_of_strategies(
    isolated_database_url: str, strategies: int
) -> None:
    """Batched: no statement per strategy or per wallet (it was one UPDATE and INSERT per
    strategy and one numbering per wallet)."""
    statements: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: statements.append(record.query))

    pool = await asyncpg.create_pool(
        isolated_database_url, min_size=1, max_size=1, init=log_queries
    )
    try:
        await migrate(pool)
        store = PgMartingaleStore(pool, SystemClock())
        rng = random.Random(strategies)
        for n in range(strategies):
            wallet = f"sw{n % 40}"
            await store.create(Strategy(f"mg_{n:04d}", varied_config(rng, wallet)), wallet)
        now = datetime.now(UTC)
        for number in (1, 2):
            await store.open_round(number, now - timedelta(minutes=2), now - timedelta(minutes=1))
        await store.settle(RoundResult(1, False), now)  # asyncpg learns the types it meets once
        statements.clear()
        events = await store.settle(RoundResult(2, True, Decimal(2)), now)
    finally:
        await pool.close()
    assert len(events) == 2 + min(strategies, 40)
    # The pool's reset of the connection it got back is not the settlement's.
    settling = [q.split()[0] for q in statements if "pg_advisory_unlock_all" not in q]
    assert settling == [
        "BEGIN;",
        *("SELECT", "SELECT", "SELECT"),  # the round, the strategies playing it, the others
        *("UPDATE", "INSERT"),  # every strategy, every round played
        "UPDATE",  # the round
        "SELECT",  # the summary
        "WITH",  # every event numbered
        "COMMIT;",
    ]


def test_the_collector_pauses_during_a_settlement_and_comes_back_as_it_was() -> None:
    assert gc.isenabled()
    seen = []

    def failing_settlement() -> None:
        with _collector_paused():
            seen.append(gc.isenabled())
            raise RuntimeError("a failed settlement")

    with pytest.raises(RuntimeError):
        failing_settlement()
    assert seen == [False]
    assert gc.isenabled()
    gc.disable()
    try:
        with _collector_paused():  # paused by someone else: left to them
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


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
