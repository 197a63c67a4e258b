"""The marathon store's batched ingest against a real PostgreSQL: each login's newest snapshot
stored once, the derived initial balances fixed, and one ``account.snapshots`` event per batch
numbered in the same transaction (so history holds it exactly when the snapshots were stored)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import orjson
import pytest

from api.feeds.marathons.messages import EXAMPLE_MESSAGE, parse_snapshot
from api.feeds.marathons.store import ENVELOPE_BYTES, Ingested, PgMarathonStore
from api.runtime.clock import SystemClock
from api.streaming.broadcast import NOTIFY_MAX_BYTES
from api.streaming.envelope import encode_event
from domain.marathons import (
    ACCOUNT_SNAPSHOTS,
    SNAPSHOT_BATCH,
    SYSTEM,
    AccountSnapshot,
    Marathon,
)
from domain.topics import marathon_feed_topic

if TYPE_CHECKING:
    import asyncpg

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
async def store(pool: asyncpg.Pool) -> PgMarathonStore:
    store = PgMarathonStore(pool, SystemClock())
    await store.create(Marathon("m", "M", T0, T0 + timedelta(days=30), True, "olga"))
    return store


def snap(login: int, seconds: int, equity: str = "1000", profit: str = "0") -> AccountSnapshot:
    return AccountSnapshot(
        login=login,
        balance=Decimal(1000),
        equity=Decimal(equity),
        profit=Decimal(profit),
        margin=Decimal(0),
        free_margin=Decimal(equity),
        server_time=T0 + timedelta(seconds=seconds),
    )


async def stored(pool: asyncpg.Pool) -> dict[int, str]:
    """login -> equity of the stored snapshot."""
    rows = await pool.fetch("SELECT login, payload->>'equity' AS equity FROM account_snapshots")
    return {r["login"]: r["equity"] for r in rows}


async def history(pool: asyncpg.Pool) -> list[tuple[int, str, list[int]]]:
    """(sequence, type, logins) of every marathon-feed event kept."""
    rows = await pool.fetch(
        "SELECT sequence, type, payload::text AS p FROM topic_history WHERE topic = $1 "
        "ORDER BY sequence",
        marathon_feed_topic(),
    )
    return [
        (r["sequence"], r["type"], [s["login"] for s in orjson.loads(r["p"]).get("snapshots", [])])
        for r in rows
    ]


async def test_a_batch_stores_each_logins_newest_once_and_announces_it_once(
    store: PgMarathonStore, pool: asyncpg.Pool
) -> None:
    before = await history(pool)
    batch = [snap(2, 10, "1010"), snap(1, 10, "1100"), snap(2, 20, "1020"), snap(2, 15, "1015")]
    ingested = await store.ingest(batch)
    assert ingested.stored == 2
    (event,) = ingested.events
    assert event.type == ACCOUNT_SNAPSHOTS
    # login 2 had none stored: its first snapshot of the batch comes before its newest
    assert SNAPSHOT_BATCH.decode(event.payload).snapshots == (
        snap(1, 10, "1100"),
        snap(2, 10, "1010"),
        snap(2, 20, "1020"),
    )
    assert await stored(pool) == {1: "1100", 2: "1020"}
    assert await history(pool) == [*before, (event.sequence, ACCOUNT_SNAPSHOTS, [1, 2, 2])]

    # the same window again (a redelivery): nothing stored, nothing announced
    assert await store.ingest(batch) == Ingested([], 0)
    assert await history(pool) == [*before, (event.sequence, ACCOUNT_SNAPSHOTS, [1, 2, 2])]


async def test_only_what_is_newer_than_the_stored_snapshot_is_stored(
    store: PgMarathonStore, pool: asyncpg.Pool
) -> None:
    await store.ingest([snap(1, 10, "1100"), snap(2, 10, "1200")])
    ingested = await store.ingest(
        [snap(1, 5, "900"), snap(2, 9, "1190"), snap(2, 11, "1210"), snap(3, 1, "1300")]
    )
    assert ingested.stored == 2
    # login 2 had one stored: only its newest is announced
    assert SNAPSHOT_BATCH.decode(ingested.events[0].payload).snapshots == (
        snap(2, 11, "1210"),
        snap(3, 1, "1300"),
    )
    assert await stored(pool) == {1: "1100", 2: "1210", 3: "1300"}
    assert await store.ingest([snap(1, 10, "999")]) == Ingested([], 0)  # as new is not newer
    assert await stored(pool) == {1: "1100", 2: "1210", 3: "1300"}


async def test_an_empty_batch_does_nothing(store: PgMarathonStore, pool: asyncpg.Pool) -> None:
    before = await history(pool)
    assert await store.ingest([]) == Ingested([], 0)
    assert await history(pool) == before


async def test_the_first_stored_snapshot_fixes_a_derived_initial_balance(
    store: PgMarathonStore, pool: asyncpg.Pool
) -> None:
    await store.add_participant("m", 1, "alice", None, SYSTEM)
    await store.add_participant("m", 2, "bob", Decimal(5000), SYSTEM)
    await store.add_participant("m", 3, "carol", None, SYSTEM)
    # login 1: the first of the batch derives it (as had they been stored one at a time), not
    # the newest; an older one arriving later changes nothing
    batch = [snap(1, 10, profit="50"), snap(2, 10, profit="50"), snap(1, 20, profit="9")]
    await store.ingest([*batch, snap(3, 10, profit="30"), snap(1, 5, profit="1")])
    await store.ingest([snap(1, 30, profit="70")])  # fixed already: it stays
    rows = await pool.fetch("SELECT login, initial_balance FROM marathon_participants")
    assert {r["login"]: r["initial_balance"] for r in rows} == {
        1: Decimal(950),
        2: Decimal(5000),
        3: Decimal(970),
    }


async def test_a_batch_is_split_into_events_under_event_max_bytes(
    pool: asyncpg.Pool, store: PgMarathonStore
) -> None:
    small = PgMarathonStore(pool, SystemClock(), message_max_bytes=700 + ENVELOPE_BYTES)
    events = (await small.ingest([snap(login, 1) for login in range(1, 8)])).events
    sizes = [len(orjson.dumps(e.payload["snapshots"])) for e in events]
    assert len(events) > 1
    assert all(size <= 700 for size in sizes)
    assert [e.sequence for e in events] == list(
        range(events[0].sequence, events[0].sequence + len(events))
    )
    logins = [s.login for e in events for s in SNAPSHOT_BATCH.decode(e.payload).snapshots]
    assert logins == list(range(1, 8))
    tiny = PgMarathonStore(pool, SystemClock(), message_max_bytes=ENVELOPE_BYTES)  # each alone
    alone = (await tiny.ingest([snap(login, 2) for login in range(1, 4)])).events
    assert [len(e.payload["snapshots"]) for e in alone] == [1, 1, 1]


async def test_every_event_of_a_window_fits_a_postgresql_notify(pool: asyncpg.Pool) -> None:
    """With ``BROADCAST_URL=postgresql://...`` a window's events are split to fit NOTIFY."""
    store = PgMarathonStore(pool, SystemClock(), message_max_bytes=NOTIFY_MAX_BYTES)
    window = [
        parse_snapshot(orjson.dumps({**EXAMPLE_MESSAGE, "login": login})) for login in range(1, 501)
    ]
    events = (await store.ingest(window)).events
    assert len(events) > 1
    assert all(len(encode_event(e).encode()) <= NOTIFY_MAX_BYTES for e in events)
    assert sum(len(e.payload["snapshots"]) for e in events) == 500
