"""The fan-out fast path through real sockets: shared execution is invisible to every subscriber."""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

import httpx
import orjson
import pytest_asyncio
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from tests.conftest import isolated_database
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, stats, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest

SLOW_OPERATIONS = 1000
"""Enough results a second (with 50 prices/s) to fill the kernel's socket buffers in a second."""

INLINE_BTC = 'subscription { priceUpdates(market: "BTC-PERP") { market sequence } }'


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fanout_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServerProcess]:
    """A server whose feed is the only one in its database, so a fast reader sees sequences
    without gaps."""
    async with isolated_database(database_url) as url:
        server = ServerProcess(
            {"DATABASE_URL": url, "PRICE_FEED_HZ": "10"},
            tmp_path_factory.mktemp("fanout") / "server.log",
        ).start()
        yield server
        server.stop()


async def collect(client: GraphQLWS, ids: set[str], per_id: int) -> dict[str, list[int]]:
    """Sequences received per operation id until each has ``per_id``; every message is checked to
    belong to one of ``ids``."""
    seen: dict[str, list[int]] = {i: [] for i in ids}
    for _ in range(per_id * len(ids) * 4):
        if min(len(v) for v in seen.values()) >= per_id:
            break
        message = await client.receive()
        assert message["type"] == "next", message
        assert message["id"] in ids, message
        seen[message["id"]].append(message["payload"]["data"]["priceUpdates"]["sequence"])
    return seen


async def test_grouped_subscribers_each_get_every_event_once_with_their_own_id(
    fanout_server: ServerProcess,
) -> None:
    async with (
        GraphQLWS.connect(fanout_server.ws_url) as a,
        GraphQLWS.connect(fanout_server.ws_url) as b,
    ):
        await a.subscribe("a1", INLINE_BTC)
        await a.subscribe("a2", INLINE_BTC)
        await b.subscribe("a1", INLINE_BTC)  # the same id on another socket is another subscriber
        seen_a, seen_b = await asyncio.gather(collect(a, {"a1", "a2"}, 8), collect(b, {"a1"}, 8))
        snapshot = stats(fanout_server)
    streams = [seen_a["a1"], seen_a["a2"], seen_b["a1"]]
    for sequences in streams:
        assert sequences == sorted(set(sequences)), "an event twice or out of order"
    # Fast readers of one group see the same events: from the latest common start, identical.
    start = max(s[0] for s in streams)
    tails = [[q for q in s if q >= start][:5] for s in streams]
    assert tails[0] == tails[1] == tails[2]
    assert tails[0] == list(range(start, start + 5)), "events skipped for a fast reader"
    assert snapshot["groups"] == 1
    assert snapshot["groupMembers"] == 3
    assert snapshot["webSocketsWrittenDirectly"] == 2


async def test_different_variables_or_documents_never_share(fanout_server: ServerProcess) -> None:
    async with (
        GraphQLWS.connect(fanout_server.ws_url) as a,
        GraphQLWS.connect(fanout_server.ws_url) as b,
    ):
        for market in ("BTC-PERP", "ETH-PERP", "SOL-PERP"):
            await a.subscribe(market, PRICE_SUBSCRIPTION, {"m": market})
        await b.subscribe("eth", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})
        await b.subscribe("inline", INLINE_BTC)
        got: dict[str, set[str]] = {}
        for client, count in ((a, 15), (b, 10)):
            for _ in range(count):
                message = await client.receive()
                got.setdefault(message["id"], set()).add(
                    message["payload"]["data"]["priceUpdates"]["market"]
                )
        snapshot = stats(fanout_server)
    for market in ("BTC-PERP", "ETH-PERP", "SOL-PERP"):
        assert got[market] == {market}
    assert got["eth"] == {"ETH-PERP"}
    assert got.get("inline", {"BTC-PERP"}) == {"BTC-PERP"}
    # BTC, ETH (shared by a and b), SOL, and the inline document on its own.
    assert snapshot["groups"] == 4
    assert snapshot["groupMembers"] == 5


async def test_sse_multipart_and_websocket_share_one_execution(
    fanout_server: ServerProcess,
) -> None:
    variables = {"m": "SOL-PERP"}
    body = {"query": PRICE_SUBSCRIPTION, "variables": variables}
    async with (
        GraphQLWS.connect(fanout_server.ws_url) as ws,
        httpx.AsyncClient(timeout=10) as http,
        aconnect_sse(http, "POST", fanout_server.url, json=body) as sse,
        http.stream(
            "POST",
            fanout_server.url,
            json=body,
            headers={"accept": "multipart/mixed;subscriptionSpec=1.0,application/json"},
        ) as multipart,
    ):
        await ws.subscribe("1", PRICE_SUBSCRIPTION, variables)
        events = sse.aiter_sse()
        sse_prices = [orjson.loads((await anext(events)).data) for _ in range(3)]
        ws_prices = [await ws.next_data("1", "priceUpdates") for _ in range(3)]
        chunks = multipart.aiter_text()
        text = ""
        while text.count('"payload"') < 2:
            text += await anext(chunks)
        snapshot = stats(fanout_server)
    assert {p["data"]["priceUpdates"]["market"] for p in sse_prices} == {"SOL-PERP"}
    assert {p["market"] for p in ws_prices} == {"SOL-PERP"}
    assert '"market":"SOL-PERP"' in text
    assert snapshot["groups"] == 1
    assert snapshot["groupMembers"] == 3


async def test_a_late_joiner_gets_the_current_state_at_once(
    fanout_server: ServerProcess, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With no feed running, a second identical subscriber still gets the group's last result."""
    quiet = ServerProcess(
        {"DATABASE_URL": database_url, "SIMULATED_FEEDS": "0"},
        tmp_path_factory.mktemp("quiet") / "server.log",
    ).start()
    try:
        if (await asyncio.to_thread(quiet.graphql, '{ price(market: "BTC-PERP") { price } }'))[
            "data"
        ]["price"] is None:  # a database no feed has written to yet: give it one price
            await _publish_price(quiet, "BTC-PERP", "65000")
        async with (
            GraphQLWS.connect(quiet.ws_url) as first,
            GraphQLWS.connect(quiet.ws_url) as late,
        ):
            await first.subscribe("1", INLINE_BTC)
            current = await first.next_data("1", "priceUpdates")
            await late.subscribe("9", INLINE_BTC)
            assert await late.next_data("9", "priceUpdates") == current
            assert stats(quiet)["groups"] == 1
    finally:
        quiet.stop()


async def test_a_slow_reader_is_conflated_while_a_fast_one_gets_everything(
    isolated_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A client that stops reading makes the server buffer at most its bound, gets the newest
    prices when it reads again, and costs a fast client on the same server nothing.

    (close_timeout=1: the websockets client stops reading while 16 messages wait unread, so it
    would wait its default 10 s for a close frame that sits behind them.)"""
    server = ServerProcess(
        {
            # Its own database: no other server's feed takes sequence numbers of its topics.
            "DATABASE_URL": isolated_database_url,
            "PRICE_FEED_HZ": "50",
            "MAX_SUBSCRIPTIONS_PER_CONNECTION": str(SLOW_OPERATIONS),
            "SUBSCRIBE_BURST": str(SLOW_OPERATIONS),
        },
        tmp_path_factory.mktemp("slow") / "server.log",
    ).start()
    try:
        # A client that reads nothing until told (max_queue=1: its library stops reading too).
        async with (
            connect(
                server.ws_url,
                subprotocols=[Subprotocol("graphql-transport-ws")],
                compression=None,
                max_queue=1,
                close_timeout=1,
            ) as ws,
            GraphQLWS.connect(server.ws_url, close_timeout=1) as fast,
        ):
            slow = GraphQLWS(ws)
            await slow.send({"type": "connection_init"})
            assert (await slow.receive())["type"] == "connection_ack"
            for i in range(SLOW_OPERATIONS):
                await slow.subscribe(str(i), PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
            await fast.subscribe("f", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
            fast_sequences = [(await fast.next_data("f", "priceUpdates"))["sequence"]]
            for _ in range(200):  # about 4 s at 50 events/s
                fast_sequences.append((await fast.next_data("f", "priceUpdates"))["sequence"])
            snapshot = stats(server)
            assert snapshot["conflated"] > 0, "the slow reader never fell behind"
            assert snapshot["maxPendingBytes"] <= SLOW_OPERATIONS * 200, "a backlog"

            slow_sequences: dict[str, list[int]] = {}
            for _ in range(200_000):  # bounded: the reader catches up in a few seconds
                message = await slow.receive()
                assert message["type"] == "next", message
                slow_sequences.setdefault(message["id"], []).append(
                    message["payload"]["data"]["priceUpdates"]["sequence"]
                )
                caught_up = min(s[-1] for s in slow_sequences.values()) >= fast_sequences[-1]
                if caught_up and len(slow_sequences) == SLOW_OPERATIONS:
                    break
    finally:
        server.stop()
    assert fast_sequences == list(range(fast_sequences[0], fast_sequences[0] + 201))
    for sequences in slow_sequences.values():
        assert sequences == sorted(set(sequences)), "a slow reader saw a price go backwards"
    gaps = [b - a for s in slow_sequences.values() for a, b in itertools.pairwise(s)]
    assert max(gaps) > 1, "the slow reader was sent every intermediate price"
    assert len(slow_sequences) == SLOW_OPERATIONS


async def _publish_price(server: ServerProcess, market: str, price: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            server.url,
            json={
                "query": "mutation($m: String!, $p: Decimal!) { publishPrice(market: $m, "
                "price: $p) { sequence } }",
                "variables": {"m": market, "p": price},
            },
            headers={"authorization": f"Bearer {token('oracle', 'service')}"},
        )
    assert "errors" not in response.json(), response.text
