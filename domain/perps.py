"""Perpetual futures positions: mark-to-market, health, liquidation price, and the liquidation
watch that turns a stream of health values into warnings and candidates.

Definitions (``../shared/DOMAIN.md``, isolated margin, prices in the quote currency):

    notional                = size * mark                       (size > 0; the side gives the sign)
    unrealized PnL          = signed size * (mark - entry)
    equity                  = collateral + unrealized PnL
    maintenance requirement = notional * maintenance margin rate
    health                  = equity / maintenance requirement  (>= 1 safe, < 1 liquidatable)
    margin ratio            = maintenance requirement / equity  (Binance's; 1 / health)
    liquidation price       = the mark at which health is exactly 1:
        long   (size * entry - collateral) / (size * (1 - MMR))
        short  (size * entry + collateral) / (size * (1 + MMR))

With collateral = size * entry / leverage the liquidation price is the venues' textbook
``entry * (1 - 1/L) / (1 - MMR)`` (long) and ``entry * (1 + 1/L) / (1 + MMR)`` (short). Every
division is guarded: where a value does not exist (no requirement, no equity, a price <= 0) it is
None.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from domain.payloads import PayloadCodec

if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime

    from domain.markets import Market

WARNING_HEALTH = Decimal("1.2")
"""Below this a position draws a liquidation warning (once per downward crossing)."""
LIQUIDATION_HEALTH = Decimal("1")
"""Below this a position is a liquidation candidate."""

_ONE = Decimal(1)


class Side(enum.Enum):
    LONG = "long"
    SHORT = "short"

    @property
    def sign(self) -> int:
        return 1 if self is Side.LONG else -1


@dataclass(frozen=True, slots=True)
class Position:
    """An open isolated-margin position. ``size`` is positive; ``side`` says which way."""

    id: str
    owner: str
    market: str
    side: Side
    size: Decimal
    entry_price: Decimal
    collateral: Decimal
    opened_at: datetime | None = None
    realized_pnl: Decimal = Decimal(0)
    """Profit and loss already settled: fees, funding, reductions."""
    revision: int = 0
    """Bumped by every change, so a writer can tell it still holds the latest state."""

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError("size must be positive")
        if self.entry_price <= 0:
            raise ValueError("entry price must be positive")
        if self.collateral < 0:
            raise ValueError("collateral must not be negative")

    @property
    def signed_size(self) -> Decimal:
        return self.size * self.side.sign

    @property
    def leverage(self) -> Decimal | None:
        """Entry notional over collateral; None without collateral."""
        if self.collateral == 0:
            return None
        return self.size * self.entry_price / self.collateral

    def to_payload(self) -> dict[str, Any]:
        return POSITION.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Position:
        return POSITION.decode(payload)


POSITION = PayloadCodec(Position)
"""A position's payload (in every positions event, and stored as the position's state)."""


@dataclass(frozen=True, slots=True)
class Valuation:
    """A position marked to one price."""

    position: Position
    mark: Decimal
    notional: Decimal
    unrealized_pnl: Decimal
    equity: Decimal
    maintenance_requirement: Decimal
    health: Decimal | None
    margin_ratio: Decimal | None
    liquidation_price: Decimal | None
    liquidation_reward: Decimal
    """What a liquidator earns: the market's liquidation fee times the notional."""

    @property
    def liquidatable(self) -> bool:
        return self.health is not None and self.health < LIQUIDATION_HEALTH

    @property
    def warned(self) -> bool:
        return self.health is not None and self.health < WARNING_HEALTH


def mark_to_market(position: Position, mark: Decimal, market: Market) -> Valuation:
    mmr = market.maintenance_margin_rate
    marked = _mark(
        position.size, position.signed_size, position.entry_price, position.collateral, mmr, mark
    )
    return Valuation(
        position=position,
        mark=mark,
        notional=marked.notional,
        unrealized_pnl=marked.unrealized_pnl,
        equity=marked.equity,
        maintenance_requirement=marked.maintenance_requirement,
        health=marked.health,
        margin_ratio=marked.margin_ratio,
        liquidation_price=liquidation_price(position, mmr),
        liquidation_reward=marked.notional * market.liquidation_fee_rate,
    )


class Marked(NamedTuple):
    """What of a valuation the mark enters (see :class:`Valuation`)."""

    notional: Decimal
    unrealized_pnl: Decimal
    equity: Decimal
    maintenance_requirement: Decimal
    health: Decimal | None
    margin_ratio: Decimal | None


class Exposure:
    """A position ready to be marked price after price: what depends on the position and its
    market's maintenance margin rate alone (the signed size, the liquidation price) is worked out
    once, so that re-valuing it on every tick costs only the arithmetic the mark enters. Its
    marks are :func:`mark_to_market`'s, digit for digit: both are :func:`_mark`."""

    __slots__ = ("_collateral", "_entry", "_mmr", "_signed_size", "_size", "liquidation_price")

    def __init__(self, position: Position, maintenance_margin_rate: Decimal) -> None:
        self._size = position.size
        self._signed_size = position.signed_size
        self._entry = position.entry_price
        self._collateral = position.collateral
        self._mmr = maintenance_margin_rate
        self.liquidation_price = liquidation_price(position, maintenance_margin_rate)

    def mark(self, mark: Decimal) -> Marked:
        return _mark(self._size, self._signed_size, self._entry, self._collateral, self._mmr, mark)


def _mark(
    size: Decimal,
    signed_size: Decimal,
    entry: Decimal,
    collateral: Decimal,
    mmr: Decimal,
    mark: Decimal,
) -> Marked:
    if mark <= 0:
        raise ValueError("mark price must be positive")
    notional = size * mark
    upnl = signed_size * (mark - entry)
    equity = collateral + upnl
    requirement = notional * mmr
    return Marked(
        notional,
        upnl,
        equity,
        requirement,
        equity / requirement if requirement > 0 else None,
        requirement / equity if equity > 0 else None,
    )


def liquidation_price(position: Position, maintenance_margin_rate: Decimal) -> Decimal | None:
    """The mark at which the position's health is exactly 1, or None if there is none."""
    size, entry, collateral = position.size, position.entry_price, position.collateral
    if position.side is Side.LONG:
        denominator = size * (_ONE - maintenance_margin_rate)
        price = (size * entry - collateral) / denominator if denominator > 0 else None
    else:
        price = (size * entry + collateral) / (size * (_ONE + maintenance_margin_rate))
    return price if price is not None and price > 0 else None


class Signal(enum.Enum):
    WARNING = "warning"
    """Health fell below WARNING_HEALTH (sent once per downward crossing)."""
    CANDIDATE = "candidate"
    """Health fell below LIQUIDATION_HEALTH: the position may be liquidated."""
    RECOVERED = "recovered"
    """A warned position is back above WARNING_HEALTH: the warning is re-armed."""


class LiquidationWatch:
    """Turns successive valuations into signals, so a client hears of a crossing once, not on
    every tick. A price with no health (no requirement) changes nothing."""

    def __init__(self) -> None:
        self._warned: set[str] = set()
        self._candidates: set[str] = set()

    def observe(self, valuation: Valuation) -> list[Signal]:
        if valuation.health is None:
            return []
        position_id = valuation.position.id
        signals: list[Signal] = []
        if valuation.warned:
            if position_id not in self._warned:
                self._warned.add(position_id)
                signals.append(Signal.WARNING)
        elif position_id in self._warned:
            self._warned.discard(position_id)
            signals.append(Signal.RECOVERED)
        if valuation.liquidatable:
            if position_id not in self._candidates:
                self._candidates.add(position_id)
                signals.append(Signal.CANDIDATE)
        else:
            self._candidates.discard(position_id)
        return signals

    @property
    def warned(self) -> frozenset[str]:
        """The positions warned of and not yet recovered."""
        return frozenset(self._warned)

    def retain(self, position_ids: set[str]) -> None:
        """Forget every position not in ``position_ids`` (closed or liquidated elsewhere)."""
        self._warned &= position_ids
        self._candidates &= position_ids

    def unwarn(self, position_id: str) -> None:
        """The warning :meth:`observe` signalled was not delivered: signal it again the next
        time the position is observed in the band."""
        self._warned.discard(position_id)

    def forget(self, position_id: str) -> None:
        """The position is closed or liquidated."""
        self._warned.discard(position_id)
        self._candidates.discard(position_id)


def ranked_candidates(valuations: Iterable[Valuation], limit: int | None = None) -> list[Valuation]:
    """Liquidatable positions, the largest reward first (ties: lowest health, then position id)."""
    candidates = sorted((v for v in valuations if v.liquidatable), key=_rank)
    return candidates if limit is None else candidates[:limit]


def _rank(valuation: Valuation) -> tuple[Decimal, Decimal, str]:
    assert valuation.health is not None
    return (-valuation.liquidation_reward, valuation.health, valuation.position.id)


@dataclass(frozen=True, slots=True)
class OpenInterest:
    long: Decimal
    short: Decimal


def open_interest(positions: Iterable[Position], market: str) -> OpenInterest:
    """Both sides in base units: pool venues track them apart, book venues report one (equal)."""
    long = short = Decimal(0)
    for position in positions:
        if position.market != market:
            continue
        if position.side is Side.LONG:
            long += position.size
        else:
            short += position.size
    return OpenInterest(long=long, short=short)


@dataclass(frozen=True, slots=True)
class FundingParams:
    interest_rate: Decimal = Decimal("0.0001")
    """Per funding interval (0.01%), as Binance's default."""
    interest_clamp: Decimal = Decimal("0.0005")
    """The interest term moves the rate by at most this much (0.05%)."""
    cap: Decimal = Decimal("0.0075")
    """The rate never exceeds this either way (0.75%)."""


class FundingAccumulator:
    """Samples the premium of mark over index through an interval, then settles a rate:

        premium = (mark - index) / index          (sampled; averaged over the interval)
        rate    = clamp(P + clamp(I - P, -c, c), -cap, cap)

    A positive rate means longs pay shorts: a position pays ``signed size * mark * rate``.
    """

    def __init__(self, params: FundingParams | None = None) -> None:
        self.params = params or FundingParams()
        self._premiums: list[Decimal] = []

    def sample(self, mark: Decimal, index: Decimal) -> None:
        if index <= 0:
            return  # no premium without an index
        self._premiums.append((mark - index) / index)

    def settle(self) -> Decimal | None:
        """The interval's rate, and a fresh interval; None if nothing was sampled."""
        if not self._premiums:
            return None
        p = self.params
        premium = sum(self._premiums, Decimal(0)) / len(self._premiums)
        self._premiums = []
        rate = premium + _clamp(p.interest_rate - premium, -p.interest_clamp, p.interest_clamp)
        return _clamp(rate, -p.cap, p.cap)


def funding_payment(position: Position, mark: Decimal, rate: Decimal) -> Decimal:
    """What the position pays (negative: receives) at settlement."""
    return position.signed_size * mark * rate


def _clamp(value: Decimal, low: Decimal, high: Decimal) -> Decimal:
    return max(low, min(high, value))


def mark_price(index: Decimal, interest: OpenInterest, market: Market) -> Decimal:
    """The venue's own price: the oracle index pushed by the open-interest skew,
    ``index * (1 + (long - short) / skew_scale)`` (a pool venue's skew premium). More longs than
    shorts put the mark above the index, so the funding rate turns positive and longs pay."""
    premium = (interest.long - interest.short) / market.skew_scale
    return index * (_ONE + premium)
