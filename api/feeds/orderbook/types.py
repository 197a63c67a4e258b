"""The order book feed's GraphQL types."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry

from api.graphql.enums import OrderSide
from api.graphql.resume import Resumable, StreamReset
from api.graphql.scalars import Long
from domain.order_book import BookDelta, BookSide, BookSnapshot, PublicTrade

strawberry.enum(BookSide, name="BookSide", description="A side of the book.")


@strawberry.type(description="A price level: the total size resting at one price.")
class BookLevel:
    price: Decimal
    size: Decimal = strawberry.field(description="Base units.")


@strawberry.type(description="A level whose total changed.")
class BookLevelChange:
    side: BookSide
    price: Decimal
    size: Decimal = strawberry.field(description="The level's new total; 0: the level is gone.")


@strawberry.type(
    description="The best `depth` levels of each side, best first (bids highest first, asks "
    "lowest first), as of `sequence`: a client replaces what it held with them."
)
class OrderBookSnapshot(Resumable):
    market: str
    sequence: Long = strawberry.field(
        description="The book's sequence: the next delta's `previous`."
    )
    bids: list[BookLevel]
    asks: list[BookLevel]
    at: datetime = strawberry.field(description="When the book's change of `sequence` was made.")

    @classmethod
    def of(cls, snapshot: BookSnapshot, at: datetime) -> OrderBookSnapshot:
        return cls(
            market=snapshot.market,
            sequence=Long(snapshot.sequence),
            at=at,
            bids=[BookLevel(price=level.price, size=level.size) for level in snapshot.bids],
            asks=[BookLevel(price=level.price, size=level.size) for level in snapshot.asks],
        )


@strawberry.type(
    description="The levels of the client's `depth` that changed since `previous`: apply it "
    "only to the book of sequence `previous` (the last snapshot's or delta's `sequence`); "
    "otherwise something was missed: resubscribe. A level that entered the best `depth` comes "
    "as a change, one that left them as size 0."
)
class OrderBookDelta(Resumable):
    market: str
    previous: Long
    sequence: Long
    changes: list[BookLevelChange]
    at: datetime = strawberry.field(description="When the book's change of `sequence` was made.")

    @classmethod
    def of(cls, delta: BookDelta, at: datetime) -> OrderBookDelta:
        return cls(
            market=delta.market,
            at=at,
            previous=Long(delta.previous),
            sequence=Long(delta.sequence),
            changes=[
                BookLevelChange(side=c.side, price=c.price, size=c.size) for c in delta.changes
            ],
        )


@strawberry.type(description="A trade on a market's public tape: never who traded.")
class Trade(Resumable):
    id: strawberry.ID = strawberry.field(description="The trade's own id on the tape.")
    market: str
    side: OrderSide = strawberry.field(description="The taker's side: BUY lifted an ask.")
    price: Decimal
    size: Decimal = strawberry.field(description="Base units.")
    at: datetime

    @classmethod
    def of(cls, trade: PublicTrade) -> Trade:
        return cls(
            id=strawberry.ID(trade.id),
            market=trade.market,
            side=trade.side,
            price=trade.price,
            size=trade.size,
            at=trade.at,
        )


TradeEvent = Annotated[
    Trade | StreamReset,
    strawberry.union("TradeEvent", description="What the trades stream sends."),
]

OrderBookEvent = Annotated[
    OrderBookSnapshot | OrderBookDelta | StreamReset,
    strawberry.union(
        "OrderBookEvent",
        description="What the order book stream sends: a snapshot, then deltas against it.",
    ),
]
