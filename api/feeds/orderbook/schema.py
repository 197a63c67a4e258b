"""The market data feed: ``orderBook`` and ``trades`` (each a query and a subscription)."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING, Annotated

import strawberry

from api.feeds.orderbook.stream import book_of, order_book_stream, trades_stream
from api.feeds.orderbook.types import OrderBookEvent, OrderBookSnapshot, Trade, TradeEvent
from api.graphql.context import Info  # noqa: TC001
from api.graphql.errors import ClientError, market_or_error
from api.graphql.resume import AFTER_DESCRIPTION, parse_after
from api.storage.history import Cursor
from domain.order_book import DepthView, PublicTrade
from domain.topics import book_state_topic, book_topic, trades_topic

if TYPE_CHECKING:
    from api.runtime.services import Services

PUBLIC_SUBSCRIPTIONS = ("orderBook", "trades")
"""Subscriptions of this feed that anyone may read, anonymous callers included."""

DEFAULT_TRADES = 50
MAX_TRADES = 500
DEFAULT_DEPTH = 50
MAX_DEPTH = 500
DEPTH_DESCRIPTION = f"Levels of each side, 1 to {MAX_DEPTH}."


def _depth(depth: int) -> int:
    if not 1 <= depth <= MAX_DEPTH:
        raise ClientError(f"depth must be 1 to {MAX_DEPTH}, not {depth}", code="INVALID_DEPTH")
    return depth


async def book_snapshot(services: Services, market: str, depth: int) -> OrderBookSnapshot | None:
    """The best ``depth`` levels as of the book's newest change, with its cursor."""
    topic = book_topic(market)
    state, (cursor,) = await services.history.consistent(
        [topic], lambda: services.history.latest(book_state_topic(market))
    )
    if state is None:
        return None
    view = DepthView(depth, book_of(state, cursor.sequence))
    snapshot = OrderBookSnapshot.of(view.snapshot(), state.published_at)
    snapshot.cursor = str(cursor)
    return snapshot


@strawberry.type
class OrderBookQuery:
    @strawberry.field(
        description="A market's order book: the best `depth` levels of each side as of its "
        "newest change; null before the book's first quotes. Its `cursor` resumes the "
        "orderBook subscription right after it."
    )
    async def order_book(
        self,
        info: Info,
        market: str,
        depth: Annotated[int, strawberry.argument(description=DEPTH_DESCRIPTION)] = DEFAULT_DEPTH,
    ) -> OrderBookSnapshot | None:
        services = info.context.services
        market_or_error(services.markets, market)
        return await book_snapshot(services, market, _depth(depth))

    @strawberry.field(
        description="A market's newest trades on the public tape, oldest first (at most `limit`, "
        f"1 to {MAX_TRADES}, of those the history keeps: HISTORY_LIMITS kind `trades`). The "
        "last one's `cursor` resumes the trades subscription right after it."
    )
    async def trades(self, info: Info, market: str, limit: int = DEFAULT_TRADES) -> list[Trade]:
        services = info.context.services
        market_or_error(services.markets, market)
        if not 1 <= limit <= MAX_TRADES:
            raise ClientError(f"limit must be 1 to {MAX_TRADES}, not {limit}", code="INVALID_LIMIT")
        topic = trades_topic(market)
        now = await services.history.position(topic)
        events = await services.history.since(
            topic, max(0, now.sequence - limit), before=now.sequence + 1
        )
        trades = []
        for event in events:
            trade = Trade.of(PublicTrade.from_payload(event.payload))
            trade.cursor = str(Cursor(now.epoch, event.sequence))
            trades.append(trade)
        return trades


@strawberry.type
class OrderBookSubscription:
    @strawberry.subscription(
        description="A market's order book: its best `depth` levels of each side at once, then "
        "a delta whenever they change (about BOOK_QUOTE_HZ a second under the simulated "
        "feeds), each with `previous` and `sequence` so a client can tell it missed nothing. "
        "Resumed with `after`, a snapshot of now comes first all the same (a cursor does not "
        "say which depth was held). Identical subscriptions share one execution."
    )
    async def order_book(
        self,
        info: Info,
        market: str,
        depth: Annotated[int, strawberry.argument(description=DEPTH_DESCRIPTION)] = DEFAULT_DEPTH,
        after: Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)] = None,
    ) -> AsyncIterator[OrderBookEvent]:
        services = info.context.services
        market_or_error(services.markets, market)
        return order_book_stream(services, market, _depth(depth), parse_after(after, 1))

    @strawberry.subscription(
        description="A market's public trade tape: every trade from now on, as it happens (the "
        "taker's side, price, size; never who traded). Resumed with `after`, the trades missed "
        "since first. Identical subscriptions share one execution."
    )
    async def trades(
        self,
        info: Info,
        market: str,
        after: Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)] = None,
    ) -> AsyncIterator[TradeEvent]:
        services = info.context.services
        market_or_error(services.markets, market)
        return trades_stream(services, market, parse_after(after, 1))
