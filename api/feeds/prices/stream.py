"""The price feed's subscription stream: a market's prices."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING

from api.feeds.prices.types import Price, price_event
from api.graphql.streams import OncePerEvent, live
from domain.topics import price_topic

if TYPE_CHECKING:
    from api.runtime.services import Services
    from domain.events import Event


_presented = OncePerEvent(Price.from_event)
"""A price as subscribers see it, made once per tick for all of them: 2,000 subscribers with
variables of their own are 2,000 executions of one presented price, not 2,000 decodings."""


def price_stream(services: Services, market: str) -> AsyncIterator[Price]:
    """The market's latest price at once, then every new one, each presented once for all its
    subscribers."""

    async def snapshot() -> Event | None:
        return price_event(await services.prices.latest(market))

    return live(services.hub, price_topic(market), snapshot, _presented)
