"""PostgreSQL adapters of the perpetuals feed: the position book the engine and the trading desk
write, and the latest event of every latest-value topic.

Every change to a position is one transaction that also numbers the event announcing it (the
topic's sequence is taken on the same connection), so an event exists if and only if its change
was stored. The same transaction moves the trade's money between the position and its owner's
perps margin account (:mod:`domain.perps_margin`) and checks the market's limits, so a refused
trade stores nothing and a stored one never leaves the account without its money.

Locks are taken in one order, so concurrent trades wait for each other instead of deadlocking:
the position row, then the owner's account row, then the market's open-interest lock (an advisory
transaction lock per market, which serializes the limit check of every trade that adds to that
market).
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING

from api.storage.history import (
    NUMBERED,
    number_event,
    number_events,
    numbered,
    numbering_args,
    numbering_ctes,
)
from domain.events import Unnumbered
from domain.perps import Position, Side
from domain.perps_engine import PositionChanges
from domain.perps_margin import (
    MarginAccount,
    account_movement,
    added_size,
    check_limits,
    deposit,
    move,
    new_account,
    top_up_amount,
)
from domain.perps_trades import FillKind

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    import asyncpg

    from api.storage.database import Connection
    from domain.events import Event
    from domain.markets import Market
    from domain.perps_engine import Announcement
    from domain.perps_trades import Fill, Trade
    from domain.ports import Clock

_POSITION_COLUMNS = (
    "id, owner, market, side, size, entry_price, collateral, realized_pnl, revision, opened_at"
)


def _position(row: asyncpg.Record) -> Position:
    return Position(
        id=row["id"],
        owner=row["owner"],
        market=row["market"],
        side=Side(row["side"]),
        size=row["size"],
        entry_price=row["entry_price"],
        collateral=row["collateral"],
        opened_at=row["opened_at"],
        realized_pnl=row["realized_pnl"],
        revision=row["revision"],
    )


def _by_id(position: Position) -> str:
    return position.id


def _account(row: asyncpg.Record) -> MarginAccount:
    return MarginAccount(row["owner"], row["balance"], row["deposited"], row["revision"])


class PositionNotFoundError(LookupError):
    pass


class PositionOwnerError(ValueError):
    def __init__(self, position_id: str) -> None:
        super().__init__(f"position {position_id!r} belongs to another owner")


class PositionSourceError(ValueError):
    def __init__(self, position_id: str) -> None:
        super().__init__(f"position {position_id!r} was opened on this server's desk, not on chain")


_OPEN_INTEREST_LOCK = 0x70657270  # "perp": the advisory lock class of the per-market lock


class PgPositionBook:
    """Open and ended positions, their fills, liquidations and funding settlements."""

    def __init__(
        self, pool: asyncpg.Pool, clock: Clock, *, initial_balance: Decimal = Decimal(0)
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.initial_balance = initial_balance
        """What a user's perps margin account holds before its first trade."""

    # Reads -----------------------------------------------------------------------------------

    async def open_positions(self, owner: str | None = None) -> list[Position]:
        if owner is None:
            rows = await self.pool.fetch(
                f"SELECT {_POSITION_COLUMNS} FROM perp_positions WHERE status = 'open' ORDER BY id"
            )
        else:
            rows = await self.pool.fetch(
                f"""SELECT {_POSITION_COLUMNS} FROM perp_positions
                    WHERE status = 'open' AND owner = $1 ORDER BY opened_at, id""",
                owner,
            )
        return [_position(row) for row in rows]

    async def position_changes(self, cursor: int | None) -> PositionChanges:
        """Every open position (``cursor`` None), or every position written by a transaction
        the read that returned ``cursor`` may not have seen (migration 0011). One statement, so
        one snapshot (``pg_current_snapshot()`` is the statement's), whose xmin is the next
        cursor; one round trip, the row with no position carrying it when nothing changed."""
        which = "status = 'open'" if cursor is None else "changed_by >= $1::text::xid8"
        rows = await self.pool.fetch(
            f"""SELECT s.xmin, p.* FROM
                    (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin) s
                LEFT JOIN LATERAL
                    (SELECT {_POSITION_COLUMNS}, status FROM perp_positions WHERE {which}
                     ORDER BY id) p ON true""",
            *(() if cursor is None else (str(cursor),)),
        )
        positions = [row for row in rows if row["id"] is not None]
        return PositionChanges(
            [_position(row) for row in positions if row["status"] == "open"],
            [row["id"] for row in positions if row["status"] != "open"],
            rows[0]["xmin"],
        )

    async def oldest_fill_since(self, since: datetime) -> datetime | None:
        at: datetime | None = await self.pool.fetchval(
            "SELECT min(at) FROM perp_fills WHERE at >= $1", since
        )
        return at

    async def margin_account(self, owner: str) -> MarginAccount:
        """The owner's account as stored (a new one, not yet stored, if it has none)."""
        row = await self.pool.fetchrow(
            "SELECT owner, balance, deposited, revision FROM perp_margin_accounts WHERE owner = $1",
            owner,
        )
        return new_account(owner, self.initial_balance) if row is None else _account(row)

    async def volumes_since(self, since: datetime) -> dict[str, Decimal]:
        rows = await self.pool.fetch(
            """SELECT market, sum(notional) AS volume FROM perp_fills
               WHERE at >= $1 GROUP BY market""",
            since,
        )
        return {row["market"]: row["volume"] for row in rows}

    async def last_funding(self) -> dict[str, tuple[Decimal, datetime]]:
        rows = await self.pool.fetch(
            """SELECT DISTINCT ON (market) market, rate, settled_at FROM perp_funding
               ORDER BY market, settled_at DESC"""
        )
        return {row["market"]: (row["rate"], row["settled_at"]) for row in rows}

    # Writes ----------------------------------------------------------------------------------

    async def open(self, trade: Trade, announce: Announcement, market: Market) -> Event:
        """Store a new position, its collateral and fee taken from its owner's account;
        INSUFFICIENT_MARGIN, POSITION_LIMIT or OPEN_INTEREST_LIMIT store nothing."""
        async with self.pool.acquire() as conn, conn.transaction():
            p = trade.position
            announce = await self._settle(conn, trade, Decimal(0), market, announce)
            await conn.execute(
                f"""INSERT INTO perp_positions ({_POSITION_COLUMNS}, updated_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)""",
                p.id,
                p.owner,
                p.market,
                p.side.value,
                p.size,
                p.entry_price,
                p.collateral,
                p.realized_pnl,
                p.revision,
                p.opened_at or trade.fill.at,
            )
            await _insert_fill(conn, trade.fill)
            return await self._number(conn, announce)

    async def locked(self, conn: Connection, position_id: str, owner: str) -> Position:
        """The open desk position ``position_id`` of ``owner``, locked until the transaction
        ends. Positions ingested from chain are not the desk's to trade: their money is on
        chain, not in the owner's margin account."""
        row = await conn.fetchrow(
            f"""SELECT {_POSITION_COLUMNS} FROM perp_positions
                WHERE id = $1 AND owner = $2 AND status = 'open' AND source = 'desk'
                FOR UPDATE""",
            position_id,
            owner,
        )
        if row is None:
            raise PositionNotFoundError(position_id)
        return _position(row)

    async def change(
        self,
        position_id: str,
        owner: str,
        trade_of: Callable[[Position], Trade],
        announce: Callable[[Trade], Announcement],
        market: Market,
        *,
        ends: str | None = None,
    ) -> tuple[Trade, Event]:
        """Apply ``trade_of`` to the locked position and store the result, moving its money
        to or from the owner's account; ``ends`` ('closed') ends the position. Domain errors
        raised by ``trade_of`` or by the account and limit checks roll everything back."""
        async with self.pool.acquire() as conn, conn.transaction():
            position = await self.locked(conn, position_id, owner)
            trade = trade_of(position)
            announcement = await self._settle(
                conn, trade, position.collateral, market, announce(trade)
            )
            await _update_position(conn, trade, status=ends or "open")
            await _insert_fill(conn, trade.fill)
            return trade, await self._number(conn, announcement)

    async def liquidate_all(
        self, liquidations: Sequence[tuple[Trade, Announcement]]
    ) -> list[Event | None]:
        """Every liquidation whose position is still open at the revision before its trade's,
        stored in one transaction of two statements however many there are (the engine's tick
        waits for it): the first locks the positions in id order, then their desk owners'
        accounts in owner order (as funding and single trades lock them); the second ends the
        positions, inserts their fills and liquidation rows, moves what is left after the reward
        back to each owner's account and numbers the events. Each one's numbered event, or None
        where the position changed."""
        if not liquidations:
            return []
        async with self.pool.acquire() as conn, conn.transaction():
            sources, accounts = await self._lock_for_liquidation(conn, liquidations)
            done: list[tuple[Trade, Announcement]] = []
            at: list[int] = []
            for i, (trade, announce) in enumerate(liquidations):
                source = sources.pop(trade.position.id, None)  # (a repeated id: stored once)
                if source is None:
                    continue
                if source == "desk":
                    # What is left after the reward goes back to the owner's account.
                    owner = trade.position.owner
                    accounts[owner] = move(accounts[owner], trade.returned)
                    announce = announce.with_account(accounts[owner])
                done.append((trade, announce))
                at.append(i)
            events = await self._store_liquidations(
                conn, [t for t, _ in done], list(accounts.values()), [a for _, a in done]
            )
        results: list[Event | None] = [None] * len(liquidations)
        for i, event in zip(at, events, strict=True):
            results[i] = event
        return results

    async def _lock_for_liquidation(
        self, conn: Connection, liquidations: Sequence[tuple[Trade, Announcement]]
    ) -> tuple[dict[str, str], dict[str, MarginAccount]]:
        """Lock the positions still open at the revision before their trade's (in id order),
        then their desk owners' margin accounts (created where missing, in owner order): one
        statement. Each locked position's source, and the accounts."""
        rows = await conn.fetch(
            """WITH locked AS (
                   SELECT p.id, p.owner, p.source FROM perp_positions p
                   JOIN unnest($1::text[], $2::int[]) AS t (id, revision)
                     ON p.id = t.id AND p.revision = t.revision - 1
                   WHERE p.status = 'open' ORDER BY p.id FOR UPDATE OF p
               ), accounts AS (
                   -- DO UPDATE (a no-op) locks an existing row and returns it as it is.
                   INSERT INTO perp_margin_accounts AS a
                       (owner, balance, deposited, revision, updated_at)
                   SELECT DISTINCT owner, $3::numeric, $3::numeric, 0, $4::timestamptz
                   FROM locked WHERE source = 'desk' ORDER BY owner
                   ON CONFLICT (owner) DO UPDATE SET owner = EXCLUDED.owner
                   RETURNING a.owner, a.balance, a.deposited, a.revision
               )
               SELECT id, source, NULL AS owner, NULL::numeric AS balance,
                      NULL::numeric AS deposited, NULL::bigint AS revision FROM locked
               UNION ALL
               SELECT NULL, NULL, owner, balance, deposited, revision FROM accounts""",
            [t.position.id for t, _ in liquidations],
            [t.position.revision for t, _ in liquidations],
            self.initial_balance,
            self.clock.now(),
        )
        sources = {row["id"]: row["source"] for row in rows if row["id"] is not None}
        accounts = {row["owner"]: _account(row) for row in rows if row["owner"] is not None}
        return sources, accounts

    async def _store_liquidations(
        self,
        conn: Connection,
        trades: list[Trade],
        accounts: list[MarginAccount],
        announcements: list[Announcement],
    ) -> list[Event]:
        """End the liquidated positions (locked, at the revision before each trade's), insert
        their fills and liquidation rows, save the moved accounts and number the announcements:
        one statement for any number."""
        if not trades:
            return []
        positions, fills = [t.position for t in trades], [t.fill for t in trades]
        now = self.clock.now()
        unnumbered = [Unnumbered(a.topic, a.type, a.payload) for a in announcements]
        rows = await conn.fetch(
            f"""WITH ended AS (
                    UPDATE perp_positions p
                    SET size = t.size, entry_price = t.entry_price, collateral = t.collateral,
                        realized_pnl = t.realized_pnl, revision = t.revision,
                        status = 'liquidated', updated_at = t.at, closed_at = t.at
                    FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::numeric[],
                                $5::numeric[], $6::int[], $7::timestamptz[])
                         AS t (id, size, entry_price, collateral, realized_pnl, revision, at)
                    WHERE p.id = t.id
                ), filled AS (
                    INSERT INTO perp_fills (position_id, owner, market, side, kind, size, price,
                                            notional, fee, realized_pnl, at)
                    SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::text[],
                                         $12::text[], $13::numeric[], $14::numeric[],
                                         $15::numeric[], $16::numeric[], $17::numeric[],
                                         $18::timestamptz[])
                ), liquidated AS (
                    INSERT INTO perp_liquidations (position_id, owner, market, side, size, price,
                                                   notional, reward, returned, at)
                    SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::text[],
                                         $19::numeric[], $14::numeric[], $15::numeric[],
                                         $20::numeric[], $21::numeric[], $18::timestamptz[])
                ), credited AS (
                    UPDATE perp_margin_accounts a
                    SET balance = t.balance, deposited = t.deposited, revision = t.revision,
                        updated_at = $26
                    FROM unnest($22::text[], $23::numeric[], $24::numeric[], $25::bigint[])
                         AS t (owner, balance, deposited, revision)
                    WHERE a.owner = t.owner
                ), {numbering_ctes(27)}
                {NUMBERED}""",
            [p.id for p in positions],
            [p.size for p in positions],
            [p.entry_price for p in positions],
            [p.collateral for p in positions],
            [p.realized_pnl for p in positions],
            [p.revision for p in positions],
            [f.at for f in fills],
            [f.position_id for f in fills],
            [f.owner for f in fills],
            [f.market for f in fills],
            [f.side.value for f in fills],
            [f.kind.value for f in fills],
            [f.size for f in fills],
            [f.price for f in fills],
            [f.notional for f in fills],
            [f.fee for f in fills],
            [f.realized_pnl for f in fills],
            [f.at for f in fills],
            [p.size for p in positions],
            [t.reward for t in trades],
            [t.returned for t in trades],
            [a.owner for a in accounts],
            [a.balance for a in accounts],
            [a.deposited for a in accounts],
            [a.revision for a in accounts],
            now,
            *numbering_args(now, unnumbered),
        )
        return numbered(now, unnumbered, rows)

    async def settle_funding(
        self,
        market: str,
        rate: Decimal,
        mark: Decimal,
        index: Decimal,
        at: datetime,
        payment: Callable[[Position], Decimal],
        announce: Callable[[Position], Announcement],
    ) -> list[Event]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""SELECT {_POSITION_COLUMNS} FROM perp_positions
                    WHERE market = $1 AND status = 'open' ORDER BY id FOR UPDATE""",
                market,
            )
            charges: dict[str, Decimal] = {}
            for row in rows:
                position = _position(row)
                # A position pays at most its collateral; what it receives adds to it.
                paid = min(payment(position), position.collateral)
                if paid != 0:
                    charges[position.id] = paid
            # One statement for every position charged (an hourly pass over a whole market).
            updated = await conn.fetch(
                f"""UPDATE perp_positions p
                    SET collateral = p.collateral - t.paid,
                        realized_pnl = p.realized_pnl - t.paid,
                        revision = p.revision + 1, updated_at = $3
                    FROM unnest($1::text[], $2::numeric[]) AS t (id, paid)
                    WHERE p.id = t.id
                    RETURNING {", ".join(f"p.{c}" for c in _POSITION_COLUMNS.split(", "))}""",
                list(charges),
                list(charges.values()),
                at,
            )
            charged = sorted((_position(row) for row in updated), key=_by_id)
            assert len(charged) == len(charges)  # locked above
            events = await number_events(
                conn,
                self.clock,
                [Unnumbered(a.topic, a.type, a.payload) for a in map(announce, charged)],
            )
            await conn.execute(
                """INSERT INTO perp_funding (market, rate, mark_price, index_price, settled_at)
                   VALUES ($1, $2, $3, $4, $5)""",
                market,
                rate,
                mark,
                index,
                at,
            )
        return events

    async def ingest(
        self,
        external_id: str,
        trade: Trade,
        status: str,
        announce: Announcement,
        reward: Decimal | None = None,
    ) -> Event | None:
        """Store a position change an indexer saw on chain, once: a repeated ``external_id`` is a
        no-op (None). The position row takes the state the chain reports."""
        async with self.pool.acquire() as conn, conn.transaction():
            seen = await conn.fetchval(
                "SELECT 1 FROM perp_fills WHERE external_id = $1 FOR UPDATE", external_id
            )
            if seen:
                return None
            p = trade.position
            before = await conn.fetchrow(
                "SELECT owner, size, source FROM perp_positions WHERE id = $1 FOR UPDATE", p.id
            )
            if before is not None and before["owner"] != p.owner:
                # Announcing it would send one user's position to another's stream.
                raise PositionOwnerError(p.id)
            if before is not None and before["source"] != "chain":
                # Its collateral came from the owner's margin account: an indexer's state
                # would move money the account never sees.
                raise PositionSourceError(p.id)
            if trade.fill.kind is FillKind.INCREASE and before is not None:
                kind = FillKind.REDUCE if p.size < before["size"] else FillKind.INCREASE
                trade = replace(trade, fill=replace(trade.fill, kind=kind))
            # Owner and source are checked again here: a position first ingested by two changes
            # at once is absent from both SELECTs above, and the second would take over the
            # first's row (and announce it on its own owner's stream).
            upserted = await conn.execute(
                f"""INSERT INTO perp_positions ({_POSITION_COLUMNS}, status, updated_at, closed_at,
                                                source)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9, $10::text, $11::timestamptz,
                            CASE WHEN $10::text = 'open' THEN NULL ELSE $11::timestamptz END,
                            'chain')
                    ON CONFLICT (id) DO UPDATE
                    SET side = EXCLUDED.side, size = EXCLUDED.size,
                        entry_price = EXCLUDED.entry_price, collateral = EXCLUDED.collateral,
                        realized_pnl = perp_positions.realized_pnl + EXCLUDED.realized_pnl,
                        status = EXCLUDED.status, revision = perp_positions.revision + 1,
                        updated_at = EXCLUDED.updated_at, closed_at = EXCLUDED.closed_at
                    WHERE perp_positions.owner = EXCLUDED.owner
                      AND perp_positions.source = 'chain'""",
                p.id,
                p.owner,
                p.market,
                p.side.value,
                p.size,
                p.entry_price,
                p.collateral,
                trade.fill.realized_pnl,
                p.opened_at or trade.fill.at,
                status,
                trade.fill.at,
            )
            if upserted != "INSERT 0 1":
                owner = await conn.fetchval("SELECT owner FROM perp_positions WHERE id = $1", p.id)
                raise PositionOwnerError(p.id) if owner != p.owner else PositionSourceError(p.id)
            await _insert_fill(conn, trade.fill, external_id)
            if status == "liquidated":
                fill = trade.fill
                await conn.execute(
                    """INSERT INTO perp_liquidations (position_id, owner, market, side, size,
                           price, notional, reward, returned, at)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)
                       ON CONFLICT (position_id) DO NOTHING""",
                    p.id,
                    p.owner,
                    p.market,
                    p.side.value,
                    fill.size,
                    fill.price,
                    fill.notional,
                    reward or Decimal(0),
                    fill.at,
                )
            row = await conn.fetchrow(
                f"SELECT {_POSITION_COLUMNS} FROM perp_positions WHERE id = $1", p.id
            )
            assert row is not None
            stored = _position(row)
            return await self._number(conn, announce.with_position(stored))

    async def top_up(self, owner: str, floor: Decimal) -> MarginAccount:
        """Deposit what brings the owner's free balance back up to ``floor`` (the simulated
        traders' funding; no mutation deposits)."""
        async with self.pool.acquire() as conn, conn.transaction():
            account = await self._locked_account(conn, owner)
            amount = top_up_amount(account, floor)
            if amount == 0:
                return account
            after = deposit(account, amount)
            await self._save_account(conn, after)
            return after

    async def _settle(
        self,
        conn: Connection,
        trade: Trade,
        collateral_before: Decimal,
        market: Market,
        announce: Announcement,
    ) -> Announcement:
        """Move the trade's money to or from its owner's account and check the market's
        limits; the announcement with the account as it is after."""
        p = trade.position
        account = await self._locked_account(conn, p.owner)
        after = move(account, account_movement(trade, collateral_before))
        added = added_size(trade)
        if added > 0:
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", _OPEN_INTEREST_LOCK, p.market
            )
            held = await conn.fetchrow(
                """SELECT coalesce(sum(size) FILTER (WHERE owner = $3), 0) AS user_holds,
                          coalesce(sum(size), 0) AS open_interest
                   FROM perp_positions WHERE market = $1 AND side = $2 AND status = 'open'""",
                p.market,
                p.side.value,
                p.owner,
            )
            assert held is not None
            check_limits(market, p.side, added, held["user_holds"], held["open_interest"])
        await self._save_account(conn, after)
        return announce.with_account(after)

    async def _locked_account(self, conn: Connection, owner: str) -> MarginAccount:
        """The owner's account, made with the initial balance if it has none, locked until the
        transaction ends (a concurrent first trade waits for this one's row, never fails)."""
        fresh = new_account(owner, self.initial_balance)
        await conn.execute(
            """INSERT INTO perp_margin_accounts (owner, balance, deposited, revision, updated_at)
               VALUES ($1, $2, $2, 0, $3) ON CONFLICT (owner) DO NOTHING""",
            owner,
            fresh.balance,
            self.clock.now(),
        )
        row = await conn.fetchrow(
            """SELECT owner, balance, deposited, revision FROM perp_margin_accounts
               WHERE owner = $1 FOR UPDATE""",
            owner,
        )
        assert row is not None
        return _account(row)

    async def _locked_accounts(
        self, conn: Connection, owners: list[str]
    ) -> dict[str, MarginAccount]:
        """:meth:`_locked_account` for many owners (``owners`` sorted: locked in that order)."""
        if not owners:
            return {}
        fresh = new_account("", self.initial_balance)
        await conn.execute(
            """INSERT INTO perp_margin_accounts (owner, balance, deposited, revision, updated_at)
               SELECT o, $2, $2, 0, $3 FROM unnest($1::text[]) AS o ORDER BY o
               ON CONFLICT (owner) DO NOTHING""",
            owners,
            fresh.balance,
            self.clock.now(),
        )
        rows = await conn.fetch(
            """SELECT owner, balance, deposited, revision FROM perp_margin_accounts
               WHERE owner = ANY($1::text[]) ORDER BY owner FOR UPDATE""",
            owners,
        )
        return {row["owner"]: _account(row) for row in rows}

    async def _save_accounts(self, conn: Connection, accounts: list[MarginAccount]) -> None:
        if not accounts:
            return
        await conn.execute(
            """UPDATE perp_margin_accounts a
               SET balance = t.balance, deposited = t.deposited, revision = t.revision,
                   updated_at = $5
               FROM unnest($1::text[], $2::numeric[], $3::numeric[], $4::bigint[])
                    AS t (owner, balance, deposited, revision)
               WHERE a.owner = t.owner""",
            [a.owner for a in accounts],
            [a.balance for a in accounts],
            [a.deposited for a in accounts],
            [a.revision for a in accounts],
            self.clock.now(),
        )

    async def _save_account(self, conn: Connection, account: MarginAccount) -> None:
        await conn.execute(
            """UPDATE perp_margin_accounts
               SET balance = $2, deposited = $3, revision = $4, updated_at = $5
               WHERE owner = $1""",
            account.owner,
            account.balance,
            account.deposited,
            account.revision,
            self.clock.now(),
        )

    async def _number(self, conn: Connection, announce: Announcement) -> Event:
        return await number_event(conn, self.clock, announce.topic, announce.type, announce.payload)


async def _update_position(conn: Connection, trade: Trade, *, status: str) -> bool:
    """Store ``trade.position`` if the stored row is still the revision before it."""
    p = trade.position
    result: str = await conn.execute(
        """UPDATE perp_positions
           SET size = $2, entry_price = $3, collateral = $4, realized_pnl = $5, revision = $6,
               status = $7::text, updated_at = $8::timestamptz,
               closed_at = CASE WHEN $7::text = 'open' THEN NULL ELSE $8::timestamptz END
           WHERE id = $1 AND status = 'open' AND revision = $6 - 1""",
        p.id,
        p.size,
        p.entry_price,
        p.collateral,
        p.realized_pnl,
        p.revision,
        status,
        trade.fill.at,
    )
    return result == "UPDATE 1"


async def _insert_fill(conn: Connection, fill: Fill, external_id: str | None = None) -> None:
    await conn.execute(
        """INSERT INTO perp_fills (position_id, owner, market, side, kind, size, price, notional,
                                   fee, realized_pnl, at, external_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        fill.position_id,
        fill.owner,
        fill.market,
        fill.side.value,
        fill.kind.value,
        fill.size,
        fill.price,
        fill.notional,
        fill.fee,
        fill.realized_pnl,
        fill.at,
        external_id,
    )
