"""A user's account at a real venue through ccxt: the :class:`ExchangeGateway` its orders go
through and the :class:`AccountFeed` its live dashboard follows.

One ccxt client per configured user, for the life of the process (its REST session and its
WebSocket API connection carry the orders), shared by every subscription of that user. The
account is followed (``watch_balance``, ``watch_positions``, ``watch_orders``) while at least one
subscription is open, and no longer once the last one ends (its user-data socket is closed).
Each time following starts, and again after every reconnect, the account is read whole over REST
(``fetch_balance``, ``fetch_positions``, ``fetch_open_orders`` and the open conditional orders)
and announced as a resync, so a subscriber is right again whatever the gap made it miss.

An order with a take-profit and a stop-loss lands as three venue orders: the entry, then a
reduce-only take-profit and a reduce-only stop-loss on the other side (ccxt's unified
``takeProfitPrice`` / ``stopLossPrice``: TAKE_PROFIT_MARKET and STOP_MARKET on Binance USD-M),
over the WebSocket API (``create_order_ws``) when the venue has one, else REST. The client order
id is the venue's (``newClientOrderId`` on Binance); the children's are it plus ``-tp`` and
``-sl``. A placement asks the venue for that id first: when the venue has it, the entry is
answered as it stands, ``duplicate`` true, and only a take-profit or stop-loss the venue has no
order of (the first attempt failed after the entry) is placed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any

from api.ops.metrics import counts
from api.venues.ccxt_client import (
    ccxt_decimal,
    ccxt_errors,
    ccxt_optional,
    error_code,
    order_error,
)
from domain.exchange_gateway import (
    AccountChange,
    AccountState,
    ChangeKind,
    Placement,
)
from domain.paper_exchange import (
    Balance,
    Order,
    OrderError,
    OrderSide,
    OrderStatus,
    OrderType,
    PaperPosition,
    PositionView,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from domain.paper_exchange import OrderRequest

logger = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 30.0
"""A reconnect waits BACKOFF_FIRST_S, doubling after each failure up to BACKOFF_MAX_S."""
SUBSCRIBER_QUEUE = 64
"""Changes waiting for one subscription; past it they are replaced by one resync (every change
carries the whole account, so nothing is lost but the list of which orders changed)."""
ALL_KINDS = frozenset(ChangeKind)
_ZERO = Decimal(0)


class VenueAccount:
    """One user's venue account (``owner``) through one ccxt client (``exchange``)."""

    def __init__(self, owner: str, exchange: Any, *, currency: str) -> None:
        self.owner = owner
        self.exchange = exchange
        self.currency = currency
        self._subscribers: set[asyncio.Queue[AccountChange]] = set()
        self._follower: asyncio.Task[None] | None = None
        self._wallet = _ZERO
        self._available = _ZERO
        self._positions: dict[str, PositionView] = {}
        self._open: dict[str, Order] = {}
        self._synced = False
        self._pending: list[tuple[Callable[[Any], AccountChange | None], Any]] = []

    # --- ExchangeGateway ------------------------------------------------------------------------

    async def state(self, owner: str) -> AccountState:
        if self._follower is not None and self._synced:
            return self._state()
        state: AccountState = await self._call(self._read_whole)
        return state

    async def place(self, owner: str, request: OrderRequest) -> Placement:
        _check(request)
        client_id = request.client_order_id or f"ts-{uuid.uuid4().hex[:20]}"
        existing = await self._call(lambda: self._find(request.symbol, client_id))
        if existing is not None:
            if not _same_entry(existing, request):
                raise OrderError(
                    "CLIENT_ORDER_ID_REUSED",
                    f"client order id {client_id!r} was used for a different order",
                )
            # A retry: the entry stands; a take-profit or stop-loss the first attempt did not
            # get to place (refused, or the connection lost after the entry) is placed now.
            children = await self._exits(request, client_id, existing.id, retry=True)
            return Placement(existing, duplicate=True, children=children)
        entry = await self._call(
            lambda: self._create(
                request.symbol,
                request.type.value.lower(),
                request.side.value.lower(),
                float(request.quantity),
                None if request.price is None else float(request.price),
                {"clientOrderId": client_id},
            )
        )
        children = await self._exits(request, client_id, entry.id, retry=False)
        return Placement(entry, duplicate=False, children=children)

    async def _exits(
        self, request: OrderRequest, client_id: str, entry_id: str, *, retry: bool
    ) -> tuple[Order, ...]:
        """The entry's reduce-only take-profit and stop-loss, as ``request`` asks: placed, or on
        a ``retry`` found at the venue by their client order ids (any status: one that already
        triggered is not placed again) and placed only when the venue has none."""
        exit_side = request.side.opposite.value.lower()
        amount = float(request.quantity)
        children: list[Order] = []
        for suffix, param, level in (
            ("-tp", "takeProfitPrice", request.take_profit),
            ("-sl", "stopLossPrice", request.stop_loss),
        ):
            if level is None:
                continue
            child_id = client_id + suffix
            child = (
                await self._call(partial(self._find, request.symbol, child_id, conditional=True))
                if retry
                else None
            )
            if child is None:
                params = {param: float(level), "reduceOnly": True, "clientOrderId": child_id}
                child = await self._call(self._creator(request.symbol, exit_side, amount, params))
            children.append(_with_parent(child, entry_id))
        return tuple(children)

    async def cancel(self, owner: str, order_id: str) -> Order:
        order = self._open.get(order_id)
        if order is None:
            state = await self._call(self._read_whole)
            order = next((o for o in state.open_orders if o.id == order_id), None)
        if order is None:
            raise OrderError("ORDER_NOT_FOUND", f"you have no open order {order_id!r}")
        conditional = order.type in (OrderType.TAKE_PROFIT, OrderType.STOP_LOSS)
        params = {"trigger": True} if conditional else {}
        canceled = await self._call(
            lambda: self.exchange.cancel_order(order_id, order.symbol, params)
        )
        return _order(canceled, fallback=order)

    # --- AccountFeed ----------------------------------------------------------------------------

    async def changes(self) -> AsyncIterator[AccountChange]:
        queue: asyncio.Queue[AccountChange] = asyncio.Queue(SUBSCRIBER_QUEUE)
        if self._follower is not None and self._synced:
            queue.put_nowait(AccountChange(ALL_KINDS, self._state(), resync=True))
        self._subscribers.add(queue)
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow(), name=f"venue:{self.owner}")
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)
            if not self._subscribers:
                await self._stop_following()

    async def close(self) -> None:
        await self._stop_following()
        with contextlib.suppress(Exception):
            await self.exchange.close()

    # --- following ------------------------------------------------------------------------------

    async def _follow(self) -> None:
        backoff = BACKOFF_FIRST_S
        while True:
            self._synced = False
            self._pending.clear()
            try:
                async with asyncio.TaskGroup() as watchers:
                    watchers.create_task(self._watch(self.exchange.watch_balance, self._on_balance))
                    watchers.create_task(
                        self._watch(self.exchange.watch_positions, self._on_positions)
                    )
                    watchers.create_task(self._watch(self.exchange.watch_orders, self._on_orders))
                    # Read whole once the watches are asked for, so nothing falls between the
                    # two; an update that raced the read is applied after it.
                    state = await self._read_whole()
                    for apply, update in self._pending:
                        apply(update)
                    self._pending.clear()
                    state = self._state()
                    self._synced = True
                    self._announce(AccountChange(ALL_KINDS, state, resync=True))
                    backoff = BACKOFF_FIRST_S
            except* Exception as group:
                counts.venue_reconnects[self.exchange.id] += 1
                first = group.exceptions[0]
                logger.warning(
                    "venue account of %s lost (%s, %s); reconnecting in %.2f s",
                    self.owner,
                    type(first).__name__,
                    error_code(first),
                    backoff,
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _watch(
        self, watch: Callable[[], Awaitable[Any]], apply: Callable[[Any], AccountChange | None]
    ) -> None:
        await self.exchange.load_markets()
        while True:
            update = await watch()
            if not self._synced:
                # Applied after the whole read: the venue's updates carry absolute values
                # (wallet, position amount, order status), so one the read already includes
                # changes nothing, and a newer one wins.
                self._pending.append((apply, update))
                continue
            change = apply(update)
            if change is not None:
                self._announce(change)

    async def _stop_following(self) -> None:
        follower, self._follower = self._follower, None
        if follower is None:
            return
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        self._synced = False
        # The user-data socket ends with the last subscription; the WebSocket API (orders) and
        # REST stay open.
        for url, client in list(getattr(self.exchange, "clients", {}).items()):
            if "listenKey" in url:
                with contextlib.suppress(Exception):
                    await client.close()

    def _announce(self, change: AccountChange) -> None:
        for queue in self._subscribers:
            if queue.full():  # that subscriber's backlog becomes one resync; the others get it
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(AccountChange(ALL_KINDS, change.state, resync=True))
            else:
                queue.put_nowait(change)

    def _on_balance(self, balance: Any) -> AccountChange | None:
        total = (balance.get("total") or {}).get(self.currency)
        free = (balance.get("free") or {}).get(self.currency)
        if total is None and free is None:
            return None
        if total is not None:
            self._wallet = ccxt_decimal(total)
        if free is not None:
            self._available = ccxt_decimal(free)
        return AccountChange(frozenset({ChangeKind.BALANCE}), self._state())

    def _on_positions(self, positions: Any) -> AccountChange | None:
        if not positions:
            return None  # a balance-only ACCOUNT_UPDATE
        for raw in positions:
            view = _position(raw)
            if view.position.size == 0:
                self._positions.pop(view.position.symbol, None)
            else:
                self._positions[view.position.symbol] = view
        kinds = frozenset({ChangeKind.POSITIONS, ChangeKind.BALANCE})  # unrealized PnL moved
        return AccountChange(kinds, self._state())

    def _on_orders(self, orders: Any) -> AccountChange | None:
        changed = tuple(_order(raw) for raw in orders)
        for order in changed:
            if order.is_open:
                self._open[order.id] = order
            else:
                self._open.pop(order.id, None)
        return AccountChange(frozenset({ChangeKind.ORDERS}), self._state(), changed=changed)

    # --- REST -----------------------------------------------------------------------------------
    # Each read starts with ``load_markets()``: ccxt loads them once (concurrent callers await the
    # same load) and answers from memory after.

    async def _read_whole(self) -> AccountState:
        await self.exchange.load_markets()
        balance, positions, orders, conditional = await asyncio.gather(
            self.exchange.fetch_balance(),
            self.exchange.fetch_positions(),
            self.exchange.fetch_open_orders(),
            self._conditional_orders(),
        )
        self._positions = {}
        self._on_positions(positions)
        self._on_balance(balance)
        self._open = {o.id: o for o in (_order(raw) for raw in [*orders, *conditional])}
        return self._state()

    async def _conditional_orders(self) -> list[Any]:
        """The open take-profits and stop-losses, where the venue keeps them apart (Binance
        USD-M's algo orders); none where it does not."""
        try:
            orders: list[Any] = await self.exchange.fetch_open_orders(
                None, None, None, {"trigger": True}
            )
        except ccxt_errors().NotSupported:
            return []
        return orders

    async def _find(
        self, symbol: str, client_id: str, *, conditional: bool = False
    ) -> Order | None:
        """The order with ``client_id``, whatever its status; ``conditional``: among the venue's
        conditional orders (Binance USD-M's algo orders), where take-profits and stop-losses are."""
        await self.exchange.load_markets()
        params: dict[str, Any] = {"clientOrderId": client_id}
        if conditional:
            params["trigger"] = True
        try:
            raw = await self.exchange.fetch_order(None, symbol, params)
        except ccxt_errors().OrderNotFound:
            return None
        return _order(raw)

    def _creator(
        self, symbol: str, side: str, amount: float, params: dict[str, Any]
    ) -> Callable[[], Awaitable[Order]]:
        """A reduce-only exit (take-profit or stop-loss, by ``params``), to place."""
        return lambda: self._create(symbol, "market", side, amount, None, params)

    async def _create(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: float | None,
        params: dict[str, Any],
    ) -> Order:
        await self.exchange.load_markets()
        has = getattr(self.exchange, "has", {})
        create = (
            self.exchange.create_order_ws
            if has.get("createOrderWs")
            else self.exchange.create_order
        )
        raw = await create(symbol, type, side, amount, price, params)
        return _order(raw)

    async def _call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """``operation``, its ccxt errors as :class:`OrderError` (never ccxt's message)."""
        try:
            return await operation()
        except OrderError:
            raise
        except (ccxt_errors().BaseError, OSError, TimeoutError) as exc:
            error = order_error(exc)
            logger.info(
                "venue refused a request of %s: %s (%s)", self.owner, error.code, type(exc).__name__
            )
            raise error from None

    def _state(self) -> AccountState:
        positions = tuple(self._positions.values())
        unrealized = sum((v.unrealized_pnl for v in positions), _ZERO)
        margin = sum((v.margin for v in positions), _ZERO)
        balance = Balance(
            wallet_balance=self._wallet,
            unrealized_pnl=unrealized,
            realized_pnl=_ZERO,
            total_fees_paid=_ZERO,
            net_balance=self._wallet + unrealized,
            margin_used=margin,
            order_margin=_ZERO,
            available_balance=self._available,
            currency=self.currency,
        )
        return AccountState(balance, positions, tuple(self._open.values()))


# --- ccxt's unified structures as the domain's -----------------------------------------------


def _time(ms: Any) -> datetime:
    if ms is None:
        return datetime.now(UTC)
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


_STATUSES = {
    "open": OrderStatus.NEW,
    "closed": OrderStatus.FILLED,
    "canceled": OrderStatus.CANCELED,
    "expired": OrderStatus.CANCELED,
    "rejected": OrderStatus.REJECTED,
}


def _order_type(raw: dict[str, Any]) -> OrderType:
    # The venue's own type first: ccxt unifies STOP_MARKET to "market" with a trigger price.
    info = raw.get("info") or {}
    venue_type = info.get("orderType") or info.get("origType") or info.get("ot") or info.get("o")
    kind = str(venue_type or raw.get("type") or "").lower()
    if "take_profit" in kind or raw.get("takeProfitPrice"):
        return OrderType.TAKE_PROFIT
    if "stop" in kind or raw.get("stopLossPrice"):
        return OrderType.STOP_LOSS
    return OrderType.LIMIT if kind == "limit" else OrderType.MARKET


def _order(raw: dict[str, Any], fallback: Order | None = None) -> Order:
    type = _order_type(raw)
    filled = ccxt_decimal(raw.get("filled") or 0)
    status = _STATUSES.get(str(raw.get("status")), OrderStatus.NEW)
    if status is OrderStatus.NEW and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    amount = raw.get("amount")
    price = (
        raw.get("triggerPrice")
        if type in (OrderType.TAKE_PROFIT, OrderType.STOP_LOSS)
        else raw.get("price")
    )
    created = _time(raw.get("timestamp"))
    order = Order(
        id=str(raw.get("id")),
        symbol=str(raw.get("symbol")),
        side=OrderSide(str(raw.get("side") or "buy").upper()),
        type=type,
        quantity=ccxt_decimal(amount)
        if amount is not None
        else (fallback.quantity if fallback else _ZERO),
        status=status,
        created_at=created,
        updated_at=_time(raw.get("lastUpdateTimestamp") or raw.get("timestamp")),
        price=ccxt_optional(price) if price else None,
        client_order_id=raw.get("clientOrderId"),
        filled=filled,
        average_price=ccxt_optional(raw.get("average")) if raw.get("average") else None,
        reduce_only=bool(raw.get("reduceOnly")),
    )
    return order


def _positive(value: Decimal | None) -> bool:
    return value is not None and value.is_finite() and value > 0


def _check(request: OrderRequest) -> None:
    """What is refused before anything reaches the venue, with the paper exchange's codes (the
    venue checks the rest: its filters, ticks and steps)."""
    if request.type in (OrderType.TAKE_PROFIT, OrderType.STOP_LOSS):
        raise OrderError(
            "INVALID_ORDER_TYPE",
            "take-profit and stop-loss orders are placed with their entry order",
        )
    if not _positive(request.quantity):
        raise OrderError("INVALID_QUANTITY", "quantity must be a positive number")
    if request.type is OrderType.LIMIT and not _positive(request.price):
        raise OrderError("INVALID_PRICE", "a limit order needs a positive price")
    if request.type is OrderType.MARKET and request.price is not None:
        raise OrderError("INVALID_PRICE", "a market order takes no price")
    if request.take_profit is not None and not _positive(request.take_profit):
        raise OrderError("INVALID_TAKE_PROFIT", "the take-profit must be a positive number")
    if request.stop_loss is not None and not _positive(request.stop_loss):
        raise OrderError("INVALID_STOP_LOSS", "the stop-loss must be a positive number")


def _same_entry(order: Order, request: OrderRequest) -> bool:
    """Whether the venue's order is the one ``request`` asks for (a retry), as far as the venue
    keeps it: symbol, side, type and quantity (and the limit price of a LIMIT order)."""
    return (
        order.symbol == request.symbol
        and order.side is request.side
        and order.type is request.type
        and order.quantity == request.quantity
        and (request.type is not OrderType.LIMIT or order.price == request.price)
    )


def _with_parent(child: Order, parent_id: str) -> Order:
    return dataclasses.replace(child, reduce_only=True, parent_id=parent_id)


def _position(raw: dict[str, Any]) -> PositionView:
    contracts = ccxt_decimal(
        ccxt_decimal(raw.get("contracts") or 0) * ccxt_decimal(raw.get("contractSize") or 1)
    )
    size = -contracts if raw.get("side") == "short" else contracts
    at = _time(raw.get("timestamp"))
    position = PaperPosition(
        symbol=str(raw.get("symbol")),
        size=size,
        entry_price=ccxt_decimal(raw.get("entryPrice") or 0),
        realized_pnl=ccxt_decimal(raw.get("realizedPnl") or 0),
        opened_at=at,
        updated_at=at,
    )
    liquidation = raw.get("liquidationPrice")
    return PositionView(
        position=position,
        leverage=ccxt_decimal(raw.get("leverage") or 1),
        mark=ccxt_optional(raw.get("markPrice")),
        unrealized_pnl=ccxt_decimal(raw.get("unrealizedPnl") or 0),
        margin=ccxt_decimal(raw.get("initialMargin") or raw.get("collateral") or 0),
        liquidation_price=ccxt_decimal(liquidation) if liquidation else None,
    )
