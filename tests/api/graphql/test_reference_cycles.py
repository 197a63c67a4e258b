"""Executions must be freed by reference counting, without the cyclic collector.

The server collects the oldest generation rarely (api/cli.py), so anything a subscription leaves in
a reference cycle when it ends stays for good: measured as RSS growing by ~2 KB per ended
subscription execution, without plateau. Each test holds the collector off and checks that what
an execution made is gone once it is over.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import TYPE_CHECKING, Any

from graphql import build_schema, parse
from graphql.execution.executor import Executor

from api.graphql import core_fix as graphql_core_fix
from api.graphql import document_limits as limits
from api.graphql.fanout import Groups, QueueSink
from api.settings import Settings

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Iterator

import contextlib

SCHEMA = build_schema("type Query { dummy: String } type Subscription { price: Int }")


@contextlib.contextmanager
def no_cyclic_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_an_executor_is_not_in_a_cycle_with_itself() -> None:
    graphql_core_fix.apply()
    with no_cyclic_collector():
        executor = Executor.build(SCHEMA, parse("subscription { price }"))
        assert isinstance(executor, Executor)
        ref = weakref.ref(executor)
        del executor
        assert ref() is None


async def _forever() -> AsyncGenerator[Any, None]:
    await asyncio.Event().wait()
    yield None


async def test_a_group_is_freed_when_its_last_member_leaves() -> None:
    with no_cyclic_collector():
        groups = Groups(queue_size=4)

        async def open_stream() -> AsyncGenerator[Any, None]:
            return _forever()

        member = groups.join(("k",), open_stream, QueueSink(4))
        ref = weakref.ref(member.group)
        for _ in range(3):
            await asyncio.sleep(0)  # the execution starts and waits for its first event
        member.leave()
        del member
        for _ in range(3):
            await asyncio.sleep(0)  # the cancelled task ends
        assert ref() is None


async def test_a_group_is_freed_when_its_stream_ends() -> None:
    with no_cyclic_collector():
        groups = Groups(queue_size=4)

        async def results() -> AsyncGenerator[Any, None]:
            return
            yield

        async def open_stream() -> AsyncGenerator[Any, None]:
            return results()

        member = groups.join(("k",), open_stream, QueueSink(4))
        ref = weakref.ref(member.group)
        for _ in range(5):
            await asyncio.sleep(0)
        assert member.ended
        member.leave()
        del member
        await asyncio.sleep(0)
        assert ref() is None


def test_the_document_limits_make_no_class_and_no_cycle_per_operation() -> None:
    """Strawberry makes every extension anew for each operation. The depth and alias limiters it
    ships made a validation rule class each time, and a class always sits in reference cycles;
    ours measure the document in the extension itself, which refcounting frees."""
    for factory in limits.extensions(Settings()):
        assert not getattr(factory(), "validation_rules", None)
    with no_cyclic_collector():
        for factory in limits.extensions(Settings()):
            extension = factory()
            ref = weakref.ref(extension)
            del extension
            assert ref() is None
