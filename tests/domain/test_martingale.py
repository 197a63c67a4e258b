"""Martingale strategies against hand-computed cases (the amount sequence, exits, progress and
the risk rule at each boundary), and the totals reconciling as a property."""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.martingale import (
    DEFAULT_SURVIVED_LOSSES,
    MAX_AMOUNT,
    MAX_ROUNDS,
    AlreadySettledError,
    ExitReason,
    PlayedRound,
    Progress,
    RiskLevel,
    RoundOutcome,
    Strategy,
    StrategyConfig,
    StrategyConfigError,
    StrategyNotActiveError,
    StrategyStatus,
    amount_after_losses,
    losses_left,
    progress,
    risk_level,
)

D = Decimal
WALLET = "7xKXtg2CW87d97TXJSDpbD5jBkheTqA83TZRuJosgAsU"
ACTIVE, COMPLETED = StrategyStatus.ACTIVE, StrategyStatus.COMPLETED
STOPPED, STOPPED_OUT = StrategyStatus.STOPPED, StrategyStatus.STOPPED_OUT
HIGH, MEDIUM, LOW = RiskLevel.HIGH, RiskLevel.MEDIUM, RiskLevel.LOW


def config(
    base: str = "10",
    multiplier: str = "2",
    rounds: int = 20,
    *,
    stop_loss: str | None = None,
    take_profit: str | None = None,
    budget: str | None = None,
) -> StrategyConfig:
    return StrategyConfig(
        wallet_address=WALLET,
        base_amount=D(base),
        multiplier=D(multiplier),
        total_rounds=rounds,
        stop_loss=None if stop_loss is None else D(stop_loss),
        take_profit=None if take_profit is None else D(take_profit),
        budget=None if budget is None else D(budget),
    )


def strategy(
    base: str = "10",
    multiplier: str = "2",
    rounds: int = 20,
    *,
    stop_loss: str | None = None,
    take_profit: str | None = None,
    budget: str | None = None,
) -> Strategy:
    return Strategy(
        "s1",
        config(
            base,
            multiplier,
            rounds,
            stop_loss=stop_loss,
            take_profit=take_profit,
            budget=budget,
        ),
    )


def next_round(s: Strategy) -> int:
    return 1 if s.last_round is None else s.last_round + 1


def lose(s: Strategy, times: int = 1) -> Strategy:
    for _ in range(times):
        s = s.settle(RoundOutcome(next_round(s), won=False))
    return s


def win(s: Strategy, reward: str) -> Strategy:
    return s.settle(RoundOutcome(next_round(s), won=True, reward=D(reward)))


def amounts(s: Strategy) -> list[Decimal]:
    return [r.amount for r in s.rounds]


# The amount sequence


def test_doubling_bets_and_the_loss_after_seven_straight_losses() -> None:
    """DOMAIN.md's check: base 10, m = 2 bets 10, 20, 40, ...; 1,270 lost after 7 losses."""
    s = lose(strategy("10", "2"), 7)
    assert amounts(s) == [D(n) for n in (10, 20, 40, 80, 160, 320, 640)]
    assert s.total_loss == s.total_deployed == D(1270) == D(10) * (2**7 - 1) / (2 - 1)
    assert s.profit_loss == D(-1270)
    assert s.losing_streak == 7
    assert s.next_amount == D(1280)


def test_amount_after_losses_is_base_times_multiplier_to_the_streak() -> None:
    c = config("10", "2")
    assert [amount_after_losses(c, k) for k in range(5)] == [D(10), D(20), D(40), D(80), D(160)]
    with pytest.raises(ValueError, match="losses must not be negative"):
        amount_after_losses(c, -1)


def test_a_multiplier_of_one_bets_flat() -> None:
    s = win(lose(strategy("10", "1"), 5), "30")
    assert amounts(s) == [D(10)] * 6
    assert s.total_loss == D(50)
    assert s.profit_loss == D(30 - 60)
    assert s.next_amount == D(10)


def test_a_win_returns_to_the_base_amount() -> None:
    s = lose(win(lose(strategy("10", "2"), 2), "80"), 1)
    assert amounts(s) == [D(10), D(20), D(40), D(10)]
    assert s.losing_streak == 1
    assert s.next_amount == D(20)


def test_a_fractional_multiplier_rounds_each_amount_down_to_a_lamport() -> None:
    """0.1 * 1.5**k: exact to 9 places up to k = 8, then 3.8443359375 and 5.76650390625 drop
    their tenth and eleventh places (1.25e-9 less in all than the formula's 17.09951171875)."""
    s = lose(strategy("0.1", "1.5"), 11)
    assert amounts(s) == [
        D(x)
        for x in (
            "0.1",
            "0.15",
            "0.225",
            "0.3375",
            "0.50625",
            "0.759375",
            "1.1390625",
            "1.70859375",
            "2.562890625",
            "3.844335937",
            "5.766503906",
        )
    ]
    assert s.total_deployed == sum(amounts(s), D(0)) == D("17.099511718")


def test_each_amount_is_rounded_from_the_exact_product_not_the_previous_amount() -> None:
    """7 lamports * 1.5**k = 7, 10.5, 15.75, 23.625, 35.4375, 53.15625: compounding the rounded
    amounts would give 7, 10, 15, 22, 33, 49."""
    c = config("0.000000007", "1.5")
    lamports = [amount_after_losses(c, k) * 10**9 for k in range(6)]
    assert lamports == [7, 10, 15, 23, 35, 53]


def test_a_won_round_paying_back_less_than_its_stake_still_counts_as_a_win() -> None:
    s = win(lose(strategy("10", "2"), 1), "5")  # stake 20, 5 back
    assert s.wins == 1
    assert s.losing_streak == 0
    assert s.next_amount == D(10)
    assert s.total_loss == D(10)  # only lost rounds' stakes
    assert s.profit_loss == D(5 - 30)


def test_settling_returns_a_new_value_and_leaves_the_old_one() -> None:
    before = strategy()
    after = lose(before)
    assert before.rounds == ()
    assert before.total_deployed == 0
    assert after.rounds == (PlayedRound(1, D(10), False, D(0)),)


# Exits


def test_completes_after_its_total_rounds() -> None:
    s = lose(win(lose(strategy(rounds=3)), "40"))
    assert (s.status, s.exit_reason) == (COMPLETED, ExitReason.ROUNDS_COMPLETED)
    assert s.next_amount is None
    with pytest.raises(StrategyNotActiveError, match="Strategy s1 is completed, not active"):
        s.settle(RoundOutcome(4, won=False))
    with pytest.raises(StrategyNotActiveError):
        s.stop()


def test_stop_loss_exactly_at_the_threshold_stops_out() -> None:
    s = lose(strategy("10", "2", stop_loss="30"))
    assert s.status is ACTIVE
    s = lose(s)
    assert s.profit_loss == D(-30)
    assert (s.status, s.exit_reason) == (STOPPED_OUT, ExitReason.STOP_LOSS)
    assert s.next_amount is None


def test_a_loss_just_short_of_the_stop_loss_keeps_playing() -> None:
    s = lose(strategy("10", "2", stop_loss="30.000000001"), 2)
    assert s.status is ACTIVE
    s = lose(s)
    assert (s.status, s.exit_reason) == (STOPPED_OUT, ExitReason.STOP_LOSS)


def test_take_profit_completes_the_strategy() -> None:
    s = win(strategy("10", "2", take_profit="10"), "20")
    assert s.profit_loss == D(10)
    assert (s.status, s.exit_reason) == (COMPLETED, ExitReason.TAKE_PROFIT)


def test_a_profit_just_short_of_the_take_profit_keeps_playing() -> None:
    s = win(strategy("10", "2", take_profit="10"), "19.999999999")
    assert s.status is ACTIVE


def test_a_recovered_streak_reaches_the_take_profit() -> None:
    s = win(lose(strategy("10", "2", take_profit="10"), 2), "80")  # 80 back on 70 deployed
    assert (s.status, s.exit_reason) == (COMPLETED, ExitReason.TAKE_PROFIT)


def test_the_stop_loss_wins_over_the_last_round() -> None:
    s = lose(strategy("10", "2", rounds=2, stop_loss="30"), 2)
    assert (s.status, s.exit_reason) == (STOPPED_OUT, ExitReason.STOP_LOSS)


def test_the_take_profit_wins_over_the_last_round() -> None:
    s = win(strategy("10", "2", rounds=1, take_profit="5"), "15")
    assert (s.status, s.exit_reason) == (COMPLETED, ExitReason.TAKE_PROFIT)


def test_an_explicit_budget_stops_out_before_a_bet_it_cannot_cover() -> None:
    s = lose(strategy("10", "2", budget="70"), 2)
    assert s.remaining_budget == D(40) == s.next_amount
    assert s.status is ACTIVE
    s = lose(s)
    assert (s.status, s.exit_reason) == (STOPPED_OUT, ExitReason.BUDGET_EXHAUSTED)


def test_a_budget_a_lamport_short_stops_out_a_round_earlier() -> None:
    s = lose(strategy("10", "2", budget="69.999999999"))
    assert s.status is ACTIVE
    s = lose(s)
    assert s.remaining_budget == D("29.999999999") + 10
    assert (s.status, s.exit_reason) == (STOPPED_OUT, ExitReason.BUDGET_EXHAUSTED)


def test_a_derived_budget_is_not_enforced() -> None:
    s = lose(strategy("10", "2", stop_loss="25"))
    assert s.remaining_budget == D(15) < D(20) == s.next_amount
    assert s.status is ACTIVE
    assert risk_level(s) is HIGH
    s = lose(s)
    assert (s.status, s.exit_reason) == (STOPPED_OUT, ExitReason.STOP_LOSS)


def test_an_amount_beyond_max_amount_stops_out() -> None:
    at_max = lose(strategy("500000000", "2"))
    assert at_max.next_amount == MAX_AMOUNT
    assert at_max.status is ACTIVE
    beyond = lose(strategy("600000000", "2"))
    assert (beyond.status, beyond.exit_reason) == (STOPPED_OUT, ExitReason.BUDGET_EXHAUSTED)


def test_stop_by_its_owner() -> None:
    before = lose(strategy())
    s = before.stop()
    assert (s.status, s.exit_reason) == (STOPPED, ExitReason.STOPPED_BY_OWNER)
    assert s.next_amount is None
    assert before.status is ACTIVE
    assert s.rounds == before.rounds
    with pytest.raises(StrategyNotActiveError, match="is stopped, not active"):
        s.stop()
    with pytest.raises(StrategyNotActiveError) as error:
        s.settle(RoundOutcome(2, won=False))
    assert (error.value.strategy_id, error.value.status) == ("s1", STOPPED)


# Exactly once


def test_settling_the_same_round_twice_raises() -> None:
    s = strategy().settle(RoundOutcome(5, won=False))
    with pytest.raises(AlreadySettledError, match="settled rounds up to 5; round 5") as error:
        s.settle(RoundOutcome(5, won=False))
    assert (error.value.strategy_id, error.value.round_number, error.value.last_round) == (
        "s1",
        5,
        5,
    )
    with pytest.raises(AlreadySettledError):
        s.settle(RoundOutcome(4, won=True, reward=D(30)))


def test_rounds_may_skip_numbers_but_never_go_back() -> None:
    s = strategy().settle(RoundOutcome(5, won=False)).settle(RoundOutcome(9, won=False))
    assert [r.round_number for r in s.rounds] == [5, 9]
    assert s.last_round == 9


def test_a_new_strategy_refuses_rounds_up_to_its_last_round() -> None:
    s = Strategy("s1", config(), last_round=100)
    with pytest.raises(AlreadySettledError):
        s.settle(RoundOutcome(100, won=False))
    assert s.settle(RoundOutcome(101, won=False)).last_round == 101


def test_replaying_the_round_that_ended_a_strategy_is_already_settled() -> None:
    s = lose(strategy(rounds=1))
    assert s.status is COMPLETED
    with pytest.raises(AlreadySettledError):
        s.settle(RoundOutcome(1, won=False))
    with pytest.raises(StrategyNotActiveError):
        s.settle(RoundOutcome(2, won=False))


# Progress


def test_progress_of_loss_loss_win_loss() -> None:
    """Amounts 10, 20, 40, 10; 100 back on the win: deployed 80, loss 10 + 20 + 10 = 40,
    P/L 100 - 80 = 20, 1 win in 4, 4 of 8 rounds, next 20 after one loss."""
    s = lose(win(lose(strategy("10", "2", rounds=8), 2), "100"))
    assert amounts(s) == [D(10), D(20), D(40), D(10)]
    assert progress(s) == Progress(
        strategy_id="s1",
        wallet_address=WALLET,
        current_round=4,
        total_rounds=8,
        progress_percentage=D(50),
        current_amount_sol=D(20),
        total_deployed_sol=D(80),
        total_rewards_sol=D(100),
        total_loss_sol=D(40),
        profit_loss_sol=D(20),
        status=ACTIVE,
        win_rate_percentage=D(25),
        risk_level=LOW,
        losing_streak=1,
        exit_reason=None,
        last_round=4,
        base_amount_sol=D(10),
        multiplier=D(2),
        stop_loss_sol=None,
        take_profit_sol=None,
        budget_sol=None,
    )


def test_progress_before_the_first_round() -> None:
    p = progress(strategy("10", "2", rounds=8))
    assert (p.current_round, p.progress_percentage, p.win_rate_percentage) == (0, D(0), None)
    assert (p.current_amount_sol, p.total_deployed_sol, p.profit_loss_sol) == (D(10), D(0), D(0))
    assert p.risk_level is LOW


def test_progress_of_an_ended_strategy() -> None:
    s = lose(win(lose(strategy("10", "2", rounds=3)), "40"))
    p = progress(s)
    assert p.current_amount_sol == 0
    assert p.risk_level is LOW
    assert (p.status, p.exit_reason) == (COMPLETED, ExitReason.ROUNDS_COMPLETED)
    assert p.progress_percentage == 100
    assert p.win_rate_percentage == D(100) / 3
    assert losses_left(s, 4) is None


def test_progress_percentage_of_a_stopped_strategy_counts_the_rounds_played() -> None:
    p = progress(lose(strategy(rounds=3)).stop())
    assert p.progress_percentage == D(100) / 3
    assert (p.current_round, p.status) == (1, STOPPED)


# The risk rule: losses left <= 1 HIGH, <= 3 MEDIUM, else LOW


@pytest.mark.parametrize(
    ("budget", "left", "level"),
    [
        # doubling from 1: surviving j losses and the bet after them takes 2**(j+1) - 1
        ("1", 0, HIGH),
        ("2.999999999", 0, HIGH),
        ("3", 1, HIGH),
        ("6.999999999", 1, HIGH),
        ("7", 2, MEDIUM),
        ("14.999999999", 2, MEDIUM),
        ("15", 3, MEDIUM),
        ("30.999999999", 3, MEDIUM),
        ("31", 4, LOW),
        ("1000", 4, LOW),
    ],
)
def test_risk_boundaries_when_doubling(budget: str, left: int, level: RiskLevel) -> None:
    s = strategy("1", "2", budget=budget)
    assert losses_left(s, 4) == left
    assert risk_level(s) is level


@pytest.mark.parametrize(
    ("budget", "left", "level"),
    [
        # flat bets of 1: HIGH above a third of the remaining budget, MEDIUM above 20%
        ("2.999999999", 1, HIGH),
        ("3", 2, MEDIUM),
        ("4.999999999", 3, MEDIUM),
        ("5", 4, LOW),
    ],
)
def test_risk_boundaries_with_flat_bets(budget: str, left: int, level: RiskLevel) -> None:
    s = strategy("1", "1", budget=budget)
    assert losses_left(s, 4) == left
    assert risk_level(s) is level


def test_losses_left_counts_past_the_risk_thresholds_when_asked() -> None:
    s = strategy("1", "2", budget="1000")  # 2**10 - 1 = 1023 > 1000
    assert losses_left(s, 20) == 8
    assert losses_left(s, 3) == 3


def test_losses_left_is_minus_one_when_the_next_amount_alone_is_not_covered() -> None:
    s = lose(strategy("10", "2", stop_loss="25"))
    assert losses_left(s, 4) == -1


@pytest.mark.parametrize(
    ("losses", "level"),
    [(0, LOW), (6, LOW), (7, MEDIUM), (8, MEDIUM), (9, HIGH), (10, HIGH), (11, HIGH)],
)
def test_risk_follows_the_losing_streak_against_the_default_budget(
    losses: int, level: RiskLevel
) -> None:
    """Base 10, m = 2, no limits: the budget survives 10 losses and the bet after them
    (10 * (2**11 - 1) = 20,470), so after s losses 10 - s losses are left."""
    s = lose(strategy("10", "2"), losses)
    assert s.config.effective_budget == D(20470)
    assert losses_left(s, 20) == DEFAULT_SURVIVED_LOSSES - losses
    assert risk_level(s) is level


def test_the_default_budget_with_flat_bets() -> None:
    assert config("10", "1").effective_budget == D(110)


def test_the_stop_loss_is_the_budget_when_none_is_given() -> None:
    assert config(stop_loss="300").effective_budget == D(300)
    assert config(stop_loss="300", budget="500").effective_budget == D(500)


def test_profit_counts_toward_the_remaining_budget() -> None:
    s = strategy("1", "2", budget="31")
    assert risk_level(s) is LOW
    s = lose(s)  # remaining 30, next 2: 2 + 4 + 8 + 16 = 30, 3 losses left
    assert (losses_left(s, 4), risk_level(s)) == (3, MEDIUM)
    s = win(s, "4")  # P/L 4 - 3 = 1: remaining 32, next 1
    assert s.remaining_budget == D(32)
    assert (losses_left(s, 4), risk_level(s)) == (4, LOW)


# Validation


VALID: dict[str, Any] = {
    "wallet_address": WALLET,
    "base_amount": D(10),
    "multiplier": D(2),
    "total_rounds": 20,
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("wallet_address", "", "wallet address must not be empty"),
        ("wallet_address", "   ", "wallet address must not be empty"),
        ("wallet_address", "x" * 101, "wallet address must be at most 100 characters"),
        ("base_amount", D(0), "base amount must be positive"),
        ("base_amount", D(-1), "base amount must be positive"),
        ("base_amount", D("NaN"), "base amount must be a finite number"),
        ("base_amount", D("Infinity"), "base amount must be a finite number"),
        ("base_amount", 10, "base amount must be a finite number"),
        ("base_amount", D("0.0000000001"), "base amount must be a whole number of lamports"),
        ("base_amount", D("1000000000.000000001"), "base amount must be at most 1,000,000,000"),
        ("multiplier", D("0.9999"), "multiplier must be at least 1"),
        ("multiplier", D(0), "multiplier must be at least 1"),
        ("multiplier", D("10.0001"), "multiplier must be at most 10"),
        ("multiplier", D("1.00001"), "multiplier must have at most 4 decimal places"),
        ("multiplier", D("sNaN"), "multiplier must be a finite number"),
        ("total_rounds", 0, "total rounds must be between 1 and 10,000"),
        ("total_rounds", MAX_ROUNDS + 1, "total rounds must be between 1 and 10,000"),
        ("total_rounds", True, "total rounds must be a whole number"),
        ("total_rounds", 2.0, "total rounds must be a whole number"),
        ("stop_loss", D(0), "stop-loss must be positive"),
        ("stop_loss", D(-30), "stop-loss must be positive"),
        ("stop_loss", D("-Infinity"), "stop-loss must be a finite number"),
        ("stop_loss", D("30.0000000001"), "stop-loss must be a whole number of lamports"),
        ("take_profit", D(0), "take-profit must be positive"),
        ("take_profit", D("NaN"), "take-profit must be a finite number"),
        ("take_profit", D("1e10"), "take-profit must be at most"),
        ("budget", D(0), "budget must be positive"),
        ("budget", D("9.999999999"), "budget must be at least the base amount"),
        ("budget", D("1e-10"), "budget must be a whole number of lamports"),
    ],
)
def test_invalid_settings_name_their_field(field: str, value: object, message: str) -> None:
    with pytest.raises(StrategyConfigError, match=message) as error:
        StrategyConfig(**{**VALID, field: value})
    assert error.value.field == field
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("wallet_address", "x" * 100),
        ("base_amount", D("0.000000001")),
        ("base_amount", D("1.500000000000")),
        ("base_amount", MAX_AMOUNT),
        ("multiplier", D(1)),
        ("multiplier", D("1.0001")),
        ("multiplier", D(10)),
        ("total_rounds", 1),
        ("total_rounds", MAX_ROUNDS),
        ("budget", D(10)),
    ],
)
def test_settings_at_their_bounds_are_valid(field: str, value: object) -> None:
    assert getattr(StrategyConfig(**{**VALID, field: value}), field) == value


@pytest.mark.parametrize(
    ("outcome", "message"),
    [
        ({"round_number": 1, "won": False, "reward": D(5)}, "a lost round has no reward"),
        ({"round_number": 1, "won": True, "reward": D(-1)}, "reward must not be negative"),
        ({"round_number": 1, "won": True, "reward": D("NaN")}, "reward must be a finite number"),
        ({"round_number": 1, "won": True, "reward": D("1e-10")}, "whole number of lamports"),
        ({"round_number": 1, "won": True, "reward": D("1e10")}, "reward must be at most"),
        ({"round_number": -1, "won": False}, "round number must be a whole number"),
        ({"round_number": True, "won": False}, "round number must be a whole number"),
    ],
)
def test_invalid_outcomes_are_refused(outcome: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RoundOutcome(**outcome)


def test_inconsistent_strategy_states_are_refused() -> None:
    c = config(rounds=1)
    with pytest.raises(ValueError, match="id must not be empty"):
        Strategy("", c)
    with pytest.raises(ValueError, match="exit reason"):
        Strategy("s1", c, exit_reason=ExitReason.STOP_LOSS)
    with pytest.raises(ValueError, match="does not match"):
        Strategy("s1", c, status=STOPPED, exit_reason=ExitReason.STOP_LOSS)
    played = (PlayedRound(1, D(10), False, D(0)),)
    with pytest.raises(ValueError, match="an active strategy has none left"):
        Strategy("s1", c, last_round=1, rounds=played, losing_streak=1)
    with pytest.raises(ValueError, match="losing streak and wins"):
        Strategy("s1", config(), last_round=1, rounds=played, losing_streak=2)
    with pytest.raises(ValueError, match="last round"):
        Strategy("s1", config(), last_round=2, rounds=played, losing_streak=1)
    with pytest.raises(ValueError, match="earlier rounds must not be negative"):
        Strategy("s1", config(), earlier_rounds=-1)
    with pytest.raises(ValueError, match="has a last round"):
        Strategy("s1", config(), earlier_rounds=1, losing_streak=1)
    with pytest.raises(ValueError, match="an active strategy has none left"):
        Strategy("s1", c, last_round=1, earlier_rounds=1, losing_streak=1)
    with pytest.raises(ValueError, match="losing streak and wins"):
        Strategy("s1", config(), last_round=3, earlier_rounds=2, losing_streak=2, wins=1)


def counters_only(s: Strategy) -> Strategy:
    """``s`` as a store loads it to settle a round: its counters, without its rounds."""
    return replace(s, rounds=(), earlier_rounds=s.rounds_played)


@pytest.mark.parametrize(
    "played",
    [
        lambda: strategy(),
        lambda: lose(strategy(), 3),
        lambda: win(lose(strategy(rounds=5), 2), "80"),
        lambda: lose(strategy(rounds=4), 3),  # the next round completes it
        lambda: lose(strategy(stop_loss="60"), 2),  # the next loss stops it out
        lambda: lose(strategy(budget="70"), 1),
    ],
)
@pytest.mark.parametrize("won", [False, True])
def test_a_strategy_without_its_rounds_settles_like_the_whole_one(played: Any, won: bool) -> None:
    """Settling needs the counters, not the history: the settlement of a strategy loaded
    without its rounds has the same counters, status and progress, and the one round played."""
    whole: Strategy = played()
    outcome = RoundOutcome(next_round(whole), won, D(25) if won else D(0))
    settled = whole.settle(outcome)
    light = counters_only(whole).settle(outcome)
    assert light == replace(settled, rounds=settled.rounds[-1:], earlier_rounds=len(whole.rounds))
    assert light.rounds_played == settled.rounds_played == len(settled.rounds)
    assert progress(light) == progress(settled)
    assert progress(counters_only(whole)) == progress(whole)


# Totals always reconcile


def sol(lamports: int) -> Decimal:
    return D(lamports).scaleb(-9)


def exact_amount(c: StrategyConfig, losses: int) -> Decimal:
    """``base * m**losses`` rounded down to a lamport, in exact rational arithmetic."""
    exact = Fraction(c.base_amount) * Fraction(c.multiplier) ** losses
    return sol(math.floor(exact * 10**9))


@st.composite
def configs(draw: st.DrawFn) -> StrategyConfig:
    base = draw(st.integers(1, 10**11))  # lamports: up to 100 SOL

    def amount_or_none() -> Decimal | None:
        multiple = draw(st.none() | st.integers(1, 3_000))  # tenths of the base amount
        return None if multiple is None else sol(max(base, base * multiple // 10))

    return StrategyConfig(
        wallet_address=WALLET,
        base_amount=sol(base),
        multiplier=draw(
            st.sampled_from([D(1), D("1.5"), D(2), D(3), D(10)])
            | st.integers(10_000, 40_000).map(lambda n: D(n).scaleb(-4))
        ),
        total_rounds=draw(st.integers(1, 8) | st.integers(1, 40)),
        stop_loss=amount_or_none(),
        take_profit=amount_or_none(),
        budget=amount_or_none(),
    )


def expected_exit(s: Strategy) -> ExitReason | None:
    c, pl = s.config, s.profit_loss
    if c.stop_loss is not None and pl <= -c.stop_loss:
        return ExitReason.STOP_LOSS
    if c.take_profit is not None and pl >= c.take_profit:
        return ExitReason.TAKE_PROFIT
    if len(s.rounds) == c.total_rounds:
        return ExitReason.ROUNDS_COMPLETED
    following = exact_amount(c, s.losing_streak)
    if following > MAX_AMOUNT or (c.budget is not None and following > c.budget + pl):
        return ExitReason.BUDGET_EXHAUSTED
    return None


def expected_risk(s: Strategy) -> RiskLevel:
    c = s.config
    budget = c.budget if c.budget is not None else c.stop_loss
    if budget is None:
        budget = sum((exact_amount(c, k) for k in range(DEFAULT_SURVIVED_LOSSES + 1)), D(0))
    remaining, needed, left = budget + s.profit_loss, D(0), -1
    while left < 4:
        needed += exact_amount(c, s.losing_streak + left + 1)
        if needed > remaining:
            break
        left += 1
    return HIGH if left <= 1 else MEDIUM if left <= 3 else LOW


def check_reconciles(s: Strategy) -> None:
    won = [r for r in s.rounds if r.won]
    lost = [r for r in s.rounds if not r.won]
    deployed = sum((r.amount for r in s.rounds), D(0))
    assert s.total_deployed == deployed
    assert s.total_rewards == sum((r.reward for r in s.rounds), D(0))
    assert s.total_loss == sum((r.amount for r in lost), D(0))
    assert s.total_loss + sum((r.amount for r in won), D(0)) == s.total_deployed
    assert s.profit_loss == s.total_rewards - s.total_deployed
    assert s.profit_loss == sum((r.reward - r.amount for r in won), D(0)) - s.total_loss
    streak = 0
    for r in s.rounds:
        assert r.amount == exact_amount(s.config, streak)
        streak = 0 if r.won else streak + 1
    assert (s.losing_streak, s.wins) == (streak, len(won))

    p = progress(s)
    played, total = len(s.rounds), s.config.total_rounds
    assert p.current_round == played <= total
    assert abs(p.progress_percentage * total / 100 - played) < D("1e-20")
    assert p.win_rate_percentage is not None
    assert abs(p.win_rate_percentage * played / 100 - len(won)) < D("1e-20")
    reason = expected_exit(s)
    assert s.exit_reason == reason
    assert (s.status is ACTIVE) == (reason is None)
    if reason is None:
        assert p.current_amount_sol == s.next_amount == exact_amount(s.config, streak)
        assert p.risk_level is expected_risk(s)
    else:
        assert (p.current_amount_sol, p.risk_level) == (D(0), LOW)


@settings(database=None, derandomize=True, max_examples=200)
@given(
    c=configs(),
    plays=st.lists(
        st.tuples(st.integers(1, 3), st.booleans(), st.integers(0, 400)), min_size=1, max_size=45
    ),
)
def test_totals_always_reconcile(c: StrategyConfig, plays: list[tuple[int, bool, int]]) -> None:
    """Rounds as (gap to the previous round number, won, reward in % of the stake)."""
    s, round_number = Strategy("p", c), 0
    for gap, won, reward_percent in plays:
        round_number += gap
        if s.status is not ACTIVE:
            with pytest.raises(StrategyNotActiveError):
                s.settle(RoundOutcome(round_number, won=False))
            break
        assert s.next_amount is not None
        stake = int(s.next_amount.scaleb(9))
        reward = sol(stake * reward_percent // 100) if won else D(0)
        outcome = RoundOutcome(round_number, won, reward)
        s = s.settle(outcome)
        check_reconciles(s)
        with pytest.raises(AlreadySettledError):
            s.settle(outcome)
