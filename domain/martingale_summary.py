"""What admins follow of every martingale strategy at once: per status, how many strategies and
their totals, and the newest settled round. One small message, whatever the number of strategies
(each owner follows its own strategies' progress on its wallet's topic).

The totals are sums of the strategies' own (``domain.martingale``), so the same identities hold:
profit/loss = total rewards - total deployed, per status and over all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from domain.martingale import StrategyStatus
from domain.payloads import PayloadCodec

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class StatusTotals:
    """The strategies of one status: how many, and the sums of their totals (SOL)."""

    status: StrategyStatus
    strategies: int = 0
    total_deployed_sol: Decimal = _ZERO
    total_rewards_sol: Decimal = _ZERO
    total_loss_sol: Decimal = _ZERO

    @property
    def profit_loss_sol(self) -> Decimal:
        return self.total_rewards_sol - self.total_deployed_sol


@dataclass(frozen=True, slots=True)
class Summary:
    """Every strategy, by status: one entry per status, in :class:`StrategyStatus` order (a status
    no strategy has shows zeros)."""

    statuses: tuple[StatusTotals, ...]
    last_settled_round: int | None
    """The newest settled round; None before the first."""

    @classmethod
    def of(
        cls, totals: dict[StrategyStatus, StatusTotals], last_settled_round: int | None
    ) -> Summary:
        return cls(
            tuple(totals.get(status, StatusTotals(status)) for status in StrategyStatus),
            last_settled_round,
        )


STATUS_TOTALS = PayloadCodec(
    StatusTotals,
    fields=(
        *("status", "strategies", "total_deployed_sol", "total_rewards_sol", "total_loss_sol"),
        "profit_loss_sol",
    ),
)
SUMMARY = PayloadCodec(Summary)
"""The payload of the admin-wide ``martingale`` topic's events."""
