"""One trader holding several perps positions across the markets, for ``bench.deltas``: the
``positions(user:)`` stream a front end shows a trader, re-valued on every tick.

The positions are recorded through the public API, as a venue's indexer records them
(``ingestPositionChange``, kind ``OPENED``, a ``service`` caller; :func:`bench.positions.
ingest_changes`). Nothing limits a user to one position per market: a position is its own id
(``docs/perps.md``), so ten positions over three markets are four, three and three. Position *k*
is long for even *k*, short for odd, its entry (100 + (k mod 5) - 2) percent of its market's
price at set-up, on the market's tick, and its collateral a third of its notional (3x): at the
markets' 3% and 5% maintenance margins every position stays well above the 1.2 warning health
while prices stay within a few percent of where they started, so the stream sends a
``PositionsUpdate`` on every tick and nothing else.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from bench.positions import MONEY, ingest_changes, latest_price
from bench.processes import BenchError

if TYPE_CHECKING:
    import httpx

    from bench.positions import Tokens


@dataclass(frozen=True, slots=True)
class MarketTerms:
    name: str
    tick: Decimal
    """The price increment (the markets table)."""
    size: Decimal
    """The smallest position here; position *k* holds (1 + k mod 3) of them."""


MARKETS = (
    MarketTerms("BTC-PERP", Decimal("0.1"), Decimal("0.01")),
    MarketTerms("ETH-PERP", Decimal("0.01"), Decimal("0.1")),
    MarketTerms("SOL-PERP", Decimal("0.001"), Decimal("1")),
)
LEVERAGE = Decimal(3)


def position_change(
    owner: str, k: int, market: MarketTerms, price: Decimal, at: datetime
) -> dict[str, Any]:
    """The ``PositionChangeInput`` that opens the trader's position *k* in ``market``."""
    size = market.size * (1 + k % 3)
    entry = (price * (100 + k % 5 - 2) / 100 / market.tick).to_integral_value(
        ROUND_HALF_EVEN
    ) * market.tick
    position_id = f"bench-{owner}-{k}"
    return {
        "externalId": f"bench:{position_id}:opened",
        "kind": "OPENED",
        "positionId": position_id,
        "owner": owner,
        "market": market.name,
        "side": "LONG" if k % 2 == 0 else "SHORT",
        "size": str(size),
        "entryPrice": str(entry),
        "collateral": str((size * entry / LEVERAGE).quantize(MONEY)),
        "fillSize": str(size),
        "fillPrice": str(entry),
        "at": at.isoformat(),
    }


async def prices_now(http: httpx.AsyncClient, url: str, token: str) -> dict[str, Decimal]:
    """Every market's latest price, waiting (10 s at most) for the simulated feed's first."""
    deadline = time.monotonic() + 10
    prices: dict[str, Decimal] = {}
    while True:
        for market in MARKETS:
            if market.name not in prices:
                price = await latest_price(http, url, token, market.name)
                if price is not None:
                    prices[market.name] = price
        if len(prices) == len(MARKETS):
            return prices
        if time.monotonic() > deadline:
            missing = sorted({m.name for m in MARKETS} - set(prices))
            raise BenchError(f"no price for {', '.join(missing)} 10 s after the server was ready")
        await asyncio.sleep(0.2)


async def open_positions(
    http: httpx.AsyncClient, url: str, tokens: Tokens, owner: str, count: int
) -> int:
    """Give ``owner`` ``count`` positions spread over :data:`MARKETS`; the number stored."""
    prices = await prices_now(http, url, tokens.admin)
    now = datetime.now(UTC)
    changes = []
    for k in range(count):
        market = MARKETS[k % len(MARKETS)]
        changes.append(position_change(owner, k, market, prices[market.name], now))
    return await ingest_changes(http, url, tokens.service, changes)
