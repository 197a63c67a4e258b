"""The exchange live dashboard: a paper trading account (balance, positions, orders, fills) over
the simulated prices, order placement with take-profit and stop-loss, and the live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from decimal import Decimal
from typing import Annotated

import strawberry

from api.feeds.paper_exchange.stream import live_stream, venue_stream
from api.feeds.paper_exchange.types import (
    LiveDashboardEvent,
    OrderType,
    PaperBalance,
    PaperFill,
    PaperOrder,
    PaperPosition,
    account_views,
    open_orders_of,
)
from api.graphql.context import Info  # noqa: TC001
from api.graphql.enums import OrderSide
from api.graphql.errors import ClientError, market_or_error
from api.graphql.permissions import limit_mutations, signed_in_user
from api.graphql.resume import AFTER_DESCRIPTION, parse_after
from domain import paper_exchange as model


class OrderGraphQLError(ClientError):
    def __init__(self, error: model.OrderError) -> None:
        super().__init__(str(error), code=error.code)


@strawberry.type(description="The signed-in user's paper trading account.")
class PaperAccount:
    balance: PaperBalance
    positions: list[PaperPosition]
    open_orders: list[PaperOrder]
    order_history: list[PaperOrder] = strawberry.field(
        description="Filled and canceled orders, the newest first (the last 100)."
    )
    fills: list[PaperFill] = strawberry.field(description="The last 100 fills, the newest first.")


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


@strawberry.type
class ExchangeQuery:
    @strawberry.field(description="The signed-in user's paper account (users only).")
    async def paper_account(self, info: Info) -> PaperAccount:
        owner = signed_in_user(info.context.principal, "paperAccount")
        exchange = info.context.services.exchange
        account = await exchange.account(owner)
        balance, positions = account_views(account.valuer(), await exchange.marks())
        return PaperAccount(
            balance=balance,
            positions=positions,
            open_orders=open_orders_of(account),
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
        owner = signed_in_user(info.context.principal, "liveDashboard")
        services = info.context.services
        cursors = parse_after(after, 1)  # a malformed cursor is refused whoever's it is
        venue = services.gateways.venue(owner)
        if venue is not None:
            # A venue's stream is not numbered here: it starts whole, whatever the cursor.
            return venue_stream(services.clock, venue)
        return live_stream(services, owner, cursors)


@strawberry.type
class ExchangeMutation:
    @strawberry.mutation(
        description="Place an order for the signed-in user, with an optional take-profit and "
        "stop-loss (one cancels the other). Idempotent by clientOrderId."
    )
    async def place_order(self, info: Info, input: PlaceOrderInput) -> PlaceOrderResult:
        principal = limit_mutations(info)
        owner = signed_in_user(principal, "placeOrder")
        services = info.context.services
        gateway = services.gateways.gateway(owner)
        if gateway is services.gateways.paper:
            market_or_error(services.markets, input.symbol)  # a venue names its own symbols
        request = model.OrderRequest(
            symbol=input.symbol,
            side=input.side,
            type=input.type,
            quantity=input.quantity,
            price=input.price,
            take_profit=input.take_profit,
            stop_loss=input.stop_loss,
            client_order_id=input.client_order_id,
        )
        try:
            placed = await gateway.place(owner, request)
        except model.OrderError as exc:
            raise OrderGraphQLError(exc) from None
        return PlaceOrderResult(
            order=PaperOrder.of(placed.order.to_payload()),
            duplicate=placed.duplicate,
            children=[PaperOrder.of(o.to_payload()) for o in placed.children],
        )

    @strawberry.mutation(description="Cancel one of the signed-in user's open orders.")
    async def cancel_order(self, info: Info, order_id: strawberry.ID) -> PaperOrder:
        principal = limit_mutations(info)
        owner = signed_in_user(principal, "cancelOrder")
        gateway = info.context.services.gateways.gateway(owner)
        try:
            order = await gateway.cancel(owner, str(order_id))
        except model.OrderError as exc:
            raise OrderGraphQLError(exc) from None
        return PaperOrder.of(order.to_payload())
