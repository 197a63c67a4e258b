"""Oracle prices (the Pyth model: a price, a confidence interval, a publish time) and a simulated
oracle that produces them as a bounded random walk."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_UP, Decimal
from typing import TYPE_CHECKING, Any

from domain.payloads import PayloadCodec

if TYPE_CHECKING:
    from datetime import datetime

    from domain.markets import Market

_TWO = Decimal(2)

PRICE_UPDATE = "PriceUpdate"
"""The event type of a published oracle price."""


@dataclass(frozen=True, slots=True)
class OraclePrice:
    """An oracle's price of a market: the true price lies within ``price ± confidence``."""

    market: str
    price: Decimal
    confidence: Decimal
    published_at: datetime

    def to_payload(self) -> dict[str, Any]:
        return ORACLE_PRICE.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> OraclePrice:
        return ORACLE_PRICE.decode(payload)


ORACLE_PRICE = PayloadCodec(OraclePrice, keys={"published_at": "published_at"})
"""A price event's payload; its one key not in camelCase is the oldest of all."""


def quote_price(
    market: str,
    *,
    bid: Decimal | None,
    ask: Decimal | None,
    last: Decimal | None,
    published_at: datetime,
) -> OraclePrice | None:
    """A venue's quote as an oracle price. With a two-sided quote (0 < bid <= ask): the mid,
    confidence half the spread, so ``price ± confidence`` is exactly ``[bid, ask]``, the range
    the venue would trade at now. Without one: the last trade, confidence 0 (the venue said
    nothing of its uncertainty). The last trade is not preferred when both exist: it can sit
    outside a quote that has moved since. None when there is neither (or only a crossed or
    non-positive quote)."""
    if bid is not None and ask is not None and 0 < bid <= ask:
        return OraclePrice(market, (bid + ask) / _TWO, (ask - bid) / _TWO, published_at)
    if last is not None and last > 0:
        return OraclePrice(market, last, Decimal(0), published_at)
    return None


DEFAULT_START_PRICES: dict[str, Decimal] = {
    "BTC-PERP": Decimal("65000"),
    "ETH-PERP": Decimal("3200"),
    "SOL-PERP": Decimal("150"),
}
"""Where a simulated walk starts for a market that has no stored price yet."""

FALLBACK_START_PRICE = Decimal("100")


@dataclass(frozen=True, slots=True)
class RandomWalkParams:
    """Shape of the simulated walk.

    ``volatility`` is the standard deviation of the log return over one second. The walk is
    reflected at ``start * lower_bound_ratio`` and ``start * upper_bound_ratio``, so it never leaves
    that band however long it runs. Confidence is drawn uniformly between the two basis-point
    bounds of the price, and is never less than one tick.
    """

    volatility: float = 0.0005
    lower_bound_ratio: Decimal = Decimal("0.5")
    upper_bound_ratio: Decimal = Decimal("2")
    confidence_min_bps: float = 1.0
    confidence_max_bps: float = 10.0

    def __post_init__(self) -> None:
        if self.volatility < 0:
            raise ValueError("volatility must not be negative")
        if not 0 < self.lower_bound_ratio <= 1 <= self.upper_bound_ratio:
            raise ValueError("bounds must satisfy 0 < lower <= 1 <= upper")
        if not 0 <= self.confidence_min_bps <= self.confidence_max_bps:
            raise ValueError("confidence bounds must satisfy 0 <= min <= max")


class RandomWalkOracle:
    """A simulated oracle for one market: a geometric random walk reflected inside a band.

    Deterministic for a given ``seed``: the same seed, market, start and steps give the same prices.
    """

    def __init__(
        self,
        market: Market,
        start: Decimal,
        *,
        seed: int | str | None = None,
        params: RandomWalkParams | None = None,
    ) -> None:
        if start <= 0:
            raise ValueError("start price must be positive")
        self.market = market
        self.params = params or RandomWalkParams()
        self._rng = random.Random(None if seed is None else f"{seed}:{market.id}")
        self.lower = self._quantize(start * self.params.lower_bound_ratio, ROUND_UP)
        # Rounded separately, a band narrower than one tick could come out upside down.
        self.upper = max(
            self._quantize(start * self.params.upper_bound_ratio, ROUND_HALF_EVEN), self.lower
        )
        self._log_lower = math.log(self.lower)
        self._log_upper = math.log(self.upper)
        self._log_price = min(max(math.log(start), self._log_lower), self._log_upper)

    def step(self, dt_seconds: float, now: datetime) -> OraclePrice:
        """Advance the walk by ``dt_seconds`` and return the price published at ``now``."""
        x = self._log_price + self._rng.gauss(0.0, self.params.volatility * math.sqrt(dt_seconds))
        self._log_price = _reflect(x, self._log_lower, self._log_upper)
        price = self._quantize(Decimal(repr(math.exp(self._log_price))), ROUND_HALF_EVEN)
        price = min(max(price, self.lower), self.upper)
        bps = self._rng.uniform(self.params.confidence_min_bps, self.params.confidence_max_bps)
        confidence = max(
            self._quantize(price * Decimal(repr(bps)) / 10_000, ROUND_UP), self.market.tick_size
        )
        return OraclePrice(self.market.id, price, confidence, now)

    def _quantize(self, value: Decimal, rounding: str) -> Decimal:
        tick = self.market.tick_size
        return max((value / tick).to_integral_value(rounding) * tick, tick)


def _reflect(x: float, lower: float, upper: float) -> float:
    """Fold ``x`` back into ``[lower, upper]`` as a walk reflected at both walls would be."""
    if lower == upper:
        return lower
    width = upper - lower
    offset = (x - lower) % (2 * width)
    return lower + (offset if offset <= width else 2 * width - offset)
