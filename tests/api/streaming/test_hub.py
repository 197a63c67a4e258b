from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from api.streaming.broadcast import Broadcast
from api.streaming.envelope import encode_event
from api.streaming.hub import (
    Hub,
    HubClosedError,
    SubscriberLaggedError,
    Subscription,
    _SubscriberQueue,
)
from domain.events import DeliveryPolicy, Event
from domain.topics import positions_topic, price_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

BTC = price_topic("BTC-PERP")
ETH = price_topic("ETH-PERP")
TIMEOUT = 2.0


def event(sequence: int, topic: str = BTC) -> Event:
    return Event(
        topic=topic,
        sequence=sequence,
        published_at=datetime(2024, 1, 1, 0, 0, sequence % 60, tzinfo=UTC),
        type="PriceUpdate",
        payload={"market": topic.split(":")[1], "price": str(65000 + sequence)},
    )


@pytest.fixture
async def broadcast() -> AsyncIterator[Broadcast]:
    b = Broadcast("memory://")
    await b.connect()
    yield b
    await b.disconnect()


@pytest.fixture
async def hub(broadcast: Broadcast) -> AsyncIterator[Hub]:
    h = Hub(broadcast, queue_size=4)
    yield h
    await h.close()


async def publish(broadcast: Broadcast, *events: Event) -> None:
    for e in events:
        await broadcast.publish(e.topic, encode_event(e))


async def receive(subscription: Subscription) -> Event:
    return await asyncio.wait_for(subscription.__anext__(), TIMEOUT)


async def wait_until(condition: Callable[[], bool], poll: float = 0.005) -> None:
    """Wait for hub state no event signals (a message processed, an upstream torn down)."""
    for _ in range(int(TIMEOUT / poll)):
        if condition():
            return
        await asyncio.sleep(poll)
    raise AssertionError(f"condition still false after {TIMEOUT}s")


def last_sequence(hub: Hub, topic: str) -> int:
    """The newest sequence the hub has taken in on ``topic``: proof a message was processed."""
    feed = hub._feeds.get(topic)
    return 0 if feed is None else feed.last_sequence


async def test_one_upstream_subscription_per_topic(hub: Hub, broadcast: Broadcast) -> None:
    async with (
        hub.subscribe(BTC) as a,
        hub.subscribe(BTC) as b,
        hub.subscribe(BTC) as c,
        hub.subscribe(ETH) as d,
    ):
        assert hub.topics == {BTC: 3, ETH: 1}
        assert {topic: len(queues) for topic, queues in broadcast._subscribers.items()} == {
            BTC: 1,
            ETH: 1,
        }

        await publish(broadcast, event(1), event(7, ETH))
        assert [(await receive(s)).sequence for s in (a, b, c)] == [1, 1, 1]
        assert (await receive(d)).topic == ETH

    assert hub.topics == {}
    await wait_until(lambda: not broadcast._subscribers)


async def test_topic_counts_follow_subscribers(hub: Hub) -> None:
    async with hub.subscribe(BTC):
        async with hub.subscribe(BTC):
            assert hub.topics == {BTC: 2}
        assert hub.topics == {BTC: 1}
    assert hub.topics == {}


async def test_resubscribe_after_everyone_left(hub: Hub, broadcast: Broadcast) -> None:
    async with hub.subscribe(BTC) as first:
        await publish(broadcast, event(1))
        assert (await receive(first)).sequence == 1

    # At once, while the old upstream subscription is still being torn down.
    async with hub.subscribe(BTC) as second:
        assert hub.topics == {BTC: 1}
        await publish(broadcast, event(2))
        assert (await receive(second)).sequence == 2

    # And again once the teardown has finished.
    await wait_until(lambda: not broadcast._subscribers)
    async with hub.subscribe(BTC) as third:
        await publish(broadcast, event(3))
        assert (await receive(third)).sequence == 3
        assert len(broadcast._subscribers[BTC]) == 1


async def test_every_subscriber_gets_the_same_event_object(hub: Hub, broadcast: Broadcast) -> None:
    async with hub.subscribe(BTC) as a, hub.subscribe(BTC) as b, hub.subscribe(BTC) as c:
        await publish(broadcast, event(1))
        received = [await receive(s) for s in (a, b, c)]

    assert received[0] == event(1)
    assert received[0] is received[1] is received[2]


async def test_slow_subscriber_gets_the_newest_values_only(hub: Hub, broadcast: Broadcast) -> None:
    """Latest-value queues hold the newest ``queue_size`` (4 here) events and drop older ones."""
    async with hub.subscribe(BTC) as slow, hub.subscribe(BTC) as fast:
        for sequence in range(1, 11):
            await publish(broadcast, event(sequence))
            assert (await receive(fast)).sequence == sequence

        await wait_until(lambda: last_sequence(hub, BTC) == 10)
        assert len(slow.queue) == 4
        assert slow.queue.conflated == 6
        assert [(await receive(slow)).sequence for _ in range(4)] == [7, 8, 9, 10]
        assert len(slow.queue) == 0


async def test_out_of_order_and_duplicate_events_dropped(hub: Hub, broadcast: Broadcast) -> None:
    async with hub.subscribe(BTC) as sub:
        await publish(broadcast, event(1), event(2))
        await wait_until(lambda: last_sequence(hub, BTC) == 2)
        assert [(await receive(sub)).sequence for _ in range(2)] == [1, 2]

        await publish(broadcast, event(2), event(1), event(2))
        await publish(broadcast, event(3))
        assert (await receive(sub)).sequence == 3
        assert len(sub.queue) == 0  # no stale event reached the queue

        await publish(broadcast, event(3), event(4))
        assert (await receive(sub)).sequence == 4
        assert sub.queue.conflated == 0


async def test_malformed_message_dropped_next_delivered(
    hub: Hub, broadcast: Broadcast, caplog: pytest.LogCaptureFixture
) -> None:
    async with hub.subscribe(BTC) as sub:
        with caplog.at_level(logging.ERROR, logger="api.streaming.hub"):
            await broadcast.publish(BTC, "this is not an event")
            await broadcast.publish(BTC, '{"topic": "price:BTC-PERP"}')
            await publish(broadcast, event(1))
            assert await receive(sub) == event(1)

        assert sub.queue.conflated == 0
        dropped = [r for r in caplog.records if "malformed" in r.getMessage()]
        assert len(dropped) == 2

        await publish(broadcast, event(2))
        assert (await receive(sub)).sequence == 2


async def test_close_ends_open_subscriptions_and_refuses_new_ones(
    hub: Hub, broadcast: Broadcast
) -> None:
    async with hub.subscribe(BTC) as waiting, hub.subscribe(ETH) as idle:
        reader = asyncio.create_task(waiting.__anext__())
        await asyncio.sleep(0)
        assert not reader.done()

        await hub.close()

        with pytest.raises(HubClosedError):
            await asyncio.wait_for(reader, TIMEOUT)
        with pytest.raises(HubClosedError):
            await receive(idle)
        assert hub.topics == {}

    with pytest.raises(HubClosedError):
        async with hub.subscribe(BTC):
            pytest.fail("a closed hub must not open subscriptions")
    await wait_until(lambda: not broadcast._subscribers)


async def test_close_drops_queued_events(hub: Hub, broadcast: Broadcast) -> None:
    async with hub.subscribe(BTC) as sub:
        await publish(broadcast, event(1))
        await wait_until(lambda: len(sub.queue) == 1)
        await hub.close()
        with pytest.raises(HubClosedError):
            await receive(sub)


async def test_live_yields_snapshot_then_newer_events(hub: Hub, broadcast: Broadcast) -> None:
    snapshot = event(5)

    async def read_snapshot() -> Event | None:
        return snapshot

    live = hub.live(BTC, read_snapshot)
    assert isinstance(live, AsyncGenerator)
    try:
        assert await asyncio.wait_for(anext(live), TIMEOUT) is snapshot
        assert hub.topics == {BTC: 1}

        # Events the snapshot already covers reach the hub but are not yielded.
        pending = asyncio.create_task(anext(live))
        await publish(broadcast, event(4), event(5))
        await wait_until(lambda: last_sequence(hub, BTC) == 5)
        done, _ = await asyncio.wait({pending}, timeout=0.05)
        assert not done

        await publish(broadcast, event(6))
        assert (await asyncio.wait_for(pending, TIMEOUT)).sequence == 6
        await publish(broadcast, event(7))
        assert (await asyncio.wait_for(anext(live), TIMEOUT)).sequence == 7
    finally:
        await live.aclose()
    assert hub.topics == {}


async def test_live_without_snapshot_yields_events(hub: Hub, broadcast: Broadcast) -> None:
    async def no_snapshot() -> Event | None:
        return None

    live = hub.live(BTC, no_snapshot)
    assert isinstance(live, AsyncGenerator)
    try:
        pending = asyncio.create_task(anext(live))
        await wait_until(lambda: hub.topics == {BTC: 1})
        await publish(broadcast, event(1))
        assert (await asyncio.wait_for(pending, TIMEOUT)).sequence == 1
    finally:
        await live.aclose()


async def test_live_subscribes_before_reading_the_snapshot(hub: Hub, broadcast: Broadcast) -> None:
    # An event published while the snapshot is being read must not be lost.
    async def snapshot_with_concurrent_publish() -> Event | None:
        await publish(broadcast, event(2))
        await wait_until(lambda: last_sequence(hub, BTC) == 2)
        return event(1)

    live = hub.live(BTC, snapshot_with_concurrent_publish)
    assert isinstance(live, AsyncGenerator)
    try:
        assert (await asyncio.wait_for(anext(live), TIMEOUT)).sequence == 1
        assert (await asyncio.wait_for(anext(live), TIMEOUT)).sequence == 2
    finally:
        await live.aclose()


async def test_stream_queue_fails_reader_when_full() -> None:
    queue = _SubscriberQueue("trades:BTC-PERP", DeliveryPolicy.STREAM, capacity=3)
    for sequence in (1, 2, 3):
        queue.put(event(sequence))
    assert len(queue) == 3

    queue.put(event(4))

    # The queued events are dropped with the error: the reader never sees 1..3 and then a gap.
    assert len(queue) == 0
    with pytest.raises(SubscriberLaggedError) as info:
        await asyncio.wait_for(queue.get(), TIMEOUT)
    assert info.value.topic == "trades:BTC-PERP"
    assert info.value.capacity == 3
    assert "resubscribe" in str(info.value)

    queue.put(event(5))
    assert len(queue) == 0
    with pytest.raises(SubscriberLaggedError):
        await asyncio.wait_for(queue.get(), TIMEOUT)


async def test_stream_queue_fails_a_reader_whose_oldest_event_waited_too_long() -> None:
    queue = _SubscriberQueue("trades:BTC-PERP", DeliveryPolicy.STREAM, capacity=64, max_lag_s=0.05)
    queue.put(event(1))
    assert (await asyncio.wait_for(queue.get(), TIMEOUT)).sequence == 1  # read in time
    await asyncio.sleep(0.08)
    queue.put(event(2))  # nothing was waiting: no lag, however long since the last
    await asyncio.sleep(0.08)
    queue.put(event(3))  # event 2 has waited 80 ms
    assert len(queue) == 0
    with pytest.raises(SubscriberLaggedError) as info:
        await asyncio.wait_for(queue.get(), TIMEOUT)
    assert info.value.lag_s == 0.05
    assert "0.05 s behind" in str(info.value)


async def test_a_latest_value_queue_knows_no_lag_by_time() -> None:
    queue = _SubscriberQueue("price:BTC-PERP", DeliveryPolicy.LATEST_VALUE, 4, max_lag_s=0.01)
    queue.put(event(1))
    await asyncio.sleep(0.03)
    queue.put(event(2))
    assert [queue.take(), queue.take()] == [event(1), event(2)]


async def test_stream_queue_delivers_in_order_within_capacity() -> None:
    queue = _SubscriberQueue("trades:BTC-PERP", DeliveryPolicy.STREAM, capacity=3)
    for sequence in (1, 2, 3):
        queue.put(event(sequence))
    assert [(await queue.get()).sequence for _ in range(3)] == [1, 2, 3]
    queue.put(event(4))
    assert (await queue.get()).sequence == 4
    assert queue.error is None


async def test_stream_queue_wakes_a_waiting_reader_with_the_error() -> None:
    queue = _SubscriberQueue("trades:BTC-PERP", DeliveryPolicy.STREAM, capacity=1)
    queue.put(event(1))
    assert (await queue.get()).sequence == 1
    reader = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put(event(2))
    queue.put(event(3))
    # The reader was woken by event 2 but had not run yet when event 3 overflowed the queue.
    with pytest.raises(SubscriberLaggedError):
        await asyncio.wait_for(reader, TIMEOUT)


async def test_latest_value_queue_keeps_only_the_newest() -> None:
    queue = _SubscriberQueue(BTC, DeliveryPolicy.LATEST_VALUE, capacity=3)
    for sequence in range(1, 6):
        queue.put(event(sequence))
    assert len(queue) == 3
    assert queue.conflated == 2
    assert [(await queue.get()).sequence for _ in range(3)] == [3, 4, 5]
    assert queue.error is None


def position_event(sequence: int, user: str = "alice") -> Event:
    return Event(
        topic=positions_topic(user),
        sequence=sequence,
        published_at=datetime(2024, 1, 1, tzinfo=UTC),
        type="position.opened",
        payload={"n": sequence},
    )


async def test_merge_reads_several_topics_each_with_its_policy(
    hub: Hub, broadcast: Broadcast
) -> None:
    async with hub.merge([positions_topic("alice"), BTC]) as merged:
        assert hub.topics == {positions_topic("alice"): 1, BTC: 1}
        await publish(broadcast, *(event(n) for n in range(1, 10)))
        await publish(broadcast, *(position_event(n) for n in range(1, 4)))
        await wait_until(lambda: sum(len(q) for q in merged.queues) == 4 + 3)
        received = [await asyncio.wait_for(anext(merged), TIMEOUT) for _ in range(7)]
        assert merged.poll() is None
    prices = [e.sequence for e in received if e.topic == BTC]
    positions = [e.sequence for e in received if e.topic != BTC]
    assert prices == [6, 7, 8, 9]  # latest value: the newest few, in order
    assert positions == [1, 2, 3]  # stream: every one, in order
    assert [e.topic for e in received[:2]] == [positions_topic("alice"), BTC]  # turns
    assert hub.topics == {}


async def test_merge_ends_with_a_lagging_stream(hub: Hub, broadcast: Broadcast) -> None:
    async with hub.merge([BTC, positions_topic("bob")]) as merged:
        await publish(broadcast, *(position_event(n, "bob") for n in range(1, 6)))  # capacity 4
        with pytest.raises(SubscriberLaggedError):
            await asyncio.wait_for(anext(merged), TIMEOUT)


async def test_merge_wakes_on_any_topic(hub: Hub, broadcast: Broadcast) -> None:
    async with hub.merge([BTC, ETH]) as merged:
        waiting = asyncio.create_task(anext(merged))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await publish(broadcast, event(1, ETH))
        assert (await asyncio.wait_for(waiting, TIMEOUT)).topic == ETH
