"""The paper exchange's GraphQL types that its root fields and its stream both show: balance,
positions, orders, fills, and the live dashboard's events."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeAlias

import strawberry

from api.graphql.enums import OrderSide, PositionSide
from api.graphql.resume import Resumable, StreamReset
from domain import paper_exchange as model

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
changed_orders = model.CHANGES.part("orders", _read_order)
changed_fills = model.CHANGES.part("fills", _read_fill)
"""The orders and the fills of an account.changed event as the schema shows them (the live
dashboard reads its positions from the account, not from the event)."""


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


def account_views(
    valuer: model.AccountValuer, marks: dict[str, Decimal]
) -> tuple[PaperBalance, list[PaperPosition]]:
    views = valuer.positions(marks)
    balance = PaperBalance.of_balance(valuer.balance(views))
    return balance, [PaperPosition.of_view(v) for v in views]


def open_orders_of(account: model.PaperAccount) -> list[PaperOrder]:
    return [PaperOrder.of(o.to_payload()) for o in account.open_orders()]
