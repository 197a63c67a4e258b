"""What the end-to-end tests of several feeds share: calling the server and waiting for messages,
and the documents, settings and inputs of the perpetuals, marathon and exchange tests."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson

from tests.support import SUITE_TOKEN_TTL_S, GraphQLWS, ServerProcess, token

# --- perpetuals (test_perps.py) -------------------------------------------------------------------

ENGINE = {
    "SIMULATED_FEEDS": "false",  # the tests are the oracle: prices move only when they say so
    "PERPS_ENGINE_INTERVAL_S": "0.1",
    "LIQUIDATION_DELAY_S": "0.5",
    "PRICE_MAX_AGE_S": "600",
}
POSITION = (
    "id owner market side size entryPrice collateral leverage markPrice unrealizedPnl "
    "healthFactor liquidationPrice revision"
)
OPEN = "mutation($i: OpenPositionInput!) { openPosition(input: $i) { " + POSITION + " } }"
MODIFY = "mutation($i: ModifyPositionInput!) { modifyPosition(input: $i) { " + POSITION + " } }"
PUBLISH_PRICE = (
    "mutation($m: String!, $p: Decimal!) { publishPrice(market: $m, price: $p) { sequence } }"
)
ORACLE = token("oracle", "service", ttl_s=SUITE_TOKEN_TTL_S)


async def call(
    server: ServerProcess,
    query: str,
    variables: dict[str, Any] | None = None,
    bearer: str | None = None,
) -> dict[str, Any]:
    headers = {} if bearer is None else {"authorization": f"Bearer {bearer}"}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            server.url, json={"query": query, "variables": variables or {}}, headers=headers
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_price(server: ServerProcess, market: str, price: str) -> None:
    body = await call(server, PUBLISH_PRICE, {"m": market, "p": price}, ORACLE)
    assert "errors" not in body, body


async def open_position(
    server: ServerProcess, user: str, market: str, side: str, size: str, leverage: str
) -> dict[str, Any]:
    body = await call(
        server,
        OPEN,
        {"i": {"market": market, "side": side, "size": size, "leverage": leverage}},
        token(user),
    )
    assert "errors" not in body, body
    position: dict[str, Any] = body["data"]["openPosition"]
    return position


def error_code(body: dict[str, Any]) -> str:
    [error] = body["errors"]
    code: str = error["extensions"]["code"]
    return code


async def messages_until(
    client: GraphQLWS, done: Any, timeout: float = 15.0
) -> list[dict[str, Any]]:
    """Every message received until ``done(messages)`` holds."""
    received: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(received):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; received {received}"
        received.append(await client.receive(remaining))
    return received


def of(messages: list[dict[str, Any]], id: str, field: str) -> list[dict[str, Any]]:
    return [m["payload"]["data"][field] for m in messages if m.get("id") == id]


def change(
    external_id: str, kind: str, position_id: str, owner: str, size: str = "10"
) -> dict[str, Any]:
    return {
        "externalId": external_id,
        "kind": kind.upper(),
        "positionId": position_id,
        "owner": owner,
        "market": "SOL-PERP",
        "side": "LONG",
        "size": size,
        "entryPrice": "150",
        "collateral": "300",
        "fillSize": size,
        "fillPrice": "150",
        "at": "2026-11-21T10:00:00+00:00",
    }


# --- marathons (test_marathons.py) ----------------------------------------------------------------

SETTINGS = {
    "SIMULATED_FEEDS": "false",
    "LEADERBOARD_MAX_HZ": "20",
    "LEADERBOARD_SNAPSHOT_INTERVAL_S": "0.5",
}
COLLECTOR = token("collector", "service", ttl_s=SUITE_TOKEN_TTL_S)
ROW = "rank login profit profitPercentage equity balance openPositionsCount"
LEADERBOARD = (
    "subscription($m: ID!, $top: Int) { marathonLeaderboard(marathonId: $m, top: $top) { "
    "accounts rows { " + ROW + " } } }"
)
ACCOUNT = (
    "subscription($m: ID!, $l: Long!) { accountUpdates(marathonId: $m, login: $l) { "
    "login row { " + ROW + " } } }"
)
CREATE = (
    "mutation($i: CreateMarathonInput!) { createMarathon(input: $i) { id name public "
    "organiser running } }"
)
ADD = "mutation($i: AddParticipantInput!) { addParticipant(input: $i) }"
INGEST = "mutation($i: AccountSnapshotInput!) { ingestAccountSnapshot(input: $i) { login stored } }"
NOW = datetime.now(UTC)


def snapshot(
    login: int, balance: str, equity: str, profit: str = "0", at: int = 0
) -> dict[str, Any]:
    return {
        "login": login,
        "balance": balance,
        "equity": equity,
        "profit": profit,
        "margin": "100",
        "freeMargin": str(float(equity) - 100),
        "serverTime": (NOW + timedelta(seconds=at)).isoformat(),
        "positions": [
            {
                "ticket": 5_000_000_001 + login,
                "symbol": "EURUSD",
                "type": "BUY",
                "volume": "0.10",
                "priceOpen": "1.0850",
                "profit": profit,
            }
        ]
        if profit != "0"
        else [],
    }


def marathon_input(name: str, public: bool) -> dict[str, Any]:
    return {
        "name": name,
        "startsAt": (NOW - timedelta(days=1)).isoformat(),
        "endsAt": (NOW + timedelta(days=1)).isoformat(),
        "public": public,
    }


async def create_marathon(
    server: ServerProcess, name: str, organiser: str, public: bool
) -> dict[str, Any]:
    """A marathon organised by the user ``organiser``, with the id the server generates."""
    body = await call(server, CREATE, {"i": marathon_input(name, public)}, token(organiser))
    assert "errors" not in body, body
    marathon: dict[str, Any] = body["data"]["createMarathon"]
    return marathon


async def create(server: ServerProcess, name: str, organiser: str, public: bool) -> str:
    """The new marathon's generated id."""
    marathon_id: str = (await create_marathon(server, name, organiser, public))["id"]
    return marathon_id


async def add(server: ServerProcess, marathon: str, login: int, user: str, organiser: str) -> None:
    body = await call(
        server,
        ADD,
        {"i": {"marathonId": marathon, "login": login, "participant": user}},
        token(organiser),
    )
    assert body == {"data": {"addParticipant": True}}, body


async def ingest(server: ServerProcess, snap: dict[str, Any]) -> bool:
    body = await call(server, INGEST, {"i": snap}, COLLECTOR)
    assert "errors" not in body, body
    stored: bool = body["data"]["ingestAccountSnapshot"]["stored"]
    return stored


def wire(login: int, balance: str, equity: str, at: int, profit: str = "0") -> bytes:
    """A collector's RabbitMQ message (docs/marathon-ingest.md)."""
    return orjson.dumps(
        {
            "login": login,
            "balance": balance,
            "equity": equity,
            "profit": profit,
            "margin": "0",
            "free_margin": equity,
            "server_time": (NOW + timedelta(seconds=at)).isoformat(),
        }
    )


# --- exchange (test_exchange.py) ------------------------------------------------------------------

ORDER = (
    "id clientOrderId symbol type side status quantity price filled averagePrice reduceOnly "
    "parentId active"
)
PLACE = (
    "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { duplicate order { " + ORDER + " } "
    "children { " + ORDER + " } } }"
)


def of_type(messages: list[dict[str, Any]], typename: str) -> list[dict[str, Any]]:
    """The ``liveDashboard`` events of one ``__typename`` among a client's messages."""
    return [
        m["payload"]["data"]["liveDashboard"]
        for m in messages
        if m.get("type") == "next"
        and m["payload"]["data"]["liveDashboard"]["__typename"] == typename
    ]
