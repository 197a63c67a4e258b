"""The PostgreSQL adapters and migrations, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg
import pytest

from api.storage.migrate import available, migrate
from api.storage.prices import PgPriceRepository, load_markets
from domain.prices import OraclePrice

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await migrate(pool)
    yield pool
    await pool.close()


async def test_migrations_apply_once_even_when_processes_race(database_url: str) -> None:
    pools = [await asyncpg.create_pool(database_url, min_size=1, max_size=1) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate(p) for p in pools))
        assert await migrate(pools[0]) == []
        versions = await pools[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == [v for v, _ in available()]
    finally:
        for p in pools:
            await p.close()


async def test_markets_are_seeded(pool: asyncpg.Pool) -> None:
    catalog = await load_markets(pool)
    btc = catalog.get("BTC-PERP")
    assert (btc.base, btc.quote, btc.tick_size) == ("BTC", "USD", Decimal("0.1"))
    assert {m.id for m in catalog} >= {"BTC-PERP", "ETH-PERP", "SOL-PERP"}


async def test_a_price_never_replaces_a_newer_one(pool: asyncpg.Pool) -> None:
    # In a transaction rolled back at the end: servers of this test run share the database.
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            prices = PgPriceRepository(conn)
            now = datetime.now(UTC)
            current = await prices.latest("SOL-PERP")
            base = current[1] if current else 0
            newer = OraclePrice("SOL-PERP", Decimal("151.5"), Decimal("0.05"), now)
            older = OraclePrice(
                "SOL-PERP", Decimal("140"), Decimal("0.05"), now - timedelta(seconds=1)
            )
            await prices.save(newer, base + 2)
            await prices.save(older, base + 1)
            assert await prices.latest("SOL-PERP") == (newer, base + 2)
            assert await prices.latest("NOPE-PERP") is None
            # Several markets in one read: those with a price, as latest() gives them.
            btc = await prices.latest("BTC-PERP")
            both = await prices.latest_of(["SOL-PERP", "NOPE-PERP", "BTC-PERP"])
            assert both == {"SOL-PERP": newer} | ({"BTC-PERP": btc[0]} if btc else {})
            assert await prices.latest_of([]) == {}
        finally:
            await transaction.rollback()
