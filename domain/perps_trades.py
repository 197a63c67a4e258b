"""Trading perpetual positions: open, modify, close and liquidate, each as a pure function from
the position before to the position after and the fill it makes.

Isolated margin against the simulated market: a trade fills at the oracle price, pays the market's
taker fee on its notional, and settles what it realizes (fees and reduced PnL) into the position's
``realized_pnl``; the trader's wallet is not modelled, collateral moves in and out of it.

Liquidation (``../shared/DOMAIN.md``): the position is closed at the current price, the liquidator
earns ``liquidation fee rate * notional`` out of what is left of the equity, and the trader gets the
rest back (nothing if the equity does not cover the reward). The realized PnL of a liquidated
position is therefore ``returned - collateral``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING

from domain.perps import LIQUIDATION_HEALTH, Position, Side, mark_to_market

if TYPE_CHECKING:
    from datetime import datetime

    from domain.markets import Market

_ZERO = Decimal(0)


class TradeError(ValueError):
    """A trade the market refuses; ``code`` is stable for clients, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class FillKind(enum.Enum):
    OPEN = "open"
    INCREASE = "increase"
    REDUCE = "reduce"
    CLOSE = "close"
    LIQUIDATION = "liquidation"
    COLLATERAL = "collateral"
    """Collateral added or withdrawn, no size traded."""


@dataclass(frozen=True, slots=True)
class Fill:
    position_id: str
    owner: str
    market: str
    side: Side
    kind: FillKind
    size: Decimal
    """Base units traded (0 for a collateral change)."""
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal
    """What this fill settled: the PnL of the size it reduced, minus its fee."""
    at: datetime

    @property
    def notional(self) -> Decimal:
        return self.size * self.price


@dataclass(frozen=True, slots=True)
class Trade:
    """The position after the trade (for a close or liquidation, as it stood when it ended)."""

    position: Position
    fill: Fill
    returned: Decimal = _ZERO
    """Paid out to the trader: collateral and PnL of what was closed, net of its fee, and
    withdrawn collateral. Opening and growing take the collateral and fee from the trader's
    wallet, which is not modelled."""
    reward: Decimal = _ZERO
    """The liquidator's reward (liquidations only)."""


MONEY_PLACES = Decimal("0.000001")
"""Collateral, fees and payouts are kept to 6 decimal places (a USDC unit), rounded against the
trader as venues do: what the trader pays up, what the trader gets down."""
PRICE_PLACES = Decimal("1e-10")
"""An average entry price is kept to 10 decimal places."""


def up(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_PLACES, ROUND_CEILING)


def down(amount: Decimal) -> Decimal:
    return amount.quantize(MONEY_PLACES, ROUND_FLOOR)


MAX_AMOUNT = Decimal("1e15")
"""No size, price or collateral reaches this: larger input is refused before any arithmetic on it
could overflow the decimal context."""


def check_size(size: Decimal, market: Market) -> None:
    if not size.is_finite() or size <= 0:
        raise TradeError("INVALID_SIZE", "size must be a positive number")
    if size >= MAX_AMOUNT:
        raise TradeError("INVALID_SIZE", f"size must be below {MAX_AMOUNT:f}")
    if size < market.min_order_size:
        raise TradeError(
            "INVALID_SIZE",
            f"size {size} is below the minimum {market.min_order_size} of {market.id}",
        )
    if size % market.step_size != 0:
        raise TradeError(
            "INVALID_SIZE",
            f"size {size} is not a multiple of {market.id}'s step {market.step_size}",
        )


def check_leverage(leverage: Decimal, market: Market) -> None:
    if not leverage.is_finite() or leverage < 1 or leverage > market.max_leverage:
        raise TradeError(
            "INVALID_LEVERAGE",
            f"leverage must be between 1 and {market.max_leverage} on {market.id}",
        )


def open_position(
    *,
    id: str,
    owner: str,
    market: Market,
    side: Side,
    size: Decimal,
    leverage: Decimal,
    price: Decimal,
    at: datetime,
) -> Trade:
    """A new position of ``size`` at ``price`` with ``size * price / leverage`` collateral."""
    check_size(size, market)
    check_leverage(leverage, market)
    collateral = up(size * price / leverage)
    fee = up(size * price * market.taker_fee_rate)
    position = Position(
        id=id,
        owner=owner,
        market=market.id,
        side=side,
        size=size,
        entry_price=price,
        collateral=collateral,
        opened_at=at,
        realized_pnl=-fee,
        revision=1,
    )
    _check_safe(position, price, market)
    fill = Fill(id, owner, market.id, side, FillKind.OPEN, size, price, fee, -fee, at)
    return Trade(position, fill)


def modify_position(
    position: Position,
    *,
    market: Market,
    price: Decimal,
    size_delta: Decimal = _ZERO,
    collateral_delta: Decimal = _ZERO,
    at: datetime,
) -> Trade:
    """Grow or shrink the position by ``size_delta`` at ``price`` and move ``collateral_delta``
    in (positive) or out (negative).

    Growing adds collateral at the position's current leverage and moves the entry to the
    size-weighted average; shrinking realizes the PnL of the part closed and releases its share of
    the collateral. The result must keep within the market's leverage and stay above liquidation;
    shrinking to nothing is :func:`close_position`.
    """
    for value in (size_delta, collateral_delta):
        if not value.is_finite() or abs(value) >= MAX_AMOUNT:
            raise TradeError("INVALID_AMOUNT", f"amounts must be finite and below {MAX_AMOUNT:f}")
    if size_delta == 0 and collateral_delta == 0:
        raise TradeError("NOTHING_TO_DO", "give a size change, a collateral change, or both")
    size, entry, collateral = position.size, position.entry_price, position.collateral
    fee = realized = returned = _ZERO
    kind = FillKind.COLLATERAL
    if size_delta > 0:
        check_size(size_delta, market)
        leverage = position.leverage or market.max_leverage
        entry = (size * entry + size_delta * price) / (size + size_delta)
        entry = entry.quantize(PRICE_PLACES)
        collateral += up(size_delta * price / leverage)
        size += size_delta
        kind = FillKind.INCREASE
    elif size_delta < 0:
        check_size(-size_delta, market)
        if -size_delta >= size:
            raise TradeError(
                "INVALID_SIZE", "a reduction must leave a position; close it to end it"
            )
        closed = -size_delta
        realized = position.side.sign * closed * (price - entry)
        fee = up(closed * price * market.taker_fee_rate)
        released = down(collateral * closed / size)
        collateral -= released
        # The closed part's share of collateral, its PnL and its fee are paid out together; a
        # loss larger than that share comes out of the collateral that stays.
        returned = released + realized - fee
        if returned < 0:
            collateral += returned
            returned = _ZERO
        if collateral < 0:
            raise TradeError(
                "INVALID_SIZE",
                "the position's loss is past its collateral: it can only be closed or liquidated",
            )
        size -= closed
        kind = FillKind.REDUCE
    traded = abs(size_delta)
    if size_delta > 0:
        fee = up(traded * price * market.taker_fee_rate)
    if collateral_delta < 0 and -collateral_delta > collateral:
        raise TradeError(
            "INVALID_COLLATERAL", "cannot withdraw more collateral than the position has"
        )
    collateral += collateral_delta
    if collateral_delta < 0:
        returned -= collateral_delta
    after = replace(
        position,
        size=size,
        entry_price=entry,
        collateral=collateral,
        realized_pnl=position.realized_pnl + realized - fee,
        revision=position.revision + 1,
    )
    if after.collateral == 0 or (after.leverage or _ZERO) > market.max_leverage:
        raise TradeError(
            "INVALID_LEVERAGE",
            f"the change would take the position past {market.max_leverage}x leverage",
        )
    _check_safe(after, price, market)
    fill = Fill(
        position.id,
        position.owner,
        market.id,
        position.side,
        kind,
        traded,
        price,
        fee,
        realized - fee,
        at,
    )
    return Trade(after, fill, returned=returned)


def close_position(position: Position, *, market: Market, price: Decimal, at: datetime) -> Trade:
    """Close all of it at ``price``: realize the PnL, pay the fee, return the equity."""
    upnl = position.signed_size * (price - position.entry_price)
    fee = up(position.size * price * market.taker_fee_rate)
    returned = down(max(position.collateral + upnl - fee, _ZERO))
    return _ended(position, market, FillKind.CLOSE, price, fee, returned, at)


def liquidate_position(
    position: Position, *, market: Market, price: Decimal, at: datetime
) -> Trade:
    """Close a liquidatable position at ``price``; refuses one whose health is not below 1."""
    valuation = mark_to_market(position, price, market)
    if not valuation.liquidatable:
        raise TradeError("NOT_LIQUIDATABLE", f"position {position.id} is not liquidatable")
    equity = max(valuation.equity, _ZERO)
    reward = min(up(valuation.liquidation_reward), equity)
    returned = down(equity - reward)
    return _ended(position, market, FillKind.LIQUIDATION, price, _ZERO, returned, at, reward=reward)


def _ended(
    position: Position,
    market: Market,
    kind: FillKind,
    price: Decimal,
    fee: Decimal,
    returned: Decimal,
    at: datetime,
    *,
    reward: Decimal = _ZERO,
) -> Trade:
    """A position ended by ``kind``: what came back to the owner, against what it put in, is
    its realized PnL."""
    realized = returned - position.collateral
    after = replace(
        position,
        realized_pnl=position.realized_pnl + realized,
        revision=position.revision + 1,
    )
    fill = Fill(
        position.id,
        position.owner,
        market.id,
        position.side,
        kind,
        position.size,
        price,
        fee,
        realized,
        at,
    )
    return Trade(after, fill, returned=returned, reward=reward)


def _check_safe(position: Position, price: Decimal, market: Market) -> None:
    health = mark_to_market(position, price, market).health
    if health is not None and health < LIQUIDATION_HEALTH:
        raise TradeError(
            "WOULD_BE_LIQUIDATABLE", "the position would be liquidatable at the current price"
        )
