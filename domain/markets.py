"""Perpetual markets: what is traded, in which units, with which risk parameters."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


@dataclass(frozen=True, slots=True)
class Market:
    """A perpetual futures market such as ``BTC-PERP``.

    Rates are fractions (``0.025`` is 2.5%). ``tick_size`` is the price increment, ``step_size``
    the size increment.
    """

    id: str
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_order_size: Decimal
    max_leverage: Decimal
    maintenance_margin_rate: Decimal
    liquidation_fee_rate: Decimal
    taker_fee_rate: Decimal = Decimal("0.0005")
    """Charged on the notional of every fill a trader takes (0.05%)."""
    skew_scale: Decimal = Decimal(1_000_000)
    """Open-interest imbalance (long minus short, in base units) that moves the mark price 100%
    away from the index: mark = index * (1 + skew / skew_scale). Sets the funding premium."""
    max_position_size: Decimal = Decimal(1_000_000)
    """The most one user may hold on one side of the market, in base units (the sum of its open
    positions there). Opening or growing past it is refused with POSITION_LIMIT."""
    max_open_interest: Decimal = Decimal(10_000_000)
    """The most all users together may hold on one side, in base units (its open interest).
    Opening or growing past it is refused with OPEN_INTEREST_LIMIT."""


class UnknownMarketError(LookupError):
    """A market id that is not in the catalog."""

    def __init__(self, market: str) -> None:
        super().__init__(f"Unknown market {market!r}")
        self.market = market


class MarketCatalog:
    """The markets a server knows, looked up by id."""

    def __init__(self, markets: list[Market]) -> None:
        self._by_id = {m.id: m for m in markets}

    def __iter__(self) -> Iterator[Market]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, market: str) -> Market:
        """The market with this id, or :class:`UnknownMarketError`."""
        try:
            return self._by_id[market]
        except KeyError:
            raise UnknownMarketError(market) from None
