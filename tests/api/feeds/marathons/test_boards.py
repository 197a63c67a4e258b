"""Each process's leaderboards follow the marathon feed: membership, snapshots, replays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from api.feeds.marathons.boards import MarathonBoards
from api.feeds.marathons.store import MarathonState
from domain.events import Event
from domain.marathons import (
    ACCOUNT_SNAPSHOT,
    ACCOUNT_SNAPSHOTS,
    PARTICIPANT_ADDED,
    PARTICIPANT_REMOVED,
    SNAPSHOT_BATCH,
    AccountSnapshot,
    Marathon,
    Participant,
    SnapshotBatch,
    snapshot_to_payload,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MARATHON = Marathon("m", "M", T0, T0 + timedelta(days=1), public=False, organiser="olga")


def snap(login: int, equity: str, seconds: int) -> AccountSnapshot:
    return AccountSnapshot(
        login=login,
        balance=Decimal(1000),
        equity=Decimal(equity),
        profit=Decimal(0),
        margin=Decimal(0),
        free_margin=Decimal(equity),
        server_time=T0 + timedelta(seconds=seconds),
    )


def event(sequence: int, type: str, payload: dict[str, Any]) -> Event:
    return Event("marathon-feed", sequence, T0, type, payload)


def boards() -> MarathonBoards:
    b = MarathonBoards(store=None, hub=None)  # type: ignore[arg-type]
    alice = Participant("m", 1, "alice", None, False, T0)
    b.rebuild(MarathonState([MARATHON], [alice], {1: snap(1, "1000", 0)}))
    return b


def test_membership_decides_who_takes_part() -> None:
    b = boards()
    assert b.takes_part("m", "alice")
    assert not b.takes_part("m", "bob")
    bob = Participant("m", 2, "bob", Decimal(500), True, T0)
    b.apply(event(1, PARTICIPANT_ADDED, {"participant": bob.to_payload()}))
    assert b.takes_part("m", "bob")
    b.apply(event(2, PARTICIPANT_REMOVED, {"marathonId": "m", "login": 2}))
    assert not b.takes_part("m", "bob")
    assert b.takes_part("m", "alice")
    assert not b.takes_part("m", None)


def test_snapshots_rank_and_an_older_one_changes_nothing() -> None:
    b = boards()
    version = b.notifier("m").version
    b.apply(event(1, ACCOUNT_SNAPSHOT, snapshot_to_payload(snap(1, "1100", 10))))
    row = b.boards["m"].row(1)
    assert row is not None
    assert row.profit_percentage == Decimal(10)
    assert b.notifier("m").version == version + 1
    b.apply(event(2, ACCOUNT_SNAPSHOT, snapshot_to_payload(snap(1, "900", 5))))  # late arrival
    again = b.boards["m"].row(1)
    assert again is not None
    assert again.profit_percentage == Decimal(10)
    assert b.notifier("m").version == version + 1


def test_a_batch_moves_the_board_and_wakes_its_readers_once() -> None:
    b = boards()
    second = Marathon("n", "N", T0, T0 + timedelta(days=1), False, "olga")
    b.rebuild(
        MarathonState(
            [MARATHON, second],
            [
                Participant("m", 1, "alice", None, False, T0),
                Participant("m", 2, "bob", Decimal(1000), True, T0),
                Participant("n", 3, "carol", Decimal(1000), True, T0),
            ],
            {1: snap(1, "1000", 0)},
        )
    )
    m, n = b.notifier("m").version, b.notifier("n").version
    batch = SnapshotBatch((snap(1, "1200", 10), snap(2, "1100", 10), snap(7, "5", 10)))
    b.apply(event(1, ACCOUNT_SNAPSHOTS, SNAPSHOT_BATCH.encode(batch)))
    board = b.boards["m"]
    assert [(r.login, r.rank) for r in board.top(10)] == [(1, 1), (2, 2)]
    assert b.notifier("m").version == m + 1  # two accounts moved, one wake-up
    assert b.notifier("n").version == n  # nothing of it moved
    assert 7 in b.snapshots  # known, for when it is registered

    stale = SnapshotBatch((snap(1, "900", 5), snap(2, "1100", 10)))  # older, and a redelivery
    b.apply(event(2, ACCOUNT_SNAPSHOTS, SNAPSHOT_BATCH.encode(stale)))
    assert b.notifier("m").version == m + 1
    row = board.row(1)
    assert row is not None
    assert row.equity == Decimal(1200)
