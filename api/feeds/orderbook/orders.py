"""The users' resting limit orders, into the leader's order books (``domain/book_makers.py``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from api.graphql.resume import StreamPosition
from api.streaming.hub import HubClosedError
from domain.topics import book_orders_topic

if TYPE_CHECKING:
    from api.runtime.services import Services
    from domain.book_makers import BookMakers

logger = logging.getLogger(__name__)


RETRY_S = 1.0


async def follow_book_orders(services: Services, makers: BookMakers) -> None:
    """The worker: every account's open LIMIT orders as stored, then each order that rests or
    ends after (``book-orders:<market>``), read exactly where the stored ones leave off. A
    failure (the database or the broker away) is logged and the worker starts over; the hub
    closing (the server shutting down) ends it."""
    while True:
        try:
            await _follow(services, makers)
        except HubClosedError:
            return
        except Exception:
            logger.exception("following the users' orders into the books failed; starting over")
        await services.clock.sleep(RETRY_S)


async def _follow(services: Services, makers: BookMakers) -> None:
    topics = [book_orders_topic(m.id) for m in services.markets]
    async with services.hub.merge(topics) as changes:
        stored, cursors = await services.history.consistent(
            topics, services.exchange.store.resting_orders
        )
        position = StreamPosition(topics, cursors)
        await makers.load_orders(stored)
        async for event in changes:
            if position.advance(event):
                await makers.on_order(event.type, event.payload)
