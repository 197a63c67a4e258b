"""Two server processes on one database and one Redis: exactly one runs the domain workers, a
subscriber on the other sees its events, and when the leader dies the other takes over."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import isolated_database
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, contiguous, following

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


@pytest.mark.parametrize("killed", ["follower", "leader"])
async def test_a_process_killed_mid_stream_loses_only_its_own_clients(
    database_url: str, redis_url: str, tmp_path: Path, killed: str
) -> None:
    """SIGKILL one of two processes while both stream BTC prices. A subscriber of the survivor
    keeps receiving: without a gap when the follower dies (the leader's feed goes on); across
    the takeover when the leader dies, missing at most the one price the leader was sending as it
    died. A client of the killed process sees its socket drop, reconnects to the survivor and
    continues from where it was."""
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
            leader, follower = (first, second) if (await leaders(servers))[0] else (second, first)
            victim, survivor = (leader, follower) if killed == "leader" else (follower, leader)

            async with (
                GraphQLWS.connect(survivor.ws_url) as staying,
                GraphQLWS.connect(victim.ws_url) as leaving,
            ):
                await staying.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
                await leaving.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
                await staying.next_data("1", "priceUpdates")
                async with following(staying, "1") as kept:
                    before = [
                        (await leaving.next_data("1", "priceUpdates"))["sequence"]
                        for _ in range(10)
                    ]
                    assert victim.process is not None
                    victim.process.kill()
                    victim.process.wait(10)
                    code, _ = await leaving.closed()

                    async with GraphQLWS.connect(survivor.ws_url) as back:
                        await back.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
                        after = [
                            (await back.next_data("1", "priceUpdates"))["sequence"]
                            for _ in range(10)
                        ]
                        async with httpx.AsyncClient(timeout=5) as http:
                            survivor_stats = (await http.get(survivor.base_url + "/stats")).json()
                    count = len(kept)

                    async def still_receiving() -> bool:
                        return len(kept) >= count + 5

                    await until(still_receiving, 5)
        finally:
            for server in servers:
                server.stop()

    assert code == 1006, code  # no close frame: the process is gone
    assert contiguous(before)
    assert after[0] >= before[-1], "the reconnected client went back in time"
    assert contiguous(after[1:]), after
    assert survivor_stats["leader"]
    assert survivor_stats["webSockets"] == 2  # the staying client and the reconnected one
    steps = [b - a for a, b in itertools.pairwise(kept)]
    assert min(steps) >= 1, "a sequence twice or backwards"
    if killed == "follower":
        assert contiguous(kept), f"the survivor's subscriber lost prices: steps {set(steps)}"
    else:
        assert max(steps) <= 2, f"more than the price in flight was lost: steps {set(steps)}"
