"""The simulated oracle feed: a worker that steps every market's walk and publishes each price."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from domain.prices import (
    DEFAULT_START_PRICES,
    FALLBACK_START_PRICE,
    RandomWalkOracle,
    RandomWalkParams,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from domain.events import Event
    from domain.markets import Market
    from domain.ports import Clock, PriceRepository, Publisher
    from domain.prices import OraclePrice

logger = logging.getLogger(__name__)


async def publish_prices(
    prices: Sequence[OraclePrice], *, publisher: Publisher, repository: PriceRepository
) -> list[Event]:
    """Number and store every price (one round trip for all of them), then deliver each event:
    the one path every price takes, simulated or pushed by an oracle service. Stored before it is
    sent, so a subscriber that read the store and then goes live by sequence misses nothing."""
    events = await repository.record(prices)
    for event in events:
        await publisher.send(event)
    return events


class PriceFeed:
    """Publishes one price per market every ``1 / hz`` seconds and stores it as the latest.

    A tick that fails (database or broker down) is logged and the feed goes on with the next one;
    a feed that falls behind its schedule skips ahead instead of bursting to catch up.
    """

    def __init__(
        self,
        oracles: list[RandomWalkOracle],
        *,
        publisher: Publisher,
        prices: PriceRepository,
        clock: Clock,
        hz: float,
    ) -> None:
        if hz <= 0:
            raise ValueError("hz must be positive")
        self.oracles = oracles
        self.publisher = publisher
        self.prices = prices
        self.clock = clock
        self.interval = 1.0 / hz

    @classmethod
    async def resume(
        cls,
        markets: Iterable[Market],
        *,
        publisher: Publisher,
        prices: PriceRepository,
        clock: Clock,
        hz: float,
        seed: int | None = None,
        params: RandomWalkParams | None = None,
    ) -> PriceFeed:
        """A feed whose walks start from each market's latest stored price, so a restart continues
        where the previous process left off."""
        oracles = []
        for market in markets:
            stored = await prices.latest(market.id)
            start = (
                stored[0].price
                if stored
                else DEFAULT_START_PRICES.get(market.id, FALLBACK_START_PRICE)
            )
            oracles.append(RandomWalkOracle(market, start, seed=seed, params=params))
        return cls(oracles, publisher=publisher, prices=prices, clock=clock, hz=hz)

    async def tick(self) -> list[OraclePrice]:
        """Step every market once; number, store and publish every price together."""
        now = self.clock.now()
        steps = [oracle.step(self.interval, now) for oracle in self.oracles]
        await publish_prices(steps, publisher=self.publisher, repository=self.prices)
        return steps

    async def run(self) -> None:
        """Tick on schedule until cancelled."""
        deadline = self.clock.monotonic()
        while True:
            try:
                await self.tick()
            except Exception:
                logger.exception("price feed tick failed; continuing with the next one")
            deadline += self.interval
            delay = deadline - self.clock.monotonic()
            if delay < -self.interval:
                deadline = self.clock.monotonic()
                delay = 0.0
            await self.clock.sleep(max(delay, 0.0))
