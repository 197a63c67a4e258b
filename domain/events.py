"""The event envelope every feed publishes, and the delivery policies topics follow."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime


class DeliveryPolicy(enum.Enum):
    """How a topic treats a subscriber that reads slower than events arrive.

    LATEST_VALUE: each event is the whole current state, so a slow subscriber is given the newest
    one and intermediate states are skipped (conflation).
    STREAM: every event matters in order; a subscriber that falls too far behind is ended with an
    explicit error, never silently skipped.
    """

    LATEST_VALUE = "latest_value"
    STREAM = "stream"


@dataclass(frozen=True, slots=True)
class Event:
    """One published event.

    ``sequence`` is monotonic per topic (1, 2, 3, ...); it is what lets a subscriber drop what a
    snapshot already covered and, later, resume after a reconnect. ``payload`` holds JSON values
    only (decimals as strings, times as ISO-8601 strings) so every transport can carry it as is.
    """

    topic: str
    sequence: int
    published_at: datetime
    type: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Unnumbered:
    """An event not numbered yet: what a publisher's ``prepare_all`` (and the stores'
    ``number_events``) take, one per event."""

    topic: str
    type: str
    payload: dict[str, Any]
