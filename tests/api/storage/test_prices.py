"""The PostgreSQL adapters and migrations, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg
import pytest

from api.storage.migrate import available, migrate
from api.storage.prices import PgPriceRepository, load_markets
from domain.prices import PRICE_UPDATE, OraclePrice

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


async def test_a_tick_is_numbered_and_stored_together_and_read_back(pool: asyncpg.Pool) -> None:
    # In a transaction rolled back at the end: servers of this test run share the database.
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            prices = PgPriceRepository(conn)
            now = datetime.now(UTC)
            before = {m: await prices.latest(m) for m in ("SOL-PERP", "BTC-PERP")}
            base = {m: stored[1] if stored else 0 for m, stored in before.items()}
            sol = OraclePrice("SOL-PERP", Decimal("151.5"), Decimal("0.05"), now)
            btc = OraclePrice("BTC-PERP", Decimal("65000.1"), Decimal("3"), now)
            events = await prices.record([sol, btc])
            assert [(e.topic, e.sequence, e.type, e.payload) for e in events] == [
                ("price:SOL-PERP", base["SOL-PERP"] + 1, PRICE_UPDATE, sol.to_payload()),
                ("price:BTC-PERP", base["BTC-PERP"] + 1, PRICE_UPDATE, btc.to_payload()),
            ]
            later = OraclePrice("SOL-PERP", Decimal("152"), Decimal("0.05"), now)
            (event,) = await prices.record([later])
            assert event.sequence == base["SOL-PERP"] + 2
            assert await prices.latest("SOL-PERP") == (later, base["SOL-PERP"] + 2)
            assert await prices.latest("BTC-PERP") == (btc, base["BTC-PERP"] + 1)
            assert await prices.latest("NOPE-PERP") is None
            # The numbers are the price topics' own: what a subscriber's cursor is compared with.
            topic_sequence = await conn.fetchval(
                "SELECT sequence FROM topic_sequences WHERE topic = 'price:SOL-PERP'"
            )
            assert topic_sequence == base["SOL-PERP"] + 2
            # Several markets in one read: those with a price, as latest() gives them.
            both = await prices.latest_of(["SOL-PERP", "NOPE-PERP", "BTC-PERP"])
            assert both == {"SOL-PERP": later, "BTC-PERP": btc}
            assert await prices.latest_of([]) == {}
            assert await prices.record([]) == []
            with pytest.raises(ValueError, match="one price per market"):
                await prices.record([sol, later])
        finally:
            await transaction.rollback()
