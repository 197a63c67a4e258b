"""The leader's worker that follows every external price source and publishes what they send.

Each source is read by a task of its own; a source that raises (a lost connection, a refusal)
is made again after an exponential backoff with jitter, capped at PRICE_SOURCE_BACKOFF_MAX_S,
and the loss is logged once per outage, not once per attempt. Its prices go through
:func:`domain.price_feed.publish_prices`, the one path of every price.

Batching: the prices that arrive while a publish is in flight are published together by the
next one, one round trip for all of them, the newest per market kept (prices are latest-value
topics: a subscriber is owed the newest, not every intermediate). A Hermes event carries every
feed of one slot, so its markets are published together; and a slow database makes batches
larger instead of making a backlog.

Out of order: a price whose publish time is not newer than its market's newest one published
(or stored, when the runner started) is dropped. Staleness needs nothing of its own: a price is
stored with its source's publish time, so a source that falls silent leaves a price that ages
past PRICE_MAX_AGE_S, and the engine and the desks treat the market as stale.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from api.ops.metrics import counts
from domain.price_feed import publish_prices

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from domain.ports import Clock, PriceRepository, PriceSource, Publisher
    from domain.prices import OraclePrice

logger = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
"""The first wait after a loss: long enough not to hammer a venue that refuses at once, short
enough that a dropped stream (Hermes ends each after 24 h) costs under a second of prices."""


class StreamEndedError(ConnectionError):
    """A source's stream ended by itself: for a feed that should last, a lost connection."""


def backoff_delay(attempt: int, cap_s: float, rng: random.Random) -> float:
    """The wait before reconnect attempt ``attempt`` (0 first): doubling from
    :data:`BACKOFF_BASE_S` up to ``cap_s``, then drawn between half of it and all of it, so
    that processes that lost a venue together do not come back in step."""
    ceiling: float = min(cap_s, BACKOFF_BASE_S * 2.0 ** min(attempt, 32))
    return ceiling / 2 + rng.random() * ceiling / 2


class SourceRunner:
    def __init__(
        self,
        sources: Sequence[PriceSource],
        *,
        publisher: Publisher,
        prices: PriceRepository,
        clock: Clock,
        backoff_max_s: float,
        seed: int | None = None,
    ) -> None:
        self.sources = list(sources)
        self.publisher = publisher
        self.prices = prices
        self.clock = clock
        self.backoff_max_s = backoff_max_s
        self._rng = random.Random(seed)
        self._pending: dict[str, tuple[str, OraclePrice]] = {}
        self._arrived = asyncio.Event()
        self._newest: dict[str, datetime] | None = None

    async def run(self) -> None:
        """Follow every source and publish their prices until cancelled."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._publish_arrivals())
                for source in self.sources:
                    tasks.create_task(self.follow(source), name=f"price-source-{source.name}")
        finally:
            # A process that stopped leading publishes these markets no more: no age to show.
            for source in self.sources:
                for market in source.markets:
                    counts.source_price_times.pop(market, None)

    async def follow(self, source: PriceSource) -> None:
        """Read ``source`` for good: each price offered for publishing, each loss followed by a
        reconnect after :func:`backoff_delay`."""
        attempt = 0
        lost_at: float | None = None
        while True:
            try:
                async for price in source.stream():
                    if lost_at is not None:
                        logger.info(
                            "price source %s: receiving prices again after %.1f s",
                            source.name,
                            self.clock.monotonic() - lost_at,
                        )
                        lost_at = None
                    attempt = 0
                    if price.market in source.markets:
                        counts.source_prices[source.name] += 1
                        self._offer(source.name, price)
                raise StreamEndedError("the stream ended")
            except Exception as exc:
                if lost_at is None:
                    lost_at = self.clock.monotonic()
                    logger.warning(
                        "price source %s: connection lost (%s: %.300s); reconnecting with backoff",
                        source.name,
                        type(exc).__name__,
                        str(exc),
                    )
                else:
                    logger.debug("price source %s: still down (%s)", source.name, exc)
            counts.source_reconnects[source.name] += 1
            await self.clock.sleep(backoff_delay(attempt, self.backoff_max_s, self._rng))
            attempt += 1

    def _offer(self, source: str, price: OraclePrice) -> None:
        waiting = self._pending.get(price.market)
        if waiting is None or price.published_at > waiting[1].published_at:
            self._pending[price.market] = (source, price)
            self._arrived.set()

    async def _publish_arrivals(self) -> None:
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            batch, self._pending = self._pending, {}
            try:
                await self.publish(list(batch.values()))
            except Exception:
                logger.exception(
                    "could not publish %d external prices; the next ones will be", len(batch)
                )

    async def publish(self, batch: Sequence[tuple[str, OraclePrice]]) -> list[OraclePrice]:
        """Publish the prices of ``batch`` (source, price; one per market) newer than their
        market's newest, together; the ones published."""
        if self._newest is None:
            markets = sorted({m for source in self.sources for m in source.markets})
            stored = await self.prices.latest_of(markets)
            self._newest = {market: price.published_at for market, price in stored.items()}
        newest = self._newest
        fresh = [
            (source, price)
            for source, price in batch
            if price.market not in newest or price.published_at > newest[price.market]
        ]
        if len(fresh) < len(batch):
            logger.debug(
                "dropped %d prices older than their market's newest", len(batch) - len(fresh)
            )
        if not fresh:
            return []
        await publish_prices(
            [price for _, price in fresh], publisher=self.publisher, repository=self.prices
        )
        for source, price in fresh:
            newest[price.market] = price.published_at
            counts.source_price_times[price.market] = (source, price.published_at.timestamp())
        return [price for _, price in fresh]
