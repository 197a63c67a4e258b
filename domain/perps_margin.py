"""The perps margin account: the free collateral a user trades perpetuals with, and the limits
that bound one user's position and a market's open interest.

Every user has one account in the quote currency (USD). It starts with an initial balance (the
server's ``PERPS_INITIAL_BALANCE``, like the paper account's) and holds *free* collateral: money
not locked in any position. Trades move money between it and the positions, and nothing else
does (``docs/perps.md``, "Margin"):

    opening          free -= collateral + fee           (collateral = size * price / leverage)
    growing          free -= added collateral + fee
    adding collateral        free -= amount             withdrawing: free += amount
    reducing         free += the part's collateral + its PnL - its fee   (the trade's ``returned``)
    closing          free += collateral + PnL - fee     (at least 0: ``returned``)
    liquidation      free += what is left after the liquidator's reward  (``returned``)
    funding          the position's collateral only (as before: it never touches the account)

All of these are one rule, read off the trade the existing formulas make
(:mod:`domain.perps_trades`): what the position settled (``fill.realized_pnl``) less what its
collateral grew by, :func:`account_movement`. So per user, at every moment,

    free balance + collateral of open positions = deposited + realized PnL of every position

(realized PnL: fees, funding, reductions, closes and liquidations, as each position keeps it),
and no trade creates or loses money; the liquidator's reward and the funding a position pays are
the money that leaves a user. A movement that would take the free balance below zero is refused
with INSUFFICIENT_MARGIN.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain.payloads import PayloadCodec
from domain.perps_trades import FillKind, TradeError

if TYPE_CHECKING:
    from domain.markets import Market
    from domain.perps import Side
    from domain.perps_trades import Trade

_ZERO = Decimal(0)

ENDING = frozenset({FillKind.CLOSE, FillKind.LIQUIDATION})
"""Fills after which the position holds no collateral any more."""


@dataclass(frozen=True, slots=True)
class MarginAccount:
    owner: str
    balance: Decimal
    """Free collateral: what the owner may put into positions."""
    deposited: Decimal
    """Every amount ever put in: the initial balance and top-ups."""
    revision: int = 0
    """Bumped by every movement."""

    def to_payload(self) -> dict[str, Any]:
        return MARGIN_ACCOUNT.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> MarginAccount:
        return MARGIN_ACCOUNT.decode(payload)


MARGIN_ACCOUNT = PayloadCodec(MarginAccount)


def new_account(owner: str, initial_balance: Decimal) -> MarginAccount:
    """An account as a user first has it: the initial balance, free."""
    if not initial_balance.is_finite() or initial_balance < 0:
        raise ValueError("the initial balance must be a finite amount, at least 0")
    return MarginAccount(owner, initial_balance, initial_balance)


def account_movement(trade: Trade, collateral_before: Decimal) -> Decimal:
    """What ``trade`` moves into (positive) or out of (negative) the owner's free balance.

    The money a position settled is its fill's ``realized_pnl`` (fees included); what its
    collateral grew by came out of the account, what it shrank by went back, and an ended
    position keeps none. For an open that is ``-(collateral + fee)``; for a reduction, a close
    or a liquidation it equals the trade's ``returned``."""
    collateral_after = _ZERO if trade.fill.kind in ENDING else trade.position.collateral
    return trade.fill.realized_pnl - (collateral_after - collateral_before)


def move(account: MarginAccount, amount: Decimal) -> MarginAccount:
    """The account after ``amount`` moved in (positive) or out (negative); INSUFFICIENT_MARGIN
    if the free balance does not cover what goes out."""
    balance = account.balance + amount
    if balance < 0:
        raise TradeError(
            "INSUFFICIENT_MARGIN",
            f"this needs {-amount:f} USD of free margin (collateral and fee); "
            f"your perps margin account has {account.balance:f}",
        )
    return replace(account, balance=balance, revision=account.revision + 1)


def deposit(account: MarginAccount, amount: Decimal) -> MarginAccount:
    if not amount.is_finite() or amount < 0:
        raise ValueError("a deposit must be a finite amount, at least 0")
    return replace(
        account,
        balance=account.balance + amount,
        deposited=account.deposited + amount,
        revision=account.revision + 1,
    )


def top_up_amount(account: MarginAccount, floor: Decimal) -> Decimal:
    """What brings the free balance back up to ``floor`` (0 if it is there already)."""
    return max(floor - account.balance, _ZERO)


def check_limits(
    market: Market, side: Side, added: Decimal, user_holds: Decimal, open_interest: Decimal
) -> None:
    """Refuse adding ``added`` base units on ``side`` of ``market`` when the user, who holds
    ``user_holds`` there, or the side's ``open_interest`` would pass the market's limit.
    Reducing (``added`` <= 0) is never refused: a trader can always get out."""
    if added <= 0:
        return
    if user_holds + added > market.max_position_size:
        raise TradeError(
            "POSITION_LIMIT",
            f"{market.id} allows one user at most {market.max_position_size:f} {market.base} "
            f"{side.value}; you hold {user_holds:f}",
        )
    if open_interest + added > market.max_open_interest:
        raise TradeError(
            "OPEN_INTEREST_LIMIT",
            f"{market.id}'s {side.value} open interest may not pass "
            f"{market.max_open_interest:f} {market.base}; it is {open_interest:f}",
        )


def added_size(trade: Trade) -> Decimal:
    """Base units the trade adds to its side (0 for anything that does not grow exposure)."""
    if trade.fill.kind in (FillKind.OPEN, FillKind.INCREASE):
        return trade.fill.size
    return _ZERO
