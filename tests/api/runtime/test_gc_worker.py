"""The periodic full collection frees what ended connections leave in reference cycles."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref

from api.runtime.workers import collect_garbage


class Node:
    def __init__(self) -> None:
        self.me = self


async def test_a_reference_cycle_is_freed_by_the_periodic_collection() -> None:
    was_enabled = gc.isenabled()
    gc.disable()  # only the worker collects, as the oldest generation almost never is otherwise
    try:
        cycle = Node()
        gone = weakref.ref(cycle)
        del cycle
        await asyncio.sleep(0.05)
        assert gone() is not None  # refcounting alone cannot free it
        worker = asyncio.create_task(collect_garbage(0.02))
        try:
            for _ in range(100):
                if gone() is None:
                    break
                await asyncio.sleep(0.01)
            assert gone() is None
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
    finally:
        if was_enabled:
            gc.enable()
