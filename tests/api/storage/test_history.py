"""Topic history against a real PostgreSQL: numbering, resume starts, pruning, and the hub filling
gaps from it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from api.ops.metrics import counts
from api.runtime.clock import SystemClock
from api.settings import DEFAULT_LIMIT, HistoryLimit, parse_limits
from api.storage.history import (
    Cursor,
    InvalidCursorError,
    NotRecovered,
    PgHistory,
    Start,
    number_event,
    number_events,
)
from api.storage.latest import PgLatestEvents
from api.streaming.broadcast import RECONNECTED, Broadcast
from api.streaming.envelope import encode_event
from api.streaming.hub import Hub, StreamGapError
from domain.events import Unnumbered
from domain.prices import OraclePrice
from domain.topics import (
    TopicKind,
    funding_topic,
    market_stats_topic,
    positions_topic,
    price_topic,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import asyncpg

    from domain.events import Event

CLOCK = SystemClock()
TIMEOUT = 5.0


def user_topic() -> str:
    return positions_topic(f"u{uuid.uuid4().hex[:10]}")


async def number(pool: asyncpg.Pool, topic: str, n: int) -> list[Event]:
    return [await number_event(pool, CLOCK, topic, "Thing", {"n": i}) for i in range(n)]


async def test_sequences_are_monotonic_per_topic_under_concurrency(pool: asyncpg.Pool) -> None:
    topic = user_topic()
    got = await asyncio.gather(
        *(number_event(pool, CLOCK, topic, "Thing", {"i": i}) for i in range(50))
    )
    assert sorted(e.sequence for e in got) == list(range(1, 51))
    assert (await number_event(pool, CLOCK, user_topic(), "Thing", {})).sequence == 1


async def test_a_batch_is_numbered_per_topic_in_order_after_what_came_before(
    pool: asyncpg.Pool,
) -> None:
    history = PgHistory(pool, parse_limits(""))
    a, b, fresh = user_topic(), user_topic(), user_topic()
    await number(pool, a, 2)
    await number(pool, b, 1)
    batch = [
        Unnumbered(a, "Thing", {"n": 0}),
        Unnumbered(b, "Thing", {"n": 1}),
        Unnumbered(a, "Thing", {"n": 2}),
        Unnumbered(fresh, "Thing", {"n": 3}),
        Unnumbered(price_topic("BTC-PERP"), "PriceUpdate", {"p": "1"}),
        Unnumbered(a, "Thing", {"n": 4}),
    ]
    price_before = (await history.position(price_topic("BTC-PERP"))).sequence
    got = await number_events(pool, CLOCK, batch)
    assert [(e.topic, e.sequence, e.payload) for e in got] == [
        (a, 3, {"n": 0}),
        (b, 2, {"n": 1}),
        (a, 4, {"n": 2}),
        (fresh, 1, {"n": 3}),
        (price_topic("BTC-PERP"), price_before + 1, {"p": "1"}),
        (a, 5, {"n": 4}),
    ]
    assert len({e.published_at for e in got}) == 1
    kept = await history.since(a, 2)
    assert [(e.sequence, e.payload) for e in kept] == [(3, {"n": 0}), (4, {"n": 2}), (5, {"n": 4})]
    assert [e.sequence for e in await history.since(fresh, 0)] == [1]
    assert (await history.position(a)).sequence == 5
    assert (await number_event(pool, CLOCK, a, "Thing", {})).sequence == 6
    rows = await pool.fetchval("SELECT count(*) FROM topic_history WHERE topic LIKE 'price:%'")
    assert rows == 0
    assert await number_events(pool, CLOCK, []) == []


async def test_a_batch_keeping_latest_stores_each_latest_value_topics_newest_state(
    pool: asyncpg.Pool,
) -> None:
    """With keep_latest, a latest-value topic's newest event of the batch becomes its newest
    state (what a new subscriber reads first), in the same statement; a stream topic's events go
    to history only; a batch numbered without it leaves the stored state alone."""
    history = PgHistory(pool, parse_limits(""))
    stats = market_stats_topic(f"M-{uuid.uuid4().hex[:8]}")
    stream = user_topic()
    got = await number_events(
        pool,
        CLOCK,
        [
            Unnumbered(stats, "Stats", {"n": 1}),
            Unnumbered(stream, "Thing", {"n": 2}),
            Unnumbered(stats, "Stats", {"n": 3}),
        ],
        keep_latest=True,
    )
    assert [(e.topic, e.sequence) for e in got] == [(stats, 1), (stream, 1), (stats, 2)]
    newest = await PgLatestEvents(pool).latest(stats)
    assert newest is not None
    assert (newest.sequence, newest.type, newest.payload) == (2, "Stats", {"n": 3})
    assert await PgLatestEvents(pool).latest(stream) is None
    assert [e.payload for e in await history.since(stream, 0)] == [{"n": 2}]

    await number_events(pool, CLOCK, [Unnumbered(stats, "Stats", {"n": 4})])
    held = await PgLatestEvents(pool).latest(stats)
    assert held is not None
    assert held.payload == {"n": 3}


async def test_concurrent_batches_over_shared_topics_neither_deadlock_nor_repeat_a_number(
    pool: asyncpg.Pool,
) -> None:
    topics = [user_topic() for _ in range(5)]

    async def batch(i: int) -> list[Event]:
        # each batch names the topics in another order; the statement locks them by name
        order = topics[i % 5 :] + topics[: i % 5]
        async with pool.acquire() as conn, conn.transaction():
            return await number_events(
                conn, CLOCK, [Unnumbered(t, "Thing", {"i": i}) for t in order * 3]
            )

    got = await asyncio.wait_for(asyncio.gather(*(batch(i) for i in range(20))), 30)
    for topic in topics:
        numbers = sorted(e.sequence for events in got for e in events if e.topic == topic)
        assert numbers == list(range(1, 61))


async def test_a_rolled_back_batch_leaves_neither_sequences_nor_history(pool: asyncpg.Pool) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    await number(pool, topic, 1)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await number_events(conn, CLOCK, [Unnumbered(topic, "Thing", {})] * 3)
        await transaction.rollback()
    assert (await history.position(topic)).sequence == 1
    assert [e.sequence for e in await history.since(topic, 0)] == [1]


async def test_identical_reads_of_a_resume_storm_cost_one_database_read_each(
    pool: asyncpg.Pool,
) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    await number(pool, topic, 5)
    await number_event(pool, CLOCK, price_topic("ETH-PERP"), "PriceUpdate", {"p": "1"})
    before = (+counts.reads_issued, +counts.reads_merged)

    async def resume() -> tuple[Cursor, list[Event], Event | None]:
        return (
            await history.position(topic),
            await history.since(topic, 2, before=6),
            await history.latest(price_topic("ETH-PERP")),
        )

    got = await asyncio.gather(*(resume() for _ in range(200)))
    assert {(c.sequence, tuple(e.sequence for e in events)) for c, events, _ in got} == {
        (5, (3, 4, 5))
    }
    issued = counts.reads_issued - before[0]
    merged = counts.reads_merged - before[1]
    # 200 clients x 3 reads: what was asked while an identical read was in flight was merged
    assert sum(issued.values()) + sum(merged.values()) == 600
    assert max(issued.values()) <= 2, issued
    # once answered, a read asks again: a new event is seen
    await number(pool, topic, 1)
    assert (await history.position(topic)).sequence == 6


async def test_a_resume_from_known_positions_costs_one_read_a_topic_shared_by_identical_ones(
    pool: asyncpg.Pool,
) -> None:
    """Where the topic stands comes from the caller's subscription (the hub): the replay and the
    check that the snapshot was exact are one read, merged across identical resumes."""
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    await number(pool, topic, 5)
    current = await history.position(topic)
    before = +counts.reads_issued

    async def resume() -> Start[str]:
        return await history.start(
            [topic],
            [Cursor(current.epoch, 2)],
            lambda: asyncio.sleep(0, "state"),
            always_snapshot=True,
            current=[current],
        )

    got = await asyncio.gather(*(resume() for _ in range(50)))
    for start in got:
        assert start.resumed
        assert start.snapshot == "state"
        assert [e.sequence for e in start.replay] == [3, 4, 5]
        assert start.cursors == [current]
    issued = counts.reads_issued - before
    assert issued.get("position", 0) == 0, issued
    assert issued["events"] == 1, issued


async def test_a_resume_whose_snapshot_raced_an_event_reads_it_again_at_the_new_position(
    pool: asyncpg.Pool,
) -> None:
    """An event numbered while the snapshot was read (the known position is behind): the
    snapshot is read again and the replay runs to where the topic then stands, one read an
    attempt."""
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    await number(pool, topic, 3)
    current = await history.position(topic)
    snapshots: list[int] = []

    async def snapshot() -> int:
        snapshots.append(len(snapshots))
        if len(snapshots) == 1:
            await number(pool, topic, 1)  # stored while the first snapshot was read
        return len(snapshots)

    before = +counts.reads_issued
    start = await history.start(
        [topic], [Cursor(current.epoch, 1)], snapshot, always_snapshot=True, current=[current]
    )
    assert start.resumed
    assert start.snapshot == 2
    assert [e.sequence for e in start.replay] == [2, 3, 4]
    assert [c.sequence for c in start.cursors] == [4]
    issued = counts.reads_issued - before
    # one read per attempt: the events up to where the topic stood, and where it stands after
    assert issued.get("position", 0) == 0, issued
    assert issued["events"] == 2, issued


async def test_a_resume_from_known_positions_still_tells_a_reset_and_an_expired_history(
    pool: asyncpg.Pool,
) -> None:
    history = PgHistory(pool, parse_limits("positions=2/3600"))
    topic = user_topic()
    await number(pool, topic, 5)
    await history.prune()
    current = await history.position(topic)

    async def state() -> str:
        return "state"

    expired = await history.start(
        [topic], [Cursor(current.epoch, 1)], state, always_snapshot=True, current=[current]
    )
    assert expired.not_recovered is NotRecovered.HISTORY_EXPIRED
    assert expired.snapshot == "state"
    assert expired.cursors == [current]
    other_epoch = await history.start(
        [topic], [Cursor("0", 1)], state, always_snapshot=True, current=[current]
    )
    assert other_epoch.not_recovered is NotRecovered.HISTORY_RESET
    events_only = await history.start([topic], [Cursor(current.epoch, 1)], state, current=[current])
    assert events_only.not_recovered is NotRecovered.HISTORY_EXPIRED
    assert events_only.snapshot == "state"


async def test_stream_events_are_kept_with_their_payload_and_latest_value_events_are_not(
    pool: asyncpg.Pool,
) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    sent = await number(pool, topic, 3)
    kept = await history.since(topic, 0)
    assert [(e.sequence, e.type, e.payload) for e in kept] == [
        (e.sequence, e.type, e.payload) for e in sent
    ]
    assert [e.published_at for e in kept] == [e.published_at for e in sent]
    await number_event(pool, CLOCK, price_topic("BTC-PERP"), "PriceUpdate", {"p": "1"})
    rows = await pool.fetchval("SELECT count(*) FROM topic_history WHERE topic LIKE 'price:%'")
    assert rows == 0


async def test_a_rolled_back_transaction_leaves_neither_a_sequence_nor_history(
    pool: asyncpg.Pool,
) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    await number(pool, topic, 1)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await number_event(conn, CLOCK, topic, "Thing", {})
        await transaction.rollback()
    assert (await history.position(topic)).sequence == 1
    assert [e.sequence for e in await history.since(topic, 0)] == [1]


async def test_a_fresh_start_reads_the_snapshot_at_the_current_cursor(pool: asyncpg.Pool) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    await number(pool, topic, 2)

    async def snapshot() -> str:
        return "state"

    start = await history.start([topic], None, snapshot)
    assert start.snapshot == "state"
    assert start.replay == []
    assert start.not_recovered is None
    assert start.cursors == [await history.position(topic)]
    assert start.cursors[0].sequence == 2


async def test_a_topic_without_events_has_a_cursor_already(pool: asyncpg.Pool) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    first = await history.position(topic)
    assert first.sequence == 0
    sent = await number(pool, topic, 2)
    start = await history.start([topic], [first], _no_snapshot)
    assert [e.sequence for e in start.replay] == [e.sequence for e in sent]
    assert start.cursors == [Cursor(first.epoch, 2)]
    assert start.resumed


async def _no_snapshot() -> str:
    raise AssertionError("a resumed start must not read the snapshot")


async def test_a_resume_replays_exactly_what_followed_the_cursor(pool: asyncpg.Pool) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    await number(pool, topic, 5)
    position = await history.position(topic)
    start = await history.start([topic], [Cursor(position.epoch, 2)], _no_snapshot)
    assert [e.sequence for e in start.replay] == [3, 4, 5]
    assert [e.payload["n"] for e in start.replay] == [2, 3, 4]
    assert start.cursors == [position]
    assert start.not_recovered is None

    at_head = await history.start([topic], [position], _no_snapshot)
    assert at_head.replay == []
    assert at_head.snapshot is None
    assert at_head.cursors == [position]
    assert at_head.resumed


async def test_a_cursor_of_another_numbering_is_reset_and_gets_the_snapshot(
    pool: asyncpg.Pool,
) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    await number(pool, topic, 3)
    position = await history.position(topic)

    async def snapshot() -> str:
        return "now"

    other_epoch = await history.start([topic], [Cursor("0ther", 1)], snapshot)
    ahead = await history.start([topic], [Cursor(position.epoch, 99)], snapshot)
    too_many = await history.start([topic], [position, position], snapshot)
    for start in (other_epoch, ahead, too_many):
        assert start.not_recovered is NotRecovered.HISTORY_RESET
        assert start.snapshot == "now"
        assert start.replay == []
        assert start.cursors == [position]
        assert not start.resumed

    # The topic's numbering starts again (its row gone): cursors of the old one are reset.
    await pool.execute("DELETE FROM topic_sequences WHERE topic = $1", topic)
    await pool.execute("DELETE FROM topic_history WHERE topic = $1", topic)
    await number(pool, topic, 4)
    start = await history.start([topic], [Cursor(position.epoch, 2)], snapshot)
    assert start.not_recovered is NotRecovered.HISTORY_RESET
    assert start.cursors[0].epoch != position.epoch


async def test_pruning_keeps_the_newest_events_and_expires_older_cursors(
    pool: asyncpg.Pool,
) -> None:
    history = PgHistory(pool, {TopicKind.POSITIONS: HistoryLimit(max_events=3, max_age_s=3600)})
    topic, other = user_topic(), funding_topic("BTC-PERP")
    await number(pool, topic, 10)
    await number(pool, other, 10)
    assert await history.prune() == 7  # only the kinds it was given limits for
    assert [e.sequence for e in await history.since(topic, 0)] == [8, 9, 10]
    assert len(await history.since(other, 0)) == 10
    position = await history.position(topic)

    async def snapshot() -> str:
        return "now"

    expired = await history.start([topic], [Cursor(position.epoch, 5)], snapshot)
    assert expired.not_recovered is NotRecovered.HISTORY_EXPIRED
    assert expired.snapshot == "now"
    kept = await history.start([topic], [Cursor(position.epoch, 7)], _no_snapshot)
    assert [e.sequence for e in kept.replay] == [8, 9, 10]


async def test_pruning_by_age(pool: asyncpg.Pool) -> None:
    history = PgHistory(pool, {TopicKind.POSITIONS: HistoryLimit(max_events=100, max_age_s=60)})
    topic = user_topic()
    await number(pool, topic, 4)
    later = datetime.now(UTC) + timedelta(seconds=61)
    assert await history.prune(later) == 4
    assert await history.since(topic, 0) == []
    assert (await history.position(topic)).sequence == 4  # the numbering itself goes on


async def test_a_snapshot_read_while_events_are_numbered_is_read_again(pool: asyncpg.Pool) -> None:
    history = PgHistory(pool, parse_limits(""))
    topic = user_topic()
    reads = 0

    async def snapshot() -> int:
        nonlocal reads
        reads += 1
        if reads == 1:  # an event is numbered while the first read runs
            await number(pool, topic, 1)
        return reads

    value, cursors = await history.consistent([topic], snapshot)
    assert (value, cursors[0].sequence) == (2, 1)


async def test_a_resume_over_two_topics_replays_both_in_publication_order_with_the_state(
    pool: asyncpg.Pool,
) -> None:
    history = PgHistory(pool, parse_limits(""))
    one, two = user_topic(), user_topic()
    await number(pool, one, 1)
    marks = [await history.position(one), await history.position(two)]
    a = await number(pool, one, 1)
    b = await number(pool, two, 2)
    c = await number(pool, one, 1)

    async def snapshot() -> str:
        return "state"

    issued = +counts.reads_issued
    start = await history.start([one, two], marks, snapshot, always_snapshot=True)
    # Each topic's position read twice (before and after the snapshot), its events once.
    assert (counts.reads_issued - issued) == {"position": 4, "events": 2}
    assert start.resumed
    assert start.snapshot == "state"
    assert [(e.topic, e.sequence) for e in start.replay] == [
        (e.topic, e.sequence) for e in a + b + c
    ]
    assert [c.sequence for c in start.cursors] == [3, 2]
    # One topic's history expired: nothing is replayed, the state comes with the reason.
    await pool.execute("DELETE FROM topic_history WHERE topic = $1", two)
    start = await history.start([one, two], marks, snapshot, always_snapshot=True)
    assert (start.resumed, start.replay, start.snapshot) == (False, [], "state")
    assert start.not_recovered is NotRecovered.HISTORY_EXPIRED


def test_cursors_round_trip_and_foreign_strings_are_refused() -> None:
    cursor = Cursor("a1b2c3d4e5", 42)
    assert Cursor.parse(str(cursor)) == cursor
    for bad in ("", "42", "x.a1", "-1.a1", "42.", "42.XYZ", "1" * 30 + ".a1", "42.a1 "):
        with pytest.raises(InvalidCursorError):
            Cursor.parse(bad)


def test_history_limits_parse_and_refuse_nonsense() -> None:
    limits = parse_limits("positions=5/60, funding=10/3600.5")
    assert limits[TopicKind.POSITIONS] == HistoryLimit(5, 60)
    assert limits[TopicKind.FUNDING] == HistoryLimit(10, 3600.5)
    assert limits[TopicKind.ROUNDS] == DEFAULT_LIMIT
    assert TopicKind.PRICE not in limits
    for bad, problem in [
        ("positions=5", "expected kind=events/seconds"),
        ("nonsense=5/60", "not a topic kind"),
        ("price=5/60", "latest-value kind"),
        ("positions=0/60", "at least one event"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_limits(bad)


# The hub fills gaps of stream topics from the history.


@pytest.fixture
async def hub(pool: asyncpg.Pool) -> AsyncIterator[tuple[Hub, Broadcast, PgHistory]]:
    broadcast = Broadcast("memory://")
    await broadcast.connect()
    history = PgHistory(pool, parse_limits(""))
    hub = Hub(broadcast, queue_size=16, history=history)
    yield hub, broadcast, history
    await hub.close()
    await broadcast.disconnect()


async def take(subscription: Any, n: int) -> list[int]:
    return [(await asyncio.wait_for(anext(subscription), TIMEOUT)).sequence for _ in range(n)]


async def test_the_hub_fills_an_event_published_late_from_history(
    pool: asyncpg.Pool, hub: tuple[Hub, Broadcast, PgHistory]
) -> None:
    h, broadcast, _ = hub
    topic = user_topic()
    await number(pool, topic, 1)
    async with h.subscribe(topic) as subscription:
        two, three = await number(pool, topic, 2)
        # Two publishers: the later event is delivered first; the earlier one comes late.
        await broadcast.publish(topic, encode_event(three))
        assert await take(subscription, 2) == [2, 3]
        await broadcast.publish(topic, encode_event(two))  # already delivered: dropped
        four = (await number(pool, topic, 1))[0]
        await broadcast.publish(topic, encode_event(four))
        assert await take(subscription, 1) == [4]


async def test_the_hub_knows_where_a_subscribed_stream_stands(
    pool: asyncpg.Pool, hub: tuple[Hub, Broadcast, PgHistory]
) -> None:
    """Hub.positions: a subscribed stream topic's epoch and last delivered sequence (what a
    resume replays up to without reading it); None for a topic without a feed or without
    contiguous delivery (a latest-value topic)."""
    h, broadcast, history = hub
    topic, price = user_topic(), price_topic("BTC-PERP")
    await number(pool, topic, 2)
    assert h.positions([topic]) is None
    async with h.subscribe(topic) as subscription, h.subscribe(price):
        assert h.positions([topic]) == [await history.position(topic)]
        assert h.positions([topic, price]) is None
        (three,) = await number(pool, topic, 1)
        await broadcast.publish(topic, encode_event(three))
        assert await take(subscription, 1) == [3]
        assert h.positions([topic]) == [await history.position(topic)]
    assert h.positions([topic]) is None


async def test_after_a_backend_reconnect_the_hub_delivers_what_was_missed(
    pool: asyncpg.Pool, hub: tuple[Hub, Broadcast, PgHistory]
) -> None:
    h, broadcast, history = hub
    topic, price = user_topic(), price_topic("BTC-PERP")
    async with h.subscribe(topic) as stream, h.subscribe(price) as prices:
        missed = await number(pool, topic, 3)  # published while the broker was unreachable
        await pool.execute(
            """INSERT INTO latest_prices (market, price, confidence, published_at, sequence)
               VALUES ('BTC-PERP', 65000.5, 1, now(), 1000000000)
               ON CONFLICT (market) DO UPDATE SET price = EXCLUDED.price,
                   sequence = EXCLUDED.sequence, published_at = EXCLUDED.published_at"""
        )
        await broadcast.publish(topic, RECONNECTED)
        await broadcast.publish(price, RECONNECTED)
        assert await take(stream, 3) == [e.sequence for e in missed]
        latest = await asyncio.wait_for(anext(prices), TIMEOUT)
        assert latest.sequence == 10**9
        assert OraclePrice.from_payload(latest.payload).price == Decimal("65000.5")
        assert latest == await history.latest(price)


async def test_a_gap_history_no_longer_holds_ends_the_stream_with_a_clear_error(
    pool: asyncpg.Pool, hub: tuple[Hub, Broadcast, PgHistory]
) -> None:
    h, broadcast, _ = hub
    topic = user_topic()
    async with h.subscribe(topic) as subscription:
        events = await number(pool, topic, 3)
        await pool.execute("DELETE FROM topic_history WHERE topic = $1 AND sequence < 3", topic)
        await broadcast.publish(topic, encode_event(events[2]))
        with pytest.raises(StreamGapError, match="may have been missed"):
            await asyncio.wait_for(anext(subscription), TIMEOUT)
    # A new subscriber starts afresh and gets what comes next.
    async with h.subscribe(topic) as subscription:
        nxt = (await number(pool, topic, 1))[0]
        await broadcast.publish(topic, encode_event(nxt))
        assert await take(subscription, 1) == [4]
