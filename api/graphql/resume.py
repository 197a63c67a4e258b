"""Resumable subscriptions: the ``after`` argument, the ``cursor`` every event carries and the
``StreamReset`` a client gets when what it missed can no longer be replayed.

A subscription over stream topics (a user's positions, funding, rounds, a paper account, a
dashboard) gives each event a cursor: where the stream stands right after that event. A client
that reconnects passes its last cursor as ``after``; the server replays every event since, from
the topics' history, then goes live, with no gap and no duplicate. See docs/resume.md.

Every resumable stream begins the same way, with :func:`resume`: read where its stream topics
stand (the replay since ``after``, or the snapshot), then :meth:`Resumption.opening` sends the
replayed events and a :class:`StreamReset` when they could not be replayed; the stream sends its
current state (``stamped``) and goes live. Its live loop is its own (each merges other sources:
prices, a stats topic); it drops the live events the start covered with
``resumption.position.advance(event)``, at no extra cost per event. (The current state is the
stream's to send: handing the positions stream's ``update`` to a helper would make it a closure
cell, which its every tick then pays for.)
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Generic, TypeVar

import strawberry

from api.graphql.errors import ClientError
from api.storage.history import Cursor, InvalidCursorError, NotRecovered

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

    from api.storage.history import PgHistory, Start
    from api.streaming.hub import Hub
    from domain.events import Event

AFTER_DESCRIPTION = (
    "Resume after this cursor (the `cursor` of the last event received): events since then are "
    "sent first, then live ones. If they can no longer be replayed, a StreamReset comes first, "
    "then the current state."
)

_SEPARATOR = "_"

R = TypeVar("R", bound="Resumable")
T = TypeVar("T")


class InvalidCursorGraphQLError(ClientError):
    code = "INVALID_CURSOR"


@strawberry.interface(
    description="An event of a resumable subscription: its cursor resumes right after it."
)
class Resumable:
    cursor: str | None = strawberry.field(
        default=None,
        description="Pass it as `after` to resume the subscription right after this event. "
        "Null outside a subscription.",
    )


@strawberry.enum(description="Why a resumed subscription could not replay what was missed.")
class StreamResetReason(enum.Enum):
    HISTORY_EXPIRED = strawberry.enum_value(
        NotRecovered.HISTORY_EXPIRED.value,
        description="The missed events are older than the history keeps (HISTORY_LIMITS).",
    )
    HISTORY_RESET = strawberry.enum_value(
        NotRecovered.HISTORY_RESET.value,
        description="The cursor belongs to an older numbering of the stream (the server's data "
        "was reset) or to another subscription.",
    )


@strawberry.type(
    description="What you missed can no longer be replayed: drop what you hold; the current "
    "state follows."
)
class StreamReset(Resumable):
    reason: StreamResetReason


def parse_after(after: str | None, topics: int) -> list[Cursor] | None:
    """The cursors of ``after`` (one per stream topic of the subscription), or a GraphQL error
    for a string this server never gave out."""
    if after is None:
        return None
    parts = after.split(_SEPARATOR, topics)  # no more than one part too many, however long
    if len(parts) != topics:
        raise InvalidCursorGraphQLError(
            "after: not a cursor of this subscription (use the cursor of one of its events)"
        )
    try:
        return [Cursor.parse(part) for part in parts]
    except InvalidCursorError as exc:
        raise InvalidCursorGraphQLError(f"after: {exc}") from None


class StreamPosition:
    """Where a subscription's stream topics stand: what its events' cursors say, and which live
    events the start already covered."""

    def __init__(self, topics: Sequence[str], cursors: Sequence[Cursor]) -> None:
        self._cursors = dict(zip(topics, cursors, strict=True))
        self._topics = list(topics)
        self.text = self._format()

    def advance(self, event: Event) -> bool:
        """Take ``event`` into account; False if it was covered already (drop it)."""
        cursor = self._cursors.get(event.topic)
        if cursor is None:
            return True  # a latest-value topic beside the streams
        if event.sequence <= cursor.sequence:
            return False
        self._cursors[event.topic] = Cursor(cursor.epoch, event.sequence)
        self.text = self._format()
        return True

    def sequence(self, topic: str) -> int:
        """The sequence of the last event of ``topic`` the stream has taken into account."""
        return self._cursors[topic].sequence

    def _format(self) -> str:
        return _SEPARATOR.join(str(self._cursors[topic]) for topic in self._topics)

    def reset(self, reason: NotRecovered) -> StreamReset:
        return StreamReset(reason=StreamResetReason(reason.value), cursor=self.text)


def stamped(event: R, position: StreamPosition) -> R:
    """``event`` with the cursor of where the stream now stands."""
    event.cursor = position.text
    return event


class Resumption(Generic[T]):
    """How one resumable stream began (:func:`resume`): the state it starts from, what it
    replays, and where it stands (``position``, which its live loop advances)."""

    __slots__ = ("_start", "position")

    def __init__(self, start: Start[T], position: StreamPosition) -> None:
        self._start = start
        self.position = position

    @property
    def snapshot(self) -> T | None:
        """The state right after the replay (always read with ``always_snapshot``), else the
        current state when not resumed; None when resumed without one."""
        return self._start.snapshot

    @property
    def resumed(self) -> bool:
        """True when every event since ``after`` is replayed (no reset)."""
        return self._start.resumed

    def opening(self, replayed: Callable[[Event], Iterable[R]]) -> Iterator[R | StreamReset]:
        """What the stream sends before its current state, each with its cursor:
        ``replayed(event)`` for every replayed event (called in order, so it may keep state),
        then a :class:`StreamReset` when what was missed could not be replayed. The stream then
        sends its current state, stamped, and goes live."""
        position = self.position
        for event in self._start.replay:
            position.advance(event)
            for item in replayed(event):
                yield stamped(item, position)
        if self._start.not_recovered is not None:
            yield position.reset(self._start.not_recovered)


async def resume(
    history: PgHistory,
    hub: Hub,
    streams: Sequence[str],
    after: Sequence[Cursor] | None,
    snapshot: Callable[[], Awaitable[T]],
    *,
    always_snapshot: bool = False,
) -> Resumption[T]:
    """Begin a resumable stream over the stream topics ``streams``, once subscribed to them
    through ``hub`` (so nothing published meanwhile is missed): the events since ``after`` if the
    history still holds them all, else ``snapshot()``; ``snapshot()`` anyway with
    ``always_snapshot`` (a stream that keeps state), read at exactly the replay's end
    (:meth:`PgHistory.start`). Where the topics stand is the hub's (:meth:`Hub.positions`), not
    read again: a resume costs one database read per topic, shared by identical resumes."""
    start = await history.start(
        streams, after, snapshot, always_snapshot=always_snapshot, current=hub.positions(streams)
    )
    return Resumption(start, StreamPosition(streams, start.origin))
