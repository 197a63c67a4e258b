"""The portfolio dashboard's adapter: price alerts, trim rules, spot holdings and conversions in
PostgreSQL, and the worker that follows every price (samples for 24 h changes, alerts that fire,
trims on paper positions).

Events go to ``dashboard:<owner>``: ``TrimExecuted``, ``BenchmarkTriggered``,
``ConversionCompleted`` (the domain's payloads). Trades and portfolio values are derived by the
subscription from the paper account's own events and the prices.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from api.feeds.prices.follower import follow_prices
from api.storage.history import number_event
from domain import portfolio as model
from domain.paper_exchange import OrderError, OrderRequest, OrderSide, OrderType
from domain.topics import dashboard_topic

if TYPE_CHECKING:
    from datetime import datetime

    import asyncpg

    from api.storage.database import Connection
    from api.streaming.hub import Hub
    from domain.events import Event
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


def _alert(row: asyncpg.Record) -> model.PriceAlert:
    return model.PriceAlert(
        id=row["id"],
        asset=row["asset"],
        target_price=row["target_price"],
        direction=model.Direction(row["direction"]),
        action=row["action"],
        once=row["once"],
        armed=row["armed"],
    )


class PortfolioDesk:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        markets: MarketCatalog,
        exchange: PaperTrading,
        publisher: Publisher,
        clock: Clock,
        initial_cash: Decimal,
        conversion_fee_rate: Decimal,
    ) -> None:
        self.pool = pool
        self.markets = markets
        self.exchange = exchange
        self.publisher = publisher
        self.clock = clock
        self.initial_cash = initial_cash
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
        rows = await self.pool.fetch(
            """SELECT DISTINCT ON (market) market, price FROM (
                   (SELECT market, at, price, 0 AS rank FROM price_samples WHERE at <= $1)
                   UNION ALL
                   (SELECT market, at, price, 1 AS rank FROM price_samples)
               ) s
               ORDER BY market, rank, CASE WHEN rank = 0 THEN -extract(epoch FROM at)
                                          ELSE extract(epoch FROM at) END""",
            since,
        )
        prices = {asset_of(r["market"]): r["price"] for r in rows}
        prices[CASH] = Decimal(1)
        return prices

    # Holdings and conversions ------------------------------------------------------------------

    async def portfolio(self, owner: str, conn: Connection | None = None) -> model.Portfolio:
        """The owner's spot holdings, USD among them (a new owner starts with the initial cash)."""
        executor = conn or self.pool
        rows = await executor.fetch(
            "SELECT * FROM portfolio_holdings WHERE owner = $1 ORDER BY asset", owner
        )
        if not rows:
            return model.Portfolio(holdings=(model.Holding(CASH, self.initial_cash, Decimal(1)),))
        return model.Portfolio(
            holdings=tuple(
                model.Holding(r["asset"], r["amount"], r["average_cost"], r["realized_pnl"])
                for r in rows
            )
        )

    async def convert(
        self, owner: str, from_asset: str, to_asset: str, amount: Decimal
    ) -> model.ConversionCompleted:
        for asset in (from_asset, to_asset):
            if asset != CASH and asset not in self.assets:
                raise model.PortfolioError("UNKNOWN_ASSET", f"unknown asset {asset!r}")
        prices = await self.asset_prices()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"holdings:{owner}")
            portfolio = await self.portfolio(owner, conn)
            result = model.convert(
                portfolio.holding(from_asset),
                portfolio.holding(to_asset),
                amount,
                prices.get(from_asset),
                prices.get(to_asset),
                self.conversion_fee_rate,
            )
            after = portfolio.with_holding(result.from_holding).with_holding(result.to_holding)
            for holding in after.holdings:
                await conn.execute(
                    """INSERT INTO portfolio_holdings
                           (owner, asset, amount, average_cost, realized_pnl)
                       VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (owner, asset) DO UPDATE
                       SET amount = EXCLUDED.amount, average_cost = EXCLUDED.average_cost,
                           realized_pnl = EXCLUDED.realized_pnl""",
                    owner,
                    holding.asset,
                    holding.amount,
                    holding.average_cost,
                    holding.realized_pnl,
                )
            completed = model.ConversionCompleted.of(
                f"cv_{uuid.uuid4().hex[:16]}", result, self.clock.now()
            )
            event = await self._number(conn, owner, completed.event_type, completed.to_payload())
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
        await self.pool.execute(
            """INSERT INTO price_alerts (id, owner, asset, target_price, direction, action, once,
                                         armed, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8)""",
            alert.id,
            owner,
            alert.asset,
            alert.target_price,
            alert.direction.value,
            alert.action,
            alert.once,
            self.clock.now(),
        )
        return alert

    async def alerts(self, owner: str) -> list[tuple[model.PriceAlert, datetime | None]]:
        rows = await self.pool.fetch(
            "SELECT * FROM price_alerts WHERE owner = $1 ORDER BY created_at, id", owner
        )
        return [(_alert(r), r["triggered_at"]) for r in rows]

    async def delete_alert(self, owner: str, alert_id: str) -> bool:
        status: str = await self.pool.execute(
            "DELETE FROM price_alerts WHERE id = $1 AND owner = $2", alert_id, owner
        )
        return status == "DELETE 1"

    # Trims -----------------------------------------------------------------------------------

    async def create_trim(
        self, owner: str, symbol: str, gain_percent: Decimal, sell_percent: Decimal
    ) -> tuple[str, model.TrimRule]:
        market = self.markets.get(symbol)
        rule = model.TrimRule(symbol, gain_percent, sell_percent, market.step_size)
        rule_id = f"tr_{uuid.uuid4().hex[:16]}"
        await self.pool.execute(
            """INSERT INTO trim_rules (id, owner, symbol, gain_percent, sell_percent, created_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            rule_id,
            owner,
            symbol,
            gain_percent,
            sell_percent,
            self.clock.now(),
        )
        return rule_id, rule

    async def trims(self, owner: str) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT * FROM trim_rules WHERE owner = $1 ORDER BY created_at, id", owner
            )
        )

    async def delete_trim(self, owner: str, rule_id: str) -> bool:
        status: str = await self.pool.execute(
            "DELETE FROM trim_rules WHERE id = $1 AND owner = $2", rule_id, owner
        )
        return status == "DELETE 1"

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
        await self.pool.execute(
            "INSERT INTO price_samples (market, at, price) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            market,
            now,
            price,
        )
        await self.pool.execute(
            "DELETE FROM price_samples WHERE market = $1 AND at < $2", market, now - SAMPLES_KEPT
        )

    async def _alerts(self, asset: str, price: Decimal, now: datetime) -> None:
        """Fire the armed alerts this price crossed since the last one seen, each in the same
        transaction that disarms it and moves the last seen price on: exactly once.

        Without an armed alert on the asset nothing is read or written (one indexed lookup per
        price). The last seen price then goes stale, which changes nothing: an alert created
        later than it is skipped on its first price anyway, and that price becomes the last."""
        armed = await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM price_alerts WHERE asset = $1 AND armed)", asset
        )
        if not armed:
            return
        events: list[Event] = []
        async with self.pool.acquire() as conn, conn.transaction():
            last = await conn.fetchrow(
                "SELECT price, seen_at FROM alert_last_prices WHERE asset = $1 FOR UPDATE", asset
            )
            await conn.execute(
                """INSERT INTO alert_last_prices (asset, price, seen_at) VALUES ($1, $2, $3)
                   ON CONFLICT (asset) DO UPDATE
                   SET price = EXCLUDED.price, seen_at = EXCLUDED.seen_at""",
                asset,
                price,
                now,
            )
            if last is None or last["price"] == price:
                return
            previous: Decimal = last["price"]
            # An alert created after the previous price was seen is on its first tick: it only
            # learns the price now (DOMAIN.md: the first tick after arming never fires).
            rows = await conn.fetch(
                """SELECT * FROM price_alerts
                   WHERE asset = $1 AND armed AND created_at <= $2 FOR UPDATE""",
                asset,
                last["seen_at"],
            )
            for row in rows:
                alert = _alert(row)
                if not alert.crosses(previous, price):
                    continue
                if alert.once:
                    await conn.execute(
                        "UPDATE price_alerts SET armed = false, triggered_at = $2 WHERE id = $1",
                        alert.id,
                        now,
                    )
                    alert = model.PriceAlert(
                        alert.id,
                        alert.asset,
                        alert.target_price,
                        alert.direction,
                        alert.action,
                        alert.once,
                        armed=False,
                    )
                else:
                    await conn.execute(
                        "UPDATE price_alerts SET triggered_at = $2 WHERE id = $1", alert.id, now
                    )
                triggered = model.BenchmarkTriggered.of(
                    model.AlertTrigger(alert, previous, price), now
                )
                events.append(
                    await self._number(
                        conn, row["owner"], triggered.event_type, triggered.to_payload()
                    )
                )
        for event in events:
            await self.publisher.send(event)

    async def _trims(self, market: str, price: Decimal, now: datetime) -> None:
        rules = await self.pool.fetch("SELECT * FROM trim_rules WHERE symbol = $1", market)
        for row in rules:
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
        claimed = await self.pool.execute(
            """UPDATE trim_rules SET last_trim_price = $2
               WHERE id = $1 AND last_trim_price IS NOT DISTINCT FROM $3""",
            row["id"],
            price,
            row["last_trim_price"],
        )
        if claimed != "UPDATE 1":
            return  # another pass (or process) trimmed first
        await self.exchange.place(
            owner,
            OrderRequest(market, OrderSide.SELL, OrderType.MARKET, decision.amount_sold),
        )
        executed = model.TrimExecuted.of(f"trim_{uuid.uuid4().hex[:16]}", decision, now)
        async with self.pool.acquire() as conn:
            event = await self._number(conn, owner, executed.event_type, executed.to_payload())
        await self.publisher.send(event)

    async def _number(
        self, conn: Connection, owner: str, type: str, payload: dict[str, Any]
    ) -> Event:
        return await number_event(conn, self.clock, dashboard_topic(owner), type, payload)
