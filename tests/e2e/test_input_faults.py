"""Inputs that once crashed a handler, or raced, answered "Unexpected error." and logged a
traceback each: now each gets its clear answer, the log nothing above debug for it, a bystander
keeps being served, and nothing is stored.

The server here logs at debug, as JSON: a test reads the lines its input caused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest

from tests.conftest import FEED_HZ, isolated_server
from tests.support import ServerProcess, loop_watch, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"LOG_LEVEL": "debug", "LOG_FORMAT": "json", "PRICE_FEED_HZ": FEED_HZ}
    log_path = tmp_path_factory.mktemp("input-faults") / "server.log"
    with isolated_server(database_url, env, log_path) as process:
        yield process


@contextlib.asynccontextmanager
async def quiet_log(server: ServerProcess) -> AsyncIterator[list[dict[str, Any]]]:
    """The log lines written while the body runs (filled in on exit), none of them above
    debug for a client's mistake: no ERROR, no WARNING, no traceback."""
    start = len(server.log_path.read_bytes())
    records: list[dict[str, Any]] = []
    yield records
    await asyncio.sleep(0.2)  # a line written as the answer left
    text = server.log_path.read_bytes()[start:].decode(errors="replace")
    for line in text.splitlines():
        assert line.startswith("{"), f"not a JSON log line (a traceback?): {line}"
        record = json.loads(line)
        records.append(record)
        assert record["level"] in ("DEBUG", "INFO"), record
        assert "exception" not in record, record


def said(records: list[dict[str, Any]], text: str) -> bool:
    return any(r["level"] == "DEBUG" and text in r["message"] for r in records)


async def rows(server: ServerProcess, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(server.env["DATABASE_URL"])
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


async def post(
    http: httpx.AsyncClient,
    server: ServerProcess,
    query: str,
    variables: dict[str, Any] | None = None,
    user: str | None = None,
) -> dict[str, Any]:
    headers = {} if user is None else {"authorization": f"Bearer {token(user)}"}
    response = await http.post(
        server.url, json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


PLACE = (
    "mutation($i: PlaceOrderInput!) "
    "{ placeOrder(input: $i) { order { id clientOrderId status } duplicate } }"
)


def resting_buy(client_order_id: str) -> dict[str, Any]:
    """A limit buy far below the market: it rests, open, on the account."""
    return {
        "symbol": "BTC-PERP",
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "0.01",
        "price": "1000",
        "clientOrderId": client_order_id,
    }


async def test_eight_concurrent_first_orders_all_place_on_one_new_account(
    server: ServerProcess,
) -> None:
    """Before: one placed, seven "Unexpected error." (duplicate key on paper_accounts_pkey)."""
    user = "first-orders"
    async with loop_watch(server), quiet_log(server), httpx.AsyncClient(timeout=30) as http:
        bodies = await asyncio.gather(
            *(post(http, server, PLACE, {"i": resting_buy(f"first-{n}")}, user) for n in range(8))
        )
        assert [b.get("errors") for b in bodies] == [None] * 8
        placed = {b["data"]["placeOrder"]["order"]["clientOrderId"] for b in bodies}
        assert placed == {f"first-{n}" for n in range(8)}
        account = await post(
            http, server, "{ paperAccount { openOrders { clientOrderId } } }", {}, user
        )
    open_orders = {o["clientOrderId"] for o in account["data"]["paperAccount"]["openOrders"]}
    assert open_orders == placed
    stored = await rows(server, "SELECT payload FROM paper_accounts WHERE owner = $1", user)
    assert len(stored) == 1


async def test_a_first_operation_that_is_refused_stores_no_account(server: ServerProcess) -> None:
    user = "first-cancel"
    query = 'mutation { cancelOrder(orderId: "nope") { id } }'
    async with loop_watch(server), quiet_log(server), httpx.AsyncClient(timeout=30) as http:
        bodies = await asyncio.gather(*(post(http, server, query, {}, user) for _ in range(4)))
    assert {b["errors"][0]["extensions"]["code"] for b in bodies} == {"ORDER_NOT_FOUND"}
    assert await rows(server, "SELECT 1 FROM paper_accounts WHERE owner = $1", user) == []
