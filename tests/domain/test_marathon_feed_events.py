"""The wire format of the marathon feed's events (marathons, participants), pinned byte for byte:
stored events and processes of other versions read them (tests/domain/test_payloads.py pins the
other payloads, account snapshots among them)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from domain.marathons import (
    ADDED_PARTICIPANT,
    PARTICIPANT,
    REMOVED_PARTICIPANT,
    SNAPSHOT_BATCH,
    AccountSnapshot,
    Marathon,
    Participant,
    SnapshotBatch,
    marathon_from_payload,
    marathon_payload,
    participant_added_payload,
    participant_removed_payload,
)

if TYPE_CHECKING:
    from collections.abc import Callable

AT = datetime(2024, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
LATER = AT + timedelta(minutes=1)

ALICE = Participant("m-1", 1001, "alice", Decimal("1E+3"), True, AT)
SNAPSHOT = AccountSnapshot(
    login=1001,
    balance=Decimal("1E+3"),
    equity=Decimal("1010.50"),
    profit=Decimal("10.5"),
    margin=Decimal("1E-8"),
    free_margin=Decimal("900"),
    server_time=datetime(2024, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
)
OTHER = AccountSnapshot(
    login=1002,
    balance=Decimal("500"),
    equity=Decimal("500"),
    profit=Decimal("0"),
    margin=Decimal("0"),
    free_margin=Decimal("500"),
    server_time=AT,
    credit=Decimal("2.5"),
)

CASES: dict[str, tuple[Callable[[], Any], Callable[[Any], dict[str, Any]], str]] = {
    "marathon": (
        lambda: Marathon("m-1", "Spring", AT, LATER, True, "org"),
        marathon_payload,
        (
            '{"id":"m-1","name":"Spring","startsAt":"2024-03-01T12:30:15.123456+00:00","endsAt":"20'
            '24-03-01T12:31:15.123456+00:00","public":true,"organiser":"org"}'
        ),
    ),
    "participant": (
        lambda: Participant("m-1", 1001, "alice", Decimal("1E+3"), True, AT),
        Participant.to_payload,
        (
            '{"marathonId":"m-1","login":1001,"participant":"alice","initialBalance":"1E+3","initia'
            'lExplicit":true,"registeredAt":"2024-03-01T12:30:15.123456+00:00"}'
        ),
    ),
    "participant, derived initial balance": (
        lambda: Participant("m-1", 1001, "alice", None, False, AT),
        Participant.to_payload,
        (
            '{"marathonId":"m-1","login":1001,"participant":"alice","initialBalance":null,"initialE'
            'xplicit":false,"registeredAt":"2024-03-01T12:30:15.123456+00:00"}'
        ),
    ),
    "participant added": (
        lambda: (ALICE, None),
        lambda made: participant_added_payload(*made),
        (
            '{"participant":{"marathonId":"m-1","login":1001,"participant":"alice","initialBalance":"1E'
            '+3","initialExplicit":true,"registeredAt":"2024-03-01T12:30:15.123456+00:00"}}'
        ),
    ),
    "participant added with its account's snapshot": (
        lambda: (ALICE, SNAPSHOT),
        lambda made: participant_added_payload(*made),
        (
            '{"participant":{"marathonId":"m-1","login":1001,"participant":"alice","initialBalance":"1E'
            '+3","initialExplicit":true,"registeredAt":"2024-03-01T12:30:15.123456+00:00"},"snapshot":{'
            '"login":1001,"balance":"1E+3","equity":"1010.50","profit":"10.5","margin":"1E-8","freeMarg'
            'in":"900","credit":"0","serverTime":"2024-03-01T14:00:00+02:00","positions":[],"orders":[]'
            "}}"
        ),
    ),
    "participant removed": (
        lambda: ("m-1", 1001),
        lambda made: participant_removed_payload(*made),
        '{"marathonId":"m-1","login":1001}',
    ),
    "account snapshots": (
        lambda: (SNAPSHOT, OTHER),
        lambda made: SNAPSHOT_BATCH.encode(SnapshotBatch(made)),
        (
            '{"snapshots":[{"login":1001,"balance":"1E+3","equity":"1010.50","profit":"10.5","margin"'
            ':"1E-8","freeMargin":"900","credit":"0","serverTime":"2024-03-01T14:00:00+02:00","positio'
            'ns":[],"orders":[]},{"login":1002,"balance":"500","equity":"500","profit":"0","margin":"0"'
            ',"freeMargin":"500","credit":"2.5","serverTime":"2024-03-01T12:30:15.123456+00:00","posit'
            'ions":[],"orders":[]}]}'
        ),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_payload_json_is_unchanged(name: str) -> None:
    make, encode, golden = CASES[name]
    assert orjson.dumps(encode(make())).decode() == golden


def parts(payload: Any) -> tuple[Any, ...]:
    """An event's payload as the arguments its case makes it from."""
    return tuple(getattr(payload, f.name) for f in fields(payload))


@pytest.mark.parametrize(
    ("name", "decode"),
    [
        ("marathon", marathon_from_payload),
        ("participant", PARTICIPANT.decode),
        ("participant, derived initial balance", PARTICIPANT.decode),
        ("participant added", lambda p: parts(ADDED_PARTICIPANT.decode(p))),
        (
            "participant added with its account's snapshot",
            lambda p: parts(ADDED_PARTICIPANT.decode(p)),
        ),
        ("participant removed", lambda p: parts(REMOVED_PARTICIPANT.decode(p))),
        ("account snapshots", lambda p: SNAPSHOT_BATCH.decode(p).snapshots),
    ],
)
def test_golden_payload_reads_back(name: str, decode: Callable[[dict[str, Any]], Any]) -> None:
    make, _, golden = CASES[name]
    assert decode(orjson.loads(golden)) == make()
