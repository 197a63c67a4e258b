"""The order book feed: ``orderBook`` (query and subscription)."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING, Annotated

import strawberry

from api.feeds.orderbook.stream import book_of, order_book_stream
from api.feeds.orderbook.types import OrderBookEvent, OrderBookSnapshot
from api.graphql.context import Info  # noqa: TC001
from api.graphql.errors import ClientError, market_or_error
from api.graphql.resume import AFTER_DESCRIPTION, parse_after
from domain.order_book import DepthView
from domain.topics import book_state_topic, book_topic

if TYPE_CHECKING:
    from api.runtime.services import Services

PUBLIC_SUBSCRIPTIONS = ("orderBook",)
"""Subscriptions of this feed that anyone may read, anonymous callers included."""

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
    snapshot = OrderBookSnapshot.of(DepthView(depth, book_of(state, cursor.sequence)).snapshot())
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


@strawberry.type
class OrderBookSubscription:
    @strawberry.subscription(
        description="A market's order book: its best `depth` levels of each side at once, then "
        "a delta whenever they change (about BOOK_QUOTE_HZ a second under the simulated "
        "feeds), each with `previous` and `sequence` so a client can tell it missed nothing. "
        "Resumed with `after` when nothing was missed, the deltas simply go on; otherwise a "
        "snapshot comes first. Identical subscriptions share one execution."
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
