"""Workers: background tasks a process (or its leadership) starts and stops together."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from api.runtime.workers import Workers

if TYPE_CHECKING:
    import pytest


async def test_stopping_does_not_raise_what_a_worker_died_of(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker that failed was reported when it did; stopping the others must not raise its
    error again (the leader election and the shutdown call ``stop()`` and would die of it)."""

    async def fails() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    cancelled = asyncio.Event()

    async def runs() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    workers = Workers()
    workers.start("fails", fails())
    workers.start("runs", runs())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert workers.names == ["runs"]
    await workers.stop()
    assert cancelled.is_set()
    assert workers.names == []
    assert "worker fails stopped" in caplog.text
