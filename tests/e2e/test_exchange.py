"""The exchange live dashboard over a real socket: an order with take-profit and stop-loss, its
fill, position and balance arriving live; the price through the take-profit; refusals; retries."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import isolated_server
from tests.e2e.support import (
    ENGINE,
    ORDER,
    PLACE,
    call,
    error_code,
    messages_until,
    of_type,
    set_price,
)
from tests.support import GraphQLWS, ServerProcess, token

if TYPE_CHECKING:
    from collections.abc import Iterator

D = Decimal
LIVE = (
    "subscription { liveDashboard { __typename "
    "... on BalanceUpdate { balance { walletBalance unrealizedPnl realizedPnl totalFeesPaid "
    "netBalance availableBalance } } "
    "... on PaperPositionsUpdate { positions { symbol side size entryPrice markPrice "
    "unrealizedPnl leverage liquidationPrice } } "
    "... on OrdersUpdate { changed { " + ORDER + " } fills { orderId price fee realizedPnl } "
    "openOrders { id type } } } }"
)


@pytest.fixture(scope="module")
def exchange_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with isolated_server(
        database_url, ENGINE, tmp_path_factory.mktemp("exchange") / "server.log"
    ) as process:
        yield process


async def test_an_order_with_tp_and_sl_lives_on_the_dashboard(
    exchange_server: ServerProcess,
) -> None:
    await set_price(exchange_server, "ETH-PERP", "3000")
    nina = token("nina")
    async with GraphQLWS.connect(exchange_server.ws_url, token=nina) as client:
        await client.subscribe("d", LIVE)
        first = await messages_until(client, lambda ms: len(ms) >= 3)
        [balance] = of_type(first, "BalanceUpdate")
        assert balance["balance"]["walletBalance"] == "10000"
        assert of_type(first, "PaperPositionsUpdate")[0]["positions"] == []

        # 2 ETH long at 3,000 (fee 0.05%: 3), take profit 3,300, stop loss 2,850.
        placed = await call(
            exchange_server,
            PLACE,
            {
                "i": {
                    "symbol": "ETH-PERP",
                    "side": "BUY",
                    "type": "MARKET",
                    "quantity": "2",
                    "takeProfit": "3300",
                    "stopLoss": "2850",
                    "clientOrderId": "nina-1",
                }
            },
            nina,
        )
        assert "errors" not in placed, placed
        order = placed["data"]["placeOrder"]["order"]
        assert (order["status"], order["averagePrice"]) == ("FILLED", "3000")
        tp, sl = placed["data"]["placeOrder"]["children"]
        assert (tp["type"], tp["price"], tp["active"]) == ("TAKE_PROFIT", "3300", True)
        assert (sl["type"], sl["price"]) == ("STOP_LOSS", "2850")

        def filled(messages: list[dict[str, Any]]) -> bool:
            return bool(of_type(messages, "OrdersUpdate")) and bool(
                of_type(messages, "BalanceUpdate")
            )

        live = await messages_until(client, filled)
        [orders] = of_type(live, "OrdersUpdate")
        assert {o["id"] for o in orders["changed"]} == {order["id"], tp["id"], sl["id"]}
        assert orders["fills"] == [
            {"orderId": order["id"], "price": "3000", "fee": "3.000000", "realizedPnl": "-3.000000"}
        ]
        assert {o["id"] for o in orders["openOrders"]} == {tp["id"], sl["id"]}
        [position] = of_type(live, "PaperPositionsUpdate")[-1]["positions"]
        assert (position["side"], position["size"], position["entryPrice"]) == ("LONG", "2", "3000")
        assert of_type(live, "BalanceUpdate")[-1]["balance"]["walletBalance"] == "9997.000000"

        # A retry with the same client order id places nothing.
        again = await call(
            exchange_server,
            PLACE,
            {
                "i": {
                    "symbol": "ETH-PERP",
                    "side": "BUY",
                    "type": "MARKET",
                    "quantity": "2",
                    "takeProfit": "3300",
                    "stopLoss": "2850",
                    "clientOrderId": "nina-1",
                }
            },
            nina,
        )
        assert again["data"]["placeOrder"]["duplicate"] is True
        assert again["data"]["placeOrder"]["order"]["id"] == order["id"]

        # The price through the take-profit: sold at 3,300, the stop-loss canceled, flat.
        await set_price(exchange_server, "ETH-PERP", "3310")

        def closed(messages: list[dict[str, Any]]) -> bool:
            updates = of_type(messages, "PaperPositionsUpdate")
            balances = of_type(messages, "BalanceUpdate")
            return (
                bool(of_type(messages, "OrdersUpdate"))
                and bool(updates)
                and not updates[-1]["positions"]
                and bool(balances)
                and balances[-1]["balance"]["walletBalance"] != "9997.000000"
            )

        after = await messages_until(client, closed)
        [triggered] = of_type(after, "OrdersUpdate")
        statuses = {o["id"]: o["status"] for o in triggered["changed"]}
        assert statuses == {tp["id"]: "FILLED", sl["id"]: "CANCELED"}
        [fill] = triggered["fills"]
        assert fill["orderId"] == tp["id"]
        assert triggered["openOrders"] == []
        # 2 x (3,310 - 3,000) = 620 gross, fee 0.05% of 6,620 = 3.31
        assert D(fill["realizedPnl"]) == D("620") - D("3.31")
        wallet = of_type(after, "BalanceUpdate")[-1]["balance"]["walletBalance"]
        assert D(wallet) == D(10000) - 3 + D("616.69")

    account = await call(
        exchange_server,
        "{ paperAccount { balance { walletBalance } orderHistory { id status } "
        "fills { orderId } } }",
        bearer=nina,
    )
    history = {o["id"]: o["status"] for o in account["data"]["paperAccount"]["orderHistory"]}
    assert history == {order["id"]: "FILLED", tp["id"]: "FILLED", sl["id"]: "CANCELED"}
    assert len(account["data"]["paperAccount"]["fills"]) == 2


@pytest.mark.parametrize(
    ("order", "code"),
    [
        ({"symbol": "DOGE-PERP"}, "UNKNOWN_MARKET"),
        ({"quantity": "0"}, "INVALID_QUANTITY"),
        ({"quantity": "100"}, "INSUFFICIENT_BALANCE"),
        ({"stopLoss": "3100"}, "INVALID_STOP_LOSS"),
        ({"takeProfit": "2900"}, "INVALID_TAKE_PROFIT"),
        ({"type": "LIMIT"}, "INVALID_PRICE"),
    ],
)
async def test_bad_orders_are_refused(
    exchange_server: ServerProcess, order: dict[str, Any], code: str
) -> None:
    await set_price(exchange_server, "ETH-PERP", "3000")
    request = {"symbol": "ETH-PERP", "side": "BUY", "type": "MARKET", "quantity": "1", **order}
    body = await call(exchange_server, PLACE, {"i": request}, token("oscar"))
    assert error_code(body) == code, body
    account = await call(
        exchange_server,
        "{ paperAccount { openOrders { id } positions { symbol } } }",
        bearer=token("oscar"),
    )
    assert account["data"]["paperAccount"] == {"openOrders": [], "positions": []}


async def test_the_dashboard_is_for_its_owner(exchange_server: ServerProcess) -> None:
    anonymous = await call(exchange_server, "{ paperAccount { balance { walletBalance } } }")
    assert error_code(anonymous) == "UNAUTHENTICATED"
    service = await call(
        exchange_server,
        "{ paperAccount { balance { walletBalance } } }",
        bearer=token("indexer", "service"),
    )
    assert error_code(service) == "FORBIDDEN"
    cancel = await call(
        exchange_server, 'mutation { cancelOrder(orderId: "1") { id } }', bearer=token("pia")
    )
    assert error_code(cancel) == "ORDER_NOT_FOUND"
