"""A user whose exchange is a venue account (EXCHANGE_ACCOUNTS) through real ccxt, against the
Binance USD-M stand-in (tests/standins/binance_usdm.py) speaking Binance's wire formats: the live
dashboard follows balance, position and order changes from the user-data stream, resyncs after a
dropped socket, an order with TP/SL lands as three venue orders, a retry places nothing, each
venue error has its code while a paper user beside is served, and the credentials never show."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import isolated_server
from tests.e2e.support import ENGINE, PLACE, call, error_code, messages_until, of_type, set_price
from tests.standins.binance_usdm import (
    API_KEY,
    INSUFFICIENT_MARGIN,
    RATE_LIMITED,
    SECRET,
    UNAVAILABLE,
    BinanceStandIn,
)
from tests.support import GraphQLWS, ServerProcess, sample, scrape, token

if TYPE_CHECKING:
    from collections.abc import Iterator

VENUE_USER = "vera"
PAPER_USER = "paul"
BTC = "BTC/USDT:USDT"
LIVE = (
    "subscription { liveDashboard { __typename "
    "... on BalanceUpdate { balance { currency walletBalance unrealizedPnl netBalance "
    "availableBalance } } "
    "... on PaperPositionsUpdate { positions { symbol side size entryPrice markPrice "
    "unrealizedPnl leverage } } "
    "... on OrdersUpdate { changed { id clientOrderId status filled averagePrice } "
    "openOrders { id clientOrderId type } } } }"
)
CANCEL = "mutation($id: ID!) { cancelOrder(orderId: $id) { id status type } }"
SEEN_ERRORS: list[str] = []
"""Every error body the venue user got, for the leak test at the end of the module."""


@pytest.fixture(scope="module")
def standin() -> Iterator[BinanceStandIn]:
    binance = BinanceStandIn().run()
    binance.set_account("1000.00000000", "900.00000000")
    binance.set_position("BTCUSDT", "0.010", "60000", "61000.00", "10.00000000")
    yield binance
    binance.stop()


@pytest.fixture(scope="module")
def venue_server(
    database_url: str, standin: BinanceStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("venue")
    key_file = folder / "binance.key"
    key_file.write_text(API_KEY + "\n")
    accounts = {
        VENUE_USER: {"exchange": "binanceusdm", "apiKeyFile": str(key_file), "secretEnv": "VS"}
    }
    env = {
        **ENGINE,
        "LOG_LEVEL": "debug",  # the most a server logs: the credentials must not be in it
        "EXCHANGE_ACCOUNTS": json.dumps(accounts),
        "CCXT_URL_OVERRIDES": json.dumps(standin.url_overrides()),
        "VS": SECRET,
    }
    with isolated_server(database_url, env, folder / "server.log") as process:
        yield process


def has(typename: str, count: int = 1) -> Any:
    return lambda ms: len(of_type(ms, typename)) >= count


async def wait_for(condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def place(server: ServerProcess, user: str, **fields: Any) -> dict[str, Any]:
    body = await call(server, PLACE, {"i": fields}, token(user))
    if "errors" in body:
        SEEN_ERRORS.append(json.dumps(body))
    return body


async def test_the_dashboard_follows_balance_positions_and_orders(
    venue_server: ServerProcess, standin: BinanceStandIn
) -> None:
    async with GraphQLWS.connect(venue_server.ws_url, token=token(VENUE_USER)) as client:
        await client.subscribe("d", LIVE)
        first = await messages_until(client, has("BalanceUpdate"))
        [orders] = of_type(first, "OrdersUpdate")
        assert orders["openOrders"] == []
        [positions] = of_type(first, "PaperPositionsUpdate")
        assert positions["positions"] == [
            {
                "symbol": BTC,
                "side": "LONG",
                "size": "0.01",
                "entryPrice": "60000",
                "markPrice": "61000",
                "unrealizedPnl": "10",
                "leverage": "10",
            }
        ]
        [balance] = of_type(first, "BalanceUpdate")
        assert balance["balance"] == {
            "currency": "USDT",
            "walletBalance": "1000",
            "unrealizedPnl": "10",
            "netBalance": "1010",
            "availableBalance": "900",
        }
        await wait_for(lambda: standin.user_streams() == 1)

        # A deposit: Binance's ACCOUNT_UPDATE with the new wallet balance.
        assert standin.push(standin.balance_event("1250.50000000")) == 1
        [moved] = of_type(await messages_until(client, has("BalanceUpdate")), "BalanceUpdate")
        assert moved["balance"]["walletBalance"] == "1250.5"

        # The position grows: ACCOUNT_UPDATE's P entry (the event's own shape).
        grown = {"s": "BTCUSDT", "pa": "0.025", "ep": "60400.0", "cr": "0", "up": "15.00",
                 "mt": "cross", "iw": "0", "ps": "BOTH", "bep": "60400.0"}  # fmt: skip
        standin.push(standin.balance_event("1250.50000000", position=grown))
        changed = await messages_until(
            client,
            lambda ms: any(
                p["positions"] and p["positions"][0]["size"] == "0.025"
                for p in of_type(ms, "PaperPositionsUpdate")
            ),
        )
        [now] = of_type(changed, "PaperPositionsUpdate")[-1]["positions"]
        assert (now["symbol"], now["side"], now["size"], now["entryPrice"]) == (
            BTC,
            "LONG",
            "0.025",
            "60400",
        )

        # An order placed through the server, then filled on the venue (ORDER_TRADE_UPDATE).
        placed = await place(
            venue_server,
            VENUE_USER,
            symbol=BTC,
            side="BUY",
            type="LIMIT",
            quantity="0.002",
            price="59000",
            clientOrderId="vera-limit-1",
        )
        assert "errors" not in placed, placed
        assert placed["data"]["placeOrder"]["order"]["status"] == "NEW"
        standin.push(standin.order_event("vera-limit-1", "FILLED", "0.002", "59000"))
        filled = of_type(await messages_until(client, has("OrdersUpdate")), "OrdersUpdate")
        [order] = filled[-1]["changed"]
        assert (order["clientOrderId"], order["status"], order["filled"]) == (
            "vera-limit-1",
            "FILLED",
            "0.002",
        )
        assert order["averagePrice"] == "59000"


async def test_an_order_with_tp_and_sl_lands_as_three_venue_orders(
    venue_server: ServerProcess, standin: BinanceStandIn
) -> None:
    before = len(standin.state.received)
    placed = await place(
        venue_server,
        VENUE_USER,
        symbol=BTC,
        side="BUY",
        type="MARKET",
        quantity="0.01",
        takeProfit="66000",
        stopLoss="57000",
        clientOrderId="vera-tpsl-1",
    )
    assert "errors" not in placed, placed
    result = placed["data"]["placeOrder"]
    assert result["duplicate"] is False
    entry = result["order"]
    assert (entry["clientOrderId"], entry["type"], entry["side"]) == (
        "vera-tpsl-1",
        "MARKET",
        "BUY",
    )
    children = {c["type"]: c for c in result["children"]}
    assert set(children) == {"TAKE_PROFIT", "STOP_LOSS"}
    for child, level in ((children["TAKE_PROFIT"], "66000"), (children["STOP_LOSS"], "57000")):
        assert (child["side"], child["reduceOnly"], child["price"]) == ("SELL", True, level)
        assert child["parentId"] == entry["id"]

    received = standin.state.received[before:]
    assert [(r.via, r.method) for r in received] == [
        ("ws", "order.place"),
        ("ws", "algoOrder.place"),
        ("ws", "algoOrder.place"),
    ]
    entry_params, tp, sl = (r.params for r in received)
    assert (entry_params["type"], entry_params["newClientOrderId"]) == ("MARKET", "vera-tpsl-1")
    assert (tp["type"], tp["triggerPrice"], tp["reduceOnly"], tp["side"]) == (
        "TAKE_PROFIT_MARKET",
        "66000",
        True,
        "SELL",
    )
    assert (sl["type"], sl["triggerPrice"], sl["reduceOnly"], sl["side"]) == (
        "STOP_MARKET",
        "57000",
        True,
        "SELL",
    )

    # A retry with the same clientOrderId places nothing and answers the orders placed.
    again = await place(
        venue_server,
        VENUE_USER,
        symbol=BTC,
        side="BUY",
        type="MARKET",
        quantity="0.01",
        takeProfit="66000",
        stopLoss="57000",
        clientOrderId="vera-tpsl-1",
    )
    assert "errors" not in again, again
    assert again["data"]["placeOrder"]["duplicate"] is True
    assert again["data"]["placeOrder"]["order"]["id"] == entry["id"]
    assert {c["id"] for c in again["data"]["placeOrder"]["children"]} == {
        c["id"] for c in result["children"]
    }
    assert len(standin.state.received) == before + 3

    # The same id for another order is not a retry.
    reused = await place(
        venue_server,
        VENUE_USER,
        symbol=BTC,
        side="BUY",
        type="MARKET",
        quantity="0.02",
        clientOrderId="vera-tpsl-1",
    )
    assert error_code(reused) == "CLIENT_ORDER_ID_REUSED"
    assert len(standin.state.received) == before + 3

    # The stop-loss canceled through the server: a DELETE of the venue's algo order.
    body = await call(venue_server, CANCEL, {"id": children["STOP_LOSS"]["id"]}, token(VENUE_USER))
    assert "errors" not in body, body
    assert body["data"]["cancelOrder"]["status"] == "CANCELED"
    assert "DELETE /fapi/v1/algoOrder" in standin.state.requests


async def test_a_retry_places_the_exit_a_refusal_left_out_and_nothing_else(
    venue_server: ServerProcess, standin: BinanceStandIn
) -> None:
    """The entry and its take-profit placed, the stop-loss refused (the venue busy): the caller
    gets the error and the entry stands unprotected; the same request again places the stop-loss
    alone, and a third time nothing."""
    order = {
        "symbol": BTC,
        "side": "BUY",
        "type": "MARKET",
        "quantity": "0.01",
        "takeProfit": "66000",
        "stopLoss": "57000",
        "clientOrderId": "vera-partial-1",
    }
    standin.state.refused_client_ids["vera-partial-1-sl"] = (503, -1001, "Internal error.")
    before = len(standin.state.received)
    first = await place(venue_server, VENUE_USER, **order)
    assert error_code(first) == "EXCHANGE_UNAVAILABLE"
    placed = [
        r.params.get("newClientOrderId") or r.params.get("clientAlgoId")
        for r in standin.state.received[before:]
    ]
    assert placed == ["vera-partial-1", "vera-partial-1-tp", "vera-partial-1-sl"]
    assert "vera-partial-1-sl" not in standin.state.orders

    again = await place(venue_server, VENUE_USER, **order)
    assert "errors" not in again, again
    result = again["data"]["placeOrder"]
    assert result["duplicate"] is True
    assert {c["type"]: c["clientOrderId"] for c in result["children"]} == {
        "TAKE_PROFIT": "vera-partial-1-tp",
        "STOP_LOSS": "vera-partial-1-sl",
    }
    assert all(c["parentId"] == result["order"]["id"] for c in result["children"])
    retried = standin.state.received[before + 3 :]
    assert [r.params.get("clientAlgoId") for r in retried] == ["vera-partial-1-sl"]
    assert "vera-partial-1-sl" in standin.state.orders

    third = await place(venue_server, VENUE_USER, **order)
    assert third["data"]["placeOrder"]["duplicate"] is True
    assert len(standin.state.received) == before + 4


async def test_a_dropped_socket_reconnects_and_resyncs(
    venue_server: ServerProcess, standin: BinanceStandIn
) -> None:
    async with (
        GraphQLWS.connect(venue_server.ws_url, token=token(VENUE_USER)) as client,
        GraphQLWS.connect(venue_server.ws_url, token=token(VENUE_USER)) as other,
    ):
        await client.subscribe("d", LIVE)
        await other.subscribe("o", LIVE)
        await messages_until(client, has("BalanceUpdate"))
        await messages_until(other, has("BalanceUpdate"))
        await asyncio.sleep(0.5)
        # One venue connection for the user, however many subscriptions.
        await wait_for(lambda: standin.user_streams() == 1)
        listen_keys = standin.state.requests.count("POST /fapi/v1/listenKey")
        reconnects = sample(
            scrape(venue_server), "tradestream_venue_reconnects_total", exchange="binanceusdm"
        )
        # What changes while the socket is down reaches no stream: only the resync can tell.
        standin.drop_sockets()
        standin.set_account("777.00000000", "700.00000000")
        standin.state.positions.clear()
        resynced = await messages_until(
            client,
            lambda ms: any(
                b["balance"]["walletBalance"] == "777" for b in of_type(ms, "BalanceUpdate")
            ),
        )
        assert of_type(resynced, "PaperPositionsUpdate")[-1]["positions"] == []
        assert of_type(resynced, "OrdersUpdate"), "a resync sends the orders whole too"
        await wait_for(lambda: standin.user_streams() == 1)
        # Live again: the next event arrives.
        standin.push(standin.balance_event("778.00000000"))
        for subscriber in (client, other):
            await messages_until(
                subscriber,
                lambda ms: any(
                    b["balance"]["walletBalance"] == "778" for b in of_type(ms, "BalanceUpdate")
                ),
            )
        assert standin.user_streams() == 1
        assert standin.state.requests.count("POST /fapi/v1/listenKey") <= listen_keys + 1
        after = sample(
            scrape(venue_server), "tradestream_venue_reconnects_total", exchange="binanceusdm"
        )
        assert after >= reconnects + 1  # counted by exchange, never by user
    # The last subscription gone, the user-data socket closes.
    await wait_for(lambda: standin.user_streams() == 0)


async def test_a_venue_dashboard_refuses_a_malformed_cursor_and_starts_whole_after_a_good_one(
    venue_server: ServerProcess,
) -> None:
    resume = LIVE.replace("liveDashboard {", "liveDashboard(after: $after) {").replace(
        "subscription {", "subscription($after: String) {"
    )
    async with GraphQLWS.connect(venue_server.ws_url, token=token(VENUE_USER)) as client:
        await client.subscribe("bad", resume, {"after": "not-a-cursor"})
        refused = await client.receive()
        assert refused["type"] == "error", refused
        assert refused["payload"][0]["extensions"]["code"] == "INVALID_CURSOR"
        # A cursor this server gave out (a paper dashboard's) is no venue position: whole again.
        await client.subscribe("d", resume, {"after": "0.0"})
        first = await messages_until(client, has("BalanceUpdate"))
        assert of_type(first, "OrdersUpdate"), first


@pytest.mark.parametrize(
    ("error", "symbol", "code"),
    [
        (INSUFFICIENT_MARGIN, BTC, "INSUFFICIENT_BALANCE"),
        (None, "DELIST/USDT:USDT", "UNKNOWN_SYMBOL"),  # the venue answers -1121
        (None, "NOPE/USDT:USDT", "UNKNOWN_SYMBOL"),  # not among the venue's markets at all
        (RATE_LIMITED, BTC, "RATE_LIMITED"),
        (UNAVAILABLE, BTC, "EXCHANGE_UNAVAILABLE"),
    ],
)
async def test_each_venue_error_has_its_code_and_a_paper_user_is_served(
    venue_server: ServerProcess,
    standin: BinanceStandIn,
    error: tuple[int, int, str] | None,
    symbol: str,
    code: str,
) -> None:
    await set_price(venue_server, "ETH-PERP", "3000")
    async with GraphQLWS.connect(venue_server.ws_url, token=token(PAPER_USER)) as bystander:
        await bystander.subscribe("p", LIVE)
        await messages_until(bystander, has("BalanceUpdate"))
        before = len(standin.state.received)
        standin.state.next_order_error = error
        refused = await place(
            venue_server, VENUE_USER, symbol=symbol, side="BUY", type="MARKET", quantity="0.01"
        )
        standin.state.next_order_error = None
        assert error_code(refused) == code, refused
        message = refused["errors"][0]["message"]
        assert "127.0.0.1" not in message
        assert "signature" not in message
        if symbol == "NOPE/USDT:USDT":
            assert len(standin.state.received) == before  # refused before it left the server

        # The paper user beside: an order placed and seen live, as before.
        paper = await place(
            venue_server, PAPER_USER, symbol="ETH-PERP", side="BUY", type="MARKET", quantity="0.1"
        )
        assert "errors" not in paper, paper
        filled = await messages_until(
            bystander, lambda ms: any(u["changed"] for u in of_type(ms, "OrdersUpdate"))
        )
        [update] = [u for u in of_type(filled, "OrdersUpdate") if u["changed"]]
        assert update["changed"][0]["status"] == "FILLED"


async def test_a_venue_down_for_every_request_is_exchange_unavailable(
    venue_server: ServerProcess, standin: BinanceStandIn
) -> None:
    standin.state.every_request_error = UNAVAILABLE
    try:
        refused = await place(
            venue_server,
            VENUE_USER,
            symbol=BTC,
            side="SELL",
            type="MARKET",
            quantity="0.01",
            clientOrderId="vera-down-1",
        )
    finally:
        standin.state.every_request_error = None
    assert error_code(refused) == "EXCHANGE_UNAVAILABLE"


async def test_the_credentials_never_show(
    venue_server: ServerProcess, standin: BinanceStandIn
) -> None:
    """Last in the module: everything above has run, logged and answered by now."""
    assert API_KEY in standin.state.api_keys_seen  # the server did use them
    assert SEEN_ERRORS, "the error tests ran first"
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"{venue_server.base_url}/metrics")).text
        stats = (await http.get(f"{venue_server.base_url}/stats")).text
    log = venue_server.log()
    assert "venue account" in log or "venue refused" in log, "the venue's logging ran"
    for where, text in (
        ("log", log),
        ("errors", "\n".join(SEEN_ERRORS)),
        ("metrics", metrics),
        ("stats", stats),
    ):
        assert API_KEY not in text, where
        assert SECRET not in text, where
        assert "signature=" not in text, where
