"""A local stand-in for Binance USD-M futures: the REST endpoints, the user-data stream, the market
stream and the WebSocket API that ccxt's ``binanceusdm`` calls, on a real uvicorn (127.0.0.1, a
free port), speaking the real wire formats.

Where each body comes from (field for field; values are ours):

- ``GET /fapi/v1/exchangeInfo``: Binance's "Exchange Information" example (USD-M futures REST,
  Market Data), two perpetuals and one more (``DELISTUSDT``) that the order endpoint refuses
  with -1121, as Binance does for a symbol that stopped trading.
- ``GET /fapi/v2|v3/account``, ``GET /fapi/v2|v3/positionRisk``: "Account Information V3" and
  "Position Information V3" examples (USD-M futures REST, Account).
- ``POST/DELETE/GET /fapi/v1/order``, ``GET /fapi/v1/openOrders``: "New Order", "Cancel Order",
  "Query Order" and "Current All Open Orders" responses (USD-M futures REST, Trade).
- ``POST /fapi/v1/algoOrder``, ``GET /fapi/v1/openAlgoOrders``: "New Algo Order" (conditional
  orders: TAKE_PROFIT_MARKET and STOP_MARKET moved there in December 2025, and ccxt 4.5 sends
  them there).
- ``GET /fapi/v1/leverageBracket``: "Notional and Leverage Brackets" (ccxt reads it to work out
  a position's maintenance margin).
- ``POST/PUT /fapi/v1/listenKey``: "Start/Keepalive User Data Stream".
- the user-data stream (``/private/ws?listenKey=``): ``ACCOUNT_UPDATE`` and
  ``ORDER_TRADE_UPDATE`` events, as in "User Data Streams" (Event: Balance and Position Update,
  Event: Order Update).
- the market stream (``/public/ws``, ``/market/ws``): ``SUBSCRIBE`` requests and their
  ``{"result": null, "id": ...}`` answer, and ``bookTicker`` events ("Individual Symbol Book
  Ticker Streams").
- the WebSocket API (``/ws-fapi/v1``): ``order.place`` and ``algoOrder.place`` requests, answered
  ``{"id", "status": 200, "result": <the REST body>}`` or ``{"id", "status": 400, "error":
  {"code", "msg"}}`` ("WebSocket API General Info").
- errors: ``{"code": -2019, "msg": "Margin is insufficient."}``, ``{"code": -1121, "msg":
  "Invalid symbol."}``, ``{"code": -1003, "msg": "Too many requests; ..."}`` with HTTP 429,
  ``{"code": -1001, "msg": "Internal error; unable to process your request. Please try
  again."}`` with HTTP 503 ("Error Codes" of USD-M futures).

The stand-in checks what a real venue checks that matters here: the ``X-MBX-APIKEY`` header (or
``apiKey`` of a ws-api request) and that every signed request carries a ``signature``; it keeps
orders, refuses a reused client order id with -4116 (as Binance does), records every order it
receives, and can push events, drop every socket, and answer the next order (or every request)
with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.support import free_port

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from starlette.requests import Request

API_KEY = "standin-api-key-0123456789abcdef"
SECRET = "standin-secret-fedcba9876543210"

INSUFFICIENT_MARGIN = (400, -2019, "Margin is insufficient.")
INVALID_SYMBOL = (400, -1121, "Invalid symbol.")
RATE_LIMITED = (429, -1003, "Too many requests; current limit is 2400 requests per minute.")
UNAVAILABLE = (503, -1001, "Internal error; unable to process your request. Please try again.")
DUPLICATE_ID = (400, -4116, "ClientOrderId is duplicated.")


def _symbol(name: str, base: str, tick: str, step: str) -> dict[str, Any]:
    return {
        "symbol": name,
        "pair": name,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": "USDT",
        "marginAsset": "USDT",
        "pricePrecision": 2,
        "quantityPrecision": 3,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": ["PoW"],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {"filterType": "PRICE_FILTER", "maxPrice": "4529764", "minPrice": "0.10",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "maxQty": "1000", "minQty": step, "stepSize": step},
            {"filterType": "MARKET_LOT_SIZE", "maxQty": "120", "minQty": step, "stepSize": step},
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500",
             "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }  # fmt: skip


SYMBOLS = [
    _symbol("BTCUSDT", "BTC", "0.10", "0.001"),
    _symbol("ETHUSDT", "ETH", "0.01", "0.001"),
    _symbol("DELISTUSDT", "DELIST", "0.01", "0.001"),
]
REFUSED_SYMBOLS = frozenset({"DELISTUSDT"})


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ReceivedOrder:
    """An order as the stand-in received it: how (``rest`` or ``ws``), which endpoint or method,
    and its parameters."""

    via: str
    method: str
    params: dict[str, Any]


@dataclass
class BinanceState:
    wallet_balance: str = "1000.00000000"
    available_balance: str = "1000.00000000"
    positions: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    """By client order id (``clientOrderId``, or ``clientAlgoId`` for an algo order)."""
    received: list[ReceivedOrder] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    """``METHOD path`` of every REST request, in order."""
    api_keys_seen: set[str] = field(default_factory=set)
    next_order_error: tuple[int, int, str] | None = None
    refused_client_ids: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    """An order placed with one of these client ids gets its error, once."""
    every_request_error: tuple[int, int, str] | None = None


class BinanceStandIn:
    """The stand-in's app and state; :meth:`run` serves it on a thread of its own."""

    def __init__(self) -> None:
        self.state = BinanceState()
        self.port = free_port()
        self._ids = itertools.count(8886774)
        self._user_sockets: set[WebSocket] = set()
        self._market_sockets: dict[WebSocket, set[str]] = {}
        self._api_sockets: set[WebSocket] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route("/fapi/v1/ping", self._ping),
                Route("/fapi/v1/time", self._time),
                Route("/fapi/v1/exchangeInfo", self._exchange_info),
                Route("/fapi/v1/listenKey", self._listen_key, methods=["POST", "PUT", "DELETE"]),
                Route("/fapi/{version}/account", self._account),
                Route("/fapi/{version}/balance", self._balance),
                Route("/fapi/{version}/positionRisk", self._position_risk),
                Route("/fapi/v1/leverageBracket", self._leverage_brackets),
                Route("/fapi/v1/openOrders", self._open_orders),
                Route("/fapi/v1/openAlgoOrders", self._open_algo_orders),
                Route("/fapi/v1/order", self._order, methods=["GET", "POST", "DELETE"]),
                Route("/fapi/v1/algoOrder", self._order, methods=["GET", "POST", "DELETE"]),
                WebSocketRoute("/private/ws", self._user_stream),
                WebSocketRoute("/public/ws", self._market_stream),
                WebSocketRoute("/market/ws", self._market_stream),
                # ccxt numbers its market-stream connections (``/public/ws/0``, ...).
                WebSocketRoute("/public/ws/{n:int}", self._market_stream),
                WebSocketRoute("/market/ws/{n:int}", self._market_stream),
                WebSocketRoute("/ws-fapi/v1", self._ws_api),
            ]
        )

    # --- the configuration a server under test needs ----------------------------------------

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def url_overrides(self) -> dict[str, str]:
        """CCXT_URL_OVERRIDES: every Binance USD-M host, production and testnet, to here."""
        return {
            "https://fapi.binance.com": self.rest_url,
            "https://testnet.binancefuture.com": self.rest_url,
            "https://demo-fapi.binance.com": self.rest_url,
            "wss://fstream.binance.com": self.ws_url,
            "wss://ws-fapi.binance.com": self.ws_url,
            "wss://fstream.binancefuture.com": self.ws_url,
            "wss://testnet.binancefuture.com": self.ws_url,
        }

    # --- running --------------------------------------------------------------------------------

    def run(self) -> BinanceStandIn:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.call_soon(started.set)
            loop.run_until_complete(self._server.serve())  # type: ignore[union-attr]
            loop.close()

        self._thread = threading.Thread(target=serve, name="binance-standin", daemon=True)
        self._thread.start()
        started.wait(10)
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "the Binance stand-in did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._server.force_exit = True
            self._thread.join(10)

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    # --- what tests do --------------------------------------------------------------------------

    def user_streams(self) -> int:
        """User-data sockets open now."""
        return len(self._user_sockets)

    def market_streams(self) -> int:
        return len(self._market_sockets)

    def push(self, event: dict[str, Any]) -> int:
        """Send ``event`` on every user-data socket; how many got it."""
        return int(self._call(self._push(event)))

    def push_ticker(self, symbol: str, bid: str, ask: str, at_ms: int) -> int:
        """A ``bookTicker`` event for ``symbol`` (``BTCUSDT``) to every market socket that
        subscribed to it."""
        event = {
            "e": "bookTicker",
            "u": next(self._ids),
            "s": symbol,
            "b": bid,
            "B": "31.21",
            "a": ask,
            "A": "40.66",
            "T": at_ms,
            "E": at_ms + 2,
        }
        return int(self._call(self._push_market(f"{symbol.lower()}@bookTicker", event)))

    def drop_sockets(self) -> None:
        """Close every WebSocket (user data, market, ws-api) as a venue's restart would."""
        self._call(self._drop())

    def set_account(self, wallet: str, available: str) -> None:
        self.state.wallet_balance, self.state.available_balance = wallet, available

    def set_position(self, symbol: str, amount: str, entry: str, mark: str, upnl: str) -> None:
        self.state.positions[symbol] = position_risk(symbol, amount, entry, mark, upnl)

    def balance_event(
        self, wallet: str, *, position: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """An ACCOUNT_UPDATE with the USDT wallet at ``wallet`` (and a position, in the event's
        ``P`` shape), applied to the stand-in's own account as Binance would."""
        self.state.wallet_balance = wallet
        at = now_ms()
        return {
            "e": "ACCOUNT_UPDATE",
            "E": at,
            "T": at - 1,
            "a": {
                "m": "ORDER",
                "B": [{"a": "USDT", "wb": wallet, "cw": wallet, "bc": "0"}],
                "P": [] if position is None else [position],
            },
        }

    def order_event(self, client_id: str, status: str, filled: str, average: str) -> dict[str, Any]:
        """An ORDER_TRADE_UPDATE for a stored order moving to ``status``."""
        order = self.state.orders[client_id]
        order.update(status=status, executedQty=filled, avgPrice=average, updateTime=now_ms())
        at = now_ms()
        return {
            "e": "ORDER_TRADE_UPDATE",
            "E": at,
            "T": at - 1,
            "o": {
                "s": order["symbol"],
                "c": client_id,
                "S": order["side"],
                "o": order["type"],
                "f": order.get("timeInForce", "GTC"),
                "q": order["origQty"],
                "p": order["price"],
                "ap": average,
                "sp": order.get("stopPrice", "0"),
                "x": "TRADE" if status in ("FILLED", "PARTIALLY_FILLED") else status,
                "X": status,
                "i": order["orderId"],
                "l": filled,
                "z": filled,
                "L": average,
                "N": "USDT",
                "n": "0.01200000",
                "T": at - 1,
                "t": next(self._ids),
                "b": "0",
                "a": "0",
                "m": False,
                "R": order.get("reduceOnly", False),
                "wt": "CONTRACT_PRICE",
                "ot": order["type"],
                "ps": "BOTH",
                "cp": False,
                "rp": "0",
                "pP": False,
                "si": 0,
                "ss": 0,
                "V": "EXPIRE_NONE",
                "pm": "NONE",
                "gtd": 0,
            },
        }

    # --- REST -----------------------------------------------------------------------------------

    def _refused(self, request: Request, signed: bool) -> Response | None:
        self.state.requests.append(f"{request.method} {request.url.path}")
        if (error := self.state.every_request_error) is not None:
            return _error(*error)
        if signed:
            key = request.headers.get("x-mbx-apikey", "")
            self.state.api_keys_seen.add(key)
            if key != API_KEY or "signature" not in request.url.query:
                return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return None

    async def _ping(self, request: Request) -> Response:
        return self._refused(request, False) or JSONResponse({})

    async def _time(self, request: Request) -> Response:
        return self._refused(request, False) or JSONResponse({"serverTime": now_ms()})

    async def _exchange_info(self, request: Request) -> Response:
        return self._refused(request, False) or JSONResponse(
            {
                "timezone": "UTC",
                "serverTime": now_ms(),
                "futuresType": "U_MARGINED",
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 2400,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 1200,
                    },
                ],
                "exchangeFilters": [],
                "assets": [
                    {"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}
                ],
                "symbols": SYMBOLS,
            }
        )

    async def _listen_key(self, request: Request) -> Response:
        # listenKey requests carry the key but no signature (USER_STREAM security).
        if (refused := self._refused(request, False)) is not None:
            return refused
        self.state.api_keys_seen.add(request.headers.get("x-mbx-apikey", ""))
        if request.headers.get("x-mbx-apikey") != API_KEY:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return JSONResponse(
            {"listenKey": "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"}
        )

    def _account_body(self) -> dict[str, Any]:
        upnl = sum(float(p["unRealizedProfit"]) for p in self.state.positions.values())
        wallet = self.state.wallet_balance
        return {
            "totalInitialMargin": "0.00000000",
            "totalMaintMargin": "0.00000000",
            "totalWalletBalance": wallet,
            "totalUnrealizedProfit": f"{upnl:.8f}",
            "totalMarginBalance": wallet,
            "totalPositionInitialMargin": "0.00000000",
            "totalOpenOrderInitialMargin": "0.00000000",
            "totalCrossWalletBalance": wallet,
            "totalCrossUnPnl": f"{upnl:.8f}",
            "availableBalance": self.state.available_balance,
            "maxWithdrawAmount": self.state.available_balance,
            "assets": [
                {
                    "asset": "USDT",
                    "walletBalance": wallet,
                    "unrealizedProfit": f"{upnl:.8f}",
                    "marginBalance": wallet,
                    "maintMargin": "0.00000000",
                    "initialMargin": "0.00000000",
                    "positionInitialMargin": "0.00000000",
                    "openOrderInitialMargin": "0.00000000",
                    "crossWalletBalance": wallet,
                    "crossUnPnl": f"{upnl:.8f}",
                    "availableBalance": self.state.available_balance,
                    "maxWithdrawAmount": self.state.available_balance,
                    "marginAvailable": True,
                    "updateTime": now_ms(),
                }
            ],
            "positions": [
                {
                    "symbol": p["symbol"],
                    "positionSide": "BOTH",
                    "positionAmt": p["positionAmt"],
                    "unrealizedProfit": p["unRealizedProfit"],
                    "isolatedMargin": "0",
                    "notional": p["notional"],
                    "isolatedWallet": "0",
                    "initialMargin": p["initialMargin"],
                    "maintMargin": p["maintMargin"],
                    "updateTime": p["updateTime"],
                }
                for p in self.state.positions.values()
            ],
        }

    async def _account(self, request: Request) -> Response:
        return self._refused(request, True) or JSONResponse(self._account_body())

    async def _balance(self, request: Request) -> Response:
        wallet = self.state.wallet_balance
        body = [
            {
                "accountAlias": "SgsR",
                "asset": "USDT",
                "balance": wallet,
                "crossWalletBalance": wallet,
                "crossUnPnl": "0.00000000",
                "availableBalance": self.state.available_balance,
                "maxWithdrawAmount": self.state.available_balance,
                "marginAvailable": True,
                "updateTime": now_ms(),
            }
        ]
        return self._refused(request, True) or JSONResponse(body)

    async def _leverage_brackets(self, request: Request) -> Response:
        brackets = [
            {
                "symbol": s["symbol"],
                "notionalCoef": 1.5,
                "brackets": [
                    {
                        "bracket": 1,
                        "initialLeverage": 125,
                        "notionalCap": 50000,
                        "notionalFloor": 0,
                        "maintMarginRatio": 0.004,
                        "cum": 0.0,
                    },
                    {
                        "bracket": 2,
                        "initialLeverage": 100,
                        "notionalCap": 600000,
                        "notionalFloor": 50000,
                        "maintMarginRatio": 0.005,
                        "cum": 50.0,
                    },
                ],
            }
            for s in SYMBOLS
        ]
        return self._refused(request, True) or JSONResponse(brackets)

    async def _position_risk(self, request: Request) -> Response:
        return self._refused(request, True) or JSONResponse(list(self.state.positions.values()))

    async def _open_orders(self, request: Request) -> Response:
        open_ = [
            o
            for o in self.state.orders.values()
            if "orderId" in o and o["status"] in ("NEW", "PARTIALLY_FILLED")
        ]
        return self._refused(request, True) or JSONResponse(open_)

    async def _open_algo_orders(self, request: Request) -> Response:
        open_ = [
            o for o in self.state.orders.values() if "algoId" in o and o["algoStatus"] == "NEW"
        ]
        return self._refused(request, True) or JSONResponse(open_)

    async def _order(self, request: Request) -> Response:
        if (refused := self._refused(request, True)) is not None:
            return refused
        params = dict(request.query_params)
        if request.method == "POST":
            body = (await request.body()).decode()
            if body:
                params.update(dict(p.split("=", 1) for p in body.split("&") if "=" in p))
            status, answer = self._place(
                ReceivedOrder("rest", request.url.path, params), algo="algo" in request.url.path
            )
            return JSONResponse(answer, status_code=status)
        client_id = params.get("origClientOrderId") or params.get("clientAlgoId")
        order = self.state.orders.get(client_id or "")
        if order is None:
            wanted = params.get("orderId") or params.get("algoId")
            order = next(
                (
                    o
                    for o in self.state.orders.values()
                    if str(o.get("orderId", o.get("algoId"))) == wanted
                ),
                None,
            )
        if order is None:
            return _error(400, -2013, "Order does not exist.")
        if request.method == "DELETE":
            order["status" if "orderId" in order else "algoStatus"] = "CANCELED"
            order["updateTime"] = now_ms()
        return JSONResponse(order)

    def _place(self, received: ReceivedOrder, *, algo: bool) -> tuple[int, dict[str, Any]]:
        """Record an order and answer it as Binance would: (HTTP status, body)."""
        params = received.params
        self.state.received.append(received)
        if (error := self.state.next_order_error) is not None:
            self.state.next_order_error = None
            return error[0], {"code": error[1], "msg": error[2]}
        if params.get("symbol") in REFUSED_SYMBOLS:
            return INVALID_SYMBOL[0], {"code": INVALID_SYMBOL[1], "msg": INVALID_SYMBOL[2]}
        client_id = params.get("clientAlgoId" if algo else "newClientOrderId") or (
            f"x-{next(self._ids)}"
        )
        if (error := self.state.refused_client_ids.pop(client_id, None)) is not None:
            return error[0], {"code": error[1], "msg": error[2]}
        if client_id in self.state.orders:
            return DUPLICATE_ID[0], {"code": DUPLICATE_ID[1], "msg": DUPLICATE_ID[2]}
        at = now_ms()
        if algo:
            order = {
                "algoId": next(self._ids),
                "clientAlgoId": client_id,
                "algoType": "CONDITIONAL",
                "orderType": params.get("type"),
                "symbol": params.get("symbol"),
                "side": params.get("side"),
                "positionSide": "BOTH",
                "timeInForce": params.get("timeInForce", "GTC"),
                "quantity": params.get("quantity"),
                "algoStatus": "NEW",
                "triggerPrice": params.get("triggerPrice", "0"),
                "price": params.get("price", "0"),
                "icebergQuantity": None,
                "selfTradePreventionMode": "EXPIRE_MAKER",
                "workingType": params.get("workingType", "CONTRACT_PRICE"),
                "priceMatch": "NONE",
                "closePosition": params.get("closePosition") == "true",
                "priceProtect": False,
                "reduceOnly": params.get("reduceOnly") in ("true", True),
                "activatePrice": "",
                "callbackRate": "",
                "createTime": at,
                "updateTime": at,
                "triggerTime": 0,
                "goodTillDate": 0,
            }
        else:
            order = {
                "clientOrderId": client_id,
                "cumQty": "0",
                "cumQuote": "0",
                "executedQty": "0",
                "orderId": next(self._ids),
                "avgPrice": "0.00",
                "origQty": params.get("quantity"),
                "price": params.get("price", "0"),
                "reduceOnly": params.get("reduceOnly") in ("true", True),
                "side": params.get("side"),
                "positionSide": "BOTH",
                # A market order is accepted as NEW; its fill arrives on the user-data stream.
                "status": "NEW",
                "stopPrice": params.get("stopPrice", "0"),
                "closePosition": False,
                "symbol": params.get("symbol"),
                "timeInForce": params.get("timeInForce", "GTC"),
                "type": params.get("type"),
                "origType": params.get("type"),
                "updateTime": at,
                "workingType": "CONTRACT_PRICE",
                "priceProtect": False,
                "priceMatch": "NONE",
                "selfTradePreventionMode": "NONE",
                "goodTillDate": 0,
            }
        self.state.orders[client_id] = order
        return 200, order

    # --- WebSockets -----------------------------------------------------------------------------

    async def _user_stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self._user_sockets.add(websocket)
        try:
            while True:
                await websocket.receive_text()  # ccxt sends nothing on it; pings are frames
        except WebSocketDisconnect:
            pass
        finally:
            self._user_sockets.discard(websocket)

    async def _market_stream(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self._market_sockets[websocket] = set()
        try:
            while True:
                request = orjson.loads(await websocket.receive_text())
                streams = self._market_sockets[websocket]
                if request.get("method") == "SUBSCRIBE":
                    streams.update(request.get("params", []))
                elif request.get("method") == "UNSUBSCRIBE":
                    streams.difference_update(request.get("params", []))
                await websocket.send_text(
                    orjson.dumps({"result": None, "id": request.get("id")}).decode()
                )
        except WebSocketDisconnect:
            pass
        finally:
            self._market_sockets.pop(websocket, None)

    async def _ws_api(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self._api_sockets.add(websocket)
        try:
            while True:
                request = orjson.loads(await websocket.receive_text())
                await websocket.send_text(orjson.dumps(self._ws_api_answer(request)).decode())
        except WebSocketDisconnect:
            pass
        finally:
            self._api_sockets.discard(websocket)

    def _ws_api_answer(self, request: dict[str, Any]) -> dict[str, Any]:
        id_, method = request.get("id"), request.get("method", "")
        params = dict(request.get("params", {}))
        self.state.api_keys_seen.add(str(params.get("apiKey", "")))
        if (error := self.state.every_request_error) is not None:
            return {"id": id_, "status": error[0], "error": {"code": error[1], "msg": error[2]}}
        if params.get("apiKey") != API_KEY or "signature" not in params:
            return {"id": id_, "status": 401, "error": {"code": -2015, "msg": "Invalid API-key."}}
        if method not in ("order.place", "algoOrder.place"):
            return {"id": id_, "status": 400, "error": {"code": -1100, "msg": f"{method}?"}}
        status, body = self._place(
            ReceivedOrder("ws", method, params), algo=method != "order.place"
        )
        if status != 200:
            return {"id": id_, "status": status, "error": body}
        return {"id": id_, "status": 200, "result": body}

    async def _push(self, event: dict[str, Any]) -> int:
        text = orjson.dumps(event).decode()
        sent = 0
        for socket in list(self._user_sockets):
            with contextlib.suppress(Exception):
                await socket.send_text(text)
                sent += 1
        return sent

    async def _push_market(self, stream: str, event: dict[str, Any]) -> int:
        text = orjson.dumps(event).decode()
        sent = 0
        for socket, streams in list(self._market_sockets.items()):
            if stream in streams:
                with contextlib.suppress(Exception):
                    await socket.send_text(text)
                    sent += 1
        return sent

    async def _drop(self) -> None:
        sockets: list[WebSocket] = [
            *self._user_sockets,
            *self._market_sockets,
            *self._api_sockets,
        ]
        for socket in sockets:
            with contextlib.suppress(Exception):
                await socket.close(1001)


def position_risk(symbol: str, amount: str, entry: str, mark: str, upnl: str) -> dict[str, Any]:
    """A "Position Information V3" row (one-way mode: positionSide BOTH)."""
    notional = float(amount) * float(mark)
    return {
        "symbol": symbol,
        "positionSide": "BOTH",
        "positionAmt": amount,
        "entryPrice": entry,
        "breakEvenPrice": entry,
        "markPrice": mark,
        "unRealizedProfit": upnl,
        "liquidationPrice": "0",
        "isolatedMargin": "0",
        "notional": f"{notional:.8f}",
        "marginAsset": "USDT",
        "isolatedWallet": "0",
        "initialMargin": f"{abs(notional) / 10:.8f}",
        "maintMargin": f"{abs(notional) * 0.004:.8f}",
        "positionInitialMargin": f"{abs(notional) / 10:.8f}",
        "openOrderInitialMargin": "0",
        "adl": 1,
        "bidNotional": "0",
        "askNotional": "0",
        "updateTime": now_ms(),
        # v2 fields ccxt reads for leverage when present
        "leverage": "10",
        "marginType": "cross",
    }


def _error(status: int, code: int, msg: str) -> Response:
    return JSONResponse({"code": code, "msg": msg}, status_code=status)
