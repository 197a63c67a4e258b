"""The markets and the latest oracle price per market, in PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.events import Event
from domain.markets import Market, MarketCatalog
from domain.prices import PRICE_UPDATE, OraclePrice
from domain.topics import price_topic

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


_RECORD = """
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[], $5::timestamptz[])
         AS g (topic, market, price, confidence, published_at)
), numbered AS (
    INSERT INTO topic_sequences AS s (topic, sequence)
    SELECT topic, 1 FROM given ORDER BY topic
    ON CONFLICT (topic) DO UPDATE SET sequence = s.sequence + 1
    RETURNING topic, sequence
), saved AS (
    INSERT INTO latest_prices AS l (market, price, confidence, published_at, sequence)
    SELECT g.market, g.price, g.confidence, g.published_at, n.sequence
    FROM given g JOIN numbered n USING (topic)
    ON CONFLICT (market) DO UPDATE
    SET price = EXCLUDED.price, confidence = EXCLUDED.confidence,
        published_at = EXCLUDED.published_at, sequence = EXCLUDED.sequence
    WHERE l.sequence < EXCLUDED.sequence
)
SELECT topic, sequence FROM numbered
"""


class PgPriceRepository:
    """Latest oracle price per market, numbered and stored together; a stored price is never
    replaced by one numbered before it."""

    def __init__(self, pool: Executor) -> None:
        self.pool = pool

    async def record(self, prices: Sequence[OraclePrice]) -> list[Event]:
        """Number each price's event on its market's topic and store the price as its market's
        latest under that number: one statement for every market of a tick (one round trip), so
        a price is stored if and only if its event was numbered. One price per market."""
        if not prices:
            return []
        markets = [p.market for p in prices]
        if len(set(markets)) != len(markets):
            raise ValueError("one price per market in a batch")
        topics = [price_topic(m) for m in markets]
        rows = await self.pool.fetch(
            _RECORD,
            topics,
            markets,
            [p.price for p in prices],
            [p.confidence for p in prices],
            [p.published_at for p in prices],
        )
        sequences = {row["topic"]: row["sequence"] for row in rows}
        return [
            Event(topic, sequences[topic], p.published_at, PRICE_UPDATE, p.to_payload())
            for topic, p in zip(topics, prices, strict=True)
        ]

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
