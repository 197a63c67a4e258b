"""Martingale strategies on ORE mining rounds: the amount sequence, the settlement of one round at a
time, and the progress users follow (totals, profit/loss, win rate, risk level).

Amounts. A strategy deploys SOL in each mining round it plays; after a loss the next amount is
multiplied, after a win it returns to the base amount (``../shared/DOMAIN.md``, "Martingale"):

    next amount = base * m**streak, rounded DOWN to a whole lamport (1e-9 SOL)
                  (streak: the current losing streak; 0 at the start and after a win)

Each amount is the exact product rounded down, never the previous rounded amount multiplied again:
base 0.000000007 with m = 1.5 deploys 7, 10, 15, 23 lamports (7 * 3.375 = 23.625), where
compounding the rounded amounts would give 22. Rounding down keeps every deployment at or below
what the rule asks. Every SOL amount a user enters (base amount, stop-loss, take-profit, budget)
and every reward must be a whole number of lamports, and none exceeds MAX_AMOUNT, so every total
below is exact (at most 23 significant digits, within the default 28).

Outcomes. A round is a win or a loss, with a reward: the SOL the round paid back to the strategy
in total, its stake INCLUDED (what the wallet receives; the pluggable outcome source computes it
from the program's payout rules of the day). A loss pays nothing (reward 0). A win may pay any
reward >= 0, even less than its stake: it still counts as a win and resets the streak, and the
shortfall shows in profit/loss.

Totals over the rounds played; these identities hold after every settlement:

    total deployed  = sum of the amounts
    total rewards   = sum of the rewards
    total loss      = sum of the amounts of the lost rounds     (a won round paying back less
                                                                 than its stake is not in it)
    profit/loss     = total rewards - total deployed
                    = sum over won rounds of (reward - amount) - total loss
    current round   = rounds played                             (0 before the first settlement)
    progress %      = rounds played / total rounds * 100
    win rate %      = wins / rounds played * 100                (no round played -> None)

The percentages are one division each in the current decimal context (28 significant digits by
default), never rounded further; the GraphQL layer decides how they are shown.

Statuses. A strategy is ACTIVE until something ends it; after each settlement the first of these
that holds ends it, and ``exit_reason`` says which:

    STOPPED_OUT  STOP_LOSS         profit/loss <= -stop_loss
    COMPLETED    TAKE_PROFIT       profit/loss >= take_profit
    COMPLETED    ROUNDS_COMPLETED  rounds played == total rounds
    STOPPED_OUT  BUDGET_EXHAUSTED  the next amount exceeds the remaining budget (an explicit
                                   ``budget`` only, see below) or MAX_AMOUNT
    STOPPED      STOPPED_BY_OWNER  ``stop()``, at any time while active

A take-profit exit is COMPLETED rather than a status of its own: the issue's statuses (active,
completed, stopped, stopped out) are the ones clients already switch on, a take-profit is the
strategy reaching its goal, and ``exit_reason`` tells the two completions apart.

The budget is enforced by stopping out before a bet the budget cannot cover, not by capping the
bet: a capped bet that wins no longer recovers the streak's losses, so it would silently stop
being a martingale. Only an explicit ``budget`` is enforced this way; a derived one (below) only
feeds the risk level, since the user set no such limit (a stop-loss still ends the strategy after
the round that reaches it, as above). MAX_AMOUNT (1e9 SOL, more than SOL's whole supply) bounds
every amount so the arithmetic stays exact; a doubling strategy without limits reaches it (base 1
SOL: at the 30th straight loss).

Exactly once. Round numbers are the mining rounds' own numbers, which only increase. A strategy
records ``last_round``, the last round it settled, and accepts only a later one; gaps are allowed
(a strategy plays the rounds it deployed in, not necessarily every round). A round number at or
before ``last_round`` raises AlreadySettledError. That check comes before the status check, so
replaying the settlement that ended a strategy is recognised as a replay: a settlement worker that
catches AlreadySettledError and moves on is idempotent.

Risk level. The budget is the most the user is willing to have deployed and lost: the explicit
``budget``, else the stop-loss, else the bankroll that survives DEFAULT_SURVIVED_LOSSES (10)
straight losses from the base amount and still places the next bet (DOMAIN.md's
``base * (m**(k+1) - 1) / (m - 1)``, m = 1: ``(k+1) * base``, each bet rounded down to lamports
as it would be deployed; base 10, m = 2: 20,470). Then

    remaining budget = budget - (total deployed - total rewards) = budget + profit/loss
    losses left      = how many more straight losses the remaining budget survives and still
                       places the bet after them: the largest j >= 0 with
                       next + next*m + ... + next*m**j <= remaining budget (each term the amount
                       that would be deployed), or -1 when the next amount alone exceeds it
    HIGH    losses left <= 1
    MEDIUM  losses left <= 3
    LOW     otherwise; also for a strategy that is not active (it deploys nothing more)

Losses left carries both of DOMAIN.md's signals. The losing streak: while every round so far is
a loss, losses left = (the streak the budget survives from the base) - (the current streak), so
HIGH is "the streak is at least the one the budget survives, minus 1", and after mixed rounds it
counts from where the strategy stands. The next amount against the remaining budget: (rounding
aside) losses left <= 1 exactly when next > remaining / (1 + m + m**2), and <= 3 exactly when
next > remaining / (1 + m + ... + m**4): for flat bets more than a third and more than 20% of the
remaining budget, for doubling more than 1/7 and 1/31.

Errors (all ValueError, each with a message fit to show a user):

    ValueError
    ├── StrategyConfigError     a strategy's settings are invalid; ``field`` names the setting
    ├── StrategyNotActiveError  settling or stopping a strategy that has ended
    └── AlreadySettledError     a round at or before the strategy's last settled round
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from decimal import Decimal

from domain.payloads import PayloadCodec

LAMPORT = Decimal("1e-9")
"""The smallest amount of SOL; every amount is a whole number of them."""
MAX_AMOUNT = Decimal(1_000_000_000)
"""No amount (setting, deployment or reward) exceeds this many SOL: more than SOL's supply."""
MAX_ROUNDS = 10_000
"""A strategy plays at most this many rounds (about a week of one-minute rounds)."""
MAX_MULTIPLIER = Decimal(10)
"""A bound against typos: at 10, the bet after four straight losses is 10,000 times the base."""
MULTIPLIER_PLACES = 4
"""Decimal places a multiplier may have (1.5, 2, 1.25, 1.0001), which keeps amounts cheap to
compute exactly."""
MAX_WALLET_ADDRESS_LENGTH = 100
DEFAULT_SURVIVED_LOSSES = 10
"""Without a budget or a stop-loss, the risk level assumes a bankroll that survives this many
straight losses from the base amount and still places the next bet."""
HIGH_RISK_LOSSES_LEFT = 1
"""HIGH risk at or below this many losses left."""
MEDIUM_RISK_LOSSES_LEFT = 3
"""MEDIUM risk at or below this many losses left (and above HIGH_RISK_LOSSES_LEFT)."""

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_SOL_PLACES = 9  # a lamport is 1e-9 SOL
_MAX_LAMPORTS = int(MAX_AMOUNT.scaleb(_SOL_PLACES))
_MULTIPLIER_QUANTUM = Decimal(1).scaleb(-MULTIPLIER_PLACES)


class StrategyStatus(enum.Enum):
    ACTIVE = "active"
    COMPLETED = "completed"
    """Played all its rounds, or reached its take-profit."""
    STOPPED = "stopped"
    """Stopped by its owner."""
    STOPPED_OUT = "stopped_out"
    """Hit its stop-loss, or could not cover its next bet."""


class ExitReason(enum.Enum):
    """Why a strategy is no longer active (see the module docstring for each rule)."""

    STOP_LOSS = "stop_loss"
    TAKE_PROFIT = "take_profit"
    ROUNDS_COMPLETED = "rounds_completed"
    BUDGET_EXHAUSTED = "budget_exhausted"
    STOPPED_BY_OWNER = "stopped_by_owner"

    @property
    def status(self) -> StrategyStatus:
        return _STATUS_BY_REASON[self]


_STATUS_BY_REASON = {
    ExitReason.STOP_LOSS: StrategyStatus.STOPPED_OUT,
    ExitReason.TAKE_PROFIT: StrategyStatus.COMPLETED,
    ExitReason.ROUNDS_COMPLETED: StrategyStatus.COMPLETED,
    ExitReason.BUDGET_EXHAUSTED: StrategyStatus.STOPPED_OUT,
    ExitReason.STOPPED_BY_OWNER: StrategyStatus.STOPPED,
}


class RiskLevel(enum.Enum):
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class StrategyConfigError(ValueError):
    """A strategy setting a user gave is invalid; ``field`` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class StrategyNotActiveError(ValueError):
    """Settling or stopping a strategy that has already ended."""

    def __init__(self, strategy_id: str, status: StrategyStatus) -> None:
        super().__init__(f"Strategy {strategy_id} is {_label(status)}, not active")
        self.strategy_id = strategy_id
        self.status = status


class AlreadySettledError(ValueError):
    """A round at or before the last round the strategy settled: settling it again would count it
    twice (or out of order)."""

    def __init__(self, strategy_id: str, round_number: int, last_round: int) -> None:
        super().__init__(
            f"Strategy {strategy_id} has settled rounds up to {last_round}; "
            f"round {round_number} cannot be settled"
        )
        self.strategy_id = strategy_id
        self.round_number = round_number
        self.last_round = last_round


def _label(status: StrategyStatus) -> str:
    return status.value.replace("_", " ")


def _check_sol(field: str, label: str, value: object) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise StrategyConfigError(field, f"{label} must be a finite number")
    if value <= 0:
        raise StrategyConfigError(field, f"{label} must be positive")
    if value > MAX_AMOUNT:
        raise StrategyConfigError(field, f"{label} must be at most {MAX_AMOUNT:,} SOL")
    if value.quantize(LAMPORT) != value:
        raise StrategyConfigError(
            field, f"{label} must be a whole number of lamports (at most 9 decimal places)"
        )
    return value


def _check_optional_sol(field: str, label: str, value: object) -> None:
    if value is not None:
        _check_sol(field, label, value)


@dataclass(frozen=True, slots=True)
class StrategyConfig:
    """What a user sets when creating a strategy (amounts in SOL)."""

    wallet_address: str
    base_amount: Decimal
    multiplier: Decimal
    """At least 1 (1: flat bets), at most MAX_MULTIPLIER, with at most MULTIPLIER_PLACES places."""
    total_rounds: int
    stop_loss: Decimal | None = None
    """The loss, as a positive amount, at which the strategy stops out:
    profit/loss <= -stop_loss."""
    take_profit: Decimal | None = None
    """The profit at which the strategy completes: profit/loss >= take_profit."""
    budget: Decimal | None = None
    """The most the user is willing to have deployed and lost; the strategy stops out before a bet
    the remaining budget cannot cover. At least the base amount."""
    # Derived once, in lamports and as a fraction: every amount and the risk level are integer
    # arithmetic on these (settling 100,000 strategies computes over a million amounts).
    _base: int = field(init=False, repr=False, compare=False)
    _ratio: tuple[int, int] = field(init=False, repr=False, compare=False)
    _budget: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        address = self.wallet_address
        if not isinstance(address, str) or not address.strip():
            raise StrategyConfigError("wallet_address", "wallet address must not be empty")
        if len(address) > MAX_WALLET_ADDRESS_LENGTH:
            raise StrategyConfigError(
                "wallet_address",
                f"wallet address must be at most {MAX_WALLET_ADDRESS_LENGTH} characters",
            )
        _check_sol("base_amount", "base amount", self.base_amount)
        self._check_multiplier()
        rounds = self.total_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int):
            raise StrategyConfigError("total_rounds", "total rounds must be a whole number")
        if not 1 <= rounds <= MAX_ROUNDS:
            raise StrategyConfigError(
                "total_rounds", f"total rounds must be between 1 and {MAX_ROUNDS:,}"
            )
        _check_optional_sol("stop_loss", "stop-loss", self.stop_loss)
        _check_optional_sol("take_profit", "take-profit", self.take_profit)
        _check_optional_sol("budget", "budget", self.budget)
        if self.budget is not None and self.budget < self.base_amount:
            raise StrategyConfigError("budget", "budget must be at least the base amount")
        object.__setattr__(self, "_base", _lamports(self.base_amount))
        object.__setattr__(self, "_ratio", self.multiplier.as_integer_ratio())
        object.__setattr__(self, "_budget", _budget_lamports(self))

    def _check_multiplier(self) -> None:
        m = self.multiplier
        if not isinstance(m, Decimal) or not m.is_finite():
            raise StrategyConfigError("multiplier", "multiplier must be a finite number")
        if m < 1:
            raise StrategyConfigError("multiplier", "multiplier must be at least 1")
        if m > MAX_MULTIPLIER:
            raise StrategyConfigError("multiplier", f"multiplier must be at most {MAX_MULTIPLIER}")
        if m.quantize(_MULTIPLIER_QUANTUM) != m:
            raise StrategyConfigError(
                "multiplier", f"multiplier must have at most {MULTIPLIER_PLACES} decimal places"
            )

    @property
    def effective_budget(self) -> Decimal:
        """The budget the risk level uses: the explicit budget, else the stop-loss, else the
        bankroll that survives DEFAULT_SURVIVED_LOSSES straight losses and the next bet."""
        return _sol(self._budget)


def _lamports(sol: Decimal) -> int:
    """A whole number of lamports, exactly (the amounts here all are)."""
    return int(sol.scaleb(_SOL_PLACES))


def _sol(lamports: int) -> Decimal:
    return Decimal(lamports).scaleb(-_SOL_PLACES)


def _amount_lamports(config: StrategyConfig, losses: int) -> int:
    """``floor(base * m**losses)`` in lamports, exactly: m = p / q, so this is integer division."""
    p, q = config._ratio
    numerator: int = config._base * p**losses
    denominator: int = q**losses
    return numerator // denominator


def amount_after_losses(config: StrategyConfig, losses: int) -> Decimal:
    """The amount deployed after ``losses`` straight losses: ``base * m**losses`` rounded down to
    a lamport."""
    if losses < 0:
        raise ValueError("losses must not be negative")
    return _sol(_amount_lamports(config, losses))


def _budget_lamports(config: StrategyConfig) -> int:
    explicit = config.budget if config.budget is not None else config.stop_loss
    if explicit is not None:
        return _lamports(explicit)
    return sum(_amounts_lamports(config, 0, DEFAULT_SURVIVED_LOSSES + 1))


def _amounts_lamports(config: StrategyConfig, losses: int, count: int) -> list[int]:
    """``_amount_lamports(config, k)`` for ``count`` values of k from ``losses`` on, each the
    exact product rounded down, the powers kept from one to the next instead of raised again."""
    p, q = config._ratio
    numerator, denominator = config._base * p**losses, q**losses
    amounts = []
    for _ in range(count):
        amounts.append(numerator // denominator)
        numerator *= p
        denominator *= q
    return amounts


def _check_outcome(round_number: int, won: bool, reward: Decimal) -> None:
    if isinstance(round_number, bool) or not isinstance(round_number, int) or round_number < 0:
        raise ValueError("round number must be a whole number, at least 0")
    if not isinstance(reward, Decimal) or not reward.is_finite():
        raise ValueError("reward must be a finite number")
    if reward < 0:
        raise ValueError("reward must not be negative")
    if reward > MAX_AMOUNT:
        raise ValueError(f"reward must be at most {MAX_AMOUNT:,} SOL")
    if reward.quantize(LAMPORT) != reward:
        raise ValueError("reward must be a whole number of lamports (at most 9 decimal places)")
    if not won and reward != 0:
        raise ValueError("a lost round has no reward")


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """What one mining round did for one strategy: ``reward`` is the SOL paid back in total, the
    stake included (0 for a loss)."""

    round_number: int
    won: bool
    reward: Decimal = _ZERO

    def __post_init__(self) -> None:
        _check_outcome(self.round_number, self.won, self.reward)


@dataclass(frozen=True, slots=True)
class PlayedRound:
    """A settled round: the amount the strategy deployed and what it got back."""

    round_number: int
    amount: Decimal
    won: bool
    reward: Decimal

    def __post_init__(self) -> None:
        _check_outcome(self.round_number, self.won, self.reward)
        if not self.amount.is_finite() or self.amount <= 0:
            raise ValueError("amount must be positive")


@dataclass(frozen=True, slots=True)
class Strategy:
    """One strategy's state, an immutable value: ``settle`` and ``stop`` return the next state.

    Start one with ``Strategy(id, config)``; pass ``last_round`` to refuse outcomes of rounds up
    to it (the rounds before the strategy existed). The totals and the streak are kept by
    ``settle``, which appends to ``rounds``. ``rounds`` is the whole history (at most MAX_ROUNDS
    long), or only its newest part: settling needs the counters, not the history, so a store that
    settles many strategies at once loads none of it and says how many rounds came before
    (``earlier_rounds``)."""

    id: str
    config: StrategyConfig
    status: StrategyStatus = StrategyStatus.ACTIVE
    exit_reason: ExitReason | None = None
    last_round: int | None = None
    """The last round settled (or refused in advance); only later rounds are accepted."""
    rounds: tuple[PlayedRound, ...] = ()
    losing_streak: int = 0
    wins: int = 0
    total_deployed: Decimal = _ZERO
    total_rewards: Decimal = _ZERO
    total_loss: Decimal = _ZERO
    earlier_rounds: int = 0
    """Rounds played before the first of ``rounds`` (0: ``rounds`` is the whole history)."""

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("strategy id must not be empty")
        if self.earlier_rounds < 0:
            raise ValueError("earlier rounds must not be negative")
        if (self.status is StrategyStatus.ACTIVE) != (self.exit_reason is None):
            raise ValueError("an active strategy has no exit reason, and an ended one has one")
        if self.exit_reason is not None and self.exit_reason.status is not self.status:
            raise ValueError(f"exit reason {self.exit_reason.value} does not match the status")
        played = self.rounds_played
        if played > self.config.total_rounds or (
            played == self.config.total_rounds and self.status is StrategyStatus.ACTIVE
        ):
            raise ValueError("rounds played exceed the total, or an active strategy has none left")
        if min(self.losing_streak, self.wins) < 0 or self.losing_streak + self.wins > played:
            raise ValueError("the losing streak and wins must fit in the rounds played")
        if self.rounds and self.last_round != self.rounds[-1].round_number:
            raise ValueError("the last round must be the last round played")
        if played and self.last_round is None:
            raise ValueError("a strategy that played rounds has a last round")

    @property
    def rounds_played(self) -> int:
        """Every round played, those not in ``rounds`` included."""
        return self.earlier_rounds + len(self.rounds)

    @property
    def profit_loss(self) -> Decimal:
        """Total rewards minus total deployed."""
        return self.total_rewards - self.total_deployed

    @property
    def remaining_budget(self) -> Decimal:
        """The effective budget plus profit/loss: what is still at the user's disposal."""
        return self.config.effective_budget + self.profit_loss

    @property
    def next_amount(self) -> Decimal | None:
        """What the next round deploys; None once the strategy is not active."""
        if self.status is not StrategyStatus.ACTIVE:
            return None
        return amount_after_losses(self.config, self.losing_streak)

    def settle(self, outcome: RoundOutcome) -> Strategy:
        """The strategy after one more round: raises AlreadySettledError for a round at or before
        ``last_round`` (checked first), StrategyNotActiveError once the strategy has ended."""
        if self.last_round is not None and outcome.round_number <= self.last_round:
            raise AlreadySettledError(self.id, outcome.round_number, self.last_round)
        amount = self.next_amount
        if amount is None:
            raise StrategyNotActiveError(self.id, self.status)
        played = PlayedRound(outcome.round_number, amount, outcome.won, outcome.reward)
        rounds = (*self.rounds, played)
        streak = 0 if outcome.won else self.losing_streak + 1
        deployed = self.total_deployed + amount
        rewards = self.total_rewards + outcome.reward
        reason = _exit_reason(self.config, self.rounds_played + 1, streak, rewards - deployed)
        # Every field named (not dataclasses.replace, which looks each one up): a round settles
        # every active strategy, 100,000 of them at a time.
        return Strategy(
            id=self.id,
            config=self.config,
            status=StrategyStatus.ACTIVE if reason is None else reason.status,
            exit_reason=reason,
            last_round=outcome.round_number,
            rounds=rounds,
            losing_streak=streak,
            wins=self.wins + (1 if outcome.won else 0),
            total_deployed=deployed,
            total_rewards=rewards,
            total_loss=self.total_loss if outcome.won else self.total_loss + amount,
            earlier_rounds=self.earlier_rounds,
        )

    def stop(self) -> Strategy:
        """The strategy stopped by its owner; StrategyNotActiveError once it has ended."""
        if self.status is not StrategyStatus.ACTIVE:
            raise StrategyNotActiveError(self.id, self.status)
        return replace(self, status=StrategyStatus.STOPPED, exit_reason=ExitReason.STOPPED_BY_OWNER)


def _exit_reason(
    config: StrategyConfig, played: int, losing_streak: int, profit_loss: Decimal
) -> ExitReason | None:
    """The first exit rule that holds after a settlement, in the module docstring's order."""
    if config.stop_loss is not None and profit_loss <= -config.stop_loss:
        return ExitReason.STOP_LOSS
    if config.take_profit is not None and profit_loss >= config.take_profit:
        return ExitReason.TAKE_PROFIT
    if played >= config.total_rounds:
        return ExitReason.ROUNDS_COMPLETED
    amount = _amount_lamports(config, losing_streak)
    if amount > _MAX_LAMPORTS:
        return ExitReason.BUDGET_EXHAUSTED
    if config.budget is not None and amount > _lamports(config.budget + profit_loss):
        return ExitReason.BUDGET_EXHAUSTED
    return None


def losses_left(strategy: Strategy, up_to: int) -> int | None:
    """How many more straight losses the remaining budget survives and still places the bet after
    them, counted up to ``up_to`` (a larger number is reported as ``up_to``); -1 when the next
    amount alone exceeds the remaining budget; None when the strategy is not active."""
    if strategy.status is not StrategyStatus.ACTIVE:
        return None
    remaining = strategy.config._budget + _lamports(strategy.profit_loss)
    needed = 0
    for left, amount in enumerate(
        _amounts_lamports(strategy.config, strategy.losing_streak, up_to + 1)
    ):
        needed += amount
        if needed > remaining:
            return left - 1
    return up_to


def risk_level(strategy: Strategy) -> RiskLevel:
    """HIGH with at most 1 loss left, MEDIUM with at most 3, else LOW; LOW when not active."""
    left = losses_left(strategy, MEDIUM_RISK_LOSSES_LEFT + 1)
    if left is None:
        return RiskLevel.LOW
    if left <= HIGH_RISK_LOSSES_LEFT:
        return RiskLevel.HIGH
    if left <= MEDIUM_RISK_LOSSES_LEFT:
        return RiskLevel.MEDIUM
    return RiskLevel.LOW


@dataclass(frozen=True, slots=True)
class Progress:
    """A strategy's progress with the fields teams already read (``../shared/DESIGN.md``; camelCase
    in GraphQL), plus the losing streak and the exit reason. Amounts in SOL."""

    strategy_id: str
    wallet_address: str
    current_round: int
    """Rounds played so far."""
    total_rounds: int
    progress_percentage: Decimal
    current_amount_sol: Decimal
    """The next deployment; 0 once the strategy is not active (it deploys nothing more)."""
    total_deployed_sol: Decimal
    total_rewards_sol: Decimal
    total_loss_sol: Decimal
    profit_loss_sol: Decimal
    status: StrategyStatus
    win_rate_percentage: Decimal | None
    """None before the first round."""
    risk_level: RiskLevel
    losing_streak: int
    exit_reason: ExitReason | None
    last_round: int | None
    """The last round settled (or refused in advance)."""
    base_amount_sol: Decimal
    multiplier: Decimal
    stop_loss_sol: Decimal | None
    take_profit_sol: Decimal | None
    budget_sol: Decimal | None


STRATEGY_PROGRESS = PayloadCodec(
    Progress,
    fields=(
        *("strategy_id", "wallet_address", "current_round", "total_rounds", "progress_percentage"),
        *("current_amount_sol", "total_deployed_sol", "total_rewards_sol", "total_loss_sol"),
        *("profit_loss_sol", "status", "exit_reason", "win_rate_percentage", "risk_level"),
        *("losing_streak", "last_round", "base_amount_sol", "multiplier", "stop_loss_sol"),
        *("take_profit_sol", "budget_sol"),
    ),
)
"""A strategy's progress as the martingale events carry it (one per strategy)."""


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """A progress event's payload: the progress of one wallet's strategies (``wallet``), or of
    every strategy (no wallet: the key is absent, not null)."""

    strategies: tuple[Progress, ...]
    wallet: str | None = None


PROGRESS_UPDATE = PayloadCodec(ProgressUpdate, fields=("wallet", "strategies"), omit_none=True)


def progress(strategy: Strategy) -> Progress:
    config = strategy.config
    played = strategy.rounds_played
    next_amount = strategy.next_amount
    return Progress(
        strategy_id=strategy.id,
        wallet_address=config.wallet_address,
        current_round=played,
        total_rounds=config.total_rounds,
        progress_percentage=Decimal(played) * _HUNDRED / config.total_rounds,
        current_amount_sol=_ZERO if next_amount is None else next_amount,
        total_deployed_sol=strategy.total_deployed,
        total_rewards_sol=strategy.total_rewards,
        total_loss_sol=strategy.total_loss,
        profit_loss_sol=strategy.profit_loss,
        status=strategy.status,
        win_rate_percentage=None if played == 0 else Decimal(strategy.wins) * _HUNDRED / played,
        risk_level=risk_level(strategy),
        losing_streak=strategy.losing_streak,
        exit_reason=strategy.exit_reason,
        last_round=strategy.last_round,
        base_amount_sol=config.base_amount,
        multiplier=config.multiplier,
        stop_loss_sol=config.stop_loss,
        take_profit_sol=config.take_profit,
        budget_sol=config.budget,
    )
