"""Open positions indexed by the prices at which their health crosses the warning and the
liquidation levels, so that a price move finds the positions whose state it may change in
O(log n + k) instead of valuing every position (issue 19).

Isolated margin: a position's health depends on the position (size, side, entry, collateral), its
market's maintenance margin rate and the price, nothing else (no account-level margin, see
:mod:`domain.perps_margin`; funding moves a position's collateral, which is a change of the
position). Over prices ``p > 0`` it is ``health(p) = (c + sign * s * (p - e)) / (s * p * mmr)``,
monotonic in ``p``, and equals a level ``h`` at one price at most:

    long   t = (e - c/s) / (1 - h * mmr)          short   t = (e + c/s) / (1 + h * mmr)

(for ``h = 1`` the liquidation price of :mod:`domain.perps`). When ``t <= 0`` there is no crossing
at any price: the position's state against ``h`` is the same at every price.

Invariants (per market, :class:`MarketIndex`):

- every open position has an entry; its threshold keys were computed from the position as it is
  now (``put`` recomputes them, and only them, when the position changes);
- ``marked_at`` is the price at which the states of every position not ``dirty`` were last
  observed (valued exactly, :func:`domain.perps.mark_to_market`); a position put since is dirty
  until the next observation;
- so between ``marked_at`` and a new price ``p`` the state (warned, liquidatable) of a clean
  position can only change if one of its thresholds lies between them: :meth:`to_observe`
  returns those, the dirty ones and the volatile ones, and (their figures move with the price)
  the liquidatable ones; ``liquidatable`` holds each one's valuation at ``marked_at``.

Exactness: the engine decides with Decimal arithmetic (28 digits), so a state computed near a
threshold can round either way. The keys are therefore only used to *select* positions to value
exactly, over the band widened by a relative ``EPSILON`` (1e-9) on both sides, far wider than
the rounding of the valuation (about 1e-26) as long as the threshold is well conditioned. A
position whose threshold is not (a maintenance margin rate ``h * mmr`` within 1e-6 of 1, or
``c/s`` within a relative 1e-6 of ``e`` on a long without being equal) is *volatile*: valued on
every observation, like every position of a market without a positive maintenance margin rate.
A price below 1e-12 of a position's entry is outside what this covers (the valuation's rounding
grows as the price falls).

Open interest per side is kept as an exact running sum and given as the sequential sum of
:func:`domain.perps.open_interest` would give it, digit for digit and exponent for exponent
(``Decimal`` keeps trailing zeros); where that sum would have rounded (more digits than the
context's precision) it is summed afresh.
"""

from __future__ import annotations

from collections import Counter
from decimal import Context, Decimal, Inexact, InvalidOperation, getcontext
from typing import TYPE_CHECKING

from sortedcontainers import SortedKeyList  # type: ignore[import-untyped]

from domain.perps import (
    LIQUIDATION_HEALTH,
    WARNING_HEALTH,
    OpenInterest,
    Position,
    Side,
    open_interest,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from domain.markets import Market
    from domain.perps import Valuation

LEVELS = (WARNING_HEALTH, LIQUIDATION_HEALTH)
EPSILON = 1e-9
"""How far (relative) beyond a move's two prices a threshold still makes a position valued."""
CONDITION = Decimal("1e-6")
"""Below this (relative) a threshold is ill-conditioned and its position is volatile."""

_EXACT = Context(prec=1000, traps=[Inexact, InvalidOperation])


def threshold_prices(position: Position, maintenance_margin_rate: Decimal) -> list[float] | None:
    """The prices at which ``position``'s health crosses each of :data:`LEVELS` (only those
    above 0), or None if they are ill-conditioned and the position must be valued every time."""
    mmr = maintenance_margin_rate
    if mmr <= 0:
        return None
    size, entry = position.size, position.entry_price
    per_unit = position.collateral / size
    sign = position.side.sign
    numerator = entry - per_unit if position.side is Side.LONG else entry + per_unit
    if numerator != 0 and abs(numerator) < CONDITION * (entry + per_unit):
        return None
    prices = []
    for level in LEVELS:
        denominator = 1 - level * mmr if sign > 0 else 1 + level * mmr
        if abs(denominator) < CONDITION:
            return None
        if numerator == 0:
            continue
        price = numerator / denominator
        if price > 0:
            prices.append(float(price))
    return prices


class SideTotal:
    """The open interest of one side as :func:`domain.perps.open_interest` sums it, kept up to
    date by additions and removals."""

    __slots__ = ("_exact", "_exponents", "_sum")

    def __init__(self) -> None:
        self._sum = Decimal(0)
        self._exponents: Counter[int] = Counter()
        self._exact = True
        """False once a size was beyond even 1000 digits: from then on, summed afresh."""

    def add(self, size: Decimal) -> None:
        self._move(size, 1)

    def remove(self, size: Decimal) -> None:
        self._move(size, -1)

    def _move(self, size: Decimal, count: int) -> None:
        exponent = _exponent(size)
        self._exponents[exponent] += count
        if not self._exponents[exponent]:
            del self._exponents[exponent]
        try:
            self._sum = _EXACT.add(self._sum, size if count > 0 else -size)
        except (Inexact, InvalidOperation):
            self._exact = False

    def value(self) -> Decimal | None:
        """The sum with the exponent the sequential sum from ``Decimal(0)`` has; None where
        that sum would have rounded."""
        if not self._exact:
            return None
        exponent = min(0, *self._exponents) if self._exponents else 0
        try:
            total = self._sum.quantize(Decimal(1).scaleb(exponent), context=_EXACT)
        except (Inexact, InvalidOperation):
            return None
        if len(total.as_tuple().digits) > getcontext().prec:
            return None
        return total


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int), "sizes are finite"
    return exponent


def _by_price(key: tuple[float, str]) -> float:
    return key[0]


class MarketIndex:
    """One market's open positions, their threshold keys and their observed states."""

    def __init__(self, market: Market) -> None:
        self.market = market
        self.positions: dict[str, Position] = {}
        self.dirty: set[str] = set()
        """Put since the last observation: valued on the next one whatever the price did."""
        self.liquidatable: dict[str, Valuation] = {}
        """Positions whose health was below LIQUIDATION_HEALTH when last observed, valued at
        ``marked_at`` (the candidates' published figures)."""
        self.marked_at: Decimal | None = None
        self._keys: dict[str, list[tuple[float, str]]] = {}
        self._thresholds: SortedKeyList[tuple[float, str]] = SortedKeyList(key=_by_price)
        self._unsorted: list[tuple[float, str]] = []
        """Keys put since the last lookup, sorted in with one ``update`` (a first load puts
        every position: one sort, not n insertions)."""
        self._stale = 0
        """Keys of positions changed or removed since, left in place (a lookup skips them) until
        they are half of all: then the sorted list is built afresh from the live keys, so that
        a change of every position (funding) costs one sort, not 2n removals."""
        self._volatile: set[str] = set()
        self._long = SideTotal()
        self._short = SideTotal()

    def __len__(self) -> int:
        return len(self.positions)

    def put(self, position: Position) -> bool:
        """Add or replace a position; False (and nothing done) if it is the one held already."""
        held = self.positions.get(position.id)
        if held == position:
            return False
        if held is not None:
            self._unkey(held)
        self.positions[position.id] = position
        self._total(position.side).add(position.size)
        prices = threshold_prices(position, self.market.maintenance_margin_rate)
        if prices is None:
            self._volatile.add(position.id)
        else:
            keys = [(price, position.id) for price in prices]
            self._keys[position.id] = keys
            self._unsorted.extend(keys)
        self.dirty.add(position.id)
        return True

    def remove(self, position_id: str) -> bool:
        """Forget a position (ended); False if it was not here."""
        held = self.positions.pop(position_id, None)
        if held is None:
            return False
        self._unkey(held)
        self.dirty.discard(position_id)
        self.liquidatable.pop(position_id, None)
        return True

    def _sort_in(self) -> None:
        if self._stale and self._stale * 2 >= len(self._thresholds) + len(self._unsorted):
            live = [key for keys in self._keys.values() for key in keys]
            self._thresholds = SortedKeyList(live, key=_by_price)
            self._unsorted, self._stale = [], 0
        elif self._unsorted:
            self._thresholds.update(self._unsorted)
            self._unsorted = []

    def _unkey(self, position: Position) -> None:
        self._total(position.side).remove(position.size)
        self._stale += len(self._keys.pop(position.id, ()))
        self._volatile.discard(position.id)

    def _total(self, side: Side) -> SideTotal:
        return self._long if side is Side.LONG else self._short

    def crossed(self, a: Decimal, b: Decimal) -> set[str]:
        """Positions with a threshold between prices ``a`` and ``b`` (widened by EPSILON)."""
        self._sort_in()
        low, high = sorted((float(a), float(b)))
        keys = self._thresholds.irange_key(low * (1 - EPSILON), high * (1 + EPSILON))
        live = self._keys
        return {key[1] for key in keys if key in live.get(key[1], ())}

    def to_observe(self, price: Decimal) -> list[Position]:
        """The positions whose state may differ at ``price`` from what was last observed, and
        the liquidatable ones if the price moved (their figures did); the caller values each
        (and reports it with :meth:`observed`): after this, every state is taken to be the one
        at ``price``."""
        ids = self.dirty | self._volatile
        if self.marked_at is None:
            ids = set(self.positions)
        elif not _identical(price, self.marked_at):
            ids |= self.crossed(self.marked_at, price)
            ids.update(self.liquidatable)
        self.dirty.clear()
        self.marked_at = price
        return [self.positions[i] for i in ids]

    def forget_observations(self) -> None:
        """Take every position as unobserved: a pass that failed between :meth:`to_observe`
        and the last :meth:`observed` leaves states that are not the ones at ``marked_at``."""
        self.marked_at = None

    def observed(self, valuation: Valuation) -> None:
        position_id = valuation.position.id
        if valuation.liquidatable:
            self.liquidatable[position_id] = valuation
        else:
            self.liquidatable.pop(position_id, None)

    def open_interest(self) -> OpenInterest:
        long, short = self._long.value(), self._short.value()
        if long is None or short is None:
            return open_interest(self._sorted(), self.market.id)
        return OpenInterest(long=long, short=short)

    def _sorted(self) -> Iterable[Position]:
        return (self.positions[i] for i in sorted(self.positions))


class PositionIndex:
    """Every market's :class:`MarketIndex`; positions of markets not in the catalog are left
    out (no price of theirs is ever read)."""

    def __init__(self, markets: Iterable[Market]) -> None:
        self.markets = {m.id: MarketIndex(m) for m in markets}
        self._market_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._market_of)

    def __contains__(self, position_id: object) -> bool:
        return position_id in self._market_of

    def positions(self) -> list[Position]:
        return [p for m in self.markets.values() for p in m.positions.values()]

    def apply(self, open: Iterable[Position], ended: Iterable[str]) -> bool:
        """Take in what the book read; whether anything changed."""
        changed = False
        for position in open:
            changed |= self.put(position)
        for position_id in ended:
            changed |= self.remove(position_id)
        return changed

    def put(self, position: Position) -> bool:
        index = self.markets.get(position.market)
        if index is None:
            return False
        held = self._market_of.get(position.id)
        if held is not None and held != position.market:
            self.markets[held].remove(position.id)
        self._market_of[position.id] = position.market
        return index.put(position)

    def remove(self, position_id: str) -> bool:
        market = self._market_of.pop(position_id, None)
        return market is not None and self.markets[market].remove(position_id)


def _identical(a: Decimal, b: Decimal) -> bool:
    """The same price, written the same way: ``160`` and ``160.0000`` are equal, but the figures
    valued at each are written with their digits (``notional`` ``753.280`` or ``753.2800000``),
    so a price that came back with other trailing zeros has its candidates valued again."""
    return a == b and a.as_tuple().exponent == b.as_tuple().exponent
