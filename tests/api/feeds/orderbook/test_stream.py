"""The order book stream against a real hub and history: a reader that fell behind gets the
changes that waited merged into one delta per read, each level at its newest size, chained by
previous/sequence to what it had."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import orjson
import pytest

from api.feeds.orderbook.stream import merge_messages, order_book_stream
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


async def test_a_reader_behind_the_whole_depth_gets_a_snapshot_not_a_longer_delta(
    pool: asyncpg.Pool,
) -> None:
    """When every level shown went and others came, the delta would list more changes than the
    levels themselves: the reader gets the snapshot instead."""
    broadcast = Broadcast("memory://")
    await broadcast.connect()
    history = PgHistory(pool, parse_limits(""))
    hub = Hub(broadcast, queue_size=16, history=history)
    services: Any = SimpleNamespace(hub=hub, history=history)
    try:
        start = book(
            {"100": "1", "99": "2", "98": "3", "97": "4"},
            {"101": "1", "102": "2", "103": "3", "104": "4"},
        )
        await publish(
            pool,
            broadcast,
            [
                Unnumbered(book_topic(MARKET), SNAPSHOT_EVENT, start),
                Unnumbered(book_state_topic(MARKET), SNAPSHOT_EVENT, start),
            ],
        )
        stream = cast("AsyncGenerator[object, None]", order_book_stream(services, MARKET, 2))
        assert isinstance(await asyncio.wait_for(anext(stream), 10), OrderBookSnapshot)
        gone = [("100", BookSide.BID), ("99", BookSide.BID), ("101", BookSide.ASK)]
        await publish(pool, broadcast, [change(side, price, "0") for price, side in gone])
        await publish(pool, broadcast, [change(BookSide.ASK, "102", "0")])
        await asyncio.sleep(0.2)  # all four delivered to the subscription's queue
        whole = await asyncio.wait_for(anext(stream), 10)
        assert isinstance(whole, OrderBookSnapshot)
        assert whole.sequence == 5
        assert [(x.price, x.size) for x in whole.bids] == [(D(98), D(3)), (D(97), D(4))]
        assert [(x.price, x.size) for x in whole.asks] == [(D(103), D(3)), (D(104), D(4))]
        await stream.aclose()
    finally:
        await hub.close()
        await broadcast.disconnect()


def next_message(id: str, data: Any) -> bytes:
    return orjson.dumps({"id": id, "type": "next", "payload": {"data": data}})


def delta_message(previous: int, sequence: int, *changes: tuple[str, str, str]) -> bytes:
    return next_message(
        "1",
        {
            "orderBook": {
                "previous": previous,
                "sequence": sequence,
                "changes": [{"side": s, "price": p, "size": z} for s, p, z in changes],
                "cursor": f"c{sequence}",
            }
        },
    )


def test_two_waiting_deltas_merge_into_one_from_the_first_previous_to_the_last_sequence() -> None:
    older = delta_message(4, 5, ("BID", "100.0", "2"), ("ASK", "101.0", "1"))
    newer = delta_message(5, 7, ("BID", "100.0", "0"), ("BID", "99.5", "3"))
    merged = merge_messages(older, newer)
    assert merged is not None
    assert orjson.loads(merged) == orjson.loads(
        delta_message(4, 7, ("BID", "100.0", "0"), ("ASK", "101.0", "1"), ("BID", "99.5", "3"))
    )


def test_a_client_applying_merged_deltas_holds_the_book_of_applying_each() -> None:
    """A slow socket's deltas, merged as they wait, leave its client with the book it would
    hold had it taken every one."""
    rng = random.Random(7)
    messages = []
    for sequence in range(1, 60):
        changes = [
            (rng.choice(["BID", "ASK"]), f"{rng.randrange(95, 105)}.0", str(rng.randrange(0, 4)))
            for _ in range(rng.randrange(1, 5))
        ]
        messages.append(delta_message(sequence - 1, sequence, *changes))

    def apply(book: dict[tuple[str, str], str], message: bytes) -> None:
        for c in orjson.loads(message)["payload"]["data"]["orderBook"]["changes"]:
            book[c["side"], c["price"]] = c["size"]

    each: dict[tuple[str, str], str] = {}
    for message in messages:
        apply(each, message)
    waiting = messages[0]
    for message in messages[1:]:
        merged = merge_messages(waiting, message)
        assert merged is not None
        waiting = merged
    whole: dict[tuple[str, str], str] = {}
    apply(whole, waiting)
    assert whole == each
    delta = orjson.loads(waiting)["payload"]["data"]["orderBook"]
    assert (delta["previous"], delta["sequence"], delta["cursor"]) == (0, 59, "c59")


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        # not consecutive: the newer does not follow the older
        (delta_message(4, 5, ("BID", "1", "1")), delta_message(6, 7, ("BID", "1", "2"))),
        # a delta that does not follow the waiting snapshot
        (
            next_message("1", {"orderBook": {"sequence": 5, "bids": [], "asks": []}}),
            delta_message(6, 7, ("BID", "1", "1")),
        ),
        # a snapshot without its levels' prices
        (
            next_message("1", {"orderBook": {"sequence": 5, "bids": [{"size": "1"}], "asks": []}}),
            delta_message(5, 6, ("BID", "1", "1")),
        ),
        # a StreamReset (no sequence) waiting, then a snapshot
        (
            next_message("1", {"orderBook": {"reason": "RESET", "cursor": "c"}}),
            next_message("1", {"orderBook": {"sequence": 6, "bids": [], "asks": []}}),
        ),
        # levels without their side or price selected cannot be told apart
        (
            next_message(
                "1", {"orderBook": {"previous": 4, "sequence": 5, "changes": [{"size": "1"}]}}
            ),
            delta_message(5, 6, ("BID", "1", "1")),
        ),
        # sequences not selected
        (
            next_message("1", {"orderBook": {"changes": []}}),
            next_message("1", {"orderBook": {"changes": []}}),
        ),
        # a result with errors, a StreamReset's shape, another message type
        (
            delta_message(4, 5, ("BID", "1", "1")),
            orjson.dumps({"id": "1", "type": "next", "payload": {"data": None, "errors": []}}),
        ),
        (delta_message(4, 5, ("BID", "1", "1")), orjson.dumps({"id": "1", "type": "complete"})),
    ],
)
def test_what_is_not_two_consecutive_deltas_is_not_merged(older: bytes, newer: bytes) -> None:
    assert merge_messages(older, newer) is None


def snapshot_message(
    sequence: int, bids: list[tuple[str, str]], asks: list[tuple[str, str]]
) -> bytes:
    return next_message(
        "1",
        {
            "orderBook": {
                "__typename": "OrderBookSnapshot",
                "sequence": sequence,
                "bids": [{"price": p, "size": z} for p, z in bids],
                "asks": [{"price": p, "size": z} for p, z in asks],
                "cursor": f"c{sequence}",
            }
        },
    )


def test_a_snapshot_supersedes_what_waited_before_it() -> None:
    newer = snapshot_message(9, [("99.0", "1")], [("101.0", "1")])
    assert merge_messages(delta_message(4, 5, ("BID", "100.0", "2")), newer) == newer
    assert merge_messages(snapshot_message(5, [], []), newer) == newer


def test_a_delta_following_a_waiting_snapshot_is_applied_to_it_in_order() -> None:
    older = snapshot_message(5, [("100.0", "1"), ("99.0", "2")], [("101.0", "1"), ("103.0", "3")])
    newer = delta_message(
        5,
        8,
        ("BID", "100.0", "0"),  # gone
        ("BID", "99.5", "4"),  # new, between
        ("BID", "98.0", "5"),  # new, last
        ("ASK", "101.0", "7"),  # resized
        ("ASK", "100.5", "1"),  # new, best
        ("ASK", "102.0", "0"),  # a removal of a level it did not hold
    )
    merged = merge_messages(older, newer)
    assert merged is not None
    assert orjson.loads(merged) == orjson.loads(
        snapshot_message(
            8,
            [("99.5", "4"), ("99.0", "2"), ("98.0", "5")],
            [("100.5", "1"), ("101.0", "7"), ("103.0", "3")],
        )
    )
