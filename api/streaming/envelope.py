"""The wire form of :class:`domain.events.Event` between processes: one JSON object per message."""

from __future__ import annotations

from datetime import datetime

import orjson

from domain.events import Event


class MalformedEventError(ValueError):
    """A broadcast message that is not an event envelope."""


def encode_event(event: Event) -> str:
    return orjson.dumps(
        {
            "topic": event.topic,
            "seq": event.sequence,
            "at": event.published_at.isoformat(),
            "type": event.type,
            "payload": event.payload,
        }
    ).decode()


def decode_event(message: str | bytes) -> Event:
    """The event in ``message``; :class:`MalformedEventError` for anything not exactly an envelope
    (no coercion: a wrong type is refused, not converted)."""
    try:
        raw = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise MalformedEventError(f"not an event envelope: {exc}") from exc
    if not isinstance(raw, dict):
        raise MalformedEventError("not an event envelope: not a JSON object")
    try:
        topic, sequence, at, type_, payload = (raw[k] for k in _KEYS)
    except KeyError as exc:
        raise MalformedEventError(f"not an event envelope: no {exc.args[0]!r}") from exc
    _expect(isinstance(topic, str) and topic != "", "topic must be a non-empty string")
    _expect(
        isinstance(sequence, int) and not isinstance(sequence, bool) and sequence > 0,
        "seq must be a positive integer",
    )
    _expect(isinstance(type_, str) and type_ != "", "type must be a non-empty string")
    _expect(isinstance(payload, dict), "payload must be an object")
    _expect(isinstance(at, str), "at must be an ISO-8601 string")
    try:
        published_at = datetime.fromisoformat(at)
    except ValueError as exc:
        raise MalformedEventError(f"not an event envelope: at: {exc}") from exc
    _expect(published_at.tzinfo is not None, "at must carry a time zone")
    return Event(topic, sequence, published_at, type_, payload)


_KEYS = ("topic", "seq", "at", "type", "payload")


def _expect(condition: bool, problem: str) -> None:
    if not condition:
        raise MalformedEventError(f"not an event envelope: {problem}")
