"""The martingale feed's GraphQL types that its root fields and its streams both show: a
strategy's progress and its updates, mining rounds, and their enums."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import strawberry

from api.feeds.martingale.store import progress_payload
from api.graphql.resume import Resumable, StreamReset
from domain import martingale as model
from domain.martingale_summary import SUMMARY
from domain.mining_rounds import ROUND

if TYPE_CHECKING:
    from domain.martingale_summary import Summary
    from domain.mining_rounds import MiningRound

PERCENT_PLACES = Decimal("0.01")


strawberry.enum(model.StrategyStatus, name="StrategyStatus")
StrategyStatus: TypeAlias = model.StrategyStatus


strawberry.enum(model.RiskLevel, name="RiskLevel")
RiskLevel: TypeAlias = model.RiskLevel


strawberry.enum(model.ExitReason, name="ExitReason")
ExitReason: TypeAlias = model.ExitReason


@strawberry.type(description="A strategy's progress, with the field names the seed system used.")
class MartingaleProgress:
    strategy_id: strawberry.ID
    wallet_address: str
    current_round: int = strawberry.field(description="Rounds played so far.")
    total_rounds: int
    progress_percentage: Decimal = strawberry.field(description="To two decimal places.")
    current_amount_sol: Decimal = strawberry.field(
        description="What the next round deploys (0 once the strategy has ended)."
    )
    total_deployed_sol: Decimal
    total_rewards_sol: Decimal = strawberry.field(
        description="Paid back by won rounds, stakes included."
    )
    total_loss_sol: Decimal = strawberry.field(description="Deployed in lost rounds.")
    profit_loss_sol: Decimal = strawberry.field(description="Total rewards minus total deployed.")
    status: StrategyStatus
    exit_reason: ExitReason | None
    win_rate_percentage: Decimal | None = strawberry.field(
        description="To two decimal places; null before the first round."
    )
    risk_level: RiskLevel = strawberry.field(
        description="HIGH when the remaining budget survives at most 1 more straight loss, "
        "MEDIUM at most 3, else LOW (docs/martingale.md)."
    )
    losing_streak: int
    last_round: int | None
    base_amount_sol: Decimal
    multiplier: Decimal
    stop_loss_sol: Decimal | None
    take_profit_sol: Decimal | None
    budget_sol: Decimal | None

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> MartingaleProgress:
        shown = _read_progress(p)
        shown.progress_percentage = shown.progress_percentage.quantize(PERCENT_PLACES)
        win_rate = shown.win_rate_percentage
        shown.win_rate_percentage = None if win_rate is None else win_rate.quantize(PERCENT_PLACES)
        return shown

    @classmethod
    def of(cls, strategy: model.Strategy) -> MartingaleProgress:
        return cls.from_payload(progress_payload(strategy))


@strawberry.type(description="The progress of a wallet's strategies.")
class MartingaleUpdate:
    wallet_address: str | None = strawberry.field(
        description="Always the wallet followed (nullable for clients of older schemas)."
    )
    strategies: list[MartingaleProgress]
    at: datetime


@strawberry.type(description="A page of strategies in id order.")
class StrategyPage:
    strategies: list[MartingaleProgress]
    end_cursor: str | None = strawberry.field(
        description="Pass it as `after` for the next page; null on an empty page."
    )
    has_next_page: bool


@strawberry.type(
    description="The strategies of one status: how many, and the sums of their totals."
)
class StrategyStatusTotals:
    status: StrategyStatus
    strategies: int
    total_deployed_sol: Decimal
    total_rewards_sol: Decimal
    total_loss_sol: Decimal
    profit_loss_sol: Decimal = strawberry.field(description="Total rewards minus total deployed.")


@strawberry.type(description="Every strategy at once, by status (admins).")
class MartingaleSummary:
    statuses: list[StrategyStatusTotals] = strawberry.field(
        description="One entry per status, zeros included."
    )
    last_settled_round: int | None = strawberry.field(
        description="The newest settled round; null before the first."
    )
    at: datetime

    @classmethod
    def of(cls, summary: Summary, at: datetime) -> MartingaleSummary:
        return cls(
            statuses=[
                StrategyStatusTotals(
                    status=t.status,
                    strategies=t.strategies,
                    total_deployed_sol=t.total_deployed_sol,
                    total_rewards_sol=t.total_rewards_sol,
                    total_loss_sol=t.total_loss_sol,
                    profit_loss_sol=t.profit_loss_sol,
                )
                for t in summary.statuses
            ],
            last_settled_round=summary.last_settled_round,
            at=at,
        )

    @classmethod
    def from_payload(cls, p: dict[str, Any], at: datetime) -> MartingaleSummary:
        return cls.of(SUMMARY.decode(p), at)


@strawberry.type(description="A mining round.")
class Round(Resumable):
    number: int
    starts_at: datetime
    ends_at: datetime
    settled_at: datetime | None
    won: bool | None = strawberry.field(description="Null until the round is settled.")
    reward_multiplier: Decimal | None = strawberry.field(
        description="SOL paid back per SOL deployed on a win, stake included."
    )

    @classmethod
    def of(cls, r: MiningRound) -> Round:
        return cls(
            number=r.number,
            starts_at=r.starts_at,
            ends_at=r.ends_at,
            settled_at=r.settled_at,
            won=None if r.result is None else r.result.won,
            reward_multiplier=None if r.result is None else r.result.reward_multiplier,
        )

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> Round:
        return _read_round(p)


_read_progress = model.STRATEGY_PROGRESS.reader(MartingaleProgress)
_read_round = ROUND.reader(Round)
"""A progress's and a round event's payload as the schema shows them (read once per
subscriber)."""
progress_of_update = model.PROGRESS_UPDATE.part("strategies", MartingaleProgress.from_payload)
"""The strategies of a progress event as the schema shows them."""


RoundEvent = Annotated[
    Round | StreamReset,
    strawberry.union("RoundEvent", description="What the rounds stream sends."),
]
