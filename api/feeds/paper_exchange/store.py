"""The paper exchange's PostgreSQL adapter: each account is one document in ``paper_accounts``,
changed under a row lock; every change is stored with its fills and numbered on ``live:<owner>``,
and each fill on its market's public tape (``trades:<market>``, without the owner), in one
transaction."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import orjson

from api.storage.history import number_events
from domain.book_makers import RestingOrder, order_flow, resting_orders
from domain.events import Unnumbered
from domain.order_book import TRADE_EVENT, PublicTrade
from domain.paper_exchange import CHANGES, Changes, PaperAccount
from domain.topics import live_topic, trades_topic

if TYPE_CHECKING:
    from collections.abc import Callable
    from decimal import Decimal

    import asyncpg

    from api.storage.database import Connection
    from domain.events import Event
    from domain.markets import MarketCatalog
    from domain.paper_exchange import Fill
    from domain.ports import Clock


ACCOUNT_CHANGED = "account.changed"


class PgPaperAccounts:
    def __init__(
        self, pool: asyncpg.Pool, clock: Clock, *, markets: MarketCatalog, initial_balance: Decimal
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.markets = markets
        self.initial_balance = initial_balance

    async def account(self, owner: str) -> PaperAccount:
        """The owner's account as stored (a fresh one, not yet stored, if it has none)."""
        payload = await self.pool.fetchval(
            "SELECT payload::text FROM paper_accounts WHERE owner = $1", owner
        )
        return self._account(owner, payload)

    async def fills(self, owner: str, limit: int) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            """SELECT payload::text AS payload FROM paper_fills WHERE owner = $1
               ORDER BY at DESC, id DESC LIMIT $2""",
            owner,
            limit,
        )
        return [orjson.loads(r["payload"]) for r in rows]

    async def resting_orders(self) -> list[RestingOrder]:
        """Every account's open LIMIT orders, as the order books hold them."""
        rows = await self.pool.fetch(
            "SELECT owner, payload::text AS payload FROM paper_accounts WHERE watch_symbols <> '{}'"
        )
        orders: list[RestingOrder] = []
        for row in rows:
            account = self._account(row["owner"], row["payload"])
            orders += resting_orders(row["owner"], account.open_orders())
        return orders

    async def watching(self, symbol: str) -> list[str]:
        """The owners with an open order on ``symbol``."""
        owners = await self.pool.fetch(
            "SELECT owner FROM paper_accounts WHERE watch_symbols @> ARRAY[$1::text]", symbol
        )
        return [row["owner"] for row in owners]

    async def change(
        self, owner: str, change: Callable[[PaperAccount], Changes]
    ) -> tuple[Changes, list[Event]]:
        """Apply ``change`` to the owner's account under its row lock; store what it changed and
        number the event announcing it, a public trade per fill and the order books' change per
        LIMIT order (:func:`domain.book_makers.order_flow`), in one transaction (no event when
        nothing changed)."""
        async with self.pool.acquire() as conn, conn.transaction():
            payload = await self._locked(conn, owner)
            account = self._account(owner, payload)
            changes = change(account)  # an OrderError leaves everything as it was
            if not changes:
                return changes, []
            await self._save(conn, account)
            for fill in changes.fills:
                await conn.execute(
                    """INSERT INTO paper_fills (owner, id, order_id, payload, at)
                       VALUES ($1, $2, $3, $4::jsonb, $5)""",
                    owner,
                    fill.id,
                    fill.order_id,
                    orjson.dumps(fill.to_payload()).decode(),
                    fill.at,
                )
            events = await number_events(
                conn,
                self.clock,
                [
                    Unnumbered(live_topic(owner), ACCOUNT_CHANGED, CHANGES.encode(changes)),
                    *(
                        Unnumbered(trades_topic(f.symbol), TRADE_EVENT, public_trade(f))
                        for f in changes.fills
                    ),
                    *order_flow(owner, changes),
                ],
            )
        return changes, events

    async def _locked(self, conn: Connection, owner: str) -> str:
        """The owner's stored account, locked until the transaction ends; a new owner's fresh
        account is stored first. Concurrent first operations of one owner (eight orders at
        once) all wait on the one row: ``ON CONFLICT DO NOTHING`` waits for the transaction
        that inserted it, and the next statement then sees its row."""
        select = "SELECT payload::text FROM paper_accounts WHERE owner = $1 FOR UPDATE"
        payload: str | None = await conn.fetchval(select, owner)
        if payload is None:
            fresh = self._account(owner, None)
            await conn.execute(
                """INSERT INTO paper_accounts (owner, payload, watch_symbols, revision, updated_at)
                   VALUES ($1, $2::jsonb, '{}', $3, $4) ON CONFLICT (owner) DO NOTHING""",
                owner,
                orjson.dumps(fresh.to_payload()).decode(),
                fresh.revision,
                self.clock.now(),
            )
            payload = await conn.fetchval(select, owner)
            assert payload is not None
        return payload

    async def _save(self, conn: Connection, account: PaperAccount) -> None:
        watch = sorted({o.symbol for o in account.open_orders()})
        await conn.execute(
            """UPDATE paper_accounts SET payload = $2::jsonb, watch_symbols = $3,
                   revision = $4, updated_at = $5
               WHERE owner = $1""",
            account.owner,
            orjson.dumps(account.to_payload()).decode(),
            watch,
            account.revision,
            self.clock.now(),
        )

    def _account(self, owner: str, payload: str | None) -> PaperAccount:
        if payload is None:
            return PaperAccount(owner, self.markets, initial_balance=self.initial_balance)
        return PaperAccount.from_payload(orjson.loads(payload), self.markets)


def public_trade(fill: Fill) -> dict[str, Any]:
    """A fill as the public tape shows it: market, the taker's side, price, size and time, under
    an id of its own (never the owner's, nor the order's or fill's, which are the account's)."""
    trade = PublicTrade(
        uuid.uuid4().hex, fill.symbol, fill.side, fill.price, fill.quantity, fill.at
    )
    return trade.to_payload()
