"""Redis, the broadcast backend, restarted mid-stream: the server reconnects, subscribers get what
was published meanwhile (stream topics from their history, prices from the latest stored), and
mutations made while it was down succeed and reach subscribers once it is back.

The test runs a Redis of its own (the machine's ``redis-server`` on a free port), so stopping it
disturbs nothing else.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import isolated_database
from tests.e2e.support import open_position
from tests.private_services import REDIS_SERVER, PrivateRedis
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, token

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

OUTAGE_S = 2.0
RECOVERY_S = 10.0

POSITIONS = (
    "subscription { positions { __typename ... on Resumable { cursor } "
    "... on PositionOpened { position { id } } } }"
)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed: no private Redis to restart")
    redis = PrivateRedis(tmp_path)
    redis.start()
    yield redis
    redis.stop()


async def ready(server: ServerProcess) -> int:
    async with httpx.AsyncClient(timeout=2) as http:
        return (await http.get(server.base_url + "/readyz")).status_code


async def eventually(check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


async def test_subscribers_ride_out_a_redis_restart_and_miss_nothing(
    database_url: str, private_redis: PrivateRedis, tmp_path: Path
) -> None:
    async with isolated_database(database_url) as url:
        server = ServerProcess(
            {
                "DATABASE_URL": url,
                "BROADCAST_URL": private_redis.url,
                "PRICE_FEED_HZ": "5",
                "PRICE_MAX_AGE_S": "600",
                # wanda's 0.3 BTC at 2x lock about 9,750 at the simulated price, near the
                # default balance: a price that drifts up must not refuse her second open.
                "PERPS_INITIAL_BALANCE": "100000",
            },
            tmp_path / "server.log",
        ).start()
        try:
            await _ride_out_a_restart(server, private_redis)
        finally:
            server.stop()


async def _ride_out_a_restart(server: ServerProcess, redis: PrivateRedis) -> None:
    user = token("wanda")
    async with GraphQLWS.connect(server.ws_url, token=user) as client:
        await client.subscribe("price", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await client.subscribe("pos", POSITIONS)
        received: list[dict[str, Any]] = []

        async def take(done: Callable[[], bool], timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not done():
                received.append(await client.receive(max(0.1, deadline - time.monotonic())))

        def prices() -> list[int]:
            return [
                m["payload"]["data"]["priceUpdates"]["sequence"]
                for m in received
                if m.get("id") == "price"
            ]

        def opened() -> list[str]:
            errors = [m for m in received if m["type"] != "next" or "errors" in m["payload"]]
            assert not errors, errors
            return [
                m["payload"]["data"]["positions"]["position"]["id"]
                for m in received
                if m.get("id") == "pos"
                and m["payload"]["data"]["positions"]["__typename"] == "PositionOpened"
            ]

        await take(lambda: len(prices()) >= 2, 10)
        before = await open_position(server, "wanda", "BTC-PERP", "LONG", "0.1", "2")
        await take(lambda: len(opened()) >= 1, 10)

        redis.stop()
        assert await eventually(lambda: _is(ready(server), 503), 5), "readyz stayed 200"
        # A write while the broker is down is stored and acknowledged.
        during = await open_position(server, "wanda", "BTC-PERP", "LONG", "0.2", "2")
        await asyncio.sleep(OUTAGE_S)
        last_price = max(prices())

        redis.start()
        await take(lambda: len(opened()) >= 2 and max(prices()) > last_price + 2, RECOVERY_S)
        assert opened() == [before["id"], during["id"]]
        assert await eventually(lambda: _is(ready(server), 200), 5)
        # No subscription was ended and nothing arrived twice or out of order.
        assert not [m for m in received if m["type"] != "next" or "errors" in m["payload"]]
        assert prices() == sorted(set(prices()))
        cursors = [
            int(m["payload"]["data"]["positions"]["cursor"].split(".")[0])
            for m in received
            if m.get("id") == "pos"
            and m["payload"]["data"]["positions"]["__typename"] == "PositionOpened"
        ]
        assert cursors[1] == cursors[0] + 1
    assert "reconnected to Redis" in server.log()
    assert _metric(server, "tradestream_backend_reconnects_total") == 1
    assert _metric(server, "tradestream_gap_events_filled_total") >= 1


def _metric(server: ServerProcess, name: str) -> float:
    body = httpx.get(server.base_url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exposed")


async def _is(status: Any, expected: int) -> bool:
    return bool(await status == expected)
