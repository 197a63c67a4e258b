"""Authentication through the real transports: every refusal is clear, and nothing leaks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx
import jwt
import orjson
import pytest

from api.auth import Role, mint
from tests.support import (
    PRICE_SUBSCRIPTION,
    TEST_JWT_SECRET,
    GraphQLWS,
    ServerProcess,
    parse_multipart,
    price_sse,
    token,
)

if TYPE_CHECKING:
    from pathlib import Path

MARKETS = {"query": "{ markets { id } }"}


async def test_http_refuses_a_bad_token_with_401_and_a_graphql_error(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient() as http:
        forged = token("alice", secret=TEST_JWT_SECRET[::-1])
        refused = await http.post(
            server.url, json=MARKETS, headers={"authorization": f"Bearer {forged}"}
        )
        malformed = await http.post(server.url, json=MARKETS, headers={"authorization": "Basic x"})
        sse = await http.post(
            server.url,
            json={"query": PRICE_SUBSCRIPTION, "variables": {"m": "BTC-PERP"}},
            headers={"authorization": "Bearer nope", "accept": "text/event-stream"},
        )
        good = await http.post(
            server.url, json=MARKETS, headers={"authorization": f"Bearer {token('alice')}"}
        )
        anonymous = await http.post(server.url, json=MARKETS)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    [error] = refused.json()["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert "Signature verification failed" in error["message"]
    assert forged not in refused.text
    assert malformed.status_code == 401
    assert "Bearer <token>" in malformed.json()["errors"][0]["message"]
    assert sse.status_code == 401
    assert good.status_code == anonymous.status_code == 200


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"token": "not.a.jwt"}, "Forbidden: malformed token: Invalid header padding"),
        ({"authorization": "Token abc"}, "Forbidden: Authorization must be 'Bearer <token>'"),
        ({"token": token("alice", ttl_s=-10)}, "Forbidden: token expired"),
        ({"token": 42}, "Forbidden: 'token' must be a non-empty string"),
    ],
    ids=["malformed", "not-bearer", "expired", "not-a-string"],
)
async def test_websocket_refuses_a_bad_token_with_4403(
    server: ServerProcess, payload: dict[str, object], reason: str
) -> None:
    async with GraphQLWS.connect(server.ws_url) as bystander:
        await bystander.subscribe("b", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        before = await bystander.next_data("b", "priceUpdates")
        async with GraphQLWS.connect(server.ws_url, init=False) as client:
            await client.send({"type": "connection_init", "payload": payload})
            assert await client.closed() == (4403, reason)
        after = await bystander.next_data("b", "priceUpdates")
        assert after["sequence"] > before["sequence"]


@pytest.mark.parametrize("form", ["token", "authorization"])
async def test_websocket_accepts_a_good_token_in_either_form(
    server: ServerProcess, form: str
) -> None:
    value = token("alice") if form == "token" else f"Bearer {token('alice')}"
    async with GraphQLWS.connect(server.ws_url, init=False) as client:
        await client.send({"type": "connection_init", "payload": {form: value}})
        assert (await client.receive())["type"] == "connection_ack"
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})
        assert (await client.next_data("1", "priceUpdates"))["market"] == "ETH-PERP"


async def test_a_socket_closes_4403_when_its_token_expires(server: ServerProcess) -> None:
    async with GraphQLWS.connect(server.ws_url, init=False) as client:
        await client.send({"type": "connection_init", "payload": {"token": token("bob", ttl_s=2)}})
        assert (await client.receive())["type"] == "connection_ack"
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await client.next_data("1", "priceUpdates")
        started = time.monotonic()
        assert await client.closed(timeout=5) == (4403, "Forbidden: token expired")
        assert time.monotonic() - started < 3


def test_the_token_command_mints_what_the_server_accepts(server: ServerProcess) -> None:
    minted = subprocess.run(
        [sys.executable, "-m", "api.cli", "token", "--sub", "carol", "--role", "admin"],
        env={**os.environ, "JWT_SECRET": TEST_JWT_SECRET},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    response = httpx.post(server.url, json=MARKETS, headers={"authorization": f"Bearer {minted}"})
    assert response.status_code == 200
    bad_ttl = subprocess.run(
        [sys.executable, "-m", "api.cli", "token", "--sub", "carol", "--ttl", "forever"],
        env={**os.environ, "JWT_SECRET": TEST_JWT_SECRET},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_ttl.returncode == 2
    assert "such as 1h" in bad_ttl.stderr


async def test_a_refusal_naming_a_long_foreign_value_still_closes_4403(
    server: ServerProcess,
) -> None:
    """The reason is cut to the 123 bytes a close frame carries, whatever the characters."""
    forged = mint(TEST_JWT_SECRET, sub="alice", role=Role.USER, ttl=timedelta(minutes=5))
    claims = jwt.decode(forged, TEST_JWT_SECRET, algorithms=["HS256"])
    odd = jwt.encode({**claims, "role": "é" * 100}, TEST_JWT_SECRET, algorithm="HS256")
    async with GraphQLWS.connect(server.ws_url, init=False) as client:
        await client.send({"type": "connection_init", "payload": {"token": odd}})
        code, reason = await client.closed()
    assert code == 4403
    assert reason.startswith("Forbidden: unknown role 'éééé")
    assert len(reason.encode()) <= 123


def test_serve_refuses_a_key_it_cannot_use(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_text("not a key")
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env={**os.environ, "JWT_PUBLIC_KEY_FILE": str(key_file)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "the JWT key cannot be used" in result.stderr


async def test_an_sse_stream_ends_when_its_token_expires(server: ServerProcess) -> None:
    started = time.monotonic()
    events: list[tuple[str, str]] = []
    async with (
        httpx.AsyncClient(timeout=10) as http,
        price_sse(http, server, "BTC-PERP", token("dave", ttl_s=2)) as source,
    ):
        async for sse in source.aiter_sse():
            events.append((sse.event, sse.data))
            if sse.event == "complete":
                break
    assert time.monotonic() - started < 4
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "next"
    assert kinds[-1] == "complete"
    last = orjson.loads(events[-2][1])
    assert last["errors"][0]["extensions"] == {"code": "TOKEN_EXPIRED"}
    # Less than TOKEN_RENEW_NOTICE_S was left from the start: the expiry notice came first.
    notice = orjson.loads(events[0][1])
    assert notice["data"] is None
    assert 0 < notice["extensions"]["tokenExpiresInS"] <= 2
    assert "errors" not in notice


@pytest.mark.parametrize("transport", ["sse", "multipart"])
async def test_an_http_stream_gets_the_expiry_notice_on_time_and_goes_on(
    server: ServerProcess, transport: str
) -> None:
    """TOKEN_RENEW_NOTICE_S (60 s) before its token expires, an SSE or multipart subscription
    gets a result of its own whose extensions say how long is left (what a WebSocket gets as a
    ping), and the stream goes on: a 61.5 s token gets it about 1.5 s in."""
    accept = {"sse": "text/event-stream", "multipart": "multipart/mixed;subscriptionSpec=1.0"}
    started = time.monotonic()
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "POST",
            server.url,
            json={"query": PRICE_SUBSCRIPTION, "variables": {"m": "ETH-PERP"}},
            headers={
                "accept": accept[transport],
                "authorization": f"Bearer {token('erin', ttl_s=61.5)}",
            },
        ) as response,
    ):
        assert response.status_code == 200
        body = ""
        async for chunk in response.aiter_text():
            body += chunk
            if "tokenExpiresInS" in body:
                break
        arrived = time.monotonic() - started
    assert 0.5 < arrived < 4, arrived
    if transport == "sse":
        data = [
            line.removeprefix("data: ") for line in body.splitlines() if line.startswith("data: ")
        ]
        results = [orjson.loads(d) for d in data]
    else:
        results = [p["payload"] for p in parse_multipart(body) if "payload" in p]
    notice = results[-1]
    assert notice["data"] is None
    assert "errors" not in notice
    assert 58 <= notice["extensions"]["tokenExpiresInS"] <= 61
    assert notice["extensions"]["tokenExpiresAt"].startswith("20")
