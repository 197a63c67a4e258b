"""Simulated perpetuals traders, so the embedded default shows the feed alive: a demo user who
always holds a few positions, and traders who open leveraged positions at random and close some,
so the engine has warnings, candidates and liquidations to show.

They trade through the same desk as the mutations, with collateral from their perps margin
accounts like anyone; only the decisions are simulated, and their funding: before each open the
simulator tops the trader's free balance back up to SIMULATED_BALANCE, so liquidations never leave
the demo without money to trade.
"""

from __future__ import annotations

import logging
import random
from decimal import ROUND_DOWN, Decimal
from typing import TYPE_CHECKING, Protocol

from domain.perps import Side
from domain.perps_trades import TradeError

if TYPE_CHECKING:
    from domain.markets import MarketCatalog
    from domain.perps import Position
    from domain.perps_trades import Trade
    from domain.ports import Clock, PriceRepository

logger = logging.getLogger(__name__)

DEMO_USER = "demo"
DEMO_POSITIONS: tuple[tuple[str, Side, Decimal], ...] = (
    ("BTC-PERP", Side.LONG, Decimal(5)),
    ("ETH-PERP", Side.SHORT, Decimal(3)),
    ("SOL-PERP", Side.LONG, Decimal(8)),
)
"""Market, side and leverage of each position the demo user keeps open."""
DEMO_NOTIONAL = Decimal(10_000)
TRADERS = tuple(f"sim-trader-{n:02d}" for n in range(1, 9))
SIMULATED_BALANCE = Decimal(10_000)
"""The free margin a simulated trader has before each open: the demo's three positions take
about 6,600 of it, a trader's two at most about 4,000."""


class Desk(Protocol):
    async def open(
        self, owner: str, market_id: str, side: Side, size: Decimal, leverage: Decimal
    ) -> Trade: ...

    async def close(self, owner: str, position_id: str) -> Trade: ...


class Positions(Protocol):
    async def open_positions(self, owner: str | None = None) -> list[Position]: ...


class Funding(Protocol):
    async def top_up(self, owner: str, floor: Decimal) -> object:
        """Deposit what brings ``owner``'s free margin back up to ``floor``."""


class PerpsSimulator:
    def __init__(
        self,
        markets: MarketCatalog,
        *,
        desk: Desk,
        positions: Positions,
        funding: Funding,
        prices: PriceRepository,
        clock: Clock,
        interval_s: float = 2.0,
        seed: int | None = None,
    ) -> None:
        self.markets = markets
        self.desk = desk
        self.positions = positions
        self.funding = funding
        self.prices = prices
        self.clock = clock
        self.interval_s = interval_s
        self.random = random.Random(seed)

    def size_for(self, market_id: str, notional: Decimal, price: Decimal) -> Decimal:
        """About ``notional`` worth of ``market_id``, in whole steps, at least the minimum."""
        market = self.markets.get(market_id)
        steps = (notional / price / market.step_size).to_integral_value(ROUND_DOWN)
        return max(steps * market.step_size, market.min_order_size)

    async def step(self) -> None:
        await self._keep_demo_positions()
        for trader in TRADERS:
            await self._trade(trader)

    async def _keep_demo_positions(self) -> None:
        held = {p.market for p in await self.positions.open_positions(DEMO_USER)}
        for market_id, side, leverage in DEMO_POSITIONS:
            if market_id not in held:
                await self._open(DEMO_USER, market_id, side, DEMO_NOTIONAL, leverage)

    async def _trade(self, trader: str) -> None:
        held = await self.positions.open_positions(trader)
        if held and self.random.random() < 0.15:
            position = self.random.choice(held)
            try:
                await self.desk.close(trader, position.id)
            except TradeError as exc:
                logger.debug("%s could not close %s: %s", trader, position.id, exc)
        elif len(held) < 2 and self.random.random() < 0.3:
            market = self.random.choice(list(self.markets))
            side = self.random.choice((Side.LONG, Side.SHORT))
            leverage = Decimal(self.random.randint(10, int(market.max_leverage)))
            notional = Decimal(self.random.randint(1_000, 20_000))
            await self._open(trader, market.id, side, notional, leverage)

    async def _open(
        self, owner: str, market_id: str, side: Side, notional: Decimal, leverage: Decimal
    ) -> None:
        stored = await self.prices.latest(market_id)
        if stored is None:
            return  # no price yet: the next step tries again
        size = self.size_for(market_id, notional, stored[0].price)
        await self.funding.top_up(owner, SIMULATED_BALANCE)
        try:
            await self.desk.open(owner, market_id, side, size, leverage)
        except TradeError as exc:
            logger.debug("%s could not open on %s: %s", owner, market_id, exc)

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                logger.exception("perps simulator step failed; continuing with the next one")
            await self.clock.sleep(self.interval_s)
