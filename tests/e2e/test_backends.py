"""Every way to run: the embedded default, and broadcast backends that cross processes."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING

import asyncpg
import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from api.streaming.broadcast import listen_connection_name
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, price_sequences, price_sse

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def test_embedded_postgres_when_database_url_is_unset(tmp_path: Path) -> None:
    server = ServerProcess({"DATA_DIR": str(tmp_path / "data")}, tmp_path / "server.log")
    server.start()
    try:
        markets = server.graphql("{ markets { id } }")["data"]["markets"]
        assert {m["id"] for m in markets} >= {"BTC-PERP", "ETH-PERP", "SOL-PERP"}
        pgdata = tmp_path / "data" / "postgres"
        assert (pgdata / "PG_VERSION").exists()
        assert (pgdata / "postmaster.pid").exists()
    finally:
        assert server.stop() is not None
    # The server's shutdown stops the embedded PostgreSQL it started.
    assert not (pgdata / "postmaster.pid").exists(), server.log()


@pytest.fixture
def cluster(tmp_path: Path, database_url: str) -> Iterator[list[ServerProcess]]:
    """Processes to start in a test, stopped at its end."""
    processes: list[ServerProcess] = []
    yield processes
    for process in processes:
        process.stop()


def start_pair(
    cluster: list[ServerProcess], tmp_path: Path, database_url: str, broadcast_url: str
) -> tuple[ServerProcess, ServerProcess]:
    """A publisher (simulated feeds on) and a listener (feeds off) sharing one backend."""
    common = {"DATABASE_URL": database_url, "BROADCAST_URL": broadcast_url, "PRICE_FEED_HZ": "10"}
    publisher = ServerProcess(common, tmp_path / "publisher.log")
    listener = ServerProcess({**common, "SIMULATED_FEEDS": "0"}, tmp_path / "listener.log")
    cluster += [publisher, listener]
    return publisher.start(), listener.start()


async def assert_listener_receives_published_prices(listener: ServerProcess) -> None:
    async with GraphQLWS.connect(listener.ws_url) as client:
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        prices = await price_sequences(client, "1", 4)
    sequences = [p["sequence"] for p in prices]
    assert sequences == sorted(set(sequences))


async def test_redis_backend_crosses_processes(
    cluster: list[ServerProcess], tmp_path: Path, database_url: str, redis_url: str
) -> None:
    _, listener = start_pair(cluster, tmp_path, database_url, redis_url)
    await assert_listener_receives_published_prices(listener)


async def test_postgres_backend_crosses_processes(
    cluster: list[ServerProcess], tmp_path: Path, database_url: str
) -> None:
    _, listener = start_pair(cluster, tmp_path, database_url, database_url)
    await assert_listener_receives_published_prices(listener)


async def test_subscriber_gets_the_stored_price_at_once_without_a_feed(
    cluster: list[ServerProcess], tmp_path: Path, isolated_database_url: str
) -> None:
    """Snapshot first: with no feed publishing, a subscriber still sees the current price. (Its
    own database: another test server's feed would move the stored price meanwhile.)"""
    publisher, listener = start_pair(cluster, tmp_path, isolated_database_url, "memory://")
    publisher.stop()
    stored = listener.graphql('{ price(market: "ETH-PERP") { price sequence } }')["data"]["price"]
    async with GraphQLWS.connect(listener.ws_url) as client:
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})
        first = await client.next_data("1", "priceUpdates")
        assert (first["price"], first["sequence"]) == (stored["price"], stored["sequence"])
        with pytest.raises(TimeoutError):
            await client.receive(timeout=0.5)


async def test_a_lost_listen_connection_is_reconnected_and_subscribers_go_on(
    cluster: list[ServerProcess], tmp_path: Path, database_url: str
) -> None:
    """Kill the LISTEN connection of a Postgres-backed server: it listens again on a new one
    within a second, the open subscription keeps receiving (in order, nothing twice) and /readyz
    is ready again."""
    server = ServerProcess(
        {"DATABASE_URL": database_url, "BROADCAST_URL": database_url, "PRICE_FEED_HZ": "10"},
        tmp_path / "server.log",
    )
    cluster.append(server)
    server.start()
    assert server.process is not None
    name = listen_connection_name(server.process.pid)
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        before = [p["sequence"] for p in await price_sequences(client, "1", 2)]
        conn = await asyncpg.connect(database_url)
        try:
            killed = await conn.fetchval(
                """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                   WHERE application_name = $1""",
                name,
            )
            assert killed == 1
            after = [p["sequence"] for p in await price_sequences(client, "1", 10)]
            listening = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
            )
        finally:
            await conn.close()
    assert listening == 1
    sequences = before + after
    assert sequences == sorted(set(sequences))
    assert "reconnected the LISTEN connection" in server.log()
    async with httpx.AsyncClient() as http:
        response = await http.get(server.base_url + "/readyz")
    assert response.status_code == 200, response.text


async def test_sigterm_ends_streaming_subscriptions_and_the_server_exits(
    cluster: list[ServerProcess], tmp_path: Path, database_url: str
) -> None:
    """SSE and WebSocket subscribers are told the server is shutting down; nothing holds it open."""
    server = ServerProcess(
        {"DATABASE_URL": database_url, "PRICE_FEED_HZ": "10"}, tmp_path / "server.log"
    )
    cluster.append(server)
    server.start()
    assert server.process is not None
    async with (
        GraphQLWS.connect(server.ws_url) as ws,
        httpx.AsyncClient(timeout=10) as http,
        price_sse(http, server, "ETH-PERP") as source,
    ):
        await ws.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await ws.next_data("1", "priceUpdates")
        events = source.aiter_sse()
        assert (await anext(events)).event == "next"

        server.process.send_signal(signal.SIGTERM)
        sse_errors = []
        async for sse in events:
            if sse.event == "complete":
                break
            sse_errors += orjson.loads(sse.data).get("errors", [])
        assert sse_errors[-1]["extensions"]["code"] == "SHUTTING_DOWN"

        for _ in range(100):
            message = await ws.receive()
            if message["type"] != "next" or "errors" in message["payload"]:
                break
        assert message["payload"]["errors"][0]["extensions"]["code"] == "SHUTTING_DOWN"
        assert (await ws.receive())["type"] == "complete"
        code, _ = await ws.closed()
        assert code == 1012  # service restart: clients reconnect
    assert server.process.wait(timeout=15) is not None


async def test_a_subscriber_told_of_the_shutdown_cannot_reconnect_to_the_same_server(
    cluster: list[ServerProcess], tmp_path: Path, database_url: str
) -> None:
    """The listener closes before any subscriber hears SHUTTING_DOWN: one that reconnects at once
    is refused here (and, behind a proxy, sent to another replica) instead of being accepted by
    a server about to close it again."""
    server = ServerProcess(
        {"DATABASE_URL": database_url, "PRICE_FEED_HZ": "10"}, tmp_path / "server.log"
    )
    cluster.append(server)
    server.start()
    assert server.process is not None
    port = int(server.base_url.rsplit(":", 1)[1])
    async with httpx.AsyncClient(timeout=10) as http, price_sse(http, server, "ETH-PERP") as source:
        events = source.aiter_sse()
        assert (await anext(events)).event == "next"
        server.process.send_signal(signal.SIGTERM)
        async for sse in events:
            if "SHUTTING_DOWN" in sse.data:
                break
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    assert server.process.wait(timeout=15) is not None


async def test_sigterm_ends_a_leaderboard_stream_too(
    cluster: list[ServerProcess], tmp_path: Path, database_url: str
) -> None:
    """Leaderboards wait on the marathon boards, not on a hub subscription of their own: once
    the hub is drained the boards tell them too. Before, an SSE leaderboard stream never ended,
    and the server waited out the whole grace period (uvicorn waits for open responses)."""
    server = ServerProcess(
        {"DATABASE_URL": database_url, "SHUTDOWN_GRACE_S": "15"}, tmp_path / "server.log"
    )
    cluster.append(server)
    server.start()
    assert server.process is not None
    body = {
        "query": 'subscription { marathonLeaderboard(marathonId: "demo", top: 3) { accounts } }'
    }
    async with (
        httpx.AsyncClient(timeout=30) as http,
        aconnect_sse(http, "POST", server.url, json=body) as source,
    ):
        events = source.aiter_sse()
        first = orjson.loads((await anext(events)).data)
        assert first["data"]["marathonLeaderboard"]["accounts"] >= 0
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        errors = []
        async for sse in events:
            if sse.event == "complete":
                break
            errors += orjson.loads(sse.data).get("errors", [])
    assert [e["extensions"]["code"] for e in errors] == ["SHUTTING_DOWN"]
    assert await asyncio.to_thread(server.process.wait, 15) is not None
    assert time.monotonic() - signalled < 5
