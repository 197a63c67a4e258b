"""Shared execution, without a server: groups, sinks and what makes operations identical."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from api.fanout import Encoded, Groups, QueueSink, SharedResult
from api.schema import share_key
from api.schema.context import Context
from domain.events import DeliveryPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

QUERY = 'subscription { priceUpdates(market: "BTC-PERP") { price } }'


class ScopedContext(Context):
    __slots__ = ("scope",)

    def __init__(self, scope: str) -> None:
        super().__init__(services=None, request=None)  # type: ignore[arg-type]
        self.scope = scope

    @property
    def group_scope(self) -> str:
        return self.scope


def result(n: int) -> Encoded:
    return Encoded(ExecutionResult(data={"n": n}, errors=None))


def test_identical_means_document_name_variables_and_scope() -> None:
    alice, bob = ScopedContext("user:alice"), ScopedContext("user:bob")
    base = share_key(QUERY, {"a": 1, "b": 2}, alice, None, None)
    assert base is not None
    assert share_key(QUERY, {"b": 2, "a": 1}, alice, None, None) == base  # key order is no matter
    assert share_key(QUERY, {"a": 1, "b": 3}, alice, None, None) != base
    assert share_key(QUERY, {"a": 1, "b": 2}, bob, None, None) != base, "scopes must not mix"
    assert share_key(QUERY + " ", {"a": 1, "b": 2}, alice, None, None) != base


def test_only_subscriptions_are_shared() -> None:
    context = ScopedContext("anonymous")
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
