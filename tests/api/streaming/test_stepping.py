"""Groups read their source streams in the hub's own pass (api/streaming/stepping.py): every group
of a topic
gets an event before any other task runs, without a task wake-up each; what a step cannot finish
(an await on something else, the end, a failure, a cancellation) the group's task finishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator  # noqa: TC003  (Strawberry resolves it at run time)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import strawberry

from api.graphql.fanout import Encoded, Groups, Member
from api.graphql.plans import PlannedExecutionContext
from api.ops.metrics import counts
from api.streaming import stepping
from api.streaming.broadcast import Broadcast
from api.streaming.envelope import encode_event
from api.streaming.hub import DELIVERY_SLICE_S, LATEST_VALUE_BACKLOG, Hub
from domain.events import DeliveryPolicy, Event
from domain.topics import price_topic
from tests.support import loop_gaps

TOPIC = price_topic("BTC-PERP")
TIMEOUT = 2.0


@dataclass
class Services:
    hub: Hub
    sleeps: list[float] = field(default_factory=list)
    """Seconds to sleep (a real await, finished by the group's task) before the next event."""
    tasks_seen: list[asyncio.Task[Any] | None] = field(default_factory=list)
    busy_s: float = 0.0
    """Seconds of synchronous work each stream does per event (a resolver's computation)."""


@strawberry.type
class Tick:
    sequence: int
    price: str


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, info: strawberry.Info, n: int = 0) -> AsyncIterator[Tick]:
        services: Services = info.context["services"]
        async with services.hub.subscribe(TOPIC) as events:
            async for event in events:
                services.tasks_seen.append(asyncio.current_task())
                if services.busy_s:
                    spin_until = time.perf_counter() + services.busy_s
                    while time.perf_counter() < spin_until:
                        pass
                if services.sleeps:
                    await asyncio.sleep(services.sleeps.pop())
                if event.payload["price"] == "fail":
                    raise RuntimeError("the source failed")
                yield Tick(sequence=event.sequence, price=event.payload["price"])


schema = strawberry.Schema(
    query=Query, subscription=Subscription, execution_context_class=PlannedExecutionContext
)
DOCUMENT = "subscription($n: Int) { ticks(n: $n) { sequence price } }"


class Sink:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.stepped: list[bool] = []
        self.ended = asyncio.Event()

    def deliver(self, encoded: Encoded, policy: DeliveryPolicy) -> None:
        self.results.append(orjson.loads(encoded.payload))
        self.stepped.append(stepping.current() is not None)

    def end(self, refusal: object) -> None:
        self.ended.set()


def event(sequence: int, price: str | None = None) -> Event:
    return Event(
        topic=TOPIC,
        sequence=sequence,
        published_at=datetime(2024, 1, 1, tzinfo=UTC),
        type="PriceUpdate",
        payload={"market": "BTC-PERP", "price": price or str(100 + sequence)},
    )


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    broadcast = Broadcast("memory://")
    await broadcast.connect()
    hub = Hub(broadcast, queue_size=8)
    try:
        yield Services(hub)
    finally:
        await hub.close()
        await broadcast.disconnect()


async def join(groups: Groups, services: Services, n: int) -> tuple[Sink, Member]:
    """A subscriber with variables of its own: a group of one."""

    async def open_stream() -> Any:
        return await schema.stream(
            DOCUMENT, variable_values={"n": n}, context_value={"services": services}
        )

    sink = Sink()
    return sink, groups.join(("ticks", n), open_stream, sink)


async def publish(services: Services, *events: Event) -> None:
    for e in events:
        await services.hub.broadcast.publish(e.topic, encode_event(e))


async def until(condition: Any) -> None:
    """Poll for state that no event signals (what the hub and the groups did meanwhile)."""
    for _ in range(int(TIMEOUT / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"still false after {TIMEOUT} s")


async def test_every_group_gets_the_event_in_the_hubs_own_pass(services: Services) -> None:
    groups = Groups(queue_size=8)
    members = [await join(groups, services, n) for n in range(20)]
    await until(lambda: services.hub.topics.get(TOPIC) == 20)
    await publish(services, event(1))
    await until(lambda: all(sink.results for sink, _ in members))
    # The first result comes through Strawberry's stream, in each group's task.
    assert all(sink.stepped == [False] for sink, _ in members)
    feed_task = services.hub._feeds[TOPIC].task
    services.tasks_seen.clear()
    # One at a time: a pass that finds a newer state waiting may skip to it (the test below).
    await publish(services, event(2))
    await until(lambda: all(len(sink.results) == 2 for sink, _ in members))
    await publish(services, event(3))
    await until(lambda: all(len(sink.results) == 3 for sink, _ in members))
    for sink, _ in members:
        assert sink.stepped[1:] == [True, True], "delivered from a step, not by a task wake-up"
        assert [r["data"]["ticks"]["sequence"] for r in sink.results] == [1, 2, 3]
    # During a step, the current task is the group's own (never the hub's feed task).
    assert feed_task not in services.tasks_seen
    assert len(set(services.tasks_seen)) == 20
    for _, member in members:
        member.leave()
    await until(lambda: len(groups) == 0 and TOPIC not in services.hub.topics)


async def test_an_await_in_the_source_is_finished_by_the_groups_task(services: Services) -> None:
    groups = Groups(queue_size=8)
    sink, member = await join(groups, services, 0)
    await until(lambda: services.hub.topics.get(TOPIC) == 1)
    await publish(services, event(1))
    await until(lambda: len(sink.results) == 1)
    services.sleeps.append(0.01)
    await publish(services, event(2), event(3), event(4))
    await until(lambda: len(sink.results) == 4)
    assert [r["data"]["ticks"]["sequence"] for r in sink.results] == [1, 2, 3, 4]
    assert sink.stepped == [False, False, True, True], "after the sleep, stepping again"
    member.leave()
    await until(lambda: len(groups) == 0)


async def test_a_failing_source_ends_the_subscription_with_its_error(services: Services) -> None:
    groups = Groups(queue_size=8)
    sink, _ = await join(groups, services, 0)
    await until(lambda: services.hub.topics.get(TOPIC) == 1)
    await publish(services, event(1), event(2, "fail"), event(3))
    async with asyncio.timeout(TIMEOUT):
        await sink.ended.wait()
    # As Strawberry ends a stream whose source raised: its error as the last result.
    assert sink.results[-1]["data"] is None
    assert [e["message"] for e in sink.results[-1]["errors"]] == ["the source failed"]
    assert len(sink.results) == 2, "nothing after the failure"
    await until(lambda: len(groups) == 0 and TOPIC not in services.hub.topics)


async def test_leaving_while_parked_ends_the_source_in_its_own_blocks(services: Services) -> None:
    groups = Groups(queue_size=8)
    sink, member = await join(groups, services, 0)
    await until(lambda: services.hub.topics.get(TOPIC) == 1)
    await publish(services, event(1), event(2))
    await until(lambda: len(sink.results) == 2)
    assert sink.stepped[-1], "parked in a step when it leaves"
    member.leave()
    # The source's `async with hub.subscribe(...)` ran its exit: the topic is closed.
    await until(lambda: len(groups) == 0 and TOPIC not in services.hub.topics)


async def test_the_hub_draining_ends_parked_subscriptions(services: Services) -> None:
    groups = Groups(queue_size=8)
    sinks = [(await join(groups, services, n))[0] for n in range(5)]
    await until(lambda: services.hub.topics.get(TOPIC) == 5)
    await publish(services, event(1), event(2))
    await until(lambda: all(len(sink.results) == 2 for sink in sinks))
    services.hub.drain()
    async with asyncio.timeout(TIMEOUT):
        for sink in sinks:
            await sink.ended.wait()
    for sink in sinks:
        assert "shutting down" in sink.results[-1]["errors"][0]["message"]
    assert await groups.ended(TIMEOUT)


async def test_a_hub_behind_skips_to_the_newest_latest_values(services: Services) -> None:
    """Stepped groups take each event as it comes, so their queues never conflate: when the hub
    itself is behind (several states of a latest-value topic waiting), it hands out the newest
    LATEST_VALUE_BACKLOG of them, the rule each queue applies, once for every subscriber."""
    groups = Groups(queue_size=8)
    members = [await join(groups, services, n) for n in range(3)]
    await until(lambda: services.hub.topics.get(TOPIC) == 3)
    await publish(services, event(1))
    await until(lambda: all(len(sink.results) == 1 for sink, _ in members))
    conflated = counts.hub_conflated
    # Published in one go: all nine are waiting when the hub's feed next runs.
    await publish(services, *(event(n) for n in range(2, 11)))
    await until(lambda: all(len(sink.results) == 1 + LATEST_VALUE_BACKLOG for sink, _ in members))
    for sink, _ in members:
        sequences = [r["data"]["ticks"]["sequence"] for r in sink.results]
        assert sequences == [1, *range(11 - LATEST_VALUE_BACKLOG, 11)]
    assert counts.hub_conflated - conflated == (9 - LATEST_VALUE_BACKLOG) * 3
    for _, member in members:
        member.leave()
    await until(lambda: len(groups) == 0)


async def test_a_long_delivery_hands_the_loop_back(services: Services) -> None:
    """An event for 300 streams that each compute 0.2 ms is 60 ms of steps: the hub hands the
    loop back every few milliseconds meanwhile, so a bystander task keeps running."""
    groups = Groups(queue_size=8)
    members = [await join(groups, services, n) for n in range(300)]
    await until(lambda: services.hub.topics.get(TOPIC) == 300)
    await publish(services, event(1))
    await until(lambda: all(sink.results for sink, _ in members))
    services.busy_s = 0.0002
    async with loop_gaps() as gaps:
        await publish(services, event(2))
        await until(lambda: all(len(sink.results) == 2 for sink, _ in members))
    services.busy_s = 0.0
    assert max(gaps) < DELIVERY_SLICE_S + 0.02, f"the loop was held {max(gaps) * 1000:.0f} ms"
    for _, member in members:
        member.leave()
    await until(lambda: len(groups) == 0)


async def test_a_long_delivery_hands_the_rest_the_newer_state(services: Services) -> None:
    """300 streams that each compute 1 ms: a newer price published while the older one is
    being handed out reaches the streams not served yet instead of the older one, then the
    streams served the older one, and a stream that subscribed meanwhile: every subscriber
    ends at the newest state, and none is handed a state older than one it had."""
    groups = Groups(queue_size=8)
    members = [await join(groups, services, n) for n in range(300)]
    await until(lambda: services.hub.topics.get(TOPIC) == 300)
    await publish(services, event(1))
    await until(lambda: all(sink.results for sink, _ in members))
    conflated = counts.hub_conflated
    services.busy_s = 0.001
    await publish(services, event(2))
    # The hub hands the loop back every DELIVERY_SLICE_S: this runs while 2 is being handed out.
    await until(lambda: any(len(sink.results) == 2 for sink, _ in members))
    late = await join(groups, services, 300)
    await until(lambda: services.hub.topics.get(TOPIC) == 301)
    served = sum(len(sink.results) == 2 for sink, _ in members)
    assert 0 < served < 300, "the newer state must arrive while the older is handed out"
    await publish(services, event(3))
    everyone = [*members, late]
    await until(lambda: all(sink.results and seq(sink)[-1] == 3 for sink, _ in everyone))
    services.busy_s = 0.0
    skipped = 0
    for sink, _ in members:
        assert seq(sink) in ([1, 2, 3], [1, 3])
        skipped += seq(sink) == [1, 3]
    assert seq(late[0]) == [3]
    assert served <= 300 - skipped < 300, "the streams not served yet skip to the newer state"
    assert counts.hub_conflated - conflated == skipped
    for _, member in everyone:
        member.leave()
    await until(lambda: len(groups) == 0)


def seq(sink: Sink) -> list[int]:
    return [r["data"]["ticks"]["sequence"] for r in sink.results]
