"""The hub: fan-out of published events to subscriptions in this process.

    broadcaster backend --(one upstream subscription per topic)--> _TopicFeed
        --(decoded once, same Event object)--> _SubscriberQueue (bounded, per subscription)
        --> Subscription (async iterator) --> resolver --> transport

The hub holds one broadcaster subscription per topic, reference-counted by the subscriptions open
on it, and decodes each message once. Every subscription has its own bounded queue that applies
the topic's delivery policy when it fills (see :class:`domain.events.DeliveryPolicy`), so a client
that stops reading holds at most its queue's capacity of events and never slows the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, Self

from api.ops.metrics import counts
from api.storage.history import Cursor
from api.streaming.broadcast import RECONNECTED
from api.streaming.envelope import MalformedEventError, decode_event
from api.streaming.stepping import Wakeup
from domain.events import DeliveryPolicy, Event
from domain.topics import policy_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
    from datetime import datetime
    from types import TracebackType

    from api.streaming.broadcast import Broadcast
    from api.streaming.connection import Merge

logger = logging.getLogger(__name__)


class Reader(Protocol):
    """Whoever reads the hub in the current task and wants to know what it read: a fan-out group
    (:class:`api.graphql.fanout.Group`) executing a subscription's source."""

    policy: DeliveryPolicy
    """Set to the stream policy once the reader reads a stream topic."""
    event_at: datetime | None
    """When the newest event the reader read was published."""
    merge: Merge | None
    """How two of its results merge for a socket that reads slower than they come, if they do
    (set by :func:`note_merge`)."""


reader: ContextVar[Reader | None] = ContextVar("tradestream_reader", default=None)
"""The :class:`Reader` of the current task, if any (set by the fan-out group around each step)."""


def note_topic(topic: str) -> None:
    """Tell the current reader (if any) that it reads ``topic``: a stream topic makes it follow
    the stream policy."""
    current = reader.get()
    if current is not None and policy_of(topic) is DeliveryPolicy.STREAM:
        current.policy = DeliveryPolicy.STREAM


def note_merge(merge: Merge) -> None:
    """Tell the current reader (if any) that its results are changes that ``merge`` can merge,
    two waiting messages into one (:meth:`api.streaming.connection.Connection.write`): a socket
    that reads slower than they come then gets them merged instead of falling behind."""
    current = reader.get()
    if current is not None:
        current.merge = merge


def note_event(event: Event) -> None:
    """Tell the current reader (if any) that it read ``event``: its next result is timed from
    the event's publication (the fan-out latency metric)."""
    current = reader.get()
    if current is not None:
        current.event_at = event.published_at


LATEST_VALUE = DeliveryPolicy.LATEST_VALUE
STREAM = DeliveryPolicy.STREAM
"""The policies as module constants: an enum member read through its class costs a descriptor
call, and these are read for every subscriber of every event."""


DELIVERY_BATCH = 16
DELIVERY_SLICE_S = 0.001
"""An event's delivery to the subscriptions of its topic hands the loop back after every slice
of this long (checked every DELIVERY_BATCH subscriptions): the project's bound on how long
anything may hold the event loop is a few milliseconds."""

LATEST_VALUE_BACKLOG = 4
"""Latest-value events a reader may fall behind before the oldest are dropped: enough to ride out
a busy moment, few enough that an overloaded server spends no time on stale states."""


class HubError(Exception):
    """Why a subscription ended other than by its own choice."""


class SubscriberLaggedError(HubError):
    """A stream subscription fell further behind than its queue holds, or than
    ``SUBSCRIBER_MAX_LAG_S`` allows; events would be lost or late."""

    def __init__(self, topic: str, capacity: int, lag_s: float | None = None) -> None:
        behind = f"{capacity} events" if lag_s is None else f"{lag_s:g} s"
        super().__init__(
            f"subscription to {topic!r} fell more than {behind} behind and was ended; "
            "resubscribe to continue"
        )
        self.topic = topic
        self.capacity = capacity
        self.lag_s = lag_s


class UpstreamError(HubError):
    """The broadcast backend failed under a topic."""


class HubClosedError(HubError):
    """The server is shutting down."""


class StreamGapError(HubError):
    """Events of a stream topic may have been missed (the broker connection was lost and the
    topic's history does not reach back far enough to fill the gap)."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"events of {topic!r} may have been missed while the event broker was unreachable; "
            "resubscribe (with after: your last cursor) to continue"
        )
        self.topic = topic


class History(Protocol):
    """What the hub reads to fill gaps: the topic history
    (:class:`api.storage.history.PgHistory`)."""

    async def position(self, topic: str) -> Cursor: ...

    async def since(self, topic: str, after: int, before: int | None = None) -> list[Event]: ...

    async def latest(self, topic: str) -> Event | None: ...


class _SubscriberQueue:
    """A bounded queue with a delivery policy.

    LATEST_VALUE keeps the newest few events (at most :data:`LATEST_VALUE_BACKLOG`) and drops the
    oldest past that: every event is the whole state, so a reader that is behind skips to the
    present instead of working through stale states, while a short stall (a busy moment of the
    loop) costs a reader that keeps up nothing. STREAM keeps up to
    ``capacity`` events and, past that, fails the reader with :class:`SubscriberLaggedError`
    rather than drop one silently.
    """

    __slots__ = (
        "_items",
        "_since",
        "_wakeup",
        "capacity",
        "conflated",
        "error",
        "max_lag_s",
        "policy",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        policy: DeliveryPolicy,
        capacity: int,
        wakeup: Wakeup | None = None,
        max_lag_s: float | None = None,
    ) -> None:
        self.topic = topic
        self.policy = policy
        self.capacity = min(capacity, LATEST_VALUE_BACKLOG) if policy is LATEST_VALUE else capacity
        self.max_lag_s = max_lag_s if policy is STREAM else None
        """STREAM: an event waiting longer than this (seconds) ends the reader as lagged too."""
        self._since: deque[float] | None = None
        """When each waiting event came (STREAM with ``max_lag_s`` only), oldest first."""
        self._items: deque[Event] = deque()
        self._wakeup = wakeup or Wakeup()
        """Set when an event or an error arrives; several queues read together share one."""
        self.error: HubError | None = None
        self.conflated = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event) -> None:
        if self.error is not None:
            return
        if len(self._items) >= self.capacity:
            if self.policy is STREAM:
                counts.hub_lagged += 1
                self.fail(SubscriberLaggedError(self.topic, self.capacity))
                return
            self._items.popleft()
            self.conflated += 1
            counts.hub_conflated += 1
        if self.max_lag_s is not None:
            now = time.monotonic()
            since = self._since
            if since is None:
                since = self._since = deque()
            else:
                while len(since) > len(self._items):  # the times of events already read
                    since.popleft()
                if since and now - since[0] > self.max_lag_s:
                    counts.hub_lagged += 1
                    self.fail(SubscriberLaggedError(self.topic, self.capacity, self.max_lag_s))
                    return
            since.append(now)
        self._items.append(event)
        self._wakeup.set()

    def fail(self, error: HubError) -> None:
        if self.error is None:
            self.error = error
            self._items.clear()
            self._since = None
            self._wakeup.set()

    async def get(self) -> Event:
        while not self._items:
            if self.error is not None:
                raise self.error
            self._wakeup.clear()
            await self._wakeup.wait()
        event = self._items.popleft()
        note_event(event)
        return event

    def take(self) -> Event | None:
        """The next event if one is waiting; raises the queue's error once it is empty."""
        if self._items:
            event = self._items.popleft()
            note_event(event)
            return event
        if self.error is not None:
            raise self.error
        return None


class _TopicFeed:
    """The one upstream subscription of a topic in this process and the queues it feeds.

    With a history, a stream topic's feed delivers every event after the one current when it
    started, in order: an event that arrives before an earlier one (two publishers, one slow) or
    after a broker reconnect is preceded by the missing ones, read from the history. What history
    no longer holds ends the subscriptions with :class:`StreamGapError`. A latest-value topic's
    feed reads the stored state after a reconnect instead.
    """

    def __init__(
        self,
        topic: str,
        broadcast: Broadcast,
        history: History | None,
        previous: asyncio.Task[None] | None,
    ):
        self.topic = topic
        self.queues: set[_SubscriberQueue] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_sequence = 0
        self.epoch: str | None = None
        """A contiguous stream feed's topic epoch, from its first read of where the topic
        stood (see :meth:`Hub.positions`)."""
        self.history = history
        self.stream = policy_of(topic) is STREAM
        self.task = asyncio.create_task(self._pump(broadcast, previous), name=f"hub:{topic}")

    async def _pump(self, broadcast: Broadcast, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            # The last feed of this topic is still unsubscribing upstream; let it finish first so
            # the backend never sees our subscribe before its unsubscribe.
            with contextlib.suppress(BaseException):
                await previous
        try:
            async with broadcast.subscribe(self.topic) as upstream:
                contiguous = self.stream and self.history is not None
                if contiguous:
                    assert self.history is not None
                    position = await self.history.position(self.topic)
                    self.epoch, self.last_sequence = position.epoch, position.sequence
                self.ready.set_result(None)
                while True:
                    message = (await upstream.get()).message
                    if message == RECONNECTED:
                        await self._recover()
                        continue
                    if self.stream:
                        event = self._decode(message)
                        if event is None:
                            continue
                        if contiguous and event.sequence > self.last_sequence + 1:
                            await self._fill(before=event.sequence)
                        await self._deliver(event)
                        continue
                    backlog = self._newest(upstream, message)
                    while backlog:
                        event = self._decode(backlog.pop(0))
                        if event is not None:
                            await self._deliver(event, upstream, backlog)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("upstream subscription to %r failed", self.topic)
            self._fail(UpstreamError(f"the event stream of {self.topic!r} failed: {exc}"))

    def _newest(self, upstream: Any, message: str) -> list[str]:
        """A latest-value topic's messages already waiting, the newest
        :data:`LATEST_VALUE_BACKLOG` of them, the older skipped: the rule each subscriber's queue
        applies to a reader that falls behind, applied once for all of them. A group stepped by
        the hub (:mod:`api.streaming.stepping`) takes each event as it is delivered, so its queue
        never
        holds more than one: when the hub itself falls behind (its subscribers' steps take longer
        than the topic's interval), this is where the stale states are dropped. Stops at a
        reconnection marker or the end of the subscription, which keep their place."""
        messages = [message, *self._waiting(upstream)]
        skipped = len(messages) - LATEST_VALUE_BACKLOG
        if skipped > 0:
            counts.hub_conflated += skipped * len(self.queues)
            del messages[:skipped]
        return messages

    @staticmethod
    def _waiting(upstream: Any) -> list[str]:
        """The messages waiting upstream, up to a reconnection marker or the end."""
        # broadcaster's Subscriber has no non-blocking get: its queue (an asyncio.Queue, of
        # which this is the only reader) is read directly.
        queue = upstream._queue
        messages: list[str] = []
        while not queue.empty():
            waiting = queue.get_nowait()
            if waiting is None or waiting.message == RECONNECTED:
                # broadcaster's end marker (None) must stay last, and a reconnection marker
                # must be handled after the messages before it: put back at the front (the
                # queue's deque; no reader waits on it while this one runs).
                queue._queue.appendleft(waiting)
                break
            messages.append(waiting.message)
        return messages

    def _decode(self, message: str) -> Event | None:
        try:
            return decode_event(message)
        except MalformedEventError:
            logger.exception("dropped a malformed message on %r", self.topic)
            return None

    def _newer(self, upstream: Any, backlog: list[str]) -> Event | None:
        """The newest state of a latest-value topic waiting (in ``backlog`` or upstream) that is
        newer than the one being delivered, the others skipped; None if there is none."""
        backlog.extend(self._waiting(upstream))
        while backlog:
            event = self._decode(backlog.pop())
            if event is None:
                continue
            skipped, subscribers = len(backlog), len(self.queues)
            backlog.clear()
            if event.sequence <= self.last_sequence:
                return None
            counts.hub_conflated += skipped * subscribers
            self.last_sequence = event.sequence
            return event
        return None

    async def _fill(self, before: int | None = None) -> None:
        """Deliver the kept events after the last one delivered (up to ``before``); fail the
        subscriptions if some are no longer kept."""
        assert self.history is not None
        while before is None or self.last_sequence + 1 < before:
            expected = self.last_sequence + 1
            try:
                events = await self.history.since(self.topic, self.last_sequence, before)
            except Exception:
                logger.exception("could not read the history of %r to fill a gap", self.topic)
                events = []
            if not events:
                if before is not None:
                    self._gap(expected)
                return
            if events[0].sequence != expected:
                self._gap(expected)
            for event in events:
                await self._deliver(event)
            counts.gap_events_filled += len(events)

    def _gap(self, expected: int) -> None:
        logger.warning(
            "events of %r from %d are no longer kept; ending its subscriptions",
            self.topic,
            expected,
        )
        failed = list(self.queues)
        for queue in failed:
            queue.fail(StreamGapError(self.topic))
        counts.stream_gaps += len(failed)

    async def _recover(self) -> None:
        """The backend reconnected: what was published meanwhile may be missing."""
        if self.stream:
            if self.history is None:
                self._gap(self.last_sequence + 1)
            else:
                await self._fill()
            return
        if self.history is not None:
            try:
                current = await self.history.latest(self.topic)
            except Exception:
                logger.exception("could not read the latest state of %r", self.topic)
                return
            if current is not None:
                await self._deliver(current)

    async def _deliver(
        self, event: Event, upstream: Any = None, backlog: list[str] | None = None
    ) -> None:
        """Put ``event`` in every queue of the topic.

        With ``upstream`` and ``backlog`` (a latest-value topic's live events): a delivery long
        enough to hand the loop back looks, each time it gets it back, for a newer state waiting;
        if there is one, the queues not served yet get the newer state instead, and the delivery
        goes on round to the ones served the older state (and any queue opened meanwhile). An
        overloaded server thus hands each subscriber, at its turn, the newest state there is: how
        old a state is when it reaches a subscriber stays within about the topic's interval,
        however long one round over every subscriber takes; the rounds themselves are what the
        overload costs.
        """
        # Out-of-order or repeated events would show a subscriber an older state after a newer
        # one; the sequence makes them detectable, so they never reach a queue.
        if event.sequence <= self.last_sequence:
            return
        self.last_sequence = event.sequence
        # A copy: a put may run a subscriber's step (api/streaming/stepping.py), which may end it.
        queues = list(self.queues)
        if len(queues) <= DELIVERY_BATCH:
            for queue in queues:
                queue.put(event)
            return
        # A put may run a subscriber's whole step (its resolver, its plan, its write): thousands
        # of them are tens of milliseconds. The loop is handed back every DELIVERY_SLICE_S, so
        # requests (a mutation, a query, a price from an oracle) are answered meanwhile.
        slice_end = time.perf_counter() + DELIVERY_SLICE_S
        done = 0
        while done < len(queues):
            for queue in queues[done : done + DELIVERY_BATCH]:
                queue.put(event)
            done += DELIVERY_BATCH
            if time.perf_counter() > slice_end:
                await asyncio.sleep(0)
                slice_end = time.perf_counter() + DELIVERY_SLICE_S
                if done >= len(queues) or backlog is None:
                    continue
                newer = self._newer(upstream, backlog)
                if newer is not None:
                    event = newer
                    unserved = queues[done:]
                    counts.hub_conflated += len(unserved)
                    queues = self._round_from(unserved)
                    done = 0

    def _round_from(self, unserved: list[_SubscriberQueue]) -> list[_SubscriberQueue]:
        """Every queue of the topic now, those of ``unserved`` (still open) first, in order."""
        current = self.queues
        first = set(unserved)
        return [q for q in unserved if q in current] + [q for q in current if q not in first]

    def _fail(self, error: HubError) -> None:
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # waiters re-raise it; nobody else needs to retrieve it
        for queue in list(self.queues):
            queue.fail(error)


class Subscription:
    """One subscriber's view of a topic: an async context manager and an async iterator of events.

    Enter it before reading any snapshot: once entered, every event published afterwards reaches
    it, so snapshot-then-live has no gap (drop what the snapshot covered by sequence).
    """

    def __init__(self, hub: Hub, topic: str, capacity: int | None = None) -> None:
        self.hub = hub
        self.topic = topic
        self.queue = _SubscriberQueue(
            topic, policy_of(topic), capacity or hub.queue_size, max_lag_s=hub.max_lag_s
        )

    async def __aenter__(self) -> Self:
        await self.hub._attach(self.queue)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.hub._detach(self.queue)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        return await self.queue.get()


class MergedSubscription:
    """Several topics read as one iterator, each topic keeping its own queue and policy (a
    latest-value price beside a stream of position events). One wakeup serves every queue, so a
    merged reader costs no task; topics take turns, so a busy one never starves the others.
    Events of different topics keep no order between them; each topic's own order holds."""

    def __init__(self, hub: Hub, topics: list[str]) -> None:
        self.hub = hub
        self._wakeup = Wakeup()
        self.queues = [
            _SubscriberQueue(t, policy_of(t), hub.queue_size, self._wakeup, hub.max_lag_s)
            for t in topics
        ]
        self._next = 0

    async def __aenter__(self) -> Self:
        attached: list[_SubscriberQueue] = []
        try:
            for queue in self.queues:
                await self.hub._attach(queue)
                attached.append(queue)
        except BaseException:
            for queue in attached:
                self.hub._detach(queue)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for queue in self.queues:
            self.hub._detach(queue)

    def __aiter__(self) -> Self:
        return self

    def poll(self) -> Event | None:
        """The next event if one is already waiting, without waiting for one."""
        count = len(self.queues)
        for turn in range(count):
            index = (self._next + turn) % count
            event = self.queues[index].take()
            if event is not None:
                self._next = (index + 1) % count
                return event
        return None

    async def __anext__(self) -> Event:
        while True:
            event = self.poll()
            if event is not None:
                return event
            self._wakeup.clear()
            await self._wakeup.wait()


class Hub:
    def __init__(
        self,
        broadcast: Broadcast,
        *,
        queue_size: int,
        history: History | None = None,
        max_lag_s: float | None = None,
    ) -> None:
        self.broadcast = broadcast
        self.queue_size = queue_size
        self.max_lag_s = max_lag_s
        """How long (seconds) a stream event may wait in a subscriber's queue before that
        subscriber is ended as lagged, as a full queue ends it (``SUBSCRIBER_MAX_LAG_S``)."""
        self.history = history
        self._feeds: dict[str, _TopicFeed] = {}
        self._closing: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    def subscribe(self, topic: str, capacity: int | None = None) -> Subscription:
        """A subscription to ``topic``; ``capacity`` overrides the hub's queue size (for an
        internal reader that must ride out bursts, such as a read model)."""
        note_topic(topic)
        return Subscription(self, topic, capacity)

    def merge(self, topics: list[str]) -> MergedSubscription:
        """One subscription over several topics (enter it before reading any snapshot)."""
        for name in topics:
            note_topic(name)
        return MergedSubscription(self, topics)

    async def live(
        self, topic: str, snapshot: Callable[[], Awaitable[Event | None]]
    ) -> AsyncIterator[Event]:
        """The current state from ``snapshot`` (if there is one), then every newer event.

        For latest-value topics whose state is also stored: the subscriber sees the present at
        once instead of waiting for the next change.
        """
        async with self.subscribe(topic) as subscription:
            last = 0
            current = await snapshot()
            if current is not None:
                last = current.sequence
                yield current
            async for event in subscription:
                if event.sequence > last:
                    yield event

    def positions(self, topics: Sequence[str]) -> list[Cursor] | None:
        """Where each of ``topics`` stands, as far as this process's feeds have delivered, for a
        caller subscribed to every one of them: each later event reaches its subscriptions, so a
        resume can replay history up to these and take the rest live, with no database read for
        where the topics stand. None unless every topic has a ready feed that delivers its stream
        contiguously (one with a history)."""
        cursors: list[Cursor] = []
        for topic in topics:
            feed = self._feeds.get(topic)
            if feed is None or feed.epoch is None or not feed.ready.done() or feed.task.done():
                return None
            cursors.append(Cursor(feed.epoch, feed.last_sequence))
        return cursors

    @property
    def topics(self) -> dict[str, int]:
        """Open topics and their number of subscriptions (for health and tests)."""
        return {topic: len(feed.queues) for topic, feed in self._feeds.items()}

    @property
    def queued_events(self) -> int:
        """Events waiting in every subscription queue (for metrics)."""
        return sum(len(queue) for feed in self._feeds.values() for queue in feed.queues)

    async def _attach(self, queue: _SubscriberQueue) -> None:
        if self._closed:
            raise HubClosedError("the server is shutting down")
        feed = self._feeds.get(queue.topic)
        if feed is None or feed.task.done():  # none yet, or its upstream failed: start afresh
            previous = self._closing.pop(queue.topic, None)
            feed = self._feeds[queue.topic] = _TopicFeed(
                queue.topic, self.broadcast, self.history, previous
            )
        feed.queues.add(queue)
        try:
            await asyncio.shield(feed.ready)
        except BaseException:
            self._detach(queue)
            raise

    def _detach(self, queue: _SubscriberQueue) -> None:
        feed = self._feeds.get(queue.topic)
        if feed is None or queue not in feed.queues:
            return
        feed.queues.discard(queue)
        if not feed.queues:
            del self._feeds[queue.topic]
            feed.task.cancel()
            self._closing[queue.topic] = feed.task
            feed.task.add_done_callback(lambda task: self._forget_closing(queue.topic, task))

    def _forget_closing(self, topic: str, task: asyncio.Task[None]) -> None:
        if self._closing.get(topic) is task:
            del self._closing[topic]

    def drain(self) -> None:
        """End every subscription with :class:`HubClosedError` and refuse new ones.

        Synchronous, so a signal handler can call it (through the loop) the moment shutdown
        begins: streaming HTTP responses then complete, instead of holding the server open.
        """
        self._closed = True
        for feed in list(self._feeds.values()):
            feed._fail(HubClosedError("the server is shutting down"))

    async def close(self) -> None:
        """:meth:`drain`, then drop every upstream subscription."""
        self.drain()
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            feed.task.cancel()
        tasks = [feed.task for feed in feeds] + list(self._closing.values())
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
