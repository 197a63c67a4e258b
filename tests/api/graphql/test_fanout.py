"""Shared execution, without a server: groups, sinks and what makes operations identical."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING, Any

import orjson
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from api.auth import ANONYMOUS, Principal, Role
from api.graphql.context import Context
from api.graphql.fanout import Encoded, Groups, QueueSink, SharedResult, Starts
from api.schema import schema
from domain.events import DeliveryPolicy
from tests.support import loop_gaps

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Callable

share_key = schema.share_key

QUERY = 'subscription { priceUpdates(market: "BTC-PERP") { price } }'


def caller(sub: str | None, role: Role | None = Role.USER) -> Context:
    principal = ANONYMOUS if sub is None else Principal(sub=sub, role=role)
    return Context(services=None, request=None, principal=principal)  # type: ignore[arg-type]


PRIVATE = "subscription { privateThing { x } }"
"""Not a public feed: its scope is the caller's (the schema need not have the field for keys)."""


def result(n: int) -> Encoded:
    return Encoded(ExecutionResult(data={"n": n}, errors=None))


def test_identical_means_document_name_variables_and_scope() -> None:
    alice, bob = caller("alice"), caller("bob")
    base = share_key(PRIVATE, {"a": 1, "b": 2}, alice, None, None)
    assert base is not None
    assert share_key(PRIVATE, {"b": 2, "a": 1}, alice, None, None) == base  # key order: no matter
    assert share_key(PRIVATE, {"a": 1, "b": 3}, alice, None, None) != base
    assert share_key(PRIVATE, {"a": 1, "b": 2}, bob, None, None) != base, "scopes must not mix"
    assert share_key(PRIVATE, {"a": 1, "b": 2}, caller("alice", Role.ADMIN), None, None) != base
    assert share_key(PRIVATE, {"a": 1, "b": 2}, caller(None), None, None) != base
    assert share_key(PRIVATE + " ", {"a": 1, "b": 2}, alice, None, None) != base


def test_public_feeds_are_shared_by_everyone() -> None:
    keys = {share_key(QUERY, None, c, None, None) for c in (caller("alice"), caller(None))}
    assert len(keys) == 1
    aliased = 'subscription { p: priceUpdates(market: "BTC-PERP") { price } }'
    assert share_key(aliased, None, caller("alice"), None, None) == share_key(
        aliased, None, caller("bob"), None, None
    )
    mixed = 'subscription { priceUpdates(market: "BTC-PERP") { price } privateThing { x } }'
    assert share_key(mixed, None, caller("alice"), None, None) != share_key(
        mixed, None, caller("bob"), None, None
    )
    fragment = "subscription { ...F } fragment F on Subscription { priceUpdates { price } }"
    assert share_key(fragment, None, caller("alice"), None, None) != share_key(
        fragment, None, caller("bob"), None, None
    )


def test_only_subscriptions_are_shared() -> None:
    context = caller(None)
    assert share_key("{ markets { id } }", None, context, None, None) is None
    assert share_key("subscription {", None, context, None, None) is None  # does not parse
    assert share_key(QUERY, None, context, "Missing", None) is None  # no such operation
    assert share_key(QUERY, None, object(), None, None) is None  # not our context
    assert share_key(QUERY, {"x": object()}, context, None, None) is None  # not JSON


def test_encoded_result_is_encoded_once_for_every_transport() -> None:
    encoded = result(7)
    assert orjson.loads(encoded.payload) == {"data": {"n": 7}}
    assert isinstance(encoded.result, SharedResult)
    # Transports encode {"data": result.data}: the fragment is copied, not encoded again.
    assert orjson.loads(orjson.dumps({"data": encoded.result.data})) == {"data": {"n": 7}}


def test_a_kept_result_gives_a_late_joiner_the_same_bytes() -> None:
    """A group keeps its last result's payload alone (Encoded.keep): a late joiner's frame and
    an SSE late joiner's result are rebuilt from it, the same as the whole result's."""
    data = {"n": 7, "price": "65000.10", "nested": {"list": [1, None, "x"]}}
    prefix = b'{"id":"1","type":"next","payload":'
    whole = Encoded(ExecutionResult(data=data, errors=None))
    kept = Encoded(ExecutionResult(data=data, errors=None))
    kept.message(prefix)
    kept.result  # noqa: B018  (built before keep(), dropped by it)
    assert kept.keep() is kept
    assert kept.message(prefix) == whole.message(prefix)
    assert orjson.dumps(kept.result.data) == orjson.dumps(whole.result.data)
    assert (kept.result.errors, kept.result.extensions) == (None, None)


async def drain(results: AsyncGenerator[Any, None]) -> list[Any]:
    return [r async for r in results]


async def test_latest_value_queue_sink_keeps_the_newest_result() -> None:
    sink = QueueSink(capacity=4)
    for n in range(5):
        sink.deliver(result(n), DeliveryPolicy.LATEST_VALUE)
    sink.end(None)
    got = await drain(sink.results())
    assert [orjson.loads(orjson.dumps(r.data)) for r in got] == [{"n": 4}]
    assert sink.conflated == 4


async def test_stream_queue_sink_ends_a_lagging_reader_with_an_error() -> None:
    sink = QueueSink(capacity=3)
    for n in range(4):
        sink.deliver(result(n), DeliveryPolicy.STREAM)
    sink.deliver(result(99), DeliveryPolicy.STREAM)  # after the end: ignored
    got = await drain(sink.results())
    [lagged] = got
    assert lagged.data is None
    assert lagged.errors[0].extensions == {"code": "SUBSCRIBER_LAGGED"}


async def test_stream_queue_sink_ends_a_reader_whose_oldest_result_waited_too_long() -> None:
    sink = QueueSink(capacity=100, max_lag_s=0.05)
    results = sink.results()
    sink.deliver(result(0), DeliveryPolicy.STREAM)
    first = await anext(results)
    assert orjson.loads(orjson.dumps(first.data)) == {"n": 0}  # taken in time: no lag
    await asyncio.sleep(0.08)
    sink.deliver(result(1), DeliveryPolicy.STREAM)  # the queue was empty: nothing waited
    await asyncio.sleep(0.08)
    sink.deliver(result(2), DeliveryPolicy.STREAM)  # result 1 has waited 80 ms: lagged
    sink.deliver(result(3), DeliveryPolicy.STREAM)  # after the end: ignored
    [lagged] = await drain(results)
    assert lagged.data is None
    assert lagged.errors[0].extensions == {"code": "SUBSCRIBER_LAGGED"}
    assert "0.05 s behind" in lagged.errors[0].message


async def test_latest_value_queue_sink_knows_no_lag_by_time() -> None:
    sink = QueueSink(capacity=4, max_lag_s=0.01)
    sink.deliver(result(0), DeliveryPolicy.LATEST_VALUE)
    await asyncio.sleep(0.03)
    sink.deliver(result(1), DeliveryPolicy.LATEST_VALUE)
    sink.end(None)
    got = await drain(sink.results())
    assert [orjson.loads(orjson.dumps(r.data)) for r in got] == [{"n": 1}]


async def test_a_refusal_reaches_every_member_and_the_group_is_dropped() -> None:
    groups = Groups(queue_size=4)
    refusal = PreExecutionError(data=None, errors=[])
    runs = 0

    async def refusing() -> AsyncGenerator[Any, None]:
        nonlocal runs
        runs += 1
        yield refusal

    async def open_stream() -> AsyncGenerator[Any, None]:
        return refusing()

    first, second = groups.results("k", open_stream), groups.results("k", open_stream)
    got = await asyncio.wait_for(asyncio.gather(drain(first), drain(second)), 2)
    assert list(got) == [[refusal], [refusal]]
    assert runs == 1
    assert len(groups) == 0


async def test_the_last_member_to_leave_stops_the_execution() -> None:
    groups = Groups(queue_size=4)
    stopped = asyncio.Event()

    async def forever() -> AsyncGenerator[Any, None]:
        try:
            n = 0
            while True:
                yield ExecutionResult(data={"n": n}, errors=None)
                n += 1
                await asyncio.sleep(0.01)
        finally:
            stopped.set()

    async def open_stream() -> AsyncGenerator[Any, None]:
        return forever()

    a, b = groups.results("k", open_stream), groups.results("k", open_stream)
    await asyncio.wait_for(anext(a), 2)
    await asyncio.wait_for(anext(b), 2)
    assert (len(groups), groups.members) == (1, 2)
    await a.aclose()
    assert not stopped.is_set()
    await b.aclose()
    await asyncio.wait_for(stopped.wait(), 2)
    assert len(groups) == 0


# --- starts are admitted a few per turn of the loop --------------------------------------------


def opener(generator: Callable[[], AsyncGenerator[Any, None]]) -> Callable[[], Awaitable[Any]]:
    async def open_stream() -> AsyncGenerator[Any, None]:
        return generator()

    return open_stream


async def test_many_starts_at_once_leave_the_loop_to_the_rest() -> None:
    """200 subscriptions subscribe at once, each start 2 ms of work (validation, a resolver's
    first step) and then a few waits: all ready together, one turn of the loop would run 400 ms
    of first steps. With 8 admitted per turn, a bystander waits for 8 of them at most, and every
    start gets its result."""
    groups = Groups(queue_size=4, starts=Starts(per_turn=8))

    async def starting() -> AsyncGenerator[Any, None]:
        spin_until = time.perf_counter() + 0.002
        while time.perf_counter() < spin_until:
            pass
        for _ in range(3):
            await asyncio.sleep(0)  # a read, say
        yield ExecutionResult(data={"started": True}, errors=None)
        await asyncio.sleep(60)

    streams = [groups.results(n, opener(starting)) for n in range(200)]
    async with loop_gaps() as gaps:
        firsts = await asyncio.wait_for(asyncio.gather(*(anext(s) for s in streams)), 10)
    assert all(data(first) == {"started": True} for first in firsts)
    assert groups.starts.waiting == 0
    assert max(gaps) < 0.05, f"the loop was held {max(gaps) * 1000:.0f} ms"
    for stream in streams:
        await stream.aclose()
    assert len(groups) == 0


async def test_starts_are_admitted_in_order_a_few_per_turn() -> None:
    starts = Starts(per_turn=2)
    admitted: list[int] = []

    async def start(n: int) -> None:
        await starts.turn()
        admitted.append(n)

    tasks = [asyncio.ensure_future(start(n)) for n in range(7)]
    turns: list[list[int]] = []
    while len(admitted) < 6:
        await asyncio.sleep(0)
        turns.append(list(admitted))
        if len(admitted) == 2:
            tasks[4].cancel()  # gone while waiting: it takes no one's place
    await asyncio.gather(*tasks, return_exceptions=True)
    assert admitted == [0, 1, 2, 3, 5, 6]
    assert all(len(b) - len(a) <= 2 for a, b in itertools.pairwise(turns))
    assert starts.waiting == 0


class Gate(Starts):
    """Admission held closed until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()

    async def turn(self) -> None:
        await self.open.wait()


async def test_a_subscriber_gone_while_its_start_waits_its_turn_leaves_nothing() -> None:
    gate = Gate()
    groups = Groups(queue_size=4, starts=gate)
    opened: list[str] = []

    async def stream() -> AsyncGenerator[Any, None]:
        opened.append("opened")  # pragma: no cover
        yield ExecutionResult(data={}, errors=None)  # pragma: no cover

    first = asyncio.ensure_future(anext(groups.results("k", opener(stream))))
    await until(lambda: len(groups) == 1)
    first.cancel()
    await until(lambda: len(groups) == 0)
    gate.open.set()
    await asyncio.sleep(0.01)
    assert opened == []


def data(result: Any) -> Any:
    """A shared result's data (already-encoded JSON) as Python."""
    return orjson.loads(orjson.dumps(result.data))


async def until(condition: Callable[[], bool]) -> None:
    """Poll for state that no event signals (what the groups did meanwhile)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("still false after 2 s")


async def until_empty(groups: Groups) -> None:
    await until(lambda: len(groups) == 0)
