"""The portfolio dashboard's PostgreSQL adapter: spot holdings, price alerts and the last price
they saw, trim rules and price samples; each event numbered on ``dashboard:<owner>`` in the
transaction that stores what it announces."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.storage.history import number_event
from domain import portfolio as model
from domain.topics import dashboard_topic

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime
    from decimal import Decimal

    import asyncpg

    from api.storage.database import Connection
    from domain.events import Event
    from domain.ports import Clock


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


class PgPortfolioStore:
    def __init__(self, pool: asyncpg.Pool, clock: Clock, *, initial: model.Holding) -> None:
        """``initial``: what an owner with no holdings holds (the initial cash)."""
        self.pool = pool
        self.clock = clock
        self.initial = initial

    # Price samples -----------------------------------------------------------------------------

    async def prices_at(self, since: datetime) -> dict[str, Decimal]:
        """Each market's price at ``since``: the newest sample no newer, else the oldest sample
        there is."""
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
        return {r["market"]: r["price"] for r in rows}

    async def sample(self, market: str, price: Decimal, at: datetime, keep_since: datetime) -> None:
        """Store a price sample, and forget the market's samples older than ``keep_since``."""
        await self.pool.execute(
            "INSERT INTO price_samples (market, at, price) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING",
            market,
            at,
            price,
        )
        await self.pool.execute(
            "DELETE FROM price_samples WHERE market = $1 AND at < $2", market, keep_since
        )

    # Holdings and conversions ------------------------------------------------------------------

    async def portfolio(self, owner: str, conn: Connection | None = None) -> model.Portfolio:
        """The owner's spot holdings, USD among them (a new owner holds ``initial``)."""
        executor = conn or self.pool
        rows = await executor.fetch(
            "SELECT * FROM portfolio_holdings WHERE owner = $1 ORDER BY asset", owner
        )
        if not rows:
            return model.Portfolio(holdings=(self.initial,))
        return model.Portfolio(
            holdings=tuple(
                model.Holding(r["asset"], r["amount"], r["average_cost"], r["realized_pnl"])
                for r in rows
            )
        )

    async def convert(
        self,
        owner: str,
        convert: Callable[[model.Portfolio], tuple[model.Portfolio, model.ConversionCompleted]],
    ) -> tuple[model.ConversionCompleted, Event]:
        """``convert`` the owner's holdings under their lock: store the holdings it returns and
        number its ``ConversionCompleted``, in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"holdings:{owner}")
            after, completed = convert(await self.portfolio(owner, conn))
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
            event = await self._number(conn, owner, completed.event_type, completed.to_payload())
        return completed, event

    # Alerts ------------------------------------------------------------------------------------

    async def add_alert(self, owner: str, alert: model.PriceAlert) -> None:
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

    async def observe_alerts(self, asset: str, price: Decimal, now: datetime) -> list[Event]:
        """The next price of ``asset``, to its armed alerts: the domain's
        :class:`domain.portfolio.AlertWatch`, restored from the alerts that saw the last price
        and that price, says which it fires; each is stored as it stands after firing (a
        once-alert disarmed) and its ``BenchmarkTriggered`` numbered in the transaction that
        moves the asset's last seen price on: exactly once.

        Without an armed alert on the asset nothing is read or written (one indexed lookup per
        price). The last seen price then goes stale, which changes nothing: an alert created
        later than it is skipped on its first price anyway, and that price becomes the last."""
        armed = await self.pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM price_alerts WHERE asset = $1 AND armed)", asset
        )
        if not armed:
            return []
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
                return []
            previous: Decimal = last["price"]
            # An alert created after the previous price was seen is on its first tick: it only
            # learns the price now (DOMAIN.md: the first tick after arming never fires).
            rows = await conn.fetch(
                """SELECT * FROM price_alerts
                   WHERE asset = $1 AND armed AND created_at <= $2 FOR UPDATE""",
                asset,
                last["seen_at"],
            )
            watch = model.AlertWatch([_alert(row) for row in rows], {asset: previous})
            owners = {row["id"]: row["owner"] for row in rows}
            for trigger in watch.observe(asset, price):
                alert = trigger.alert  # as it stands after firing: a once-alert disarmed
                await conn.execute(
                    "UPDATE price_alerts SET armed = $2, triggered_at = $3 WHERE id = $1",
                    alert.id,
                    alert.armed,
                    now,
                )
                triggered = model.BenchmarkTriggered.of(trigger, now)
                events.append(
                    await self._number(
                        conn, owners[alert.id], triggered.event_type, triggered.to_payload()
                    )
                )
        return events

    # Trims -------------------------------------------------------------------------------------

    async def add_trim(
        self, owner: str, rule_id: str, symbol: str, gain_percent: Decimal, sell_percent: Decimal
    ) -> None:
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

    async def trims(self, owner: str) -> list[asyncpg.Record]:
        return list(
            await self.pool.fetch(
                "SELECT * FROM trim_rules WHERE owner = $1 ORDER BY created_at, id", owner
            )
        )

    async def trims_on(self, symbol: str) -> list[asyncpg.Record]:
        """Every trim rule on ``symbol``, whoever owns it."""
        return list(await self.pool.fetch("SELECT * FROM trim_rules WHERE symbol = $1", symbol))

    async def delete_trim(self, owner: str, rule_id: str) -> bool:
        status: str = await self.pool.execute(
            "DELETE FROM trim_rules WHERE id = $1 AND owner = $2", rule_id, owner
        )
        return status == "DELETE 1"

    async def claim_trim(self, rule_id: str, price: Decimal, last: Decimal | None) -> bool:
        """Move the rule's last trim price from ``last`` to ``price``; False if another pass (or
        process) moved it first."""
        claimed = await self.pool.execute(
            """UPDATE trim_rules SET last_trim_price = $2
               WHERE id = $1 AND last_trim_price IS NOT DISTINCT FROM $3""",
            rule_id,
            price,
            last,
        )
        return bool(claimed == "UPDATE 1")

    # Events ------------------------------------------------------------------------------------

    async def announce(self, owner: str, type: str, payload: dict[str, Any]) -> Event:
        """Number an event on the owner's dashboard topic, outside any change."""
        async with self.pool.acquire() as conn:
            return await self._number(conn, owner, type, payload)

    async def _number(
        self, conn: Connection, owner: str, type: str, payload: dict[str, Any]
    ) -> Event:
        return await number_event(conn, self.clock, dashboard_topic(owner), type, payload)
