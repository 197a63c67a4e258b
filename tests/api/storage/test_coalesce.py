"""ReadCoalescer: identical reads in flight share one read; nothing outlives it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from api.ops.metrics import counts
from api.storage.coalesce import ReadCoalescer

if TYPE_CHECKING:
    import pytest


async def settle() -> None:
    """Let the waiters' tasks and the read they started run up to where they wait."""
    for _ in range(3):
        await asyncio.sleep(0)


class Source:
    """A read that waits until the test lets it answer, and counts how often it was asked."""

    def __init__(self) -> None:
        self.asked = 0
        self.answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def fetch(self) -> str:
        self.asked += 1
        return await self.answer


async def test_identical_reads_in_flight_share_one_and_distinct_keys_do_not() -> None:
    coalescer = ReadCoalescer("test-share")
    a, b = Source(), Source()
    issued, merged = counts.reads_issued["test-share"], counts.reads_merged["test-share"]
    waiters = [asyncio.ensure_future(coalescer.read("a", a.fetch)) for _ in range(100)]
    other = asyncio.ensure_future(coalescer.read("b", b.fetch))
    await settle()
    assert (a.asked, b.asked, coalescer.in_flight) == (1, 1, 2)
    a.answer.set_result("A")
    b.answer.set_result("B")
    assert await asyncio.gather(*waiters) == ["A"] * 100
    assert await other == "B"
    assert counts.reads_issued["test-share"] - issued == 2
    assert counts.reads_merged["test-share"] - merged == 99
    assert coalescer.in_flight == 0


async def test_a_read_after_the_last_one_landed_asks_again() -> None:
    coalescer = ReadCoalescer("test-again")
    first, second = Source(), Source()
    first.answer.set_result("old")
    assert await coalescer.read("k", first.fetch) == "old"
    second.answer.set_result("new")
    assert await coalescer.read("k", second.fetch) == "new"
    assert (first.asked, second.asked) == (1, 1)


async def test_a_cancelled_waiter_leaves_the_read_to_the_others() -> None:
    coalescer = ReadCoalescer("test-cancel")
    source = Source()
    leaving = asyncio.ensure_future(coalescer.read("k", source.fetch))
    staying = asyncio.ensure_future(coalescer.read("k", source.fetch))
    await settle()
    leaving.cancel()
    await settle()
    source.answer.set_result("kept")
    assert await staying == "kept"
    assert leaving.cancelled()
    assert source.asked == 1


async def test_a_failed_read_fails_every_waiter_and_the_next_read_asks_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coalescer = ReadCoalescer("test-fail")
    failing = Source()
    waiters = [asyncio.ensure_future(coalescer.read("k", failing.fetch)) for _ in range(3)]
    await settle()
    failing.answer.set_exception(ConnectionError("database down"))
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert failing.asked == 1
    working = Source()
    working.answer.set_result("back")
    assert await coalescer.read("k", working.fetch) == "back"
    # every waiter gone before the read failed: its error is retrieved, not logged as lost
    orphan = Source()
    gone = asyncio.ensure_future(coalescer.read("o", orphan.fetch))
    await settle()
    gone.cancel()
    orphan.answer.set_exception(ConnectionError("database down"))
    await settle()
    assert "never retrieved" not in caplog.text
