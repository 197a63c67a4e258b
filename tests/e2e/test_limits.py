"""Process limits, each with a clear answer: connections, message size; compression on demand."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, price_sequences, stats

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MAX_CONNECTIONS = 3
MAX_MESSAGE_BYTES = 2048


@pytest.fixture(scope="module")
def limited_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = ServerProcess(
        {
            "DATABASE_URL": database_url,
            "PRICE_FEED_HZ": "10",
            "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "MAX_CONNECTIONS_PER_CLIENT": str(MAX_CONNECTIONS),  # every client is 127.0.0.1
            "MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES),
        },
        tmp_path_factory.mktemp("limits") / "server.log",
    ).start()
    yield server
    server.stop()


async def test_connections_past_the_limit_are_closed_1013(limited_server: ServerProcess) -> None:
    async with (
        GraphQLWS.connect(limited_server.ws_url) as first,
        GraphQLWS.connect(limited_server.ws_url),
        GraphQLWS.connect(limited_server.ws_url),
    ):
        await first.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        before = await first.next_data("1", "priceUpdates")
        async with GraphQLWS.connect(limited_server.ws_url, init=False) as refused:
            code, reason = await refused.closed()
        assert code == 1013
        assert f"connection limit ({MAX_CONNECTIONS})" in reason
        after = await first.next_data("1", "priceUpdates")
        assert after["sequence"] > before["sequence"]
    # Once one leaves, there is room again.
    async with GraphQLWS.connect(limited_server.ws_url) as again:
        await again.subscribe("1", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})
        assert (await again.next_data("1", "priceUpdates"))["market"] == "ETH-PERP"


async def test_a_websocket_message_past_the_limit_closes_1009(
    limited_server: ServerProcess,
) -> None:
    async with (
        GraphQLWS.connect(limited_server.ws_url) as bystander,
        GraphQLWS.connect(limited_server.ws_url) as client,
    ):
        await bystander.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        before = await bystander.next_data("1", "priceUpdates")
        padding = " " * MAX_MESSAGE_BYTES
        await client.subscribe("1", PRICE_SUBSCRIPTION + padding, {"m": "BTC-PERP"})
        code, _ = await client.closed()
        assert code == 1009
        assert (await bystander.next_data("1", "priceUpdates"))["sequence"] > before["sequence"]


async def test_an_http_body_past_the_limit_gets_413(limited_server: ServerProcess) -> None:
    big = {"query": "{ markets { id } }" + " " * MAX_MESSAGE_BYTES}

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b" " * (MAX_MESSAGE_BYTES // 2)

    async with httpx.AsyncClient() as http:
        announced = await http.post(limited_server.url, json=big)
        streamed = await http.post(
            limited_server.url, content=chunked(), headers={"content-type": "application/json"}
        )
        fine = await http.post(limited_server.url, json={"query": "{ markets { id } }"})
    assert announced.status_code == 413
    assert "MAX_MESSAGE_BYTES" in announced.text
    assert streamed.status_code == 413
    assert fine.status_code == 200


async def test_compression_is_off_by_default_and_on_when_configured(
    limited_server: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    protocols = [Subprotocol("graphql-transport-ws")]
    async with connect(limited_server.ws_url, subprotocols=protocols) as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers

    server = ServerProcess(
        {"DATABASE_URL": database_url, "PRICE_FEED_HZ": "10", "WS_PER_MESSAGE_DEFLATE": "1"},
        tmp_path_factory.mktemp("deflate") / "server.log",
    ).start()
    try:
        async with connect(server.ws_url, subprotocols=protocols) as ws:
            assert ws.response is not None
            assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
            client = GraphQLWS(ws)
            await client.send({"type": "connection_init"})
            assert (await client.receive())["type"] == "connection_ack"
            await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "SOL-PERP"})
            prices = await price_sequences(client, "1", 3)
            assert stats(server)["webSocketsWrittenDirectly"] == 1
        assert [p["market"] for p in prices] == ["SOL-PERP"] * 3
    finally:
        server.stop()
