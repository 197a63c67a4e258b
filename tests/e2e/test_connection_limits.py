"""Connection slots on a real server: WebSockets, SSE and multipart responses share
MAX_CONNECTIONS, one client (a user, else an address) holds at most MAX_CONNECTIONS_PER_CLIENT,
each refusal says so (503 / 429 with Retry-After, close 1013 / 4029), slots come back however a
stream ends, and a bystander is served throughout. Clients get addresses of their own by binding
to other loopback addresses (127.0.0.0/8 is all loopback on Linux)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from tests.conftest import isolated_server
from tests.proxy import Proxy, nginx_binary
from tests.support import (
    PRICE_SUBSCRIPTION,
    GraphQLWS,
    ServerProcess,
    loop_watch,
    parse_multipart,
    token,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

MAX_CONNECTIONS = 12
PER_CLIENT = 3
SETTLE_S = 10.0
BACKLOG = 777

SSE = "text/event-stream"
MULTIPART = "multipart/mixed;subscriptionSpec=1.0"


@pytest.fixture(scope="module")
def capped(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Small limits, in production (what an anonymous caller sees there)."""
    with isolated_server(
        database_url,
        {
            "PRICE_FEED_HZ": "10",
            "ENVIRONMENT": "production",
            "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "MAX_CONNECTIONS_PER_CLIENT": str(PER_CLIENT),
            "LISTEN_BACKLOG": str(BACKLOG),
        },
        tmp_path_factory.mktemp("connection-limits") / "server.log",
    ) as process:
        yield process


@contextlib.asynccontextmanager
async def client_at(address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose connections come from ``address``."""
    transport = httpx.AsyncHTTPTransport(
        local_address=address, limits=httpx.Limits(max_connections=500)
    )
    async with httpx.AsyncClient(transport=transport, timeout=20) as http:
        yield http


async def open_stream(
    http: httpx.AsyncClient,
    server: ServerProcess,
    accept: str = SSE,
    bearer: str | None = None,
    query: str = PRICE_SUBSCRIPTION,
    variables: dict[str, Any] | None = None,
) -> httpx.Response:
    """A streaming request whose body is not read (the response's headers are)."""
    headers = {"accept": accept}
    if bearer is not None:
        headers["authorization"] = f"Bearer {bearer}"
    body = {"query": query, "variables": {"m": "BTC-PERP"} if variables is None else variables}
    request = http.build_request("POST", server.url, json=body, headers=headers)
    return await http.send(request, stream=True)


async def refused(response: httpx.Response) -> tuple[int, str, str, str]:
    """Status, ``Retry-After``, error code and message of a refused stream."""
    body = orjson.loads(await response.aread())
    await response.aclose()
    [error] = body["errors"]
    assert "data" not in body
    return (
        response.status_code,
        response.headers.get("retry-after", ""),
        error["extensions"]["code"],
        error["message"],
    )


async def first_sse_price(response: httpx.Response) -> dict[str, Any]:
    """The first price of an SSE response (which is then closed)."""
    assert response.status_code == 200
    try:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data: dict[str, Any] = orjson.loads(line[6:])["data"]["priceUpdates"]
                return data
    finally:
        await response.aclose()
    raise AssertionError("the stream ended without a price")


async def first_multipart_price(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200
    text = ""
    try:
        async for chunk in response.aiter_text():
            text += chunk
            prices = [p for p in parse_multipart(text) if "payload" in p]
            if prices:
                data: dict[str, Any] = prices[0]["payload"]["data"]["priceUpdates"]
                return data
    finally:
        await response.aclose()
    raise AssertionError("the stream ended without a price")


async def stats(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        body: dict[str, Any] = (await http.get(server.base_url + "/stats")).json()
        return body


async def settled_connections(server: ServerProcess, open_now: int) -> dict[str, Any]:
    """/stats once ``open_now`` connections are open (bounded by SETTLE_S)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        connections: dict[str, Any] = (await stats(server))["connections"]
        if connections["open"] == open_now:
            return connections
        assert time.monotonic() < deadline, f"not settled to {open_now}: {connections}"
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def ws_at(server: ServerProcess, address: str) -> AsyncIterator[GraphQLWS]:
    """A graphql-transport-ws socket from ``address``, not yet initialised."""
    async with connect(
        server.ws_url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        compression=None,
        local_addr=(address, 0),
    ) as ws:
        yield GraphQLWS(ws)


async def initialised(client: GraphQLWS, bearer: str | None = None) -> dict[str, Any]:
    payload = {} if bearer is None else {"authorization": f"Bearer {bearer}"}
    await client.send({"type": "connection_init", "payload": payload})
    return await client.receive()


async def test_sse_past_the_client_cap_gets_429_while_other_clients_are_served(
    capped: ServerProcess,
) -> None:
    async with (
        loop_watch(capped) as watch,
        client_at("127.0.0.2") as attacker,
        client_at("127.0.0.3") as other,
    ):
        held = [await open_stream(attacker, capped) for _ in range(PER_CLIENT)]
        assert [r.status_code for r in held] == [200] * PER_CLIENT
        status, retry_after, code, message = await refused(await open_stream(attacker, capped))
        # Another address is served, and so is a signed-in user from the attacker's address.
        price = await first_sse_price(await open_stream(other, capped))
        user = await first_sse_price(await open_stream(attacker, capped, bearer=token("sse-u1")))
        # A user is capped too, whatever its addresses; another user is not.
        mine = [await open_stream(other, capped, bearer=token("sse-u2")) for _ in range(PER_CLIENT)]
        extra = await open_stream(attacker, capped, bearer=token("sse-u2"))
        user_status, _, user_code, _ = await refused(extra)
        fine = await first_sse_price(await open_stream(attacker, capped, bearer=token("sse-u3")))
        during = (await stats(capped))["connections"]
        for response in held + mine:
            await response.aclose()
        # The slots come back once the streams are closed: the attacker may open as many again.
        after = await settled_connections(capped, 1)
        again = [await open_stream(attacker, capped) for _ in range(PER_CLIENT)]
        assert [r.status_code for r in again] == [200] * PER_CLIENT
        for response in again:
            await response.aclose()
    assert (status, retry_after, code) == (429, "5", "TOO_MANY_CONNECTIONS")
    assert message == (
        f"too many connections from this client (at most {PER_CLIENT}); "
        "close one or try again later"
    )
    assert (user_status, user_code) == (429, "TOO_MANY_CONNECTIONS")
    assert price["market"] == user["market"] == fine["market"] == "BTC-PERP"
    assert during["sse"] >= 2 * PER_CLIENT
    assert during["ws"] == 1
    assert after == {**after, "open": 1, "sse": 0, "multipart": 0, "ws": 1, "clients": 1}
    assert watch["healthz_s"] < 1.0


async def test_multipart_past_the_client_cap_gets_429_while_other_clients_are_served(
    capped: ServerProcess,
) -> None:
    async with (
        loop_watch(capped) as watch,
        client_at("127.0.0.4") as attacker,
        client_at("127.0.0.5") as other,
    ):
        held = [await open_stream(attacker, capped, MULTIPART) for _ in range(PER_CLIENT)]
        assert [r.status_code for r in held] == [200] * PER_CLIENT
        status, retry_after, code, _ = await refused(await open_stream(attacker, capped, MULTIPART))
        price = await first_multipart_price(await open_stream(other, capped, MULTIPART))
        during = (await stats(capped))["connections"]
        for response in held:
            await response.aclose()
        await settled_connections(capped, 1)
        again = await first_multipart_price(await open_stream(attacker, capped, MULTIPART))
    assert (status, retry_after, code) == (429, "5", "TOO_MANY_CONNECTIONS")
    assert price["market"] == again["market"] == "BTC-PERP"
    assert during["multipart"] == PER_CLIENT
    assert watch["healthz_s"] < 1.0


async def test_websockets_past_the_client_cap_are_closed_4029_and_users_count_across_transports(
    capped: ServerProcess,
) -> None:
    reason = (
        f"too many connections from this client (at most {PER_CLIENT}); "
        "close one or try again later"
    )
    await settled_connections(capped, 0)
    async with contextlib.AsyncExitStack() as stack:
        watch = await stack.enter_async_context(loop_watch(capped))
        # Anonymous: by address, from the handshake on.
        for _ in range(PER_CLIENT):
            held = await stack.enter_async_context(ws_at(capped, "127.0.0.6"))
            assert await initialised(held) == {"type": "connection_ack"}
        async with ws_at(capped, "127.0.0.6") as refused_socket:
            anonymous_close = await refused_socket.closed()
        # Signed in: by user once connection_init names it, whatever the address; the user's
        # SSE stream counts with its sockets.
        bearer = token("ws-u1")
        for _ in range(PER_CLIENT - 1):
            held = await stack.enter_async_context(ws_at(capped, "127.0.0.7"))
            assert await initialised(held, bearer) == {"type": "connection_ack"}
        http = await stack.enter_async_context(client_at("127.0.0.8"))
        stream = await open_stream(http, capped, bearer=bearer)
        assert stream.status_code == 200
        async with ws_at(capped, "127.0.0.8") as over:
            await over.send({"type": "connection_init", "payload": {"token": bearer}})
            user_close = await over.closed()
        # The address the user came from, and another user, are still served.
        async with ws_at(capped, "127.0.0.7") as anonymous, ws_at(capped, "127.0.0.7") as other:
            assert await initialised(anonymous) == {"type": "connection_ack"}
            assert await initialised(other, token("ws-u2")) == {"type": "connection_ack"}
            await other.subscribe("p", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})
            price = await other.next_data("p", "priceUpdates")
        await stream.aclose()
        # One of the user's slots came back: a socket of its own gets in.
        await settled_connections(capped, 1 + PER_CLIENT + PER_CLIENT - 1)
        async with ws_at(capped, "127.0.0.9") as back:
            assert await initialised(back, bearer) == {"type": "connection_ack"}
    assert anonymous_close == (4029, reason)
    assert user_close == (4029, reason)
    assert price["market"] == "ETH-PERP"
    assert watch["healthz_s"] < 1.0
    await settled_connections(capped, 0)


async def test_sse_streams_and_websockets_share_max_connections(capped: ServerProcess) -> None:
    await settled_connections(capped, 0)
    async with contextlib.AsyncExitStack() as stack:
        watch = await stack.enter_async_context(loop_watch(capped))  # 1 slot
        streams = []
        for address in ("127.0.1.1", "127.0.1.2", "127.0.1.3"):  # 3 + 3 SSE, 3 multipart
            http = await stack.enter_async_context(client_at(address))
            accept = MULTIPART if address.endswith("3") else SSE
            streams += [await open_stream(http, capped, accept) for _ in range(PER_CLIENT)]
        assert [r.status_code for r in streams] == [200] * 3 * PER_CLIENT
        for _ in range(MAX_CONNECTIONS - 1 - 3 * PER_CLIENT):  # 2 WebSockets fill the process
            held = await stack.enter_async_context(ws_at(capped, "127.0.1.4"))
            assert await initialised(held) == {"type": "connection_ack"}
        full = (await stats(capped))["connections"]
        late = await stack.enter_async_context(client_at("127.0.1.5"))
        stream_refusal = await refused(await open_stream(late, capped))
        async with ws_at(capped, "127.0.1.5") as refused_socket:
            socket_close = await refused_socket.closed()
        # Plain HTTP is not counted: a query is answered while every slot is taken.
        query = await late.post(capped.url, json={"query": "{ markets { id } }"})
        # Once a stream ends, its slot goes to a newcomer: here, a WebSocket.
        await streams.pop().aclose()
        await settled_connections(capped, MAX_CONNECTIONS - 1)
        async with ws_at(capped, "127.0.1.5") as newcomer:
            assert await initialised(newcomer) == {"type": "connection_ack"}
        for response in streams:
            await response.aclose()
    assert full == {
        "ws": 1 + MAX_CONNECTIONS - 1 - 3 * PER_CLIENT,
        "sse": 2 * PER_CLIENT,
        "multipart": PER_CLIENT,
        "open": MAX_CONNECTIONS,
        "clients": 5,
        "max": MAX_CONNECTIONS,
        "maxPerClient": PER_CLIENT,
    }
    status, retry_after, code, message = stream_refusal
    assert (status, retry_after, code) == (503, "5", "SERVER_BUSY")
    assert message == f"server at its connection limit ({MAX_CONNECTIONS}); try again later"
    assert socket_close == (1013, message)
    assert query.status_code == 200
    assert query.json()["data"]["markets"]
    assert watch["healthz_s"] < 1.0
    await settled_connections(capped, 0)


async def test_streams_that_complete_or_fail_give_their_slot_back(capped: ServerProcess) -> None:
    """A query over SSE completes after its answer, a subscription to an unknown market after
    its error, a user's subscriptions when its token expires: none keeps a slot, so one client
    may open many more than its cap, one after the other."""
    async with loop_watch(capped) as watch, client_at("127.0.2.1") as http:
        answers = []
        for _ in range(3 * PER_CLIENT):
            response = await open_stream(http, capped, query="{ markets { id } }", variables={})
            answers.append(await response.aread())
            failed = await open_stream(http, capped, variables={"m": "DOGE-PERP"})
            answers.append(await failed.aread())
        expiring = [
            await open_stream(http, capped, bearer=token("expiring", ttl_s=2))
            for _ in range(PER_CLIENT)
        ]
        expired = [await response.aread() for response in expiring]
        renewed = await first_sse_price(await open_stream(http, capped, bearer=token("expiring")))
        after = await settled_connections(capped, 1)
    assert all(b"event: complete" in answer for answer in answers + expired)
    assert sum(b"UNKNOWN_MARKET" in answer for answer in answers) == 3 * PER_CLIENT
    assert all(b"TOKEN_EXPIRED" in answer for answer in expired)
    assert renewed["market"] == "BTC-PERP"
    assert after["sse"] == 0
    assert watch["healthz_s"] < 1.0


PRIVATE = {
    "positions": "subscription { positions { __typename } }",
    "live": "subscription { liveDashboard { __typename } }",
    "dashboard": "subscription { dashboardUpdates { __typename } }",
    "martingale": "subscription { martingaleProgress { __typename } }",
}


async def test_stats_and_metrics_name_no_user_or_wallet(capped: ServerProcess) -> None:
    """Anonymous ``/stats`` and ``/metrics`` in production, while private subscriptions of two
    users are open: topics counted by kind, no user's name anywhere in either body."""
    users = ("zoe-private-7f3a", "yan-wallet-91c2")
    async with contextlib.AsyncExitStack() as stack:
        for user in users:
            client = await stack.enter_async_context(
                GraphQLWS.connect(capped.ws_url, token=token(user))
            )
            for id, query in PRIVATE.items():
                await client.subscribe(id, query)
            answered: set[str] = set()
            while answered != set(PRIVATE):  # a first result of each: every topic is open
                message = await client.receive()
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message
                answered.add(message["id"])
        async with httpx.AsyncClient(timeout=5) as http:
            body = await http.get(capped.base_url + "/stats")
            metrics = await http.get(capped.base_url + "/metrics")
    topics = body.json()["topics"]
    for user in users:
        for text in (body.text, metrics.text):
            assert user not in text
    for kind in PRIVATE:
        assert topics[kind]["topics"] >= len(users), (kind, topics)
        assert topics[kind]["subscriptions"] >= len(users)
    assert all(":" not in kind for kind in topics)
    assert topics["price"]["topics"] >= 1


def _open_files(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits", encoding="ascii") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-files line")


async def test_the_open_files_limit_is_raised_and_sizes_the_default_limits(
    database_url: str, tmp_path: Path
) -> None:
    """A process started with a soft limit of 256 files and a hard one of 512: it raises the soft
    limit to 512 and takes three quarters, 384 connections, 96 per client. Then five addresses
    ask for 100 unread SSE streams each (the flood that once exhausted the descriptors and reset
    everyone's connections), the first alone and then four at once: the first gets 96 and four
    429s, the process 384 in all and 503 past them, and the bystander, /healthz and queries are
    served throughout."""
    server = ServerProcess(
        {"DATABASE_URL": database_url, "PRICE_FEED_HZ": "10"},
        tmp_path / "server.log",
        open_files=(256, 512),
    ).start()
    try:
        assert server.process is not None
        limits = _open_files(server.process.pid)
        connections = (await stats(server))["connections"]
        async with contextlib.AsyncExitStack() as stack:
            watch = await stack.enter_async_context(loop_watch(server))
            clients = [
                await stack.enter_async_context(client_at(f"127.0.3.{i}")) for i in range(1, 6)
            ]
            held: list[httpx.Response] = []

            async def flood(http: httpx.AsyncClient) -> list[int]:
                statuses = []
                for _ in range(100):
                    response = await open_stream(http, server)
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        held.append(response)
                    else:  # read, as a client does: the connection goes back to the pool
                        await refused(response)
                return statuses

            first = await flood(clients[0])  # one address alone: its own cap
            by_address = [first, *await asyncio.gather(*(flood(http) for http in clients[1:]))]
            full = (await stats(server))["connections"]
            query = await clients[0].post(server.url, json={"query": "{ markets { id } }"})
            for response in held:
                await response.aclose()
        after = await settled_connections(server, 0)
    finally:
        server.stop()
    assert limits == (512, 512)
    assert (connections["max"], connections["maxPerClient"]) == (384, 96)
    statuses = [status for one in by_address for status in one]
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses.count(200) == 384 - 1  # the bystander's socket holds one
    assert max(one.count(200) for one in by_address) <= 96
    assert first == [200] * 96 + [429] * 4
    assert statuses.count(503) == 500 - 4 - statuses.count(200)
    assert full["open"] == 384
    assert full["sse"] == 383
    assert query.status_code == 200
    assert after["sse"] == 0
    assert watch["healthz_s"] < 2.0


@contextlib.contextmanager
def nginx_in_front(server: ServerProcess, folder: Path) -> Iterator[str]:
    """The project's own ``deploy/nginx.conf`` in front of ``server`` (tests/proxy.py); yields
    the proxy's base URL."""
    folder.mkdir()
    proxy = Proxy([server.port], folder)
    proxy.start(nginx_binary())
    try:
        yield proxy.base_url
    finally:
        proxy.stop()


async def test_behind_the_projects_nginx_each_client_counts_by_its_own_address(
    capped: ServerProcess, tmp_path: Path
) -> None:
    """nginx (trusted as 127.0.0.1, the default FORWARDED_ALLOW_IPS) names each client in
    X-Forwarded-For: clients behind it count apart, and one that forges the header is still
    counted as itself (nginx appends the real address; the server reads from the right). Direct
    from an address that is not trusted, the header is ignored."""
    await settled_connections(capped, 0)
    forged = {"x-forwarded-for": "198.51.100.1"}
    with nginx_in_front(capped, tmp_path / "nginx") as proxy:
        async with (
            client_at("127.0.4.1") as attacker,
            client_at("127.0.4.2") as other,
        ):
            via = httpx.URL(proxy + "/graphql")

            async def through_proxy(
                http: httpx.AsyncClient, headers: dict[str, str] | None = None
            ) -> httpx.Response:
                body = {"query": PRICE_SUBSCRIPTION, "variables": {"m": "BTC-PERP"}}
                request = http.build_request(
                    "POST", via, json=body, headers={"accept": SSE, **(headers or {})}
                )
                return await http.send(request, stream=True)

            held = [await through_proxy(attacker) for _ in range(PER_CLIENT)]
            over = await refused(await through_proxy(attacker))
            forging = await refused(await through_proxy(attacker, forged))
            clients = (await stats(capped))["connections"]["clients"]
            price = await first_sse_price(await through_proxy(other))
            # Directly, from an address the server does not trust, the header is ignored too.
            direct = [await open_stream(other, capped, bearer=None) for _ in range(PER_CLIENT)]
            direct_forging = await other.send(
                other.build_request(
                    "POST",
                    capped.url,
                    json={"query": PRICE_SUBSCRIPTION, "variables": {"m": "BTC-PERP"}},
                    headers={"accept": SSE, **forged},
                ),
                stream=True,
            )
            direct_over = await refused(direct_forging)
            for response in held + direct:
                await response.aclose()
    assert over[:3] == (429, "5", "TOO_MANY_CONNECTIONS")
    assert forging[:3] == (429, "5", "TOO_MANY_CONNECTIONS")
    assert price["market"] == "BTC-PERP"
    assert clients == 1  # what came through nginx so far: 127.0.4.1's streams
    assert direct_over[:3] == (429, "5", "TOO_MANY_CONNECTIONS")
    await settled_connections(capped, 0)


def test_the_listening_socket_queues_listen_backlog_connections(capped: ServerProcess) -> None:
    """LISTEN_BACKLOG reaches the kernel: ``ss`` shows a listening socket's backlog as its
    Send-Q (a reconnect storm's SYNs past it would be dropped, and retried a second later)."""
    shown = subprocess.run(
        ["ss", "-ltnH", f"sport = :{capped.port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.split()
    assert shown[0] == "LISTEN", shown
    assert int(shown[2]) == BACKLOG, shown
