"""Two server processes on one database and one Redis: exactly one runs the domain workers, a
subscriber on the other sees its events, and when the leader dies the other takes over."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx

from tests.conftest import isolated_database
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess

if TYPE_CHECKING:
    from pathlib import Path


async def leaders(servers: list[ServerProcess]) -> list[bool]:
    async with httpx.AsyncClient(timeout=5) as http:
        flags = []
        for server in servers:
            stats: dict[str, Any] = (await http.get(server.base_url + "/stats")).json()
            flags.append(bool(stats["leader"]))
        return flags


async def until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_one_leader_runs_the_workers_and_another_takes_over(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    async with isolated_database(database_url) as url:
        env = {
            "DATABASE_URL": url,
            "BROADCAST_URL": redis_url,
            "PRICE_FEED_HZ": "10",
            "LEADER_POLL_S": "0.5",
        }
        first = ServerProcess(env, tmp_path / "first.log").start()
        second = ServerProcess(env, tmp_path / "second.log").start()
        servers = [first, second]
        try:

            async def one_leader() -> bool:
                return sorted(await leaders(servers)) == [False, True]

            await until(one_leader)
            flags = await leaders(servers)
            leader, follower = (first, second) if flags[0] else (second, first)

            # The workers that write shared state run in the leader only.
            async with httpx.AsyncClient(timeout=5) as http:
                on_leader = (await http.get(leader.base_url + "/stats")).json()["workers"]
                on_follower = (await http.get(follower.base_url + "/stats")).json()["workers"]
            cluster_only = {"price-feed", "perps-engine", "round-clock", "paper-exchange"}
            assert cluster_only <= set(on_leader)
            assert not cluster_only & set(on_follower)
            assert "marathon-boards" in on_follower  # every process keeps its own boards

            async with GraphQLWS.connect(follower.ws_url) as client:
                await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
                sequences = [
                    (await client.next_data("1", "priceUpdates"))["sequence"] for _ in range(5)
                ]

                assert leader.process is not None
                leader.process.kill()  # no goodbye: its lock goes with its session
                leader.process.wait(10)

                async def follower_leads() -> bool:
                    return (await leaders([follower])) == [True]

                await until(follower_leads)
                # The new leader's feed reaches the same subscriber.
                resumed = await client.next_data("1", "priceUpdates")
                assert resumed["sequence"] > sequences[-1]
        finally:
            for server in servers:
                server.stop()
