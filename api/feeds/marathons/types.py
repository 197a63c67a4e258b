"""The marathon feed's GraphQL types that its root fields and its streams both show: leaderboard
rows, leaderboards, account updates."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypeAlias

import strawberry

from api.graphql.scalars import Long
from domain import marathons as model

PERCENT_PLACES = Decimal("0.0001")
"""Profit percentages are shown to four decimal places (ranked exactly)."""


strawberry.enum(model.TradeSide, name="TradeSide")
TradeSide: TypeAlias = model.TradeSide


strawberry.enum(model.OrderType, name="PendingOrderType")
PendingOrderType: TypeAlias = model.OrderType


@strawberry.type(description="An open position of a MetaTrader account.")
class OpenTrade:
    ticket: Long
    symbol: str
    side: TradeSide
    volume: Decimal
    open_price: Decimal
    profit: Decimal = strawberry.field(description="Floating profit, in the account currency.")


@strawberry.type(description="A pending order of a MetaTrader account.")
class PendingOrder:
    ticket: Long
    symbol: str
    type: PendingOrderType
    volume: Decimal
    price: Decimal


@strawberry.type(description="An account's place in a marathon.")
class LeaderboardRow:
    rank: int
    login: Long
    profit: Decimal = strawberry.field(description="Equity minus the initial balance.")
    profit_percentage: Decimal | None = strawberry.field(
        description="Profit over the initial balance, in percent, to four places; null when the "
        "initial balance is not positive (ranked after every account that has one)."
    )
    initial_balance: Decimal
    equity: Decimal
    balance: Decimal
    credit: Decimal
    margin: Decimal
    free_margin: Decimal
    margin_level: Decimal | None = strawberry.field(
        description="Equity / margin x 100, in percent."
    )
    open_positions: list[OpenTrade]
    pending_orders: list[PendingOrder]
    open_positions_count: int
    pending_orders_count: int
    registered_at: datetime
    updated_at: datetime = strawberry.field(description="Server time of the shown snapshot.")

    @classmethod
    def build(cls, row: model.LeaderboardRow) -> LeaderboardRow:
        return cls(
            rank=row.rank,
            login=Long(row.login),
            profit=row.profit,
            profit_percentage=percent_shown(row.profit_percentage),
            initial_balance=row.initial_balance,
            equity=row.equity,
            balance=row.balance,
            credit=row.credit,
            margin=row.margin,
            free_margin=row.free_margin,
            margin_level=percent_shown(row.margin_level),
            open_positions=[
                OpenTrade(
                    ticket=Long(t.ticket),
                    symbol=t.symbol,
                    side=t.side,
                    volume=t.volume,
                    open_price=t.open_price,
                    profit=t.profit,
                )
                for t in row.open_positions
            ],
            pending_orders=[
                PendingOrder(
                    ticket=Long(o.ticket),
                    symbol=o.symbol,
                    type=o.type,
                    volume=o.volume,
                    price=o.price,
                )
                for o in row.pending_orders
            ],
            open_positions_count=row.open_positions_count,
            pending_orders_count=row.pending_orders_count,
            registered_at=row.registered_at,
            updated_at=row.updated_at,
        )


@strawberry.type(description="The top of a marathon's leaderboard.")
class Leaderboard:
    marathon_id: strawberry.ID
    accounts: int = strawberry.field(description="Accounts ranked in all.")
    rows: list[LeaderboardRow]


@strawberry.type(description="One account's row, with its rank in the marathon.")
class AccountUpdate:
    marathon_id: strawberry.ID
    login: Long
    row: LeaderboardRow | None = strawberry.field(
        description="Null until the account's first snapshot."
    )


def percent_shown(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(PERCENT_PLACES)
