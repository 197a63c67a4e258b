"""``LOG_FORMAT=json`` on a real server: every line of its output is one JSON object, and a line
logged while serving a WebSocket or an HTTP request names it."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import isolated_server
from tests.support import GraphQLWS, ServerProcess

if TYPE_CHECKING:
    from collections.abc import Iterator

PRICE_QUERY = '{ price(market: "BTC-PERP") { price } }'
BOOK_QUERY = '{ orderBook(market: "BTC-PERP", depth: 1) { sequence } }'
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
GENERATED_ID = re.compile(r"[0-9a-f]{12}")
MISSING_TABLE = 'relation "latest_prices" does not exist'


@pytest.fixture
def json_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {"LOG_FORMAT": "json", "LOG_LEVEL": "info", "SIMULATED_FEEDS": "0"}
    with isolated_server(
        database_url, env, tmp_path_factory.mktemp("json-logs") / "server.log"
    ) as process:
        yield process


def log_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line of the server's output (stdout and stderr), each parsed as one JSON object."""
    lines = []
    for number, text in enumerate(server.log().splitlines(), 1):
        try:
            line = orjson.loads(text)
        except orjson.JSONDecodeError:
            pytest.fail(f"line {number} of the log is not JSON: {text!r}")
        assert isinstance(line, dict), text
        assert {"time", "level", "logger", "message"} <= line.keys(), text
        assert TIME.fullmatch(line["time"]), text
        lines.append(line)
    return lines


async def query_over_websocket(server: ServerProcess) -> dict[str, Any]:
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.send({"id": "q", "type": "subscribe", "payload": {"query": PRICE_QUERY}})
        answer = await client.receive()
        assert await client.receive() == {"id": "q", "type": "complete"}
        return answer


async def test_a_fault_while_serving_is_one_json_line_naming_the_connection_or_request(
    json_server: ServerProcess,
) -> None:
    # A real fault: the table the price query reads is gone from this server's own database.
    database = await asyncpg.connect(json_server.env["DATABASE_URL"])
    try:
        await database.execute("ALTER TABLE latest_prices RENAME TO latest_prices_gone")
    finally:
        await database.close()

    answers = [await query_over_websocket(json_server) for _ in range(2)]
    for answer in answers:
        assert answer["type"] == "next", answer
        assert answer["payload"]["errors"][0]["message"] == "Unexpected error.", answer
    async with httpx.AsyncClient(timeout=10) as http:
        named = await http.post(
            json_server.url, json={"query": PRICE_QUERY}, headers={"x-request-id": "req-1.a:b"}
        )
        unnamed = await http.post(
            json_server.url, json={"query": PRICE_QUERY}, headers={"x-request-id": "no good!"}
        )
        healthy = await http.get(json_server.base_url + "/healthz")
    assert named.json()["errors"][0]["message"] == "Unexpected error."
    assert named.headers["x-request-id"] == "req-1.a:b", "a sane incoming id is kept"
    generated = unnamed.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(generated), "an id that is not sane is replaced"
    assert healthy.status_code == 200
    assert GENERATED_ID.fullmatch(healthy.headers["x-request-id"])
    assert healthy.headers["x-request-id"] != generated

    json_server.stop()
    lines = log_lines(json_server)
    faults = [
        line
        for line in lines
        if line["logger"] == "api.graphql.execution" and line["level"] == "ERROR"
    ]
    assert len(faults) == 4, faults
    for fault in faults:
        assert MISSING_TABLE in fault["message"]
        assert "Traceback" in fault["exception"]
        assert "UndefinedTableError" in fault["exception"]
    on_sockets = [f for f in faults if "connection_id" in f]
    assert len(on_sockets) == 2
    assert all("request_id" not in f for f in on_sockets)
    ids = {f["connection_id"] for f in on_sockets}
    assert len(ids) == 2, "each connection has its own id"
    assert all(GENERATED_ID.fullmatch(i) for i in ids)
    on_requests = {f.get("request_id") for f in faults if "connection_id" not in f}
    assert on_requests == {"req-1.a:b", generated}
    # uvicorn's own lines are JSON too, its access log with the request's id.
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert any(
        line.get("request_id") == "req-1.a:b" and "POST /graphql" in line["message"]
        for line in access
    ), access
    assert any(line["logger"] == "uvicorn.error" for line in lines)
    assert not any("connection_id" in line or "request_id" in line for line in lines[:3]), (
        "lines logged outside any connection or request carry no id"
    )


def test_a_server_that_shuts_down_with_every_worker_running_logs_no_error(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every simulated feed running (the books among them, following the users' orders), a
    shutdown ends each worker quietly: the hub closing is no failure to log and retry."""
    env = {"LOG_FORMAT": "json", "LOG_LEVEL": "info", "BOOK_QUOTE_HZ": "20"}
    with isolated_server(
        database_url, env, tmp_path_factory.mktemp("shutdown-logs") / "server.log"
    ) as server:
        deadline = time.monotonic() + 20
        while True:  # the books quote once the first prices are in
            answer = httpx.post(server.url, json={"query": BOOK_QUERY}, timeout=5).json()
            if answer["data"]["orderBook"] is not None:
                break
            assert time.monotonic() < deadline, answer
            time.sleep(0.1)
    lines = log_lines(server)
    assert any(line["message"] == "Application shutdown complete." for line in lines), lines[-5:]
    errors = [line for line in lines if line["level"] in {"ERROR", "CRITICAL"}]
    assert errors == []
