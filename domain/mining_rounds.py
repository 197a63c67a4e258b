"""Mining rounds and where their outcomes come from.

A round has a number (1, 2, 3, ... as the round clock turns them), a start and an end. When it
ends it is settled with a :class:`RoundResult`: whether the round won and, if so, what it paid
per SOL deployed (``reward multiplier``; stake included, so 2.0 doubles the deployment). Every
strategy active in that round is settled once with it (:func:`settle_round`):

    reward = amount * reward multiplier, rounded DOWN to a lamport    (a loss pays 0)

Outcomes are pluggable: :class:`SimulatedOutcomes` (seeded, a configurable win probability and
multiplier; the same seed gives the same outcome for the same round number, across restarts), or
a ``service`` caller that settles each round with its real outcome.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

from domain.martingale import LAMPORT, AlreadySettledError, RoundOutcome, StrategyStatus
from domain.payloads import PayloadCodec

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from domain.martingale import Strategy

MAX_REWARD_MULTIPLIER = Decimal(1000)


@dataclass(frozen=True, slots=True)
class MiningRound:
    number: int
    starts_at: datetime
    ends_at: datetime
    result: RoundResult | None = None
    settled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RoundState:
    """A round as its events carry it: the result's fields beside the round's, null until it is
    settled."""

    number: int
    starts_at: datetime
    ends_at: datetime
    settled_at: datetime | None
    won: bool | None
    reward_multiplier: Decimal | None

    @classmethod
    def of(cls, r: MiningRound) -> RoundState:
        result = r.result
        return cls(
            r.number,
            r.starts_at,
            r.ends_at,
            r.settled_at,
            None if result is None else result.won,
            None if result is None else result.reward_multiplier,
        )


ROUND = PayloadCodec(RoundState)


@dataclass(frozen=True, slots=True)
class RoundResult:
    round_number: int
    won: bool
    reward_multiplier: Decimal = Decimal(0)
    """SOL paid back per SOL deployed on a win, stake included; ignored on a loss."""

    def __post_init__(self) -> None:
        if self.round_number <= 0:
            raise ValueError("round number must be positive")
        m = self.reward_multiplier
        if not m.is_finite() or m < 0 or m > MAX_REWARD_MULTIPLIER:
            raise ValueError(f"reward multiplier must be between 0 and {MAX_REWARD_MULTIPLIER}")

    def reward(self, amount: Decimal) -> Decimal:
        if not self.won:
            return Decimal(0)
        return (amount * self.reward_multiplier).quantize(LAMPORT, ROUND_FLOOR)


class SimulatedOutcomes:
    """Seeded outcomes: round n wins with ``win_probability`` and pays ``reward_multiplier``.
    The draw depends only on the seed and the round number."""

    def __init__(
        self,
        *,
        seed: int | None,
        win_probability: float = 0.48,
        reward_multiplier: Decimal = Decimal(2),
    ) -> None:
        if not 0 <= win_probability <= 1:
            raise ValueError("win probability must be between 0 and 1")
        self.seed = random.randrange(2**32) if seed is None else seed
        self.win_probability = win_probability
        self.reward_multiplier = reward_multiplier

    def outcome(self, round_number: int) -> RoundResult:
        draw = random.Random(f"{self.seed}:{round_number}").random()
        return RoundResult(round_number, draw < self.win_probability, self.reward_multiplier)


def settle_round(
    strategies: Iterable[Strategy], result: RoundResult
) -> list[tuple[Strategy, Strategy]]:
    """Each active strategy before and after ``result``; strategies that already settled this
    round (a replay) or have ended are left out, so applying a round twice changes nothing."""
    settled = []
    for strategy in strategies:
        amount = strategy.next_amount
        if amount is None or strategy.status is not StrategyStatus.ACTIVE:
            continue
        outcome = RoundOutcome(result.round_number, result.won, result.reward(amount))
        try:
            settled.append((strategy, strategy.settle(outcome)))
        except AlreadySettledError:
            continue
    return settled
