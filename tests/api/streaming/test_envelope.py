from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from api.streaming.envelope import MalformedEventError, decode_event, encode_event
from domain.events import Event

EVENT = Event(
    topic="price:BTC-PERP",
    sequence=42,
    published_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
    type="PriceUpdate",
    payload={
        "market": "BTC-PERP",
        "price": "65000.1",
        "confidence": "6.6",
        "nested": {"list": [1, 2.5, None, True], "text": "é ✓"},
    },
)


def wire(**changes: Any) -> bytes:
    raw = orjson.loads(encode_event(EVENT))
    raw.update(changes)
    return orjson.dumps(raw)


def test_round_trip() -> None:
    message = encode_event(EVENT)
    assert isinstance(message, str)
    assert decode_event(message) == EVENT
    assert decode_event(message.encode()) == EVENT


def test_round_trip_keeps_time_zone_and_microseconds() -> None:
    decoded = decode_event(encode_event(EVENT))
    assert decoded.published_at.tzinfo is not None
    assert decoded.published_at.utcoffset() == EVENT.published_at.utcoffset()
    assert decoded.published_at.microsecond == 123456


def test_wire_form() -> None:
    assert orjson.loads(encode_event(EVENT)) == {
        "topic": "price:BTC-PERP",
        "seq": 42,
        "at": "2024-05-06T07:08:09.123456+00:00",
        "type": "PriceUpdate",
        "payload": EVENT.payload,
    }


@pytest.mark.parametrize(
    "message",
    ["", "not json", "{", b"\xff\xfe", "{'topic': 'x'}", "null", "[]", "42", '"text"'],
)
def test_not_an_envelope(message: str | bytes) -> None:
    with pytest.raises(MalformedEventError, match="not an event envelope"):
        decode_event(message)


@pytest.mark.parametrize("key", ["topic", "seq", "at", "type", "payload"])
def test_missing_key(key: str) -> None:
    raw = orjson.loads(encode_event(EVENT))
    del raw[key]
    with pytest.raises(MalformedEventError):
        decode_event(orjson.dumps(raw))


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": "abc"},
        {"seq": None},
        {"seq": [1]},
        {"seq": {"n": 1}},
        {"at": 123},
        {"at": None},
        {"at": "yesterday"},
        {"payload": "text"},
        {"payload": 5},
        {"payload": None},
    ],
)
def test_wrong_types(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedEventError):
        decode_event(wire(**changes))


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"seq": 1.9}, id="float-seq"),
        pytest.param({"seq": True}, id="bool-seq"),
        pytest.param({"seq": "7"}, id="string-seq"),
        pytest.param({"seq": 0}, id="zero-seq"),
        pytest.param({"seq": -3}, id="negative-seq"),
        pytest.param({"topic": 5}, id="number-topic"),
        pytest.param({"type": None}, id="null-type"),
        pytest.param({"payload": [["price", "1"]]}, id="list-payload"),
        pytest.param({"at": "2026-11-21T07:54:33"}, id="naive-time"),
    ],
)
def test_wrong_types_are_refused_not_coerced(changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedEventError):
        decode_event(wire(**changes))


def test_malformed_error_is_a_value_error_with_a_cause() -> None:
    with pytest.raises(ValueError, match="not an event envelope") as info:
        decode_event("nope")
    assert isinstance(info.value, MalformedEventError)
    assert info.value.__cause__ is not None
