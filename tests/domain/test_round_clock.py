"""Mining rounds: seeded outcomes, settling every active strategy once, and the round clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from domain.martingale import Strategy, StrategyConfig, StrategyStatus
from domain.mining_rounds import MiningRound, RoundResult, SimulatedOutcomes, settle_round
from domain.round_clock import RoundClock
from tests.domain.fakes import ManualClock

D = Decimal
CONFIG = StrategyConfig(wallet_address="w", base_amount=D(1), multiplier=D(2), total_rounds=3)


def test_outcomes_depend_only_on_seed_and_round() -> None:
    a = SimulatedOutcomes(seed=1, win_probability=0.5)
    b = SimulatedOutcomes(seed=1, win_probability=0.5)
    assert [a.outcome(n) for n in range(1, 50)] == [b.outcome(n) for n in range(1, 50)]
    wins = sum(a.outcome(n).won for n in range(1, 1001))
    assert 430 < wins < 570
    assert not SimulatedOutcomes(seed=1, win_probability=0).outcome(5).won
    assert SimulatedOutcomes(seed=1, win_probability=1).outcome(5).won


def test_a_win_pays_the_multiplier_rounded_down_to_a_lamport() -> None:
    result = RoundResult(1, won=True, reward_multiplier=D("1.95"))
    assert result.reward(D("0.000000007")) == D("0.000000013")  # 13.65 lamports
    assert RoundResult(1, won=False, reward_multiplier=D(2)).reward(D(5)) == 0
    with pytest.raises(ValueError, match="reward multiplier"):
        RoundResult(1, won=True, reward_multiplier=D(-1))
    with pytest.raises(ValueError, match="round number"):
        RoundResult(0, won=True)


def test_each_active_strategy_is_settled_once() -> None:
    active = Strategy(id="a", config=CONFIG)
    ended = Strategy(id="b", config=CONFIG).stop()
    [(before, after)] = settle_round([active, ended], RoundResult(1, False))
    assert (before, after.total_deployed, after.losing_streak) == (active, D(1), 1)
    # A replay of the same round leaves it alone.
    assert settle_round([after], RoundResult(1, True, D(2))) == []
    [(_, won)] = settle_round([after], RoundResult(2, True, D(2)))
    assert (won.total_deployed, won.total_rewards, won.profit_loss) == (D(3), D(4), D(1))


class FakeRounds:
    def __init__(self) -> None:
        self.rounds: list[MiningRound] = []
        self.settled: list[RoundResult] = []

    async def latest_round(self) -> MiningRound | None:
        return self.rounds[-1] if self.rounds else None

    async def open_round(self, number: int, starts_at: object, ends_at: object) -> None:
        self.rounds.append(MiningRound(number, starts_at, ends_at))  # type: ignore[arg-type]

    async def settle(self, result: RoundResult) -> None:
        self.settled.append(result)
        self.rounds[-1] = replace(self.rounds[-1], result=result)


async def test_the_clock_opens_settles_and_opens_the_next() -> None:
    clock, book = ManualClock(), FakeRounds()
    outcomes = SimulatedOutcomes(seed=3)
    rounds = RoundClock(book, clock=clock, period_s=60, outcomes=outcomes)
    assert await rounds.tick() == 60
    assert [r.number for r in book.rounds] == [1]
    clock.advance(20)
    assert await rounds.tick() == 40  # nothing due
    clock.advance(40)
    await rounds.tick()
    assert book.settled == [outcomes.outcome(1)]
    assert [r.number for r in book.rounds] == [1, 2]
    assert book.rounds[1].ends_at - book.rounds[1].starts_at == timedelta(seconds=60)


async def test_without_a_source_ended_rounds_wait_for_their_outcome() -> None:
    clock, book = ManualClock(), FakeRounds()
    rounds = RoundClock(book, clock=clock, period_s=1, outcomes=None)
    await rounds.tick()
    clock.advance(1)
    await rounds.tick()
    assert book.settled == []
    assert [(r.number, r.result) for r in book.rounds] == [(1, None), (2, None)]


def test_strategies_end_when_their_rounds_are_played() -> None:
    strategy = Strategy(id="a", config=CONFIG)
    for number in (1, 2, 3):
        [(_, strategy)] = settle_round([strategy], RoundResult(number, True, D(2)))
    assert strategy.status is StrategyStatus.COMPLETED
    assert settle_round([strategy], RoundResult(4, True, D(2))) == []
