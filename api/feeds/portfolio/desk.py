"""The portfolio dashboard's desk: price alerts, trim rules, spot holdings and conversions (stored
by :class:`api.feeds.portfolio.store.PgPortfolioStore`), and the worker that follows every price
(samples for 24 h changes, alerts that fire, trims on paper positions).

Events go to ``dashboard:<owner>``: ``TrimExecuted``, ``BenchmarkTriggered``,
``ConversionCompleted`` (the domain's payloads). Trades and portfolio values are derived by the
subscription from the paper account's own events and the prices.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from api.feeds.prices.follower import follow_prices
from domain import portfolio as model
from domain.paper_exchange import OrderError, OrderRequest, OrderSide, OrderType

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

    from api.feeds.portfolio.store import PgPortfolioStore
    from api.streaming.hub import Hub
    from domain.markets import MarketCatalog
    from domain.ports import Clock, PaperTrading, Publisher


logger = logging.getLogger(__name__)

CASH = "USD"
BLOCKCHAINS = {"BTC": "bitcoin", "ETH": "ethereum", "SOL": "solana"}
SAMPLE_EVERY = timedelta(minutes=1)
SAMPLES_KEPT = timedelta(hours=48)
DAY = timedelta(hours=24)


def asset_of(market: str) -> str:
    return market.split("-", 1)[0]


class PortfolioDesk:
    def __init__(
        self,
        store: PgPortfolioStore,
        *,
        markets: MarketCatalog,
        exchange: PaperTrading,
        publisher: Publisher,
        clock: Clock,
        conversion_fee_rate: Decimal,
    ) -> None:
        self.store = store
        self.markets = markets
        self.exchange = exchange
        self.publisher = publisher
        self.clock = clock
        self.conversion_fee_rate = conversion_fee_rate
        self.assets = {asset_of(m.id): m.id for m in markets}
        self._sampled: dict[str, datetime] = {}

    # Prices ----------------------------------------------------------------------------------

    async def asset_prices(self) -> dict[str, Decimal]:
        """Each asset's latest fresh price in USD (USD itself is 1)."""
        marks = await self.exchange.marks()
        prices = {asset_of(market): price for market, price in marks.items()}
        prices[CASH] = Decimal(1)
        return prices

    async def prices_24h_ago(self) -> dict[str, Decimal]:
        """Each asset's price 24 h ago: the newest sample at least a day old, else the oldest
        sample there is (a server younger than a day compares with its first minute)."""
        since = self.clock.now() - DAY
        samples = await self.store.prices_at(since)
        prices = {asset_of(market): price for market, price in samples.items()}
        prices[CASH] = Decimal(1)
        return prices

    # Holdings and conversions ------------------------------------------------------------------

    async def portfolio(self, owner: str) -> model.Portfolio:
        """The owner's spot holdings, USD among them (a new owner starts with the initial cash)."""
        return await self.store.portfolio(owner)

    async def convert(
        self, owner: str, from_asset: str, to_asset: str, amount: Decimal
    ) -> model.ConversionCompleted:
        for asset in (from_asset, to_asset):
            if asset != CASH and asset not in self.assets:
                raise model.PortfolioError("UNKNOWN_ASSET", f"unknown asset {asset!r}")
        prices = await self.asset_prices()

        def convert(
            portfolio: model.Portfolio,
        ) -> tuple[model.Portfolio, model.ConversionCompleted]:
            result = model.convert(
                portfolio.holding(from_asset),
                portfolio.holding(to_asset),
                amount,
                prices.get(from_asset),
                prices.get(to_asset),
                self.conversion_fee_rate,
            )
            after = portfolio.with_holding(result.from_holding).with_holding(result.to_holding)
            completed = model.ConversionCompleted.of(
                f"cv_{uuid.uuid4().hex[:16]}", result, self.clock.now()
            )
            return after, completed

        completed, event = await self.store.convert(owner, convert)
        await self.publisher.send(event)
        return completed

    # Alerts ----------------------------------------------------------------------------------

    async def create_alert(
        self,
        owner: str,
        asset: str,
        target_price: Decimal,
        direction: model.Direction,
        action: str,
        once: bool,
    ) -> model.PriceAlert:
        if asset not in self.assets:
            raise model.PortfolioError("UNKNOWN_ASSET", f"unknown asset {asset!r}")
        alert = model.PriceAlert(
            id=f"al_{uuid.uuid4().hex[:16]}",
            asset=asset,
            target_price=target_price,
            direction=direction,
            action=action,
            once=once,
        )
        await self.store.add_alert(owner, alert)
        return alert

    async def alerts(self, owner: str) -> list[tuple[model.PriceAlert, datetime | None]]:
        return await self.store.alerts(owner)

    async def delete_alert(self, owner: str, alert_id: str) -> bool:
        return await self.store.delete_alert(owner, alert_id)

    # Trims -----------------------------------------------------------------------------------

    async def create_trim(
        self, owner: str, symbol: str, gain_percent: Decimal, sell_percent: Decimal
    ) -> tuple[str, model.TrimRule]:
        market = self.markets.get(symbol)
        rule = model.TrimRule(symbol, gain_percent, sell_percent, market.step_size)
        rule_id = f"tr_{uuid.uuid4().hex[:16]}"
        await self.store.add_trim(owner, rule_id, symbol, gain_percent, sell_percent)
        return rule_id, rule

    async def trims(self, owner: str) -> list[asyncpg.Record]:
        return await self.store.trims(owner)

    async def delete_trim(self, owner: str, rule_id: str) -> bool:
        return await self.store.delete_trim(owner, rule_id)

    # The worker --------------------------------------------------------------------------------

    async def follow_prices(self, hub: Hub) -> None:
        await follow_prices(hub, self.markets, self.clock, self.on_price, worker="portfolio worker")

    async def on_price(self, market: str, price: Decimal) -> None:
        now = self.clock.now()
        await self._sample(market, price, now)
        await self._alerts(asset_of(market), price, now)
        await self._trims(market, price, now)

    async def _sample(self, market: str, price: Decimal, now: datetime) -> None:
        last = self._sampled.get(market)
        if last is not None and now - last < SAMPLE_EVERY:
            return
        self._sampled[market] = now
        await self.store.sample(market, price, now, now - SAMPLES_KEPT)

    async def _alerts(self, asset: str, price: Decimal, now: datetime) -> None:
        """Fire the armed alerts this price crossed since the last one seen, exactly once."""
        for event in await self.store.observe_alerts(asset, price, now):
            await self.publisher.send(event)

    async def _trims(self, market: str, price: Decimal, now: datetime) -> None:
        for row in await self.store.trims_on(market):
            try:
                await self._trim(row, market, price, now)
            except (OrderError, model.PortfolioError) as exc:
                logger.info("trim %s not executed: %s", row["id"], exc)

    async def _trim(self, row: asyncpg.Record, market: str, price: Decimal, now: datetime) -> None:
        owner = row["owner"]
        account = await self.exchange.account(owner)
        position = next((p for p in account.positions({}) if p.position.symbol == market), None)
        if position is None or position.position.size <= 0:
            return  # trims take profit on long positions
        rule = model.TrimRule(
            market,
            row["gain_percent"],
            row["sell_percent"],
            self.markets.get(market).step_size,
            row["last_trim_price"],
        )
        holding = model.Holding(market, position.position.size, position.position.entry_price)
        decision = model.evaluate_trim(holding, price, rule)
        if decision is None:
            return
        if not await self.store.claim_trim(row["id"], price, row["last_trim_price"]):
            return  # another pass (or process) trimmed first
        await self.exchange.place(
            owner,
            OrderRequest(market, OrderSide.SELL, OrderType.MARKET, decision.amount_sold),
        )
        executed = model.TrimExecuted.of(f"trim_{uuid.uuid4().hex[:16]}", decision, now)
        event = await self.store.announce(owner, executed.event_type, executed.to_payload())
        await self.publisher.send(event)
