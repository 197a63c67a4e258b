"""The position book on a real PostgreSQL as the engine uses it: the change feed it reads instead
of every open position (``PgPositionBook.position_changes``, migration 0011), the oldest fill of
the volume window, and liquidations stored together (``liquidate_all``)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest

from api.feeds.perps.store import PgPositionBook
from api.runtime.clock import SystemClock
from api.storage.prices import load_markets
from domain.perps import Side
from domain.perps_engine import (
    POSITION_CHANGE,
    POSITION_CLOSED,
    POSITION_OPENED,
    funding_announcement,
    liquidated_announcement,
    trade_announcement,
)
from domain.perps_trades import (
    close_position,
    liquidate_position,
    modify_position,
    open_position,
)

if TYPE_CHECKING:
    import asyncpg

    from domain.markets import MarketCatalog
    from domain.perps import Position

D = Decimal
PRICE = D(50000)


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
    # What changed, and perhaps a repeat of a row written by a transaction that was still
    # running when the last read began (anywhere in the cluster: another database's writer
    # holds back the snapshot's xmin), which the engine ignores: never a change missed.
    changed = {p.id: p for p in second.open}
    assert a.id in changed
    assert set(changed) <= {a.id, c.id}
    assert changed[a.id].collateral == a.collateral + 100
    assert changed[a.id].revision == 2
    if c.id in changed:
        assert changed[c.id].revision == c.revision  # a repeat, unchanged
    assert second.ended == [b.id]

    third = await book.position_changes(second.cursor)
    assert {p.id for p in third.open} <= {a.id, c.id}
    assert all(p.revision == changed.get(p.id, c).revision for p in third.open)
    assert set(third.ended) <= {b.id}


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
        # (and perhaps a repeat of the slow one's insert, as the test above says: unchanged)
        assert fast.id in {p.id for p in during.open}
        assert {p.id for p in during.open} <= {fast.id, slow_position.id}
        assert all(p.revision == 1 for p in during.open)

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


async def test_liquidations_are_stored_together_and_a_changed_position_is_left_alone(
    book: PgPositionBook, pool: asyncpg.Pool
) -> None:
    markets = await load_markets(pool)
    market = markets.get("BTC-PERP")
    a, b, c = [await open_one(book, markets) for _ in range(3)]  # alice's, 10x long at 50,000
    d = await open_one(book, markets, owner="bob")
    # c changes after the engine read it: its liquidation must be refused.
    await book.change(
        c.id,
        "alice",
        lambda p: modify_position(
            p, market=market, price=PRICE, collateral_delta=D(100), at=book.clock.now()
        ),
        lambda t: trade_announcement(POSITION_OPENED, t),
        market,
    )
    before = await book.margin_account("alice")
    at = book.clock.now()
    trades = [liquidate_position(p, market=market, price=D(46000), at=at) for p in (a, b, c, d)]
    events = await book.liquidate_all([(t, liquidated_announcement(t)) for t in trades])

    assert events[2] is None
    assert [e is not None for e in events] == [True, True, False, True]
    returned = trades[0].returned
    assert returned == D(310)  # equity 1,000 - reward 690 (1.5% of 46,000)
    # alice's account is credited once per liquidation, each event showing it after its own.
    accounts = [POSITION_CHANGE.decode(e.payload).account for e in events if e is not None]
    assert [x.balance for x in accounts if x and x.owner == "alice"] == [
        before.balance + returned,
        before.balance + 2 * returned,
    ]
    assert (await book.margin_account("alice")).balance == before.balance + 2 * returned
    alice_events = [e for e in events if e is not None and e.topic == "positions:alice"]
    assert [e.sequence for e in alice_events] == sorted(e.sequence for e in alice_events)

    open_ids = {p.id for p in await book.open_positions()}
    assert open_ids == {c.id}
    rows = await pool.fetch(
        "SELECT position_id, reward, returned FROM perp_liquidations ORDER BY position_id"
    )
    assert sorted(r["position_id"] for r in rows) == sorted([a.id, b.id, d.id])
    assert {r["reward"] for r in rows} == {D(690)}
    fills = await pool.fetchval("SELECT count(*) FROM perp_fills WHERE kind = 'liquidation'")
    assert fills == 3
    changes = await book.position_changes(None)
    assert [p.id for p in changes.open] == [c.id]


async def test_no_liquidations_store_nothing(book: PgPositionBook) -> None:
    assert await book.liquidate_all([]) == []


async def test_funding_charges_every_open_position_of_the_market_in_one_settlement(
    book: PgPositionBook, pool: asyncpg.Pool
) -> None:
    markets = await load_markets(pool)
    a, b, c = [await open_one(book, markets, owner=o) for o in ("alice", "bob", "alice")]
    payments = {a.id: D("10.5"), b.id: D(-3), c.id: D(0)}
    at = book.clock.now()
    events = await book.settle_funding(
        "BTC-PERP",
        D("0.0001"),
        PRICE,
        PRICE,
        at,
        lambda p: payments[p.id],
        funding_announcement,
    )
    # In position id order, c (paying nothing) left out; each event the position after it.
    charged = sorted([a, b], key=lambda p: p.id)
    assert [POSITION_CHANGE.decode(e.payload).position.id for e in events] == [
        p.id for p in charged
    ]
    after = {p.id: p for p in await book.open_positions()}
    assert after[a.id].collateral == a.collateral - D("10.5")
    assert after[a.id].realized_pnl == a.realized_pnl - D("10.5")
    assert after[b.id].collateral == b.collateral + 3
    assert (after[a.id].revision, after[b.id].revision, after[c.id].revision) == (2, 2, 1)
    for event in events:
        change = POSITION_CHANGE.decode(event.payload)
        assert change.reason == "funding"
        assert change.position == after[change.position.id]
    # Numbered after alice's two opens.
    assert [e.sequence for e in events if e.topic == "positions:alice"] == [3]
    row = await pool.fetchrow("SELECT market, rate, settled_at FROM perp_funding")
    assert row is not None
    assert (row["market"], row["rate"]) == ("BTC-PERP", D("0.0001"))


async def test_a_position_pays_at_most_its_collateral(
    book: PgPositionBook, pool: asyncpg.Pool
) -> None:
    markets = await load_markets(pool)
    a = await open_one(book, markets)
    await book.settle_funding(
        "BTC-PERP",
        D("0.5"),
        PRICE,
        PRICE,
        book.clock.now(),
        lambda p: D(10**9),
        funding_announcement,
    )
    (after,) = await book.open_positions()
    assert after.collateral == 0
    assert after.realized_pnl == a.realized_pnl - a.collateral


async def test_a_chain_position_is_liquidated_without_a_margin_account(
    book: PgPositionBook, pool: asyncpg.Pool
) -> None:
    """A position ingested from chain has no money in a margin account: its liquidation stores
    the position's end, its fill and its liquidation row, and creates no account; the desk
    position liquidated beside it credits its owner's. A position given twice is stored once."""
    markets = await load_markets(pool)
    market = markets.get("ETH-PERP")
    carol, dave = f"carol-{uuid.uuid4().hex[:8]}", f"dave-{uuid.uuid4().hex[:8]}"
    chain = open_position(
        id=f"pos_{uuid.uuid4().hex}",
        owner=carol,
        market=market,
        side=Side.SHORT,
        size=D(3),
        leverage=D(10),
        price=D(3000),
        at=book.clock.now(),
    )
    assert await book.ingest(
        f"tx-{uuid.uuid4().hex}", chain, "open", trade_announcement(POSITION_OPENED, chain)
    )
    stored_chain = next(p for p in await book.open_positions() if p.id == chain.position.id)
    desk = await open_one(book, markets, owner=dave)
    before = await book.margin_account(dave)
    at = book.clock.now()
    trades = [
        liquidate_position(stored_chain, market=market, price=D(3300), at=at),
        liquidate_position(desk, market=markets.get("BTC-PERP"), price=D(46000), at=at),
    ]
    given = [(t, liquidated_announcement(t)) for t in trades]
    events = await book.liquidate_all([*given, given[0]])

    assert [e is not None for e in events] == [True, True, False]
    assert (
        await pool.fetchval("SELECT count(*) FROM perp_margin_accounts WHERE owner = $1", carol)
        == 0
    )
    assert (await book.margin_account(dave)).balance == before.balance + trades[1].returned
    row = await pool.fetchrow(
        "SELECT owner, market, side, size, price FROM perp_liquidations WHERE position_id = $1",
        chain.position.id,
    )
    assert row is not None
    assert (row["owner"], row["market"], row["side"], row["size"], row["price"]) == (
        carol,
        "ETH-PERP",
        "short",
        D(3),
        D(3300),
    )
    status = await pool.fetchval(
        "SELECT status FROM perp_positions WHERE id = $1", chain.position.id
    )
    assert status == "liquidated"
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM perp_fills WHERE position_id = $1 AND kind = 'liquidation'",
            chain.position.id,
        )
        == 1
    )
