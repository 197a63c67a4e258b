"""Faults a server survives: PostgreSQL restarted under it, RabbitMQ restarted under it, and a
SIGTERM while mutations are running.

The servers restarted here are private to each test (:mod:`tests.private_services`): the shared
PostgreSQL and RabbitMQ are never stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg
import httpx
import pytest

from tests.e2e.support import SETTINGS as MARATHON_SETTINGS
from tests.e2e.support import add, create, wire
from tests.private_services import RABBITMQ_SERVER, PrivatePostgres, PrivateRabbit
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, token

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

UNAVAILABLE = "The database is unavailable; retry later."
FAIL_FAST_S = 3.0
"""A request while PostgreSQL is down is answered within this (it is refused at once)."""
RECOVERY_S = 15.0
"""After PostgreSQL is back, the same process serves again within this."""

POSITION = "id market side size"
OPEN = "mutation($i: OpenPositionInput!) { openPosition(input: $i) { " + POSITION + " } }"
POSITIONS = "{ positions { " + POSITION + " } }"
PLACE = "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { order { id status price } } }"
PAPER = "{ paperAccount { openOrders { id status price } } }"
PRICE = '{ price(market: "BTC-PERP") { price sequence } }'


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    postgres = PrivatePostgres(tmp_path / "postgres").start()
    yield postgres
    postgres.stop("immediate")


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """Processes a test starts, stopped at its end."""
    processes: list[ServerProcess] = []
    yield processes
    for process in processes:
        process.stop()


async def post(
    http: httpx.AsyncClient,
    server: ServerProcess,
    query: str,
    variables: dict[str, Any] | None = None,
    bearer: str | None = None,
) -> tuple[float, dict[str, Any]]:
    """How long the answer took, and the answer (HTTP 200 is asserted)."""
    headers = {} if bearer is None else {"authorization": f"Bearer {bearer}"}
    started = time.monotonic()
    response = await http.post(
        server.url, json={"query": query, "variables": variables or {}}, headers=headers
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return elapsed, body


async def eventually(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], timeout: float, what: str
) -> tuple[float, Any]:
    """Poll ``probe`` until ``done(result)``; how long it took, and the last result."""
    started = time.monotonic()
    while True:
        result = await probe()
        if done(result):
            return time.monotonic() - started, result
        assert time.monotonic() - started < timeout, f"{what}: not after {timeout}s: {result}"
        await asyncio.sleep(0.2)


def assert_unavailable(body: dict[str, Any]) -> None:
    assert body.get("errors"), body
    for error in body["errors"]:
        assert error["message"] == UNAVAILABLE, body
        assert error["extensions"] == {"code": "SERVICE_UNAVAILABLE"}, body


async def of_operation(ws: GraphQLWS, id: str | None) -> dict[str, Any]:
    """The next message about operation ``id`` (``None``: the next without an id, such as
    ``pong``), skipping the others (prices of other subscriptions)."""
    for _ in range(1000):
        message = await ws.receive()
        if message.get("id") == id:
            return message
    raise AssertionError(f"no message for {id} among 1000")


async def readyz(http: httpx.AsyncClient, server: ServerProcess) -> tuple[int, dict[str, Any]]:
    response = await http.get(server.base_url + "/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def stats_of(http: httpx.AsyncClient, server: ServerProcess) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get(server.base_url + "/stats")).json()
    return body


CLUSTER_WORKERS = {"perps-engine", "price-feed", "round-clock", "paper-exchange", "portfolio"}


async def test_a_postgres_restart_fails_requests_fast_and_the_same_process_recovers(
    private_postgres: PrivatePostgres, servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = ServerProcess(
        # alice's perps positions lock about 23,000 of collateral at the simulated prices.
        {"DATABASE_URL": private_postgres.url, "PRICE_FEED_HZ": "10"}
        | {"PERPS_INITIAL_BALANCE": "100000"},
        tmp_path / "server.log",
    )
    servers.append(server)
    server.start()
    assert server.process is not None
    alice = token("alice")
    async with (
        httpx.AsyncClient(timeout=30) as http,
        GraphQLWS.connect(server.ws_url) as ws,
    ):
        # Acknowledged writes before the outage: perps positions and paper orders.
        opened = []
        for market in ("BTC-PERP", "ETH-PERP", "SOL-PERP"):
            _, body = await post(
                http,
                server,
                OPEN,
                {"i": {"market": market, "side": "LONG", "size": "0.5", "leverage": "2"}},
                alice,
            )
            assert "errors" not in body, body
            opened.append(body["data"]["openPosition"])
        placed = []
        for n in range(3):
            _, body = await post(
                http,
                server,
                PLACE,
                {
                    "i": {
                        "symbol": "ETH-PERP",
                        "side": "BUY",
                        "type": "LIMIT",
                        "quantity": "0.1",
                        "price": str(10 + n),  # far below the market: stays open
                    }
                },
                alice,
            )
            assert "errors" not in body, body
            placed.append(body["data"]["placeOrder"]["order"])
        await ws.subscribe("p", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        before = (await ws.next_data("p", "priceUpdates"))["sequence"]

        private_postgres.stop("immediate")

        # Down: every request fails fast, and says why.
        for query, variables in (
            (PRICE, None),
            (POSITIONS, None),
            (OPEN, {"i": {"market": "BTC-PERP", "side": "LONG", "size": "1", "leverage": "2"}}),
        ):
            elapsed, body = await post(http, server, query, variables, alice)
            assert_unavailable(body)
            assert elapsed < FAIL_FAST_S, (query, elapsed)
        status, ready = await readyz(http, server)
        assert status == 503, ready
        assert ready["checks"]["postgres"].startswith("failed: "), ready
        assert ready["checks"]["broadcast"] == "ok", ready
        assert (await http.get(server.base_url + "/healthz")).status_code == 200
        # A socket stays up, and a new subscription that needs the database (for its first
        # price) ends cleanly, saying why.
        await ws.send({"type": "ping"})
        assert await of_operation(ws, None) == {"type": "pong"}
        await ws.subscribe("down", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})
        message = await of_operation(ws, "down")
        assert message["type"] == "next", message
        assert_unavailable(message["payload"])
        assert await of_operation(ws, "down") == {"id": "down", "type": "complete"}
        assert server.process.poll() is None

        private_postgres.start()

        # Up: the same process serves again, its workers carried on.
        recovered, _ = await eventually(
            lambda: post(http, server, PRICE),
            lambda r: "errors" not in r[1],
            RECOVERY_S,
            "queries served again",
        )
        _, body = await post(
            http,
            server,
            OPEN,
            {"i": {"market": "BTC-PERP", "side": "SHORT", "size": "0.25", "leverage": "3"}},
            alice,
        )
        assert "errors" not in body, body
        opened.append(body["data"]["openPosition"])
        await eventually(
            lambda: readyz(http, server), lambda r: r[0] == 200, RECOVERY_S, "/readyz 200"
        )
        stats = await stats_of(http, server)
        assert set(stats["workers"]) >= CLUSTER_WORKERS, stats
        # The price feed publishes again: the subscription opened before the outage goes on.
        for _ in range(200):
            message = await ws.receive()
            if (
                message.get("id") == "p"
                and message["payload"]["data"]["priceUpdates"]["sequence"] > before + 5
            ):
                break
        else:
            raise AssertionError("no new price on the subscription opened before the outage")
        print(f"\nserved again {recovered:.2f}s after PostgreSQL was started")

        # Nothing acknowledged was lost.
        _, body = await post(http, server, POSITIONS, None, alice)
        assert sorted(p["id"] for p in body["data"]["positions"]) == sorted(p["id"] for p in opened)
        _, body = await post(http, server, PAPER, None, alice)
        assert sorted(o["id"] for o in body["data"]["paperAccount"]["openOrders"]) == sorted(
            o["id"] for o in placed
        )
    assert server.process.poll() is None


async def test_the_leader_steps_down_while_postgres_is_down_and_leads_again(
    private_postgres: PrivatePostgres,
    servers: list[ServerProcess],
    tmp_path: Path,
    redis_url: str,
) -> None:
    """With a backend that crosses processes the shared workers run under the leader's advisory
    lock, on a connection of its own: a restart takes the lock away, so the process stops them;
    once PostgreSQL is back it leads again and starts them again."""
    server = ServerProcess(
        {
            "DATABASE_URL": private_postgres.url,
            "BROADCAST_URL": redis_url,
            "PRICE_FEED_HZ": "10",
            "LEADER_POLL_S": "0.5",
        },
        tmp_path / "server.log",
    )
    servers.append(server)
    server.start()
    assert server.process is not None
    async with httpx.AsyncClient(timeout=30) as http:
        _, stats = await eventually(
            lambda: stats_of(http, server), lambda s: s["leader"], RECOVERY_S, "leading"
        )
        assert set(stats["workers"]) >= CLUSTER_WORKERS, stats
        assert stats["leaderTerms"] == 1, stats
        _, body = await post(http, server, PRICE)
        before = body["data"]["price"]["sequence"]

        private_postgres.stop("fast")

        stepped_down, stats = await eventually(
            lambda: stats_of(http, server),
            lambda s: not s["leader"] and not CLUSTER_WORKERS & set(s["workers"]),
            RECOVERY_S,
            "stepped down",
        )
        assert {"leader-election", "marathon-boards"} <= set(stats["workers"]), stats
        status, ready = await readyz(http, server)
        assert status == 503, ready
        assert ready["checks"]["postgres"].startswith("failed: "), ready
        assert ready["checks"]["broadcast"] == "ok", ready

        private_postgres.start()

        led_again, stats = await eventually(
            lambda: stats_of(http, server),
            lambda s: s["leader"] and set(s["workers"]) >= CLUSTER_WORKERS,
            RECOVERY_S,
            "leading again",
        )
        assert stats["leaderTerms"] == 2, stats
        await eventually(
            lambda: readyz(http, server), lambda r: r[0] == 200, RECOVERY_S, "/readyz 200"
        )
        # The price feed runs again under the new term, on from where it stopped.
        await eventually(
            lambda: post(http, server, PRICE),
            lambda r: "errors" not in r[1] and r[1]["data"]["price"]["sequence"] > before + 5,
            RECOVERY_S,
            "prices published again",
        )
        print(f"\nstepped down after {stepped_down:.2f}s, led again after {led_again:.2f}s")
    assert server.process.poll() is None


def limit_order(price: str) -> dict[str, Any]:
    return {"symbol": "ETH-PERP", "side": "BUY", "type": "LIMIT", "quantity": "0.1", "price": price}


async def blocked_on_locks(admin: asyncpg.Connection, count: int) -> None:
    """Wait until ``count`` sessions of the server wait for a lock the test holds."""
    await eventually(
        lambda: admin.fetchval(
            """SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'"""
        ),
        lambda n: n == count,
        10,
        "mutations blocked on the row lock",
    )


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except (ConnectionRefusedError, ConnectionResetError):  # reset: queued as the listener closed
        return True


async def test_sigterm_lets_running_mutations_finish_and_answer(
    isolated_database_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    """A mutation executing when SIGTERM arrives (held on a row lock the test holds) completes,
    and its answer reaches the client over HTTP and over a WebSocket before the process exits;
    nothing new is let in meanwhile."""
    server = ServerProcess(
        {"DATABASE_URL": isolated_database_url, "PRICE_FEED_HZ": "10", "SHUTDOWN_GRACE_S": "15"},
        tmp_path / "server.log",
    )
    servers.append(server)
    server.start()
    assert server.process is not None
    over_http, over_ws = token("shutdown-http"), token("shutdown-ws")
    async with httpx.AsyncClient(timeout=30) as http:
        # Each account exists, so its row can be locked; with no open order, so the paper
        # exchange's worker does not lock it on every price.
        market = {"symbol": "ETH-PERP", "side": "BUY", "type": "MARKET", "quantity": "0.01"}
        for bearer in (over_http, over_ws):
            _, body = await post(http, server, PLACE, {"i": market}, bearer)
            assert "errors" not in body, body
        admin = await asyncpg.connect(isolated_database_url)
        try:
            async with GraphQLWS.connect(server.ws_url, token=over_ws) as ws:
                lock = admin.transaction()
                await lock.start()
                await admin.execute(
                    "SELECT 1 FROM paper_accounts WHERE owner = ANY($1) FOR UPDATE",
                    ["shutdown-http", "shutdown-ws"],
                )
                http_answer = asyncio.create_task(
                    post(http, server, PLACE, {"i": limit_order("11")}, over_http)
                )
                await ws.subscribe("m", PLACE, {"i": limit_order("12")})
                await blocked_on_locks(admin, 2)

                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                # No new connection, no new operation on an open one.
                await eventually(
                    lambda: asyncio.to_thread(refused, server.port),
                    bool,
                    5,
                    "new connections refused",
                )
                await ws.subscribe("late", PLACE, {"i": limit_order("13")})
                late = await of_operation(ws, "late")
                assert late["type"] == "error", late
                assert late["payload"][0]["extensions"]["code"] == "SHUTTING_DOWN", late
                await asyncio.sleep(1.0)
                assert server.process.poll() is None, "exited with mutations running"
                assert not http_answer.done()

                await lock.rollback()  # the mutations go on
                released = time.monotonic()

                _, body = await http_answer
                assert "errors" not in body, body
                http_order = body["data"]["placeOrder"]["order"]
                message = await of_operation(ws, "m")
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message
                ws_order = message["payload"]["data"]["placeOrder"]["order"]
                assert await of_operation(ws, "m") == {"id": "m", "type": "complete"}
                code, _ = await ws.closed()
                assert code == 1012
            await asyncio.to_thread(server.process.wait, 15)
            exited = time.monotonic()
            print(
                f"\nheld {released - signalled:.2f}s after SIGTERM; "
                f"exited {exited - released:.2f}s after the lock was released"
            )
            # Both writes are stored.
            for owner, order in (("shutdown-http", http_order), ("shutdown-ws", ws_order)):
                payload = await admin.fetchval(
                    "SELECT payload::text FROM paper_accounts WHERE owner = $1", owner
                )
                assert order["id"] in payload, (owner, order, payload)
            assert (
                await admin.fetchval(
                    "SELECT count(*) FROM paper_accounts WHERE payload::text LIKE '%\"13\"%'"
                )
                == 0
            )  # the refused one was not placed
        finally:
            await admin.close()


async def test_sigterm_waits_no_longer_than_the_grace_period(
    isolated_database_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    """A mutation that cannot finish (its row lock is never released) holds the exit for
    SHUTDOWN_GRACE_S at most; it is then abandoned, and its transaction with it."""
    grace_s = 2.0
    server = ServerProcess(
        {"DATABASE_URL": isolated_database_url, "PRICE_FEED_HZ": "10", "SHUTDOWN_GRACE_S": "2"},
        tmp_path / "server.log",
    )
    servers.append(server)
    server.start()
    assert server.process is not None
    bearer = token("stuck")
    async with httpx.AsyncClient(timeout=30) as http:
        market = {"symbol": "ETH-PERP", "side": "BUY", "type": "MARKET", "quantity": "0.01"}
        _, body = await post(http, server, PLACE, {"i": market}, bearer)
        assert "errors" not in body, body
        admin = await asyncpg.connect(isolated_database_url)
        try:
            lock = admin.transaction()
            await lock.start()
            await admin.execute("SELECT 1 FROM paper_accounts WHERE owner = 'stuck' FOR UPDATE")
            async with GraphQLWS.connect(server.ws_url, token=bearer) as ws:
                await ws.subscribe("m", PLACE, {"i": limit_order("11")})
                await blocked_on_locks(admin, 1)
                server.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                code, _ = await ws.closed(timeout=grace_s + 5)
                closed = time.monotonic() - signalled
            assert code == 1012
            await asyncio.to_thread(server.process.wait, 15)
            exited = time.monotonic() - signalled
            print(f"\nclosed {closed:.2f}s and exited {exited:.2f}s after SIGTERM")
            assert grace_s - 0.5 <= closed <= grace_s + 2, closed
            assert exited <= grace_s + 5, exited
            await lock.rollback()
            payload = await admin.fetchval(
                "SELECT payload::text FROM paper_accounts WHERE owner = 'stuck'"
            )
            assert '"11"' not in payload, payload  # abandoned: nothing half-written
        finally:
            await admin.close()


async def test_sigterm_tells_each_socket_when_to_reconnect_spread_over_the_window(
    isolated_database_url: str, servers: list[ServerProcess], tmp_path: Path
) -> None:
    """A rolling deploy: every socket of the replica is closed with 1012 and its own reconnect
    delay, drawn within SHUTDOWN_RECONNECT_SPREAD_S, so its clients do not all come back in the
    same second."""
    server = ServerProcess(
        {
            "DATABASE_URL": isolated_database_url,
            "PRICE_FEED_HZ": "10",
            "SHUTDOWN_RECONNECT_SPREAD_S": "3",
        },
        tmp_path / "server.log",
    )
    servers.append(server)
    server.start()
    assert server.process is not None
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(GraphQLWS.connect(server.ws_url)) for _ in range(20)
        ]
        for client in clients:
            await client.subscribe("p", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
            await client.next_data("p", "priceUpdates")
        server.process.send_signal(signal.SIGTERM)
        closes = [await client.closed(timeout=15) for client in clients]
    delays = []
    for code, reason in closes:
        assert code == 1012, (code, reason)
        match = re.fullmatch(r"Service Restart: reconnect in (\d+) ms", reason)
        assert match is not None, reason
        delays.append(int(match.group(1)))
    assert all(0 <= d <= 3000 for d in delays), delays
    assert len(set(delays)) > 10, delays  # each its own draw
    assert max(delays) - min(delays) > 1000, delays  # spread over the window
    await asyncio.to_thread(server.process.wait, 15)


@pytest.fixture
def private_rabbit(tmp_path: Path) -> Iterator[PrivateRabbit]:
    if not PrivateRabbit.available():
        pytest.skip(f"RabbitMQ is not installed ({RABBITMQ_SERVER} not found)")
    broker = PrivateRabbit(tmp_path / "rabbitmq").start()
    yield broker
    broker.stop()


async def publish(url: str, bodies: list[bytes], queue: str = "socket_data") -> None:
    """Publish persistent messages, each confirmed by the broker before the next."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()  # publisher confirms: on
        for body in bodies:
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue,
            )
    finally:
        await connection.close()


async def test_a_rabbitmq_restart_loses_no_acknowledged_snapshot(
    private_rabbit: PrivateRabbit,
    isolated_database_url: str,
    servers: list[ServerProcess],
    tmp_path: Path,
) -> None:
    """Snapshots published and confirmed, the broker stopped at once (whatever the consumer had
    not acknowledged yet is redelivered), started again, more published: every one ends up
    stored and ranked, and the consumer says it reconnected."""
    server = ServerProcess(
        {
            **MARATHON_SETTINGS,
            "DATABASE_URL": isolated_database_url,
            "RABBITMQ_URL": private_rabbit.url,
        },
        tmp_path / "server.log",
    )
    servers.append(server)
    server.start()
    logins = list(range(6001, 6011))
    restart = await create(server, "Restart", "olga", public=True)
    for login in logins:
        await add(server, restart, login, f"trader{login}", "olga")
    async with httpx.AsyncClient(timeout=30) as http:
        # Before: every account starts at 1000.
        await publish(private_rabbit.url, [wire(login, "1000", "1000", at=0) for login in logins])
        await eventually(
            lambda: stats_of(http, server),
            lambda s: s["rabbitmq"]["processed"] == len(logins),
            RECOVERY_S,
            "first snapshots processed",
        )
        # Confirmed by the broker, then the broker stops at once, handled or not.
        first_half, second_half = logins[:5], logins[5:]
        await publish(
            private_rabbit.url,
            [wire(login, "1000", "1100", at=1, profit="100") for login in first_half],
        )
        private_rabbit.stop()
        stopped = time.monotonic()
        _, (_, ready) = await eventually(
            lambda: readyz(http, server), lambda r: r[0] == 503, RECOVERY_S, "/readyz 503"
        )
        assert ready["checks"]["rabbitmq"].startswith("failed: "), ready
        assert ready["checks"]["postgres"] == "ok", ready
        assert server.process is not None
        assert server.process.poll() is None

        private_rabbit.start()
        started = time.monotonic()
        await publish(
            private_rabbit.url,
            [wire(login, "1000", "1200", at=2, profit="200") for login in second_half],
        )
        reconnected, stats = await eventually(
            lambda: stats_of(http, server),
            lambda s: s["rabbitmq"]["ready"] and s["rabbitmq"]["reconnects"] >= 1,
            RECOVERY_S,
            "consumer reconnected",
        )
        await eventually(
            lambda: readyz(http, server), lambda r: r[0] == 200, RECOVERY_S, "/readyz 200"
        )
        expected = {login: "10.0000" for login in first_half} | {
            login: "20.0000" for login in second_half
        }
        query = (
            f'{{ leaderboardPage(marathonId: "{restart}") '
            "{ rows { login profitPercentage } } }"
        )

        async def board() -> dict[int, str]:
            _, body = await post(http, server, query)
            rows = body["data"]["leaderboardPage"]["rows"]
            return {row["login"]: row["profitPercentage"] for row in rows}

        await eventually(board, lambda b: b == expected, RECOVERY_S, "every snapshot ranked")
        stats = await stats_of(http, server)
        assert stats["rabbitmq"]["processed"] >= 2 * len(logins), stats  # redelivery: at least
        assert stats["rabbitmq"]["deadLettered"] == 0, stats
        print(
            f"\nbroker down {started - stopped:.2f}s; consumer ready "
            f"{reconnected:.2f}s after the publish that followed its restart; {stats['rabbitmq']}"
        )
    # Stored, not only ranked in this process: the database has the newest of every account.
    admin = await asyncpg.connect(isolated_database_url)
    try:
        rows = await admin.fetch(
            "SELECT login, payload->>'equity' AS equity FROM account_snapshots "
            "WHERE login = ANY($1)",
            logins,
        )
    finally:
        await admin.close()
    assert {r["login"]: Decimal(r["equity"]) for r in rows} == {
        login: Decimal(1100 if login in first_half else 1200) for login in logins
    }
