"""Oracle prices end to end: a real server, real clients, every transport."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from tests.support import (
    PRICE_FIELDS,
    PRICE_SUBSCRIPTION,
    GraphQLWS,
    parse_multipart,
    price_sequences,
    price_sse,
)

if TYPE_CHECKING:
    from tests.support import ServerProcess

MARKETS = ("BTC-PERP", "ETH-PERP", "SOL-PERP")


def assert_prices_in_order(prices: list[dict[str, Any]], market: str) -> None:
    assert [p["market"] for p in prices] == [market] * len(prices)
    sequences = [p["sequence"] for p in prices]
    assert sequences == sorted(set(sequences)), f"sequences not strictly increasing: {sequences}"
    times = [datetime.fromisoformat(p["publishedAt"]) for p in prices]
    assert times == sorted(times)
    for p in prices:
        assert Decimal(p["price"]) > 0
        assert Decimal(p["confidence"]) > 0


async def test_graphql_transport_ws_delivers_prices_in_order(server: ServerProcess) -> None:
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        prices = await price_sequences(client, "1", 4)
        assert_prices_in_order(prices, "BTC-PERP")
        await client.send({"id": "1", "type": "complete"})


async def test_each_market_streams_its_own_prices_on_one_socket(server: ServerProcess) -> None:
    async with GraphQLWS.connect(server.ws_url) as client:
        for market in MARKETS:
            await client.subscribe(market, PRICE_SUBSCRIPTION, {"m": market})
        seen: dict[str, list[dict[str, Any]]] = {m: [] for m in MARKETS}
        for _ in range(100):
            if min(len(v) for v in seen.values()) >= 3:
                break
            message = await client.receive()
            assert message["type"] == "next", message
            seen[message["id"]].append(message["payload"]["data"]["priceUpdates"])
        else:
            pytest.fail(f"not every market streamed 3 prices in 100 messages: {seen}")
        for market, prices in seen.items():
            assert_prices_in_order(prices, market)


async def test_sse_delivers_prices_in_order(server: ServerProcess) -> None:
    prices = []
    async with (
        httpx.AsyncClient(timeout=10) as http,
        price_sse(http, server, "SOL-PERP") as source,
    ):
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            assert sse.event == "next", sse
            prices.append(orjson.loads(sse.data)["data"]["priceUpdates"])
            if len(prices) == 3:
                break
    assert_prices_in_order(prices, "SOL-PERP")


async def test_multipart_subscription_delivers_prices_in_order(server: ServerProcess) -> None:
    body = ""
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "POST",
            server.url,
            json={"query": PRICE_SUBSCRIPTION, "variables": {"m": "BTC-PERP"}},
            headers={"accept": "multipart/mixed;subscriptionSpec=1.0,application/json"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/mixed")
        async for chunk in response.aiter_text():
            body += chunk
            if sum("payload" in part for part in parse_multipart(body)) >= 3:
                break
    parts = [part["payload"] for part in parse_multipart(body) if "payload" in part]
    assert_prices_in_order([p["data"]["priceUpdates"] for p in parts], "BTC-PERP")


async def test_price_query_over_http_returns_the_latest_stored_price(server: ServerProcess) -> None:
    query = "query($m: String!) { price(market: $m) { " + PRICE_FIELDS + " } }"
    first = server.graphql(query, {"m": "BTC-PERP"})["data"]["price"]
    await asyncio.sleep(0.35)
    later = server.graphql(query, {"m": "BTC-PERP"})["data"]["price"]
    assert_prices_in_order([first, later], "BTC-PERP")

    async with httpx.AsyncClient() as http:
        response = await http.get(
            server.url, params={"query": '{ price(market: "ETH-PERP") { market } }'}
        )
    assert response.json() == {"data": {"price": {"market": "ETH-PERP"}}}


async def test_markets_query_lists_the_catalog(server: ServerProcess) -> None:
    result = server.graphql(
        "{ markets { id base quote tickSize stepSize minOrderSize maxLeverage "
        "maintenanceMarginRate liquidationFeeRate } }"
    )
    markets = {m["id"]: m for m in result["data"]["markets"]}
    assert set(MARKETS) <= set(markets)
    btc = markets["BTC-PERP"]
    assert (btc["base"], btc["quote"]) == ("BTC", "USD")
    assert Decimal(btc["tickSize"]) > 0
    assert Decimal(btc["maintenanceMarginRate"]) < 1


async def test_graphiql_is_served_to_browsers(server: ServerProcess) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(server.url, headers={"accept": "text/html"})
        root = await http.get(server.base_url + "/", follow_redirects=False)
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()
    assert root.status_code == 200  # the live demo page (tests/e2e/test_demo_page.py)
    assert root.headers["content-type"].startswith("text/html")


async def test_health_and_readiness(server: ServerProcess) -> None:
    async with httpx.AsyncClient() as http:
        health = await http.get(server.base_url + "/healthz")
        ready = await http.get(server.base_url + "/readyz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"postgres": "ok", "broadcast": "ok"}}
