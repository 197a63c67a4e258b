"""The position book's change feed on a real PostgreSQL: what the engine reads instead of every
open position (``PgPositionBook.position_changes``, migration 0010), and the oldest fill of the
volume window."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg
import pytest

from api.feeds.perps.store import PgPositionBook
from api.runtime.clock import SystemClock
from api.storage.migrate import migrate
from api.storage.prices import load_markets
from domain.perps import Side
from domain.perps_engine import POSITION_CLOSED, POSITION_OPENED, trade_announcement
from domain.perps_trades import close_position, modify_position, open_position

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from domain.markets import MarketCatalog
    from domain.perps import Position

D = Decimal
PRICE = D(50000)


@pytest.fixture
async def pool(isolated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(isolated_database_url, min_size=1, max_size=4)
    await migrate(pool)
    yield pool
    await pool.close()


@pytest.fixture
async def book(pool: asyncpg.Pool) -> PgPositionBook:
    return PgPositionBook(pool, SystemClock(), initial_balance=D(10**9))


async def open_one(book: PgPositionBook, markets: MarketCatalog, owner: str = "alice") -> Position:
    market = markets.get("BTC-PERP")
    trade = open_position(
        id=f"pos_{uuid.uuid4().hex}",
        owner=owner,
        market=market,
        side=Side.LONG,
        size=D(1),
        leverage=D(10),
        price=PRICE,
        at=book.clock.now(),
    )
    await book.open(trade, trade_announcement(POSITION_OPENED, trade), market)
    return trade.position


async def test_without_a_cursor_every_open_position_then_only_what_changed(
    book: PgPositionBook, pool: asyncpg.Pool
) -> None:
    markets = await load_markets(pool)
    a, b, c = [await open_one(book, markets) for _ in range(3)]
    first = await book.position_changes(None)
    assert sorted(p.id for p in first.open) == sorted([a.id, b.id, c.id])
    assert first.ended == []
    assert first.cursor is not None

    market = markets.get("BTC-PERP")
    await book.change(
        a.id,
        "alice",
        lambda p: modify_position(
            p, market=market, price=PRICE, collateral_delta=D(100), at=book.clock.now()
        ),
        lambda t: trade_announcement(POSITION_OPENED, t),
        market,
    )
    await book.change(
        b.id,
        "alice",
        lambda p: close_position(p, market=market, price=PRICE, at=book.clock.now()),
        lambda t: trade_announcement(POSITION_CLOSED, t),
        market,
        ends="closed",
    )
    second = await book.position_changes(first.cursor)
    assert [p.id for p in second.open] == [a.id]
    assert second.open[0].collateral == a.collateral + 100
    assert second.open[0].revision == 2
    assert second.ended == [b.id]

    third = await book.position_changes(second.cursor)
    assert (third.open, third.ended) == ([], [])


async def test_a_change_committed_after_a_read_that_began_after_it_is_not_missed(
    book: PgPositionBook, pool: asyncpg.Pool
) -> None:
    """The case a sequence number gets wrong: a transaction writes first and commits last."""
    markets = await load_markets(pool)
    slow_position = await open_one(book, markets)
    start = await book.position_changes(None)

    async with pool.acquire() as slow, slow.transaction():
        await slow.execute(
            "UPDATE perp_positions SET collateral = collateral + 1, revision = revision + 1 "
            "WHERE id = $1",
            slow_position.id,
        )
        fast = await open_one(book, markets, owner="bob")  # commits while the slow one is open
        during = await book.position_changes(start.cursor)
        assert [p.id for p in during.open] == [fast.id]

    after = await book.position_changes(during.cursor)
    changed = {p.id: p for p in after.open}
    assert slow_position.id in changed
    assert changed[slow_position.id].collateral == slow_position.collateral + 1


async def test_oldest_fill_since(book: PgPositionBook, pool: asyncpg.Pool) -> None:
    now = book.clock.now()
    assert await book.oldest_fill_since(now - timedelta(hours=24)) is None
    markets = await load_markets(pool)
    await open_one(book, markets)
    oldest = await book.oldest_fill_since(now - timedelta(hours=24))
    assert oldest is not None
    assert now - timedelta(seconds=5) < oldest < now + timedelta(seconds=5)
    assert await book.oldest_fill_since(oldest + timedelta(microseconds=1)) is None
