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

from api.storage.history import number_event, number_events
from domain.events import Unnumbered
from domain.marathons import (
    ACCOUNT_SNAPSHOTS,
    MARATHON_CREATED,
    PARTICIPANT_ADDED,
    PARTICIPANT_REMOVED,
    SNAPSHOT_BATCH,
    AccountSnapshot,
    EnrolledElsewhereError,
    Holding,
    Marathon,
    Participant,
    SnapshotBatch,
    by_login,
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
    from collections.abc import Sequence
    from datetime import datetime
    from decimal import Decimal

    import asyncpg

    from api.storage.database import Connection
    from domain.events import Event
    from domain.marathons import Enroller
    from domain.ports import Clock


_INGEST = """
WITH given AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::numeric[])
                  AS g (login, payload, server_time, initial)
), stored AS (
    INSERT INTO account_snapshots AS a (login, payload, server_time, received_at)
    SELECT login, payload::jsonb, server_time, $5 FROM given ORDER BY login
    ON CONFLICT (login) DO UPDATE
    SET payload = EXCLUDED.payload, server_time = EXCLUDED.server_time,
        received_at = EXCLUDED.received_at
    WHERE a.server_time < EXCLUDED.server_time
    RETURNING login, xmax = 0 AS inserted
), fixed AS (
    -- the first snapshot stored after registration fixes a derived initial balance
    UPDATE marathon_participants p SET initial_balance = g.initial
    FROM stored s JOIN given g USING (login)
    WHERE p.login = s.login AND p.initial_balance IS NULL
)
SELECT login, inserted FROM stored
"""
"""One batch of snapshots (one per login, in login order so that concurrent batches lock rows in
the same order): each stored unless a snapshot as new is stored already, and the derived initial
balances fixed, in one statement; the logins stored, and whether each had none before."""


def _chunks(
    items: Sequence[tuple[dict[str, Any], int]], max_bytes: int | None
) -> list[list[dict[str, Any]]]:
    """Payload items (each with the length of its JSON) in consecutive runs of at most
    ``max_bytes`` of JSON; an item larger than that alone."""
    if max_bytes is None:
        return [[item for item, _ in items]]
    chunks: list[list[dict[str, Any]]] = []
    chunk: list[dict[str, Any]] = []
    size = 0
    for item, length in items:
        if chunk and size + length > max_bytes:
            chunks.append(chunk)
            chunk, size = [], 0
        chunk.append(item)
        size += length + 1
    if chunk:
        chunks.append(chunk)
    return chunks


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
class Ingested:
    """What storing a batch did: the events that announce it, and how many logins' snapshots
    were stored (the batch's others were ignored)."""

    events: list[Event]
    stored: int


@dataclass(frozen=True, slots=True)
class MarathonState:
    marathons: list[Marathon]
    participants: list[Participant]
    snapshots: dict[int, AccountSnapshot]


ENVELOPE_BYTES = 1000
"""What an event's envelope (topic, sequence, type, times) takes beside its payload, at most."""


class PgMarathonStore:
    """``message_max_bytes`` is the largest message the broadcast backend carries (PostgreSQL's
    NOTIFY: under 8000 bytes): a batch's ``account.snapshots`` event is then split so that each
    fits, with :data:`ENVELOPE_BYTES` to spare. None puts a batch's snapshots in one event."""

    def __init__(
        self, pool: asyncpg.Pool, clock: Clock, *, message_max_bytes: int | None = None
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.event_max_bytes = (
            None if message_max_bytes is None else message_max_bytes - ENVELOPE_BYTES
        )
        """The most JSON of snapshots one event carries."""

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

    async def ingest(self, snapshots: Sequence[AccountSnapshot]) -> Ingested:
        """Store each login's newest snapshot of ``snapshots`` as its latest, unless a snapshot as
        new is stored already (a redelivery, a late arrival), in one transaction of two
        statements, and announce what was stored in ``account.snapshots`` events (one, or a few
        under ``message_max_bytes``; none when nothing was stored). A login with no snapshot
        stored before gets its derived initial balance from its first snapshot of the batch."""
        logins = by_login(snapshots)
        if not logins:
            return Ingested([], 0)
        items: list[dict[str, Any]] = SNAPSHOT_BATCH.encode(
            SnapshotBatch(tuple(one.newest for one in logins))
        )["snapshots"]
        dumped = [orjson.dumps(item) for item in items]
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                _INGEST,
                [one.newest.login for one in logins],
                [text.decode() for text in dumped],
                [one.newest.server_time for one in logins],
                [initial_balance_from(one.first) for one in logins],
                self.clock.now(),
            )
            if not rows:
                return Ingested([], 0)
            inserted = {row["login"]: row["inserted"] for row in rows}
            kept: list[tuple[dict[str, Any], int]] = []
            for one, item, text in zip(logins, items, dumped, strict=True):
                if one.newest.login not in inserted:
                    continue
                if inserted[one.newest.login] and one.first is not one.newest:
                    first = snapshot_to_payload(one.first)
                    kept.append((first, len(orjson.dumps(first))))
                kept.append((item, len(text)))
            events = [
                Unnumbered(marathon_feed_topic(), ACCOUNT_SNAPSHOTS, {"snapshots": chunk})
                for chunk in _chunks(kept, self.event_max_bytes)
            ]
            return Ingested(await number_events(conn, self.clock, events), len(rows))

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
