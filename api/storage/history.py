"""Topic history: how a subscriber resumes after a reconnect, and a process fills a gap.

Every event of a stream topic is kept in ``topic_history`` by the statement that numbers it,
inside the transaction that stores what it announces: history holds an event if and only if its
change was stored, in sequence order with no holes. A pruner bounds it per topic kind by count and
age. Latest-value topics keep no history: their newest state is the whole story
(``latest_prices``, ``latest_events``).

A subscriber's position in a topic is a :class:`Cursor`: the topic's *epoch* and a sequence. The
epoch is drawn when the topic is first numbered; if numbering ever starts again (the database was
rebuilt, the topic's row removed), the epoch changes and old cursors are answered with
:attr:`NotRecovered.HISTORY_RESET`, never matched against unrelated numbers (Centrifugo's model).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson

from api.settings import DEFAULT_LIMIT
from api.storage.coalesce import ReadCoalescer
from api.storage.latest import PgLatestEvents
from api.storage.prices import PgPriceRepository
from domain.events import DeliveryPolicy, Event, Unnumbered
from domain.prices import PRICE_UPDATE
from domain.topics import TopicKind, kind_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from datetime import datetime

    import asyncpg

    from api.settings import HistoryLimit
    from api.storage.database import Executor
    from domain.ports import Clock

logger = logging.getLogger(__name__)

T = TypeVar("T")


class InvalidCursorError(ValueError):
    """A resume cursor this server did not give out."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in a topic: after event ``sequence`` of numbering ``epoch``. Clients see it as
    an opaque string (``str(cursor)``) and hand it back as ``after``."""

    epoch: str
    sequence: int

    def __str__(self) -> str:
        return f"{self.sequence}.{self.epoch}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        match = _CURSOR.fullmatch(text)
        if match is None:
            raise InvalidCursorError(f"{text[:40]!r} is not a cursor this server gave out")
        return cls(match.group(2), int(match.group(1)))


_CURSOR = re.compile(r"(0|[1-9][0-9]{0,17})\.([0-9a-f]{1,32})")


class NotRecovered(enum.Enum):
    """Why a resume could not replay what the client missed."""

    HISTORY_EXPIRED = "HISTORY_EXPIRED"
    """The events after the cursor are older than the history keeps."""
    HISTORY_RESET = "HISTORY_RESET"
    """The topic's numbering started again since the cursor was given out."""


@dataclass(slots=True)
class Start(Generic[T]):
    """How a resumable subscription begins.

    Resumed: ``replay`` holds every event after the client's cursors, in the order they were
    published, and ``snapshot`` (when asked for) the state right after them. Otherwise
    ``snapshot`` is the current state and ``not_recovered`` says why a resume failed, when one was
    asked for. Either way ``cursors`` (one per topic) is where the stream stands afterwards: live
    events at or before them are already covered.
    """

    cursors: list[Cursor]
    snapshot: T | None = None
    replay: list[Event] = field(default_factory=list)
    not_recovered: NotRecovered | None = None
    resumed_from: list[Cursor] | None = None
    """The client's cursors, when resumed: where the replay starts."""

    @property
    def resumed(self) -> bool:
        return self.resumed_from is not None

    @property
    def origin(self) -> list[Cursor]:
        """Where the stream stands before the replay: the client's cursors when resumed, else
        ``cursors`` (there is no replay)."""
        return self.cursors if self.resumed_from is None else self.resumed_from


SNAPSHOT_ATTEMPTS = 3
"""Times a snapshot is read again when events were numbered while reading it."""


async def number_event(
    conn: Executor, clock: Clock, topic: str, type: str, payload: dict[str, Any]
) -> Event:
    """The next event of ``topic``, numbered on ``conn`` and, for a stream topic, recorded in its
    history by the same statement. Every store calls it inside the transaction that stores what
    the event announces, so the event exists if and only if the change was stored."""
    at = clock.now()
    if kind_of(topic).policy is DeliveryPolicy.STREAM:
        sequence: int = await conn.fetchval(
            """WITH numbered AS (
                   INSERT INTO topic_sequences (topic, sequence) VALUES ($1, 1)
                   ON CONFLICT (topic) DO UPDATE SET sequence = topic_sequences.sequence + 1
                   RETURNING sequence)
               INSERT INTO topic_history (topic, sequence, published_at, type, payload)
               SELECT $1, sequence, $2, $3, $4::json FROM numbered
               RETURNING sequence""",
            topic,
            at,
            type,
            orjson.dumps(payload).decode(),
        )
    else:
        sequence = await conn.fetchval(
            """INSERT INTO topic_sequences (topic, sequence) VALUES ($1, 1)
               ON CONFLICT (topic) DO UPDATE SET sequence = topic_sequences.sequence + 1
               RETURNING sequence""",
            topic,
        )
    return Event(topic, sequence, at, type, payload)


def numbering_ctes(first: int, *, keep_latest: bool = False) -> str:
    """The common table expressions that number a batch of events: ``given``, ``counted``,
    ``bumped``, ``numbered``, ``recorded`` (and with ``keep_latest``, ``kept_latest``), whose
    parameters are ``$first`` to ``$first + 4`` as :func:`numbering_args` gives them. A store that
    writes what the events announce puts its own data-modifying CTEs before these and ends with
    :data:`NUMBERED`, so storing and numbering are one round trip (what :func:`number_events`
    does alone).

    ``keep_latest``: each latest-value topic's newest event of the batch is also stored as the
    topic's newest state (``latest_events``: what a new subscriber starts from), never over a
    newer one."""
    p = [f"${first + i}" for i in range(5)]
    kept_latest = f""", kept_latest AS (
    INSERT INTO latest_events AS l (topic, sequence, type, payload, published_at)
    SELECT DISTINCT ON (topic) topic, sequence, type, payload::json, {p[4]}
    FROM numbered WHERE NOT kept ORDER BY topic, sequence DESC
    ON CONFLICT (topic) DO UPDATE
    SET sequence = EXCLUDED.sequence, type = EXCLUDED.type, payload = EXCLUDED.payload,
        published_at = EXCLUDED.published_at
    WHERE l.sequence < EXCLUDED.sequence
)"""
    return f"""given AS (
    SELECT topic, type, payload, kept, ord
    FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], {p[3]}::bool[])
         WITH ORDINALITY AS g (topic, type, payload, kept, ord)
), counted AS (
    SELECT topic, count(*) AS n FROM given GROUP BY topic
), bumped AS (
    INSERT INTO topic_sequences AS s (topic, sequence)
    SELECT topic, n FROM counted ORDER BY topic
    ON CONFLICT (topic) DO UPDATE SET sequence = s.sequence + EXCLUDED.sequence
    RETURNING topic, sequence
), numbered AS (
    SELECT g.ord, g.topic, g.type, g.payload, g.kept,
           b.sequence - c.n + row_number() OVER (PARTITION BY g.topic ORDER BY g.ord) AS sequence
    FROM given g JOIN counted c USING (topic) JOIN bumped b USING (topic)
), recorded AS (
    INSERT INTO topic_history (topic, sequence, published_at, type, payload)
    SELECT topic, sequence, {p[4]}, type, payload::json FROM numbered WHERE kept
){kept_latest if keep_latest else ""}"""


NUMBERED = "SELECT sequence FROM numbered ORDER BY ord"
"""The end of a statement that numbers events with :func:`numbering_ctes`: their sequences, in
the order given."""

_NUMBER_MANY = f"WITH {numbering_ctes(1)}\n{NUMBERED}"
_NUMBER_MANY_KEEPING_LATEST = f"WITH {numbering_ctes(1, keep_latest=True)}\n{NUMBERED}"


def numbering_args(
    at: datetime, events: Sequence[Unnumbered], *, keep_latest: bool = False
) -> list[Any]:
    """The five parameters of :func:`numbering_ctes` for ``events`` published ``at``."""
    kept = [kind_of(e.topic).policy is DeliveryPolicy.STREAM for e in events]
    return [
        [e.topic for e in events],
        [e.type for e in events],
        # Only what is stored needs the payload: without keep_latest a latest-value event's is
        # not sent at all (a settled round's 20,000 wallet events carried 70 MB to PostgreSQL
        # for nothing).
        [
            orjson.dumps(e.payload).decode() if k or keep_latest else None
            for e, k in zip(events, kept, strict=True)
        ],
        kept,
        at,
    ]


def numbered(
    at: datetime, events: Sequence[Unnumbered], rows: Sequence[asyncpg.Record]
) -> list[Event]:
    """``events`` with the sequences a statement ending in :data:`NUMBERED` returned."""
    return [
        Event(e.topic, row["sequence"], at, e.type, e.payload)
        for e, row in zip(events, rows, strict=True)
    ]


async def number_events(
    conn: Executor, clock: Clock, events: Sequence[Unnumbered], *, keep_latest: bool = False
) -> list[Event]:
    """:func:`number_event` for many events at once, in one statement (one round trip): each
    topic's sequence is moved once by its count of events, the events of one topic are numbered
    in the order given, and those of stream topics are recorded in history (with
    ``keep_latest``, a latest-value topic's newest is stored as its newest state: see
    :func:`numbering_ctes`). Topics are locked in name order, so two batches sharing topics
    cannot deadlock. Call it inside the transaction that stores what the events announce."""
    if not events:
        return []
    at = clock.now()
    statement = _NUMBER_MANY_KEEPING_LATEST if keep_latest else _NUMBER_MANY
    args = numbering_args(at, events, keep_latest=keep_latest)
    return numbered(at, events, await conn.fetch(statement, *args))


def _replays(events: list[Event], after: Cursor, current: Cursor) -> bool:
    """Whether ``events`` are every event after ``after`` up to ``current``."""
    return bool(events) and (events[0].sequence, events[-1].sequence) == (
        after.sequence + 1,
        current.sequence,
    )


class PgHistory:
    """Reads and prunes ``topic_history``; tells where a topic stands."""

    def __init__(self, pool: asyncpg.Pool, limits: Mapping[TopicKind, HistoryLimit]) -> None:
        self.pool = pool
        self.limits = dict(limits)
        self._positions = ReadCoalescer("position")
        self._events = ReadCoalescer("events")
        self._latest = ReadCoalescer("latest")

    async def position(self, topic: str) -> Cursor:
        """Where ``topic`` stands now (sequence 0 before its first event). Identical reads in
        flight share one (:mod:`api.storage.coalesce`), as do :meth:`since` and :meth:`latest`:
        a reconnect storm costs reads per distinct topic and cursor, not per client."""
        return await self._positions.read(topic, lambda: self._position(topic))

    async def _position(self, topic: str) -> Cursor:
        row = await self.pool.fetchrow(
            "SELECT sequence, epoch FROM topic_sequences WHERE topic = $1", topic
        )
        if row is None:
            # Numbered from here on: its epoch is drawn now, so a cursor given out before the
            # first event is already tied to it.
            row = await self.pool.fetchrow(
                """INSERT INTO topic_sequences (topic, sequence) VALUES ($1, 0)
                   ON CONFLICT (topic) DO UPDATE SET topic = EXCLUDED.topic
                   RETURNING sequence, epoch""",
                topic,
            )
            assert row is not None
        return Cursor(row["epoch"], row["sequence"])

    async def since(self, topic: str, after: int, before: int | None = None) -> list[Event]:
        """The kept events of ``topic`` after sequence ``after`` (and before ``before``), in
        order; the first may be later than ``after + 1`` if older ones were pruned."""
        return await self._events.read(
            (topic, after, before), lambda: self._since(topic, after, before)
        )

    async def _since(self, topic: str, after: int, before: int | None) -> list[Event]:
        limit = self.limits.get(kind_of(topic), DEFAULT_LIMIT).max_events
        rows = await self.pool.fetch(
            """SELECT sequence, published_at, type, payload::text AS payload
               FROM topic_history
               WHERE topic = $1 AND sequence > $2 AND ($3::bigint IS NULL OR sequence < $3)
               ORDER BY sequence LIMIT $4""",
            topic,
            after,
            before,
            limit,
        )
        return [
            Event(topic, r["sequence"], r["published_at"], r["type"], orjson.loads(r["payload"]))
            for r in rows
        ]

    async def latest(self, topic: str) -> Event | None:
        """The newest stored state of a latest-value topic, where one is stored."""
        return await self._latest.read(topic, lambda: self._latest_of(topic))

    async def _latest_of(self, topic: str) -> Event | None:
        if kind_of(topic) is TopicKind.PRICE:
            stored = await PgPriceRepository(self.pool).latest(topic.split(":", 1)[1])
            if stored is None:
                return None
            price, sequence = stored
            return Event(topic, sequence, price.published_at, PRICE_UPDATE, price.to_payload())
        return await PgLatestEvents(self.pool).latest(topic)

    async def start(
        self,
        topics: Sequence[str],
        after: Sequence[Cursor] | None,
        snapshot: Callable[[], Awaitable[T]],
        *,
        always_snapshot: bool = False,
        current: Sequence[Cursor] | None = None,
    ) -> Start[T]:
        """Begin a subscription to stream ``topics``: replay what followed ``after`` (a cursor per
        topic) if history still holds all of it, else read ``snapshot``; read it anyway with
        ``always_snapshot`` (for a stream that keeps state), at exactly the replay's end. Call it
        once subscribed to the topics, so nothing published meanwhile is missed (live events up
        to the returned cursors are duplicates).

        ``current``: where the topics stand as the caller's subscriptions see them (the hub's
        :meth:`~api.streaming.hub.Hub.positions`), every later event reaching them; without it
        they are read. A resume then costs one read per topic: the events since the cursor, with
        where the topic stands after the snapshot, which tells the snapshot was exact."""
        if after is not None and current is not None and len(after) == len(topics):
            started = await self._resume_at(topics, after, list(current), snapshot, always_snapshot)
            if started is not None:
                return started
            current = None  # events were numbered around the snapshot: read it the long way
        reason: NotRecovered | None = None
        if after is not None:
            current = [await self.position(topic) for topic in topics]
            if len(after) != len(topics) or any(
                a.epoch != c.epoch or a.sequence > c.sequence
                for a, c in zip(after, current, strict=True)
            ):
                reason = NotRecovered.HISTORY_RESET
            else:
                value: T | None = None
                if always_snapshot:
                    value, current = await self.consistent(topics, snapshot, before=current)
                replay: list[Event] = []
                for topic, a, c in zip(topics, after, current, strict=True):
                    if a.sequence == c.sequence:
                        continue
                    events = await self.since(topic, a.sequence, before=c.sequence + 1)
                    if not _replays(events, a, c):
                        reason = NotRecovered.HISTORY_EXPIRED
                        break
                    replay += events
                else:
                    replay.sort(key=lambda e: e.published_at)  # stable: each topic keeps its order
                    return Start(current, value, replay, resumed_from=list(after))
                if always_snapshot:
                    return Start(current, value, not_recovered=reason)
        before = None if current is None else list(current)
        value, cursors = await self.consistent(topics, snapshot, before=before)
        return Start(cursors, snapshot=value, not_recovered=reason)

    async def _resume_at(
        self,
        topics: Sequence[str],
        after: Sequence[Cursor],
        current: list[Cursor],
        snapshot: Callable[[], Awaitable[T]],
        always_snapshot: bool,
    ) -> Start[T] | None:
        """:meth:`start`'s resume from ``current`` positions known without a read: the snapshot
        (with ``always_snapshot``), then per topic one read of the events up to ``current`` and
        of where the topic stands now. Where a topic moved during the snapshot, the snapshot is
        read again and each topic's read takes the events up to where it then stood (one read a
        topic per attempt). None when the long way must say what happened (a reset, a topic
        gone, a snapshot never exact in :data:`SNAPSHOT_ATTEMPTS` attempts, or, without
        ``always_snapshot``, an expired history)."""
        if any(
            a.epoch != c.epoch or a.sequence > c.sequence
            for a, c in zip(after, current, strict=True)
        ):
            return None  # a reset, or a cursor from the future: the long way says which
        value: T | None = await snapshot() if always_snapshot else None
        replays: list[list[Event]] = [[] for _ in topics]
        read_to = [a.sequence for a in after]
        for _ in range(SNAPSHOT_ATTEMPTS):
            moved: list[Cursor] = []
            for i, (topic, c) in enumerate(zip(topics, current, strict=True)):
                if read_to[i] == c.sequence and not always_snapshot:
                    moved.append(c)
                    continue
                events, now = await self.since_at(topic, read_to[i], before=c.sequence + 1)
                if now is None or now.epoch != c.epoch:
                    return None
                replays[i] += events
                read_to[i] = c.sequence
                moved.append(now if always_snapshot else c)
            if moved == current:
                break
            current = moved
            value = await snapshot()
        else:
            return None
        if not all(
            a.sequence == c.sequence or _replays(events, a, c)
            for a, c, events in zip(after, current, replays, strict=True)
        ):
            if not always_snapshot:
                return None
            return Start(current, value, not_recovered=NotRecovered.HISTORY_EXPIRED)
        replay = [event for events in replays for event in events]
        replay.sort(key=lambda e: e.published_at)  # stable: each topic keeps its order
        return Start(current, value, replay, resumed_from=list(after))

    async def since_at(
        self, topic: str, after: int, before: int
    ) -> tuple[list[Event], Cursor | None]:
        """:meth:`since`, and where ``topic`` stands as the same statement saw it (None when the
        topic is not numbered at all), in one read; identical reads in flight share one."""
        return await self._events.read(
            ("at", topic, after, before), lambda: self._since_at(topic, after, before)
        )

    async def _since_at(
        self, topic: str, after: int, before: int
    ) -> tuple[list[Event], Cursor | None]:
        limit = self.limits.get(kind_of(topic), DEFAULT_LIMIT).max_events
        rows = await self.pool.fetch(
            """SELECT s.sequence AS now, s.epoch, h.sequence, h.published_at, h.type,
                      h.payload::text AS payload
               FROM topic_sequences s
               LEFT JOIN LATERAL (
                   SELECT sequence, published_at, type, payload FROM topic_history
                   WHERE topic = s.topic AND sequence > $2 AND sequence < $3
                   ORDER BY sequence LIMIT $4
               ) h ON true
               WHERE s.topic = $1
               ORDER BY h.sequence""",
            topic,
            after,
            before,
            limit,
        )
        if not rows:
            return [], None
        events = [
            Event(topic, r["sequence"], r["published_at"], r["type"], orjson.loads(r["payload"]))
            for r in rows
            if r["sequence"] is not None
        ]
        return events, Cursor(rows[0]["epoch"], rows[0]["now"])

    async def consistent(
        self,
        topics: Sequence[str],
        read: Callable[[], Awaitable[T]],
        *,
        before: list[Cursor] | None = None,
    ) -> tuple[T, list[Cursor]]:
        """``read()`` and the cursors it is exact at: read again while events of ``topics`` were
        numbered meanwhile. Events are numbered inside the transactions that store their changes,
        so unchanged sequences around the read mean the read saw exactly the events up to them.
        After :data:`SNAPSHOT_ATTEMPTS` busy reads the cursors are those before the last read,
        which may make a live event repeat what the read already showed. ``before``: the
        topics' positions read just now, which a resume has already (one read fewer)."""
        if before is None:
            before = [await self.position(topic) for topic in topics]
        for _ in range(SNAPSHOT_ATTEMPTS):
            value = await read()
            after = [await self.position(topic) for topic in topics]
            if after == before:
                break
            before = after
        return value, before

    async def prune(self, now: datetime | None = None) -> int:
        """Delete history past each kind's limits; the number of events deleted."""
        deleted = 0
        for kind, limit in self.limits.items():
            status = await self.pool.execute(
                """DELETE FROM topic_history h USING topic_sequences s
                   WHERE s.topic = h.topic
                     AND (h.topic = $1 OR h.topic LIKE $1 || ':%')
                     AND (h.sequence <= s.sequence - $2
                          OR h.published_at < coalesce($4, now()) - make_interval(secs => $3))""",
                kind.value,
                limit.max_events,
                limit.max_age_s,
                now,
            )
            deleted += int(status.split()[-1])
        return deleted

    async def run_pruner(self, interval_s: float) -> None:
        """Prune every ``interval_s`` until cancelled; a failed pass is logged, not fatal."""
        while True:
            try:
                deleted = await self.prune()
                if deleted:
                    logger.info("pruned %d history events", deleted)
            except Exception:
                logger.exception("history pruning failed; trying again later")
            await asyncio.sleep(interval_s)
