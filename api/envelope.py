"""The wire form of :class:`domain.events.Event` between processes: one JSON object per message."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
    try:
        raw: dict[str, Any] = orjson.loads(message)
        return Event(
            topic=str(raw["topic"]),
            sequence=int(raw["seq"]),
            published_at=datetime.fromisoformat(raw["at"]),
            type=str(raw["type"]),
            payload=dict(raw["payload"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise MalformedEventError(f"not an event envelope: {exc}") from exc
