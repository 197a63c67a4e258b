"""The exchange live dashboard: a paper trading account (balance, positions, orders, fills) over
the simulated prices, order placement with take-profit and stop-loss, and the live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import strawberry

from api.auth import Role
from api.graphql.context import Info  # noqa: TC001
from api.graphql.enums import PositionSide
from api.graphql.errors import ClientError, StreamEndedError, market_or_error
from api.graphql.permissions import limit_mutations, require_role
from api.graphql.resume import (
    AFTER_DESCRIPTION,
    Resumable,
    StreamPosition,
    StreamReset,
    parse_after,
    stamped,
)
from api.graphql.streams import StreamWithPrices, decoded_price
from api.streaming.hub import HubError
from domain import paper_exchange as model
from domain.topics import live_topic

if TYPE_CHECKING:
    from api.auth import Principal
    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain.events import Event


class OrderGraphQLError(ClientError):
    def __init__(self, error: model.OrderError) -> None:
        super().__init__(str(error), code=error.code)


strawberry.enum(model.OrderSide, name="OrderSide")
OrderSide: TypeAlias = model.OrderSide


strawberry.enum(model.OrderType, name="OrderType")
OrderType: TypeAlias = model.OrderType


strawberry.enum(model.OrderStatus, name="OrderStatus")
OrderStatus: TypeAlias = model.OrderStatus


@strawberry.type(description="A paper account's money, in USD.")
class PaperBalance:
    currency: str
    wallet_balance: Decimal = strawberry.field(description="Initial balance + realized PnL.")
    unrealized_pnl: Decimal
    realized_pnl: Decimal = strawberry.field(description="Net of fees.")
    total_fees_paid: Decimal
    net_balance: Decimal = strawberry.field(description="Wallet balance + unrealized PnL.")
    margin_used: Decimal
    order_margin: Decimal = strawberry.field(description="Reserved by resting orders.")
    available_balance: Decimal

    @classmethod
    def of_balance(cls, b: model.Balance) -> PaperBalance:
        """What :meth:`of` makes of ``b.to_payload()``, without the text in between."""
        return cls(
            currency=b.currency,
            wallet_balance=b.wallet_balance,
            unrealized_pnl=b.unrealized_pnl,
            realized_pnl=b.realized_pnl,
            total_fees_paid=b.total_fees_paid,
            net_balance=b.net_balance,
            margin_used=b.margin_used,
            order_margin=b.order_margin,
            available_balance=b.available_balance,
        )

    @classmethod
    def of(cls, p: dict[str, Any]) -> PaperBalance:
        return cls.of_balance(model.BALANCE.decode(p))


@strawberry.type(description="A position of the paper account in one symbol.")
class PaperPosition:
    symbol: str
    side: PositionSide | None = strawberry.field(description="Null once the position is flat.")
    size: Decimal
    entry_price: Decimal
    mark_price: Decimal | None
    unrealized_pnl: Decimal
    realized_pnl: Decimal
    leverage: Decimal
    margin: Decimal
    liquidation_price: Decimal | None
    opened_at: datetime
    updated_at: datetime

    @classmethod
    def of_view(cls, v: model.PositionView) -> PaperPosition:
        """What :meth:`of` makes of ``v.to_payload()``, without the text in between."""
        p = v.position
        side = p.side
        return cls(
            symbol=p.symbol,
            side=None if side is None else PositionSide.__members__[side.name],
            size=abs(p.size),
            entry_price=p.entry_price,
            mark_price=v.mark,
            unrealized_pnl=v.unrealized_pnl,
            realized_pnl=p.realized_pnl,
            leverage=v.leverage,
            margin=v.margin,
            liquidation_price=v.liquidation_price,
            opened_at=p.opened_at,
            updated_at=p.updated_at,
        )

    @classmethod
    def of(cls, p: dict[str, Any]) -> PaperPosition:
        return cls.of_view(model.PositionView.from_payload(p))


@strawberry.type(description="An order of the paper account.")
class PaperOrder:
    id: strawberry.ID
    client_order_id: str | None
    symbol: str
    type: OrderType
    side: OrderSide
    status: OrderStatus
    quantity: Decimal
    price: Decimal | None = strawberry.field(description="Limit price, or trigger for TP/SL.")
    filled: Decimal
    average_price: Decimal | None
    reduce_only: bool
    parent_id: strawberry.ID | None = strawberry.field(
        description="The entry order a take-profit or stop-loss belongs to."
    )
    active: bool = strawberry.field(description="False for a TP/SL whose entry has not filled.")
    take_profit: Decimal | None
    stop_loss: Decimal | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, p: dict[str, Any]) -> PaperOrder:
        return _read_order(p)


@strawberry.type(description="A fill of the paper account.")
class PaperFill:
    id: strawberry.ID
    order_id: strawberry.ID
    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal = strawberry.field(description="PnL the fill realized, net of its fee.")
    at: datetime

    @classmethod
    def of(cls, p: dict[str, Any]) -> PaperFill:
        return _read_fill(p)


_read_order = model.ORDER.reader(PaperOrder)
_read_fill = model.FILL.reader(PaperFill)
"""An order's and a fill's payload as the schema shows them, made in one step: a live dashboard
reads every order and fill event."""


@strawberry.type(description="The signed-in user's paper trading account.")
class PaperAccount:
    balance: PaperBalance
    positions: list[PaperPosition]
    open_orders: list[PaperOrder]
    order_history: list[PaperOrder] = strawberry.field(
        description="Filled and canceled orders, the newest first (the last 100)."
    )
    fills: list[PaperFill] = strawberry.field(description="The last 100 fills, the newest first.")


@strawberry.type(description="The account's balance changed (a fill, or a price move).")
class BalanceUpdate(Resumable):
    balance: PaperBalance
    at: datetime


@strawberry.type(description="The account's open positions, valued at the latest prices.")
class PaperPositionsUpdate(Resumable):
    positions: list[PaperPosition]
    at: datetime


@strawberry.type(description="Orders changed: placed, filled, canceled, triggered.")
class OrdersUpdate(Resumable):
    changed: list[PaperOrder]
    fills: list[PaperFill]
    open_orders: list[PaperOrder]
    at: datetime


LiveDashboardEvent = Annotated[
    BalanceUpdate | PaperPositionsUpdate | OrdersUpdate | StreamReset,
    strawberry.union("LiveDashboardEvent"),
]


@strawberry.type
class PlaceOrderResult:
    order: PaperOrder
    duplicate: bool = strawberry.field(
        description="True when this clientOrderId was placed before: nothing new was placed."
    )
    children: list[PaperOrder] = strawberry.field(
        description="The take-profit and stop-loss placed with it."
    )


@strawberry.input
class PlaceOrderInput:
    symbol: str
    side: OrderSide
    type: OrderType
    quantity: Decimal
    price: Decimal | None = strawberry.field(default=None, description="LIMIT orders only.")
    take_profit: Decimal | None = None
    stop_loss: Decimal | None = None
    client_order_id: str | None = strawberry.field(
        default=None,
        description="Makes a retry safe: a second placeOrder with the same id places nothing.",
    )


def _owner(principal: Principal, what: str) -> str:
    require_role(principal, Role.USER, what=what)
    assert principal.sub is not None
    return principal.sub


def _views(
    valuer: model.AccountValuer, marks: dict[str, Decimal]
) -> tuple[PaperBalance, list[PaperPosition]]:
    views = valuer.positions(marks)
    balance = PaperBalance.of_balance(valuer.balance(views))
    return balance, [PaperPosition.of_view(v) for v in views]


def _open(account: model.PaperAccount) -> list[PaperOrder]:
    return [PaperOrder.of(o.to_payload()) for o in account.open_orders()]


async def live_stream(
    services: Services, owner: str, after: list[Cursor] | None = None
) -> AsyncIterator[LiveDashboardEvent]:
    """Balance, positions and open orders at once; then each change of the account (orders,
    fills, positions, balance); and positions and balance again when a price they depend on
    moves. Resumed (``after``): the order changes since the cursor, then balance and positions.

    As the positions stream does (``docs/perps.md``, "What a tick costs"), a tick is decoded once
    for every stream, the account is valued from what its revision worked out once
    (:class:`domain.paper_exchange.AccountValuer`), and only the prices of the symbols the
    account holds are followed."""
    exchange = services.exchange
    topic = live_topic(owner)
    try:
        async with StreamWithPrices(services.hub, [topic]) as feed:
            start = await services.history.start(
                [topic], after, lambda: exchange.account(owner), always_snapshot=True
            )
            account = start.snapshot
            assert account is not None
            valuer = account.valuer()
            await feed.follow(valuer.symbols)
            marks = await exchange.marks()
            now = services.clock.now()
            position = StreamPosition([topic], start.origin)
            for event in start.replay:
                position.advance(event)
                yield stamped(_orders_update(event, account), position)
            if start.not_recovered is not None:
                yield position.reset(start.not_recovered)
            balance, positions = _views(valuer, marks)
            yield stamped(BalanceUpdate(balance=balance, at=now), position)
            yield stamped(PaperPositionsUpdate(positions=positions, at=now), position)
            if not start.resumed:
                orders = OrdersUpdate(changed=[], fills=[], open_orders=_open(account), at=now)
                yield stamped(orders, position)
            while True:
                event = await feed.next()
                if event.topic != topic:
                    price = decoded_price(event)
                    if marks.get(price.market) == price.price:
                        continue
                    marks[price.market] = price.price
                    if price.market not in valuer.symbols:
                        continue  # left over from a symbol no longer held
                    new_balance, new_positions = _views(valuer, marks)
                    if new_positions != positions:
                        positions = new_positions
                        update = PaperPositionsUpdate(positions=positions, at=event.published_at)
                        yield stamped(update, position)
                    if new_balance != balance:
                        balance = new_balance
                        yield stamped(
                            BalanceUpdate(balance=balance, at=event.published_at), position
                        )
                    continue
                if not position.advance(event):
                    continue  # the start covered it
                account = await exchange.account(owner)
                valuer = account.valuer()
                added = await feed.follow(valuer.symbols)
                if added:
                    # Not followed until now: their prices may have moved meanwhile.
                    latest = await exchange.marks()
                    for market in added:
                        if market in latest and marks.get(market) != latest[market]:
                            marks[market] = latest[market]
                yield stamped(_orders_update(event, account), position)
                balance, positions = _views(valuer, marks)
                at = event.published_at
                yield stamped(PaperPositionsUpdate(positions=positions, at=at), position)
                yield stamped(BalanceUpdate(balance=balance, at=at), position)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


def _orders_update(event: Event, account: model.PaperAccount) -> OrdersUpdate:
    return OrdersUpdate(
        changed=[PaperOrder.of(o) for o in event.payload["orders"]],
        fills=[PaperFill.of(f) for f in event.payload["fills"]],
        open_orders=_open(account),
        at=event.published_at,
    )


@strawberry.type
class ExchangeQuery:
    @strawberry.field(description="The signed-in user's paper account (users only).")
    async def paper_account(self, info: Info) -> PaperAccount:
        owner = _owner(info.context.principal, "paperAccount")
        exchange = info.context.services.exchange
        account = await exchange.account(owner)
        balance, positions = _views(account.valuer(), await exchange.marks())
        return PaperAccount(
            balance=balance,
            positions=positions,
            open_orders=_open(account),
            order_history=[PaperOrder.of(o.to_payload()) for o in account.order_history(limit=100)],
            fills=[PaperFill.of(f) for f in await exchange.fills(owner, 100)],
        )


@strawberry.type
class ExchangeSubscription:
    @strawberry.subscription(
        description="The signed-in user's balance, positions and orders at once, then every "
        "change: fills, placed, canceled and triggered orders, and price moves."
    )
    async def live_dashboard(
        self,
        info: Info,
        after: Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)] = None,
    ) -> AsyncIterator[LiveDashboardEvent]:
        owner = _owner(info.context.principal, "liveDashboard")
        return live_stream(info.context.services, owner, parse_after(after, 1))


@strawberry.type
class ExchangeMutation:
    @strawberry.mutation(
        description="Place an order for the signed-in user, with an optional take-profit and "
        "stop-loss (one cancels the other). Idempotent by clientOrderId."
    )
    async def place_order(self, info: Info, input: PlaceOrderInput) -> PlaceOrderResult:
        principal = limit_mutations(info)
        owner = _owner(principal, "placeOrder")
        services = info.context.services
        market_or_error(services.markets, input.symbol)
        request = model.OrderRequest(
            symbol=input.symbol,
            side=model.OrderSide(input.side.value),
            type=model.OrderType(input.type.value),
            quantity=input.quantity,
            price=input.price,
            take_profit=input.take_profit,
            stop_loss=input.stop_loss,
            client_order_id=input.client_order_id,
        )
        try:
            result = await services.exchange.place(owner, request)
        except model.OrderError as exc:
            raise OrderGraphQLError(exc) from None
        account = await services.exchange.account(owner)
        return PlaceOrderResult(
            order=PaperOrder.of(result.order.to_payload()),
            duplicate=result.duplicate,
            children=[PaperOrder.of(o.to_payload()) for o in account.children(result.order.id)],
        )

    @strawberry.mutation(description="Cancel one of the signed-in user's open orders.")
    async def cancel_order(self, info: Info, order_id: strawberry.ID) -> PaperOrder:
        principal = limit_mutations(info)
        owner = _owner(principal, "cancelOrder")
        exchange = info.context.services.exchange
        try:
            await exchange.cancel(owner, str(order_id))
        except model.OrderError as exc:
            raise OrderGraphQLError(exc) from None
        order = (await exchange.account(owner)).order(str(order_id))
        assert order is not None
        return PaperOrder.of(order.to_payload())
