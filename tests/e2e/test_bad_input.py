"""Bad input gets the protocol's clear answer, and the server keeps serving everyone else.

Each test holds a bystander subscription open across the bad input and checks it still receives
prices afterwards, in order and without a gap in its stream of events.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from tests.conftest import ALLOWED_ORIGIN
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from tests.support import ServerProcess


@contextlib.asynccontextmanager
async def bystander(server: ServerProcess) -> AsyncIterator[None]:
    """A client subscribed before the bad input, which must keep receiving after it."""
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("b", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        before = await client.next_data("b", "priceUpdates")
        yield
        after = await client.next_data("b", "priceUpdates")
        assert after["sequence"] > before["sequence"]
        assert (await client.next_data("b", "priceUpdates"))["sequence"] > after["sequence"]


async def test_unknown_market_subscription_is_an_error_naming_it(server: ServerProcess) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "DOGE-PERP"})
        message = await client.receive()
        assert message["type"] == "error"
        assert message["id"] == "1"
        [error] = message["payload"]
        assert error["message"] == "Unknown market 'DOGE-PERP'"
        assert error["extensions"] == {"code": "UNKNOWN_MARKET", "market": "DOGE-PERP"}
        # The socket stays usable, and the id is free again.
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "SOL-PERP"})
        assert (await client.next_data("1", "priceUpdates"))["market"] == "SOL-PERP"


async def test_unknown_market_query_is_an_error_naming_it(server: ServerProcess) -> None:
    price = server.graphql('{ price(market: "DOGE-PERP") { price } }')
    assert price["data"] == {"price": None}
    [error] = price["errors"]
    assert error["message"] == "Unknown market 'DOGE-PERP'"
    assert error["path"] == ["price"]
    assert error["extensions"] == {"code": "UNKNOWN_MARKET", "market": "DOGE-PERP"}

    market = server.graphql('{ market(id: "X") { id } }')
    assert market["data"] is None
    assert market["errors"][0]["extensions"] == {"code": "UNKNOWN_MARKET", "market": "X"}


async def test_unknown_market_over_sse_is_an_error_then_complete(server: ServerProcess) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            server.url,
            json={"query": PRICE_SUBSCRIPTION, "variables": {"m": "DOGE-PERP"}},
            headers={"accept": "text/event-stream"},
        )
    events = [block for block in response.text.split("\r\n\r\n") if block]
    assert events[0].startswith("event: next")
    assert "Unknown market 'DOGE-PERP'" in events[0]
    assert '"code":"UNKNOWN_MARKET"' in events[0]
    assert events[-1].startswith("event: complete")


async def test_malformed_graphql_over_websocket_closes_4400(server: ServerProcess) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("1", "subscription { priceUpdates(market: ")
        code, reason = await client.closed()
        assert code == 4400
        assert "Syntax Error" in reason


async def test_invalid_operation_over_websocket_is_an_error_message(server: ServerProcess) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("1", "subscription { priceUpdates(market: 5) { nope } }")
        message = await client.receive()
        assert message["type"] == "error"
        messages = " ".join(e["message"] for e in message["payload"])
        assert "Cannot query field 'nope'" in messages
        assert "String cannot represent a non string value: 5" in messages


async def test_malformed_graphql_over_http_is_a_graphql_error(server: ServerProcess) -> None:
    async with bystander(server), httpx.AsyncClient() as http:
        syntax = await http.post(server.url, json={"query": "{ markets { id "})
        not_json = await http.post(
            server.url, content=b"{not json", headers={"content-type": "application/json"}
        )
        no_query = await http.post(server.url, json={"variables": {}})
    assert syntax.status_code == 200
    assert syntax.json()["errors"][0]["message"].startswith("Syntax Error")
    assert (not_json.status_code, not_json.text) == (400, "Unable to parse request body as JSON")
    assert no_query.status_code == 400


async def test_subscription_over_plain_http_says_which_transport_to_use(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            server.url, json={"query": PRICE_SUBSCRIPTION, "variables": {"m": "BTC-PERP"}}
        )
    assert response.status_code == 400
    assert "Subscriptions need a streaming transport" in response.text


@pytest.mark.parametrize("frame", ["not json", "[1, 2", '{"type": "subscribe"}', '{"no": "type"}'])
async def test_frame_that_is_not_a_message_closes_4400(server: ServerProcess, frame: str) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url) as client:
        await client.send(frame)
        code, _ = await client.closed()
        assert code == 4400


async def test_binary_frame_closes_4400(server: ServerProcess) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url) as client:
        await client.ws.send(b'{"type": "ping"}')
        assert await client.closed() == (4400, "WebSocket message type must be text")


async def test_subscribe_before_connection_init_closes_4401(server: ServerProcess) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url, init=False) as client:
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        assert await client.closed() == (4401, "Unauthorized")


async def test_duplicate_operation_id_closes_4409(server: ServerProcess) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await client.next_data("1", "priceUpdates")
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})
        assert await client.closed() == (4409, "Subscriber for 1 already exists")


async def test_second_connection_init_closes_4429(server: ServerProcess) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url) as client:
        await client.send({"type": "connection_init"})
        assert await client.closed() == (4429, "Too many initialisation requests")


async def test_no_connection_init_in_time_closes_4408(server: ServerProcess) -> None:
    async with bystander(server), GraphQLWS.connect(server.ws_url, init=False) as client:
        assert await client.closed() == (4408, "Connection initialisation timeout")


async def test_legacy_subprotocol_is_refused_4406(server: ServerProcess) -> None:
    async with (
        bystander(server),
        GraphQLWS.connect(server.ws_url, init=False, subprotocols=("graphql-ws",)) as client,
    ):
        assert await client.closed() == (4406, "Subprotocol not acceptable")


async def test_subscriptions_per_connection_are_limited(server: ServerProcess) -> None:
    """The test server allows 5; the sixth gets an error and the five keep streaming."""
    async with bystander(server), GraphQLWS.connect(server.ws_url) as client:
        for i in range(5):
            await client.subscribe(str(i), PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await client.subscribe("6", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        errors: list[dict[str, Any]] = []
        live: set[str] = set()
        for _ in range(200):
            if errors and len(live) == 5:
                break
            message = await client.receive()
            if message["type"] == "error":
                errors.append(message)
            else:
                live.add(message["id"])
        assert errors[0]["id"] == "6"
        assert errors[0]["payload"][0]["message"] == "Subscription limit reached"
        assert live == {"0", "1", "2", "3", "4"}


SUBPROTOCOLS = [Subprotocol("graphql-transport-ws")]


async def test_websocket_from_a_foreign_origin_is_refused_403(server: ServerProcess) -> None:
    async with bystander(server):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                server.ws_url, subprotocols=SUBPROTOCOLS, origin=Origin("http://evil.example")
            ):
                pass
        assert refused.value.response.status_code == 403
        async with connect(
            server.ws_url, subprotocols=SUBPROTOCOLS, origin=Origin(ALLOWED_ORIGIN)
        ) as ws:
            client = GraphQLWS(ws)
            await client.send({"type": "connection_init"})
            assert (await client.receive())["type"] == "connection_ack"


async def test_cors_answers_allowed_origins_only(server: ServerProcess) -> None:
    preflight = {"access-control-request-method": "POST"}
    async with httpx.AsyncClient() as http:
        allowed = await http.options(server.url, headers={"origin": ALLOWED_ORIGIN, **preflight})
        foreign = await http.options(
            server.url, headers={"origin": "http://evil.example", **preflight}
        )
        query = await http.post(
            server.url, json={"query": "{ markets { id } }"}, headers={"origin": ALLOWED_ORIGIN}
        )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert foreign.status_code == 400
    assert "access-control-allow-origin" not in foreign.headers
    assert query.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
