"""The trading desk of the perpetuals feed: what the open, modify, close and ingest mutations do.

Trades fill at the latest oracle price, refused when there is none or it is older than
``price_max_age_s``. Each change is stored, its money moved to or from the owner's perps margin
account, and its event numbered in one transaction (:mod:`api.feeds.perps.store`), then delivered.
The desk trades only the positions it opened: an indexer's (on chain) are not found here.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg

from api.feeds.perps.store import PositionNotFoundError
from domain.perps import Position, Side
from domain.perps_engine import (
    POSITION_CHANGE,
    POSITION_CLOSED,
    POSITION_LIQUIDATED,
    POSITION_MODIFIED,
    POSITION_OPENED,
    liquidated_announcement,
    trade_announcement,
)
from domain.perps_trades import (
    Fill,
    FillKind,
    Trade,
    TradeError,
    close_position,
    modify_position,
    open_position,
)

if TYPE_CHECKING:
    from datetime import datetime

    from api.feeds.perps.store import PgPositionBook
    from domain.markets import MarketCatalog
    from domain.ports import Clock, PriceRepository, Publisher


class IngestKind(enum.Enum):
    OPENED = "opened"
    MODIFIED = "modified"
    CLOSED = "closed"
    LIQUIDATED = "liquidated"


@dataclass(frozen=True, slots=True)
class IngestedChange:
    """A position change as an indexer read it on chain: the position's state after it and the
    fill that made it. ``external_id`` (transaction hash and log index) makes a replay a no-op."""

    external_id: str
    kind: IngestKind
    position_id: str
    owner: str
    market: str
    side: Side
    size: Decimal
    entry_price: Decimal
    collateral: Decimal
    fill_size: Decimal
    fill_price: Decimal
    at: datetime
    fee: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    reward: Decimal = Decimal(0)


_INGEST = {
    IngestKind.OPENED: (FillKind.OPEN, "open", POSITION_OPENED),
    IngestKind.MODIFIED: (FillKind.INCREASE, "open", POSITION_MODIFIED),
    IngestKind.CLOSED: (FillKind.CLOSE, "closed", POSITION_CLOSED),
    IngestKind.LIQUIDATED: (FillKind.LIQUIDATION, "liquidated", POSITION_LIQUIDATED),
}


class PerpsDesk:
    def __init__(
        self,
        *,
        book: PgPositionBook,
        markets: MarketCatalog,
        prices: PriceRepository,
        publisher: Publisher,
        clock: Clock,
        price_max_age_s: float,
    ) -> None:
        self.book = book
        self.markets = markets
        self.prices = prices
        self.publisher = publisher
        self.clock = clock
        self.price_max_age_s = price_max_age_s

    async def price(self, market: str) -> Decimal:
        """The price a trade in ``market`` fills at now."""
        stored = await self.prices.latest(market)
        if stored is None:
            raise TradeError("PRICE_UNAVAILABLE", f"{market} has no oracle price yet")
        price = stored[0]
        age = (self.clock.now() - price.published_at).total_seconds()
        if age > self.price_max_age_s:
            raise TradeError(
                "PRICE_UNAVAILABLE",
                f"{market}'s oracle price is {age:.0f} s old; trading waits for a fresh one",
            )
        return price.price

    async def open(
        self, owner: str, market_id: str, side: Side, size: Decimal, leverage: Decimal
    ) -> Trade:
        market = self.markets.get(market_id)
        price = await self.price(market.id)
        trade = open_position(
            id=f"pos_{uuid.uuid4().hex}",
            owner=owner,
            market=market,
            side=side,
            size=size,
            leverage=leverage,
            price=price,
            at=self.clock.now(),
        )
        event = await self.book.open(trade, trade_announcement(POSITION_OPENED, trade), market)
        await self.publisher.send(event)
        return trade

    async def modify(
        self,
        owner: str,
        position_id: str,
        size_delta: Decimal,
        collateral_delta: Decimal,
    ) -> Trade:
        market_id = await self._market_of(owner, position_id)
        market = self.markets.get(market_id)
        price = await self.price(market.id)

        def trade_of(position: Position) -> Trade:
            return modify_position(
                position,
                market=market,
                price=price,
                size_delta=size_delta,
                collateral_delta=collateral_delta,
                at=self.clock.now(),
            )

        try:
            trade, event = await self.book.change(
                position_id,
                owner,
                trade_of,
                lambda t: trade_announcement(POSITION_MODIFIED, t),
                market,
            )
        except PositionNotFoundError:
            raise _not_found(position_id) from None
        await self.publisher.send(event)
        return trade

    async def close(self, owner: str, position_id: str) -> Trade:
        market = self.markets.get(await self._market_of(owner, position_id))
        price = await self.price(market.id)

        def trade_of(position: Position) -> Trade:
            return close_position(position, market=market, price=price, at=self.clock.now())

        try:
            trade, event = await self.book.change(
                position_id,
                owner,
                trade_of,
                lambda t: trade_announcement(POSITION_CLOSED, t),
                market,
                ends="closed",
            )
        except PositionNotFoundError:
            raise _not_found(position_id) from None
        await self.publisher.send(event)
        return trade

    async def ingest(self, change: IngestedChange) -> tuple[Position, bool]:
        """Store an indexer's change and announce it; (position, False) if it was a replay."""
        self.markets.get(change.market)
        fill_kind, status, event_type = _INGEST[change.kind]
        position = Position(
            id=change.position_id,
            owner=change.owner,
            market=change.market,
            side=change.side,
            size=change.size,
            entry_price=change.entry_price,
            collateral=change.collateral,
            opened_at=change.at if change.kind is IngestKind.OPENED else None,
        )
        fill = Fill(
            change.position_id,
            change.owner,
            change.market,
            change.side,
            fill_kind,
            change.fill_size,
            change.fill_price,
            change.fee,
            change.realized_pnl - change.fee,
            change.at,
        )
        trade = Trade(position, fill, reward=change.reward)
        announce = (
            liquidated_announcement(trade)
            if change.kind is IngestKind.LIQUIDATED
            else trade_announcement(event_type, trade)
        )
        try:
            event = await self.book.ingest(
                change.external_id, trade, status, announce, reward=change.reward
            )
        except asyncpg.UniqueViolationError:
            event = None  # the same change ingested concurrently: the other one stored it
        if event is None:
            return position, False
        await self.publisher.send(event)
        return POSITION_CHANGE.decode(event.payload).position, True

    async def _market_of(self, owner: str, position_id: str) -> str:
        positions = await self.book.open_positions(owner)
        for position in positions:
            if position.id == position_id:
                return position.market
        raise _not_found(position_id)


def _not_found(position_id: str) -> TradeError:
    return TradeError(
        "POSITION_NOT_FOUND", f"you have no open position {position_id!r} on this desk"
    )
