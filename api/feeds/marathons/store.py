"""PostgreSQL adapter of the marathon feed: marathons, participants, each account's latest
snapshot, and the leaderboards stored periodically.

Every change is stored and its event on the cluster-wide ``marathon-feed`` topic numbered in one
transaction; each process's :class:`api.feeds.marathons.boards.MarathonBoards` is built from the
tables and kept current from that topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from api.storage.history import number_event
from domain.marathons import (
    ACCOUNT_SNAPSHOT,
    MARATHON_CREATED,
    PARTICIPANT_ADDED,
    PARTICIPANT_REMOVED,
    AccountSnapshot,
    EnrolledElsewhereError,
    Holding,
    Marathon,
    Participant,
    initial_balance_from,
    marathon_payload,
    may_enrol,
    participant_added_payload,
    participant_removed_payload,
    snapshot_from_payload,
    snapshot_to_payload,
)
from domain.topics import marathon_feed_topic

if TYPE_CHECKING:
    from datetime import datetime
    from decimal import Decimal

    import asyncpg

    from api.storage.database import Connection
    from domain.events import Event
    from domain.marathons import Enroller
    from domain.ports import Clock


def _participant(row: asyncpg.Record) -> Participant:
    return Participant(
        marathon_id=row["marathon_id"],
        login=row["login"],
        participant=row["participant"],
        initial_balance=row["initial_balance"],
        initial_explicit=row["initial_explicit"],
        registered_at=row["registered_at"],
    )


def _marathon(row: asyncpg.Record) -> Marathon:
    return Marathon(
        id=row["id"],
        name=row["name"],
        starts_at=row["starts_at"],
        ends_at=row["ends_at"],
        public=row["public"],
        organiser=row["organiser"],
    )


class MarathonExistsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class MarathonState:
    marathons: list[Marathon]
    participants: list[Participant]
    snapshots: dict[int, AccountSnapshot]


class PgMarathonStore:
    def __init__(self, pool: asyncpg.Pool, clock: Clock) -> None:
        self.pool = pool
        self.clock = clock

    async def load(self) -> MarathonState:
        """Everything the leaderboards are built from, read in one snapshot of the database."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            marathons = [_marathon(r) for r in await conn.fetch("SELECT * FROM marathons")]
            participants = [
                _participant(r) for r in await conn.fetch("SELECT * FROM marathon_participants")
            ]
            rows = await conn.fetch(
                """SELECT payload::text AS payload FROM account_snapshots
                   WHERE login IN (SELECT login FROM marathon_participants)"""
            )
        snapshots = {}
        for row in rows:
            snapshot = snapshot_from_payload(orjson.loads(row["payload"]))
            snapshots[snapshot.login] = snapshot
        return MarathonState(marathons, participants, snapshots)

    async def create(self, marathon: Marathon) -> Event:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """INSERT INTO marathons (id, name, starts_at, ends_at, public, organiser)
                   VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING""",
                marathon.id,
                marathon.name,
                marathon.starts_at,
                marathon.ends_at,
                marathon.public,
                marathon.organiser,
            )
            if status != "INSERT 0 1":
                raise MarathonExistsError(marathon.id)
            return await self._number(conn, MARATHON_CREATED, marathon_payload(marathon))

    async def marathon(self, marathon_id: str) -> Marathon | None:
        row = await self.pool.fetchrow("SELECT * FROM marathons WHERE id = $1", marathon_id)
        return None if row is None else _marathon(row)

    async def add_participant(
        self,
        marathon_id: str,
        login: int,
        participant: str,
        initial_balance: Decimal | None,
        enroller: Enroller,
    ) -> Event:
        """Register (or re-register) ``login``. Without an explicit initial balance, one is
        derived from the account's latest snapshot if it has one, else from its first.

        Raises :class:`EnrolledElsewhereError` when other marathons hold the login and
        ``enroller`` may not show it through this one too (``domain.marathons.may_enrol``)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_enrolment(conn, marathon_id, login, enroller)
            latest = await conn.fetchval(
                "SELECT payload::text FROM account_snapshots WHERE login = $1", login
            )
            snapshot = None if latest is None else snapshot_from_payload(orjson.loads(latest))
            derived = None if snapshot is None else initial_balance_from(snapshot)
            row = await conn.fetchrow(
                """INSERT INTO marathon_participants AS p
                       (marathon_id, login, participant, initial_balance, initial_explicit,
                        registered_at)
                   VALUES ($1, $2, $3, COALESCE($4::numeric, $5::numeric), $4 IS NOT NULL, $6)
                   ON CONFLICT (marathon_id, login) DO UPDATE
                   SET participant = EXCLUDED.participant,
                       initial_balance = CASE WHEN $4 IS NOT NULL THEN $4::numeric
                                              ELSE COALESCE(p.initial_balance, $5::numeric) END,
                       initial_explicit = p.initial_explicit OR $4 IS NOT NULL
                   RETURNING *""",
                marathon_id,
                login,
                participant,
                initial_balance,
                derived,
                self.clock.now(),
            )
            assert row is not None
            payload = participant_added_payload(_participant(row), snapshot)
            return await self._number(conn, PARTICIPANT_ADDED, payload)

    async def _check_enrolment(
        self, conn: Connection, marathon_id: str, login: int, enroller: Enroller
    ) -> None:
        # One enrolment of a login at a time: two organisers enrolling the same free login at
        # once must not both find it free (each would then show the other's figures).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"marathon-login:{login}")
        rows = await conn.fetch(
            """SELECT p.marathon_id, p.participant, m.organiser
               FROM marathon_participants p JOIN marathons m ON m.id = p.marathon_id
               WHERE p.login = $1""",
            login,
        )
        if any(r["marathon_id"] == marathon_id for r in rows):
            return  # already shown here: re-registering widens nothing
        elsewhere = [Holding(organiser=r["organiser"], owner=r["participant"]) for r in rows]
        if not may_enrol(enroller, elsewhere):
            raise EnrolledElsewhereError(login)

    async def remove_participant(self, marathon_id: str, login: int) -> Event | None:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM marathon_participants WHERE marathon_id = $1 AND login = $2",
                marathon_id,
                login,
            )
            if status != "DELETE 1":
                return None
            return await self._number(
                conn, PARTICIPANT_REMOVED, participant_removed_payload(marathon_id, login)
            )

    async def ingest(self, snapshot: AccountSnapshot) -> Event | None:
        """Store ``snapshot`` as its account's latest unless a snapshot as new is already stored
        (a redelivery, or one that arrived late): then None, and nothing is announced."""
        payload = snapshot_to_payload(snapshot)
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """INSERT INTO account_snapshots (login, payload, server_time, received_at)
                   VALUES ($1, $2::jsonb, $3, $4)
                   ON CONFLICT (login) DO UPDATE
                   SET payload = EXCLUDED.payload, server_time = EXCLUDED.server_time,
                       received_at = EXCLUDED.received_at
                   WHERE account_snapshots.server_time < EXCLUDED.server_time""",
                snapshot.login,
                orjson.dumps(payload).decode(),
                snapshot.server_time,
                self.clock.now(),
            )
            if status != "INSERT 0 1":
                return None
            # The first snapshot after registration fixes a derived initial balance.
            await conn.execute(
                """UPDATE marathon_participants SET initial_balance = $2
                   WHERE login = $1 AND initial_balance IS NULL""",
                snapshot.login,
                initial_balance_from(snapshot),
            )
            return await self._number(conn, ACCOUNT_SNAPSHOT, payload)

    async def save_leaderboard(
        self, marathon_id: str, taken_at: datetime, accounts: int, rows: list[dict[str, Any]]
    ) -> None:
        await self.pool.execute(
            """INSERT INTO leaderboard_snapshots (marathon_id, taken_at, accounts, rows)
               VALUES ($1, $2, $3, $4::jsonb) ON CONFLICT DO NOTHING""",
            marathon_id,
            taken_at,
            accounts,
            orjson.dumps(rows).decode(),
        )

    async def leaderboard_at(
        self, marathon_id: str, at: datetime
    ) -> tuple[datetime, int, list[dict[str, Any]]] | None:
        """The newest stored leaderboard taken at or before ``at``."""
        row = await self.pool.fetchrow(
            """SELECT taken_at, accounts, rows::text AS rows FROM leaderboard_snapshots
               WHERE marathon_id = $1 AND taken_at <= $2
               ORDER BY taken_at DESC LIMIT 1""",
            marathon_id,
            at,
        )
        if row is None:
            return None
        return row["taken_at"], row["accounts"], orjson.loads(row["rows"])

    async def _number(self, conn: Connection, type: str, payload: dict[str, Any]) -> Event:
        return await number_event(conn, self.clock, marathon_feed_topic(), type, payload)
