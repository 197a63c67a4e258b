"""The order book stream against a real hub and history: a reader that fell behind gets the
changes that waited merged into one delta per read, each level at its newest size, chained by
previous/sequence to what it had."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from api.feeds.orderbook.stream import order_book_stream
from api.feeds.orderbook.types import OrderBookDelta, OrderBookSnapshot
from api.runtime.clock import SystemClock
from api.settings import parse_limits
from api.storage.history import PgHistory, number_events
from api.streaming.broadcast import Broadcast
from api.streaming.envelope import encode_event
from api.streaming.hub import Hub
from domain.book_makers import delta_payload
from domain.events import Unnumbered
from domain.order_book import (
    DELTA_EVENT,
    SNAPSHOT_EVENT,
    BookDelta,
    BookSide,
    BookSnapshot,
    Level,
    LevelChange,
)
from domain.topics import book_state_topic, book_topic

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    import asyncpg

D = Decimal
MARKET = "BTC-PERP"
CLOCK = SystemClock()


async def publish(pool: asyncpg.Pool, broadcast: Broadcast, events: list[Unnumbered]) -> None:
    for event in await number_events(pool, CLOCK, events, keep_latest=True):
        await broadcast.publish(event.topic, encode_event(event))


def book(bids: dict[str, str], asks: dict[str, str]) -> dict[str, Any]:
    return BookSnapshot(
        MARKET,
        0,
        tuple(Level(D(p), D(s)) for p, s in bids.items()),
        tuple(Level(D(p), D(s)) for p, s in asks.items()),
    ).to_payload()


def change(side: BookSide, price: str, size: str) -> Unnumbered:
    delta = BookDelta(MARKET, 0, 0, (LevelChange(side, D(price), D(size)),))
    return Unnumbered(book_topic(MARKET), DELTA_EVENT, delta_payload(delta))


async def test_a_reader_behind_gets_what_waited_merged_into_one_delta(pool: asyncpg.Pool) -> None:
    broadcast = Broadcast("memory://")
    await broadcast.connect()
    history = PgHistory(pool, parse_limits(""))
    hub = Hub(broadcast, queue_size=16, history=history)
    services: Any = SimpleNamespace(hub=hub, history=history)
    try:
        start = book({"100": "1", "99": "2", "98": "3"}, {"101": "1", "102": "2", "103": "3"})
        await publish(
            pool,
            broadcast,
            [
                Unnumbered(book_topic(MARKET), SNAPSHOT_EVENT, start),
                Unnumbered(book_state_topic(MARKET), SNAPSHOT_EVENT, start),
            ],
        )
        stream = cast("AsyncGenerator[object, None]", order_book_stream(services, MARKET, 2))
        snapshot = await asyncio.wait_for(anext(stream), 10)
        assert isinstance(snapshot, OrderBookSnapshot)
        assert snapshot.sequence == 1
        assert [(x.price, x.size) for x in snapshot.bids] == [(D(100), D(1)), (D(99), D(2))]
        # Five changes while the reader is busy; the third is outside its two levels.
        await publish(
            pool,
            broadcast,
            [
                change(BookSide.BID, "100", "5"),
                change(BookSide.ASK, "101", "0"),
                change(BookSide.BID, "98", "9"),
                change(BookSide.BID, "100", "6"),
                change(BookSide.ASK, "100.5", "4"),
            ],
        )
        await asyncio.sleep(0.2)  # all five delivered to the subscription's queue
        merged = await asyncio.wait_for(anext(stream), 10)
        assert isinstance(merged, OrderBookDelta)
        assert (merged.previous, merged.sequence) == (1, 6)
        assert [(c.side, c.price, c.size) for c in merged.changes] == [
            (BookSide.BID, D(100), D(6)),
            (BookSide.ASK, D("100.5"), D(4)),
            (BookSide.ASK, D(101), D(0)),
            # 103 entered the two levels when 101 went, and left when 100.5 came: a removal of a
            # level this reader never had, which it ignores.
            (BookSide.ASK, D(103), D(0)),
        ]
        held = {
            "BID": {D(100): D(1), D(99): D(2)},
            "ASK": {D(101): D(1), D(102): D(2)},
        }
        for c in merged.changes:
            if c.size:
                held[c.side.value][c.price] = c.size
            else:
                held[c.side.value].pop(c.price, None)
        assert held == {"BID": {D(100): D(6), D(99): D(2)}, "ASK": {D("100.5"): D(4), D(102): D(2)}}
        await stream.aclose()
    finally:
        await hub.close()
        await broadcast.disconnect()
