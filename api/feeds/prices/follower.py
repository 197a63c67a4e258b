"""The loop of a worker that acts on every oracle price: one merged subscription to every market's
price topic, resubscribed when the hub ends it. A failure on one price is logged and the next
price is handled."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from api.streaming.hub import HubClosedError, HubError
from domain.prices import OraclePrice
from domain.topics import price_topic

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from decimal import Decimal

    from api.streaming.hub import Hub
    from domain.markets import MarketCatalog
    from domain.ports import Clock

logger = logging.getLogger(__name__)


async def follow_prices(
    hub: Hub,
    markets: MarketCatalog,
    clock: Clock,
    handle: Callable[[str, Decimal], Awaitable[object]],
    *,
    worker: str,
) -> None:
    """Call ``handle(market, price)`` for every price until cancelled or the hub closes."""
    topics = [price_topic(m.id) for m in markets]
    while True:
        try:
            async with hub.merge(topics) as prices:
                async for event in prices:
                    price = OraclePrice.from_payload(event.payload)
                    try:
                        await handle(price.market, price.price)
                    except Exception:
                        logger.exception("%s failed on %s", worker, price.market)
        except HubClosedError:
            return  # the server is shutting down: nothing left to follow
        except HubError as exc:
            logger.warning("%s lost the price feed (%s); resubscribing", worker, exc)
        await clock.sleep(1.0)
