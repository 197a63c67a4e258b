"""The markets and the latest oracle price per market, in PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.markets import Market, MarketCatalog
from domain.prices import OraclePrice

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg

    from api.storage.database import Executor


async def load_markets(pool: asyncpg.Pool) -> MarketCatalog:
    rows = await pool.fetch(
        """SELECT id, base, quote, tick_size, step_size, min_order_size, max_leverage,
                  maintenance_margin_rate, liquidation_fee_rate, taker_fee_rate, skew_scale,
                  max_position_size, max_open_interest
           FROM markets ORDER BY id"""
    )
    return MarketCatalog([Market(**dict(row)) for row in rows])


class PgPriceRepository:
    """Latest oracle price per market. A save never replaces a newer price with an older one."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool

    async def save(self, price: OraclePrice, sequence: int) -> None:
        await self.pool.execute(
            """INSERT INTO latest_prices (market, price, confidence, published_at, sequence)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (market) DO UPDATE
               SET price = EXCLUDED.price, confidence = EXCLUDED.confidence,
                   published_at = EXCLUDED.published_at, sequence = EXCLUDED.sequence
               WHERE latest_prices.sequence < EXCLUDED.sequence""",
            price.market,
            price.price,
            price.confidence,
            price.published_at,
            sequence,
        )

    async def latest(self, market: str) -> tuple[OraclePrice, int] | None:
        row = await self.pool.fetchrow(
            """SELECT market, price, confidence, published_at, sequence
               FROM latest_prices WHERE market = $1""",
            market,
        )
        if row is None:
            return None
        price = OraclePrice(row["market"], row["price"], row["confidence"], row["published_at"])
        return price, row["sequence"]

    async def latest_of(self, markets: Sequence[str]) -> dict[str, OraclePrice]:
        rows = await self.pool.fetch(
            """SELECT market, price, confidence, published_at
               FROM latest_prices WHERE market = any($1::text[])""",
            list(markets),
        )
        return {
            row["market"]: OraclePrice(
                row["market"], row["price"], row["confidence"], row["published_at"]
            )
            for row in rows
        }
