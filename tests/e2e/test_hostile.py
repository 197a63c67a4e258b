"""Documents that ask too much, and clients that subscribe too fast: each gets a clear refusal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator


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
    query = "{ __schema { types { " + " name" * 201 + " } } }"
    body = graphql(server, query)
    assert "more than 200 fields (MAX_FIELDS)" in messages(body)
    assert body["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX"}


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
