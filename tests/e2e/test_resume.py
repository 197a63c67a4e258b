"""Resuming subscriptions over real sockets: a client that reconnects with the cursor of the last
event it saw gets every event since, in order, then live ones, with no gap and no duplicate; one
whose events are no longer kept (or whose cursor is of another numbering) gets a StreamReset and
the current state; a cursor the server never gave out is a clear error."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import pytest

from tests.conftest import isolated_database, isolated_server
from tests.e2e.support import ENGINE, MODIFY, call, messages_until, open_position, set_price
from tests.support import GraphQLWS, ServerProcess, parse_multipart, token

if TYPE_CHECKING:
    from collections.abc import Iterator

KEPT_POSITION_EVENTS = 4

POSITIONS = (
    "subscription($after: String) { positions(after: $after) { __typename "
    "... on Resumable { cursor } "
    "... on PositionsUpdate { positions { id size } } "
    "... on PositionOpened { position { id size } } "
    "... on PositionModified { position { id size } } "
    "... on StreamReset { reason } } }"
)
ROUNDS = (
    "subscription($after: String) { rounds(after: $after) { __typename "
    "... on Round { number settledAt cursor } ... on StreamReset { reason cursor } } }"
)
LIVE = (
    "subscription($after: String) { liveDashboard(after: $after) { __typename "
    "... on Resumable { cursor } ... on OrdersUpdate { changed { clientOrderId status } } "
    "... on StreamReset { reason } } }"
)
DASHBOARD = (
    "subscription($after: String) { dashboardUpdates(after: $after) { __typename "
    "... on Resumable { cursor } ... on TradeExecuted { asset amount } "
    "... on StreamReset { reason } } }"
)
PLACE = (
    "mutation($i: PlaceOrderInput!) { placeOrder(input: $i) { order { status clientOrderId } } }"
)


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with isolated_server(
        database_url,
        {
            **ENGINE,
            "MUTATION_BURST": "100",
            "MARTINGALE_ROUND_PERIOD_S": "0.4",
            "HISTORY_LIMITS": f"positions={KEPT_POSITION_EVENTS}/86400",
            "HISTORY_PRUNE_INTERVAL_S": "0.1",
            "PERPS_INITIAL_BALANCE": "100000",  # rosa grows her 1 BTC at 10x to 2.75 BTC
        },
        tmp_path_factory.mktemp("resume") / "server.log",
    ) as process:
        yield process


def data(messages: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    return [m["payload"]["data"][field] for m in messages if m.get("type") == "next"]


def sequence(cursor: str) -> int:
    return int(cursor.split(".")[0])


async def subscribe_until(
    server: ServerProcess,
    bearer: str | None,
    query: str,
    field: str,
    after: str | None,
    done: Any,
) -> list[dict[str, Any]]:
    """Connect, subscribe (resuming ``after``), and return what arrived until ``done`` holds."""
    async with GraphQLWS.connect(server.ws_url, token=bearer) as client:
        await client.subscribe("s", query, {"after": after})
        messages = await messages_until(client, lambda ms: done(data(ms, field)))
        return data(messages, field)


def has(typename: str, count: int = 1) -> Any:
    return lambda items: sum(i["__typename"] == typename for i in items) >= count


async def test_a_reconnecting_client_gets_every_position_event_it_missed_then_live_ones(
    server: ServerProcess,
) -> None:
    await set_price(server, "BTC-PERP", "50000")
    user = token("rosa")
    first = await subscribe_until(
        server, user, POSITIONS, "positions", None, has("PositionsUpdate")
    )
    assert first == [
        {"__typename": "PositionsUpdate", "cursor": first[0]["cursor"], "positions": []}
    ]
    seen = first[0]["cursor"]

    # While the client is away: a position opened and modified twice.
    opened = await open_position(server, "rosa", "BTC-PERP", "LONG", "1", "10")
    for size in ("0.5", "0.25"):
        body = await call(
            server, MODIFY, {"i": {"positionId": opened["id"], "sizeDelta": size}}, user
        )
        assert "errors" not in body, body

    async with GraphQLWS.connect(server.ws_url, token=user) as client:
        await client.subscribe("s", POSITIONS, {"after": seen})
        resumed = data(
            await messages_until(client, lambda ms: has("PositionsUpdate")(data(ms, "positions"))),
            "positions",
        )
        assert [r["__typename"] for r in resumed] == [
            "PositionOpened",
            "PositionModified",
            "PositionModified",
            "PositionsUpdate",
        ]
        assert [r["position"]["size"] for r in resumed[:3]] == ["1", "1.5", "1.75"]
        cursors = [sequence(r["cursor"]) for r in resumed]
        assert cursors == [sequence(seen) + 1, sequence(seen) + 2, sequence(seen) + 3] * 1 + [
            sequence(seen) + 3
        ]
        assert resumed[-1]["positions"] == [{"id": opened["id"], "size": "1.75"}]

        # Then live, numbered on from there.
        body = await call(
            server, MODIFY, {"i": {"positionId": opened["id"], "sizeDelta": "1"}}, user
        )
        assert "errors" not in body, body
        live = data(
            await messages_until(client, lambda ms: has("PositionModified")(data(ms, "positions"))),
            "positions",
        )
        modified = next(m for m in live if m["__typename"] == "PositionModified")
        assert modified["position"]["size"] == "2.75"
        assert sequence(modified["cursor"]) == sequence(seen) + 4
        last = modified["cursor"]

    # Resuming at the newest cursor replays nothing: only the current positions.
    again = await subscribe_until(
        server, user, POSITIONS, "positions", last, has("PositionsUpdate")
    )
    assert [a["__typename"] for a in again] == ["PositionsUpdate"]
    assert again[0]["cursor"] == last


async def test_a_client_further_behind_than_the_history_gets_a_reset_and_the_state(
    server: ServerProcess,
) -> None:
    await set_price(server, "ETH-PERP", "3000")
    user = token("sven")
    first = await subscribe_until(
        server, user, POSITIONS, "positions", None, has("PositionsUpdate")
    )
    seen = first[0]["cursor"]
    opened = await open_position(server, "sven", "ETH-PERP", "SHORT", "1", "5")
    for _ in range(KEPT_POSITION_EVENTS + 1):
        body = await call(
            server, MODIFY, {"i": {"positionId": opened["id"], "sizeDelta": "0.1"}}, user
        )
        assert "errors" not in body, body
    await asyncio.sleep(0.5)  # the pruner runs every 0.1 s

    resumed = await subscribe_until(
        server, user, POSITIONS, "positions", seen, has("PositionsUpdate")
    )
    assert [r["__typename"] for r in resumed] == ["StreamReset", "PositionsUpdate"]
    assert resumed[0]["reason"] == "HISTORY_EXPIRED"
    assert resumed[1]["positions"] == [{"id": opened["id"], "size": "1.5"}]
    assert sequence(resumed[1]["cursor"]) == sequence(seen) + KEPT_POSITION_EVENTS + 2
    assert resumed[0]["cursor"] == resumed[1]["cursor"]


async def test_a_cursor_of_another_numbering_gets_a_reset(server: ServerProcess) -> None:
    user = token("tove")
    resumed = await subscribe_until(
        server, user, POSITIONS, "positions", "7.0123456789", has("PositionsUpdate")
    )
    assert [(r["__typename"], r.get("reason")) for r in resumed] == [
        ("StreamReset", "HISTORY_RESET"),
        ("PositionsUpdate", None),
    ]


@pytest.mark.parametrize(
    ("after", "problem"),
    [
        ("not a cursor", "is not a cursor this server gave out"),
        ("1.abc_2.def", "not a cursor of this subscription"),
        ("-1.abc", "is not a cursor this server gave out"),
    ],
)
async def test_a_cursor_the_server_never_gave_out_is_refused(
    server: ServerProcess, after: str, problem: str
) -> None:
    async with GraphQLWS.connect(server.ws_url, token=token("ulla")) as client:
        await client.subscribe("bad", POSITIONS, {"after": after})
        message = await client.receive()
        assert message["id"] == "bad"
        errors = message["payload"] if message["type"] == "error" else message["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "INVALID_CURSOR"
        assert problem in errors[0]["message"]
        # The connection is still good for a valid subscription.
        await client.subscribe("good", POSITIONS, {"after": None})
        assert (await client.next_data("good", "positions"))["__typename"] == "PositionsUpdate"


async def test_rounds_missed_while_away_are_replayed_in_order(server: ServerProcess) -> None:
    first = await subscribe_until(server, None, ROUNDS, "rounds", None, has("Round"))
    seen = first[0]["cursor"]
    await asyncio.sleep(1.5)  # a few rounds open and settle meanwhile (0.4 s each)
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("r", ROUNDS, {"after": seen})
        messages = await messages_until(client, lambda ms: len(data(ms, "rounds")) >= 6)
        rounds = data(messages, "rounds")
    assert all(r["__typename"] == "Round" for r in rounds)
    cursors = [sequence(r["cursor"]) for r in rounds]
    assert cursors == list(range(sequence(seen) + 1, sequence(seen) + 1 + len(rounds)))
    # Each round opens and is settled; numbers never go back.
    numbers = [r["number"] for r in rounds]
    assert numbers == sorted(numbers)
    assert any(r["settledAt"] is not None for r in rounds)


async def test_the_paper_account_and_dashboard_replay_orders_and_trades_made_while_away(
    server: ServerProcess,
) -> None:
    await set_price(server, "SOL-PERP", "150")
    user = token("vera")
    live = await subscribe_until(server, user, LIVE, "liveDashboard", None, has("OrdersUpdate"))
    dash = await subscribe_until(
        server, user, DASHBOARD, "dashboardUpdates", None, lambda items: len(items) >= 1
    )
    live_seen = live[-1]["cursor"]
    dash_seen = dash[-1]["cursor"]
    for n in (1, 2):
        order = {
            "symbol": "SOL-PERP",
            "side": "BUY",
            "type": "MARKET",
            "quantity": str(n),
            "clientOrderId": f"vera-{n}",
        }
        placed = await call(server, PLACE, {"i": order}, user)
        assert "errors" not in placed, placed

    live_resumed = await subscribe_until(
        server, user, LIVE, "liveDashboard", live_seen, has("BalanceUpdate")
    )
    orders = [r for r in live_resumed if r["__typename"] == "OrdersUpdate"]
    assert [o["changed"] for o in orders] == [
        [{"clientOrderId": "vera-1", "status": "FILLED"}],
        [{"clientOrderId": "vera-2", "status": "FILLED"}],
    ]
    assert "StreamReset" not in {r["__typename"] for r in live_resumed}

    dash_resumed = await subscribe_until(
        server, user, DASHBOARD, "dashboardUpdates", dash_seen, has("TradeExecuted", 2)
    )
    trades = [r for r in dash_resumed if r["__typename"] == "TradeExecuted"]
    assert [(t["asset"], t["amount"]) for t in trades] == [("SOL-PERP", "1"), ("SOL-PERP", "2")]
    assert "StreamReset" not in {r["__typename"] for r in dash_resumed}
    # The dashboard's cursor covers two streams (its own and the paper account's).
    assert dash_resumed[-1]["cursor"].count("_") == 1


MULTIPART = "multipart/mixed;subscriptionSpec=1.0,application/json"


async def resumed_over_http(
    server: ServerProcess, accept: str, after: str, count: int
) -> list[dict[str, Any]]:
    """``rounds`` resumed after ``after`` over SSE or multipart: the first ``count`` results (or
    fewer, if the stream ends first)."""
    results: list[dict[str, Any]] = []
    body = {"query": ROUNDS, "variables": {"after": after}}
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("POST", server.url, json=body, headers={"accept": accept}) as response,
    ):
        assert response.status_code == 200
        text = ""
        async for chunk in response.aiter_text():
            text += chunk
            if accept == MULTIPART:
                parts = [p["payload"] for p in parse_multipart(text) if "payload" in p]
            else:
                parts = [
                    orjson.loads(line.removeprefix("data: "))
                    for line in text.split("\r\n")
                    if line.startswith("data: ") and line.endswith("}")
                ]
            results = parts
            if len(results) >= count or any("errors" in r for r in results):
                break
    return results[:count]


@pytest.mark.parametrize("accept", ["text/event-stream", MULTIPART], ids=["sse", "multipart"])
async def test_an_http_stream_resumes_further_behind_than_its_queue_holds(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, accept: str
) -> None:
    """The replay of what a client missed comes out of the history at once; an SSE or multipart
    subscriber whose queue holds four results still gets all of it, paced by its own reading
    (it was ended SUBSCRIBER_LAGGED as soon as it had missed more than the queue holds)."""
    env = {**ENGINE, "SUBSCRIBER_QUEUE_SIZE": "4", "MARTINGALE_ROUND_PERIOD_S": "0.05"}
    async with isolated_database(database_url) as url:
        log = tmp_path_factory.mktemp("paced") / "server.log"
        server = ServerProcess({**env, "DATABASE_URL": url}, log).start()
        try:
            first = await subscribe_until(server, None, ROUNDS, "rounds", None, has("Round"))
            seen = first[-1]["cursor"]
            await asyncio.sleep(1.0)  # about forty events (two a round, a round each 0.05 s)
            rounds = await resumed_over_http(server, accept, seen, 30)
        finally:
            server.stop()
    assert all("errors" not in r for r in rounds), rounds[-1]
    cursors = [sequence(r["data"]["rounds"]["cursor"]) for r in rounds]
    assert cursors == list(range(sequence(seen) + 1, sequence(seen) + 31))
