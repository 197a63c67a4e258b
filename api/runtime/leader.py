"""One process of a cluster runs the domain workers that write shared state (price feed, perps
engine, round clock, paper exchange and portfolio workers, simulators): the one holding a
PostgreSQL advisory lock. The others wait, trying again every ``poll_s``; when the leader dies
its session ends, the lock is free, and the next process to try takes over.

A process on the in-memory broadcast backend is a cluster of its own (no other process hears
its events), so it runs them without an election.

The lock lives on a connection of its own, checked every ``poll_s``: a leader that loses it
(database restart, network) stops its workers at once, so two leaders never run together for
longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import asyncpg

    from api.runtime.workers import Workers

logger = logging.getLogger(__name__)

LEADER_LOCK_KEY = 0x7472_6164_6C65_6164  # "tradlead"


class Leadership:
    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        start: Callable[[Workers], Awaitable[None]],
        make_workers: Callable[[], Workers],
        *,
        poll_s: float = 2.0,
        alone: bool = False,
    ) -> None:
        """``alone``: this process is a cluster of its own (its events reach no other process,
        as with the in-memory broadcast backend), so it leads without an election."""
        self._connect = connect
        self._start = start
        self._make_workers = make_workers
        self.poll_s = poll_s
        self.leader = False
        self.workers: Workers | None = None
        """The cluster workers this process runs while it leads."""
        self.terms = 0
        """How many times this process became the leader."""
        self.alone = alone

    async def run(self) -> None:
        if self.alone:
            workers = self.workers = self._make_workers()
            self.leader = True
            self.terms = 1
            try:
                await self._start(workers)
                await asyncio.Event().wait()  # until cancelled
            finally:
                self.leader = False
                self.workers = None
                await workers.stop()
        while True:
            try:
                await self._term()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("leader election: %s; trying again", exc)
            await asyncio.sleep(self.poll_s)

    async def _term(self) -> None:
        """Try once to become the leader; if so, lead until the lock's connection fails."""
        conn = await self._connect()
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK_KEY):
                return
            workers = self.workers = self._make_workers()
            self.leader = True
            self.terms += 1
            logger.info("this process leads the cluster: starting the domain workers")
            try:
                await self._start(workers)
                while True:
                    await asyncio.sleep(self.poll_s)
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), self.poll_s)
            finally:
                self.leader = False
                self.workers = None
                await workers.stop()
                logger.warning("this process no longer leads the cluster: workers stopped")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), self.poll_s)
