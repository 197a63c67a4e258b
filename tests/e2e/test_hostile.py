"""Documents that ask too much, and clients that subscribe too fast: each gets a clear refusal."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, contiguous, following

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


def graphql(server: ServerProcess, query: str) -> dict[str, Any]:
    response = httpx.post(server.url, json={"query": query}, timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def messages(body: dict[str, Any]) -> str:
    return " ".join(error["message"] for error in body.get("errors", []))


def test_depth_is_limited(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Depth counts from 0 at the root fields; the schema has nothing deep enough to test 10."""
    shallow = ServerProcess(
        {"DATABASE_URL": database_url, "SIMULATED_FEEDS": "0", "MAX_QUERY_DEPTH": "0"},
        tmp_path_factory.mktemp("shallow") / "server.log",
    ).start()
    try:
        assert graphql(shallow, "{ __typename }")["data"] == {"__typename": "Query"}
        body = graphql(shallow, "{ markets { id } }")
    finally:
        shallow.stop()
    assert "'anonymous' exceeds maximum operation depth of 0" in messages(body)


def test_aliases_are_limited(server: ServerProcess) -> None:
    query = "{ " + " ".join(f"a{i}: markets {{ id }}" for i in range(31)) + " }"
    assert messages(graphql(server, query)) == "31 aliases found. Allowed: 30"


def test_fields_are_limited(server: ServerProcess) -> None:
    query = "{ __schema { types { " + " name" * 301 + " } } }"
    body = graphql(server, query)
    assert messages(body) == "'anonymous' selects 303 fields, more than 300 (MAX_FIELDS)"
    assert body["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX"}


def doubling(levels: int, operation: str, on: str, leaves: str) -> str:
    """A document whose fragment at each level spreads the one below it twice: a kilobyte at 30
    levels, which selects 2^31 fields once expanded. ``operation`` spreads ``F<levels>``."""
    fragments = [f"fragment F0 on {on} {{ {leaves} }}"] + [
        f"fragment F{i} on {on} {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)
    ]
    return " ".join([operation.replace("TOP", f"F{levels}"), *fragments])


@contextlib.asynccontextmanager
async def loop_watch(server: ServerProcess) -> AsyncIterator[dict[str, float]]:
    """While the body runs, a price subscriber and a /healthz poller stand by. On exit the
    subscriber has had two more prices, none missed, and the dict holds the slowest /healthz
    answer in seconds: a request that held the server's event loop shows there."""
    worst = {"healthz_s": 0.0}

    async def poll(http: httpx.AsyncClient) -> None:
        while True:
            started = time.monotonic()
            assert (await http.get(server.base_url + "/healthz")).status_code == 200
            worst["healthz_s"] = max(worst["healthz_s"], time.monotonic() - started)
            await asyncio.sleep(0.02)

    async with (
        httpx.AsyncClient(timeout=30) as http,
        GraphQLWS.connect(server.ws_url) as client,
    ):
        await client.subscribe("b", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await client.next_data("b", "priceUpdates")
        async with following(client, "b") as sequences:
            poller = asyncio.create_task(poll(http))
            try:
                yield worst
                seen = len(sequences)
                for _ in range(1000):  # ten seconds at most
                    if len(sequences) >= seen + 2:
                        break
                    await asyncio.sleep(0.01)
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            assert len(sequences) >= seen + 2
            assert contiguous(sequences), sequences


async def test_fragment_doubling_is_refused_at_once_on_every_transport(
    server: ServerProcess,
) -> None:
    """Measured before the fix: 22 levels held the event loop 21 s; 29 levels, over 11 minutes."""
    expected = "'anonymous' selects more than a million fields, more than 300 (MAX_FIELDS)"
    query = doubling(30, "{ markets { ...TOP } }", "Market", "id base")
    subscription = doubling(
        30, 'subscription { priceUpdates(market: "BTC-PERP") { ...TOP } }', "PriceUpdate", "price"
    )
    async with loop_watch(server) as worst, httpx.AsyncClient(timeout=30) as http:
        started = time.monotonic()
        post = (await http.post(server.url, json={"query": query})).json()
        get = (await http.get(server.url, params={"query": query})).json()
        async with GraphQLWS.connect(server.ws_url) as client:
            await client.subscribe("1", subscription)
            message = await client.receive()
            # The socket is still usable.
            await client.subscribe("2", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})
            assert (await client.next_data("2", "priceUpdates"))["market"] == "ETH-PERP"
        answered_s = time.monotonic() - started
    for body in (post, get):
        assert body["data"] is None
        [error] = body["errors"]
        assert error["message"] == expected
        assert error["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    assert message["type"] == "error"
    assert message["id"] == "1"
    assert [e["message"] for e in message["payload"]] == [expected]
    # Bounds far above what these take (milliseconds) and far below what they took (minutes).
    assert answered_s < 5
    assert worst["healthz_s"] < 0.5, worst


async def test_depth_and_aliases_count_fragments_at_each_spread(server: ServerProcess) -> None:
    aliased = "fragment A on Market { a: id b: base c: quote d: tickSize e: maxLeverage f: id }"
    query = "{ markets { ...A ...B } } fragment B on Market { ...A ...A ...A ...A ...A } " + aliased
    body = graphql(server, query)
    assert messages(body) == "36 aliases found. Allowed: 30"
    assert body["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX"}
    # Under the limits, the same fragments run.
    fine = graphql(server, "{ markets { ...B } } fragment B on Market { ...A } " + aliased)
    assert "errors" not in fine
    assert {row["a"] for row in fine["data"]["markets"]} >= {"BTC-PERP"}


def test_document_size_is_limited(server: ServerProcess) -> None:
    query = "{ markets { " + " id" * 2100 + " } }"
    assert "2000 tokens" in messages(graphql(server, query))


async def test_limits_hold_on_websockets_too(server: ServerProcess) -> None:
    query = (
        "subscription { "
        + " ".join(f'a{i}: priceUpdates(market: "BTC-PERP") {{ price }}' for i in range(31))
        + " }"
    )
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("1", query)
        message = await client.receive()
        assert message["type"] == "error"
        assert message["payload"][0]["message"] == "31 aliases found. Allowed: 30"
        await client.subscribe("2", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        assert (await client.next_data("2", "priceUpdates"))["market"] == "BTC-PERP"


@pytest.fixture(scope="module")
def production_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = ServerProcess(
        {
            "DATABASE_URL": database_url,
            "ENVIRONMENT": "production",
            "SUBSCRIBE_RATE_PER_S": "1",
            "SUBSCRIBE_BURST": "2",
        },
        tmp_path_factory.mktemp("production") / "server.log",
    ).start()
    yield server
    server.stop()


def test_introspection_is_off_in_production(
    server: ServerProcess, production_server: ServerProcess
) -> None:
    query = "{ __schema { queryType { name } } }"
    assert graphql(server, query)["data"] == {"__schema": {"queryType": {"name": "Query"}}}
    assert "GraphQL introspection has been disabled" in messages(graphql(production_server, query))


async def test_subscribing_too_fast_is_rate_limited(production_server: ServerProcess) -> None:
    async with GraphQLWS.connect(production_server.ws_url) as client:
        for id in ("1", "2", "3"):
            # Depth 1 (the production test server's limit): the operation itself is fine.
            await client.subscribe(
                id, 'subscription { priceUpdates(market: "BTC-PERP") { __typename } }'
            )
        refused: list[dict[str, Any]] = []
        live: set[str] = set()
        for _ in range(50):
            if refused and live == {"1", "2"}:
                break
            message = await client.receive()
            if message["type"] == "error":
                refused.append(message)
            else:
                live.add(message["id"])
        assert [m["id"] for m in refused] == ["3"]
        assert refused[0]["payload"][0]["extensions"] == {"code": "RATE_LIMITED"}
        assert "at most 1 a second" in refused[0]["payload"][0]["message"]
        assert live == {"1", "2"}


def test_production_refuses_to_start_without_a_key(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = ServerProcess(
        {"DATABASE_URL": database_url, "ENVIRONMENT": "production", "JWT_SECRET": ""},
        tmp_path_factory.mktemp("keyless") / "server.log",
    )
    with pytest.raises(RuntimeError, match="ENVIRONMENT=production needs JWT_SECRET"):
        server.start(timeout=30)
