"""Shared execution: subscribers whose operation is identical share one execution per event.

Identical means the same document, operation name, variables (as the client sent them) and
authorization scope. The first such subscriber starts a :class:`Group`, which runs the operation
once through Strawberry; every result is encoded once (orjson) and handed to each member:

- a :class:`RawSink` (graphql-transport-ws, joined by :mod:`api.transport.graphql_transport_ws`)
  splices the encoded payload into that member's ``next`` frame, whose only difference from the
  others' is the operation id, and writes it to the member's
  :class:`api.streaming.connection.Connection` synchronously, in the group's own loop: no task, no
  task switch and no encoding per subscriber;
- a :class:`QueueSink` (SSE, multipart, any other WebSocket) yields a :class:`SharedResult` whose
  ``data`` is the already-encoded bytes (an ``orjson.Fragment``), so the transport's own encoding
  copies them instead of encoding again.

Resolvers see none of this: the group's execution is an ordinary Strawberry subscription.

A :class:`DeltaSink` (graphql-transport-ws, a subscriber that asked for deltas:
:mod:`api.graphql.deltas`) gets each result as a patch against the group's result before it,
computed and encoded once per result for every such member that had that one, or whole and
numbered when it needs a whole one.

Late joiners of a latest-value group get the group's last result at once (it is the current
state). A stream group takes no members after its first result (they would miss the start of the
stream), so a later identical subscription starts a group of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import orjson
from graphql import GraphQLError
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from api.graphql import deltas
from api.graphql.access import record_checks
from api.graphql.plans import PlannedExecutionContext, planned_source
from api.ops import logs
from api.ops.metrics import counts, fanout_latency
from api.streaming.connection import text_frame
from api.streaming.hub import reader
from api.streaming.stepping import PARKED, Continue, Stepping
from domain.events import DeliveryPolicy

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Hashable
    from datetime import datetime

    from api.graphql.access import Check
    from api.streaming.connection import Connection, Merge

    Stream: TypeAlias = AsyncGenerator[Any, None]
    """What Strawberry's ``Schema.stream`` returns (results, or incremental-delivery frames)."""

logger = logging.getLogger(__name__)

LATEST_VALUE = DeliveryPolicy.LATEST_VALUE
STREAM = DeliveryPolicy.STREAM
"""The policies as module constants: an enum member read through its class costs a descriptor
call, and these are read for every subscriber of every event."""

STARTS_PER_TURN = 16
"""Subscription starts admitted per turn of the event loop (:class:`Starts`)."""


class SharedResult(ExecutionResult):
    """An execution result whose ``data`` is already-encoded JSON (``orjson.Fragment``)."""


_IN_PAYLOAD = object()
"""``Encoded.data`` once :meth:`Encoded.keep` dropped it: read it back from the payload."""


class Encoded:
    """One result of a group, encoded once."""

    __slots__ = (
        "_delta_frames",
        "_frames",
        "_numbered",
        "_patch",
        "_result",
        "base",
        "data",
        "errors",
        "extensions",
        "merge",
        "payload",
        "seq",
    )

    def __init__(self, result: ExecutionResult, seq: int = 0, base: Any = None) -> None:
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            body["extensions"] = result.extensions
        self.payload: bytes = orjson.dumps(body)
        """The whole ``payload`` of a graphql-transport-ws ``next`` message."""
        self.data: Any = result.data
        self.errors = result.errors
        self.extensions = result.extensions
        self._result: SharedResult | None = None
        self._frames: dict[bytes, tuple[bytes, bytes]] | None = None
        self.seq = seq
        """The result's number in its group (1, 2, ...): what a delta subscriber checks."""
        self.base = base
        """The data of the group's result before this one, while delta members are served (None
        when there was none, or it had errors): what this result's patch is against."""
        self._patch: bytes | None = None
        self._numbered: bytes | None = None
        """The whole result's payload as a delta subscriber gets it, numbered (made once)."""
        self._delta_frames: dict[tuple[bytes, bool], tuple[bytes, bytes]] | None = None
        self.merge: Merge | None = None
        """How this result merges into the group's one before it while that one still waits on
        a slow socket (:func:`api.streaming.hub.note_merge`), if the group's results merge."""

    def keep(self) -> Encoded:
        """This result as its group keeps it for a late joiner, once every member has it: the
        payload alone, the data, the frames and the SSE result dropped while they are still in
        the processor's cache (rebuilt from the payload if a late joiner comes). Kept whole, a
        private group's last result was a dozen objects freed a round later, cold: 8.7% of the
        ``distinct`` benchmark's time, and 11 MB for its 2,000 groups."""
        self.data = _IN_PAYLOAD
        self._result = None
        self._frames = None
        self.base = None
        self._patch = None
        self._numbered = None
        self._delta_frames = None
        return self

    @property
    def result(self) -> SharedResult:
        """The result for transports that encode it themselves (SSE, multipart): its ``data``
        is already JSON, which they copy. Made on first use: a group of WebSockets needs none."""
        if self._result is None:
            data = self.data
            if data is _IN_PAYLOAD:
                data = orjson.loads(self.payload)["data"]
            self._result = SharedResult(
                data=orjson.Fragment(orjson.dumps(data)),  # type: ignore[arg-type]
                errors=self.errors,
                extensions=self.extensions,
            )
        return self._result

    def message(self, prefix: bytes) -> tuple[bytes, bytes]:
        """The ``next`` message that starts with ``prefix`` (its id), and its WebSocket frame.

        Built once per distinct prefix: subscribers whose operation ids are equal (most
        clients number from 1) share the very same bytes.
        """
        frames = self._frames
        if frames is None:
            frames = self._frames = {}
        built = frames.get(prefix)
        if built is None:
            built = frames[prefix] = (
                b"".join((prefix, self.payload, b"}")),
                text_frame(self.payload, head=prefix, tail=b"}"),
            )
        return built

    @property
    def patchable(self) -> bool:
        """Whether this result can be sent as a patch: it has data and no errors, and so has the
        result before it; and the patch is smaller than the whole result."""
        if self.base is None or self.data is None or self.data is _IN_PAYLOAD:
            return False
        if self.errors or self.extensions:
            return False
        patch = self._patch
        if patch is None:
            patch = self._patch = deltas.patch(self.base, self.data, self.seq)
        return len(patch) < len(self.payload)

    def delta_message(self, prefix: bytes, *, whole: bool) -> tuple[bytes, bytes]:
        """The ``next`` message (and its frame) of a delta subscriber: this result whole and
        numbered, or (once :attr:`patchable` said so) its patch. Built once per prefix."""
        frames = self._delta_frames
        if frames is None:
            frames = self._delta_frames = {}
        built = frames.get((prefix, whole))
        if built is None:
            payload = self.delta_payload(whole=whole)
            built = frames[(prefix, whole)] = (
                b"".join((prefix, payload, b"}")),
                text_frame(payload, head=prefix, tail=b"}"),
            )
        return built

    def delta_payload(self, *, whole: bool) -> bytes:
        """The ``payload`` of a delta subscriber's ``next``: this result whole and numbered, or
        (once :attr:`patchable` said so) its patch. The same object for every member, so that
        a compressed socket's frame reuses the body its group compressed for the one before."""
        if not whole:
            assert self._patch is not None
            return self._patch
        if self._numbered is None:
            self._numbered = deltas.whole(self.payload, self.extensions, self.seq)
        return self._numbered


class Sink(Protocol):
    def deliver(self, encoded: Encoded, policy: DeliveryPolicy) -> None: ...

    def end(self, refusal: PreExecutionError | None) -> None:
        """The group is over for this member: its stream ended, or it refused to start."""
        ...


class RawSink:
    """Writes each result as a ready ``next`` frame to a WebSocket connection, synchronously, and
    the operation's ``complete`` (or, refused, its ``error``) when the group ends."""

    __slots__ = ("connection", "id", "on_end", "prefix")

    def __init__(self, connection: Connection, id: str, on_end: Callable[[], None]) -> None:
        self.connection = connection
        self.id = id
        self.on_end = on_end
        self.prefix = b'{"id":' + orjson.dumps(id) + b',"type":"next","payload":'

    def deliver(self, encoded: Encoded, policy: DeliveryPolicy) -> None:
        message, frame = encoded.message(self.prefix)
        merge = encoded.merge
        key = self.id if policy is LATEST_VALUE or merge is not None else None
        deflate = self.connection.deflate
        if deflate is not None:  # permessage-deflate: the payload compressed once for all
            frame = deflate.frame(encoded.payload, head=self.prefix, tail=b"}") or frame
        self.connection.write(message, key=key, frame=frame, merge=merge)

    def end(self, refusal: PreExecutionError | None) -> None:
        self.on_end()
        if refusal is None:
            message: dict[str, Any] = {"id": self.id, "type": "complete"}
        else:
            errors = refusal.errors or []
            message = {"id": self.id, "type": "error", "payload": [e.formatted for e in errors]}
        self.connection.write(orjson.dumps(message))


class DeltaSink(RawSink):
    """A :class:`RawSink` of a subscriber that asked for deltas (:mod:`api.graphql.deltas`): each
    result after its first is the group's patch against the result before it, when this member
    had that one; else the result whole, numbered."""

    __slots__ = ("full_every", "last_seq", "patches")

    def __init__(
        self, connection: Connection, id: str, on_end: Callable[[], None], full_every: int
    ) -> None:
        super().__init__(connection, id, on_end)
        self.full_every = full_every
        """A whole result at least every this many results."""
        self.last_seq = -1
        """The number of the last result written for this member."""
        self.patches = 0
        """Patches written since the last whole result."""

    def deliver(self, encoded: Encoded, policy: DeliveryPolicy) -> None:
        key = self.id if policy is LATEST_VALUE else None
        whole = (
            encoded.seq != self.last_seq + 1
            or self.patches + 1 >= self.full_every
            # A frame still waiting would be replaced by this one: the client would miss it.
            or (key is not None and self.connection.waiting(key))
            or not encoded.patchable
        )
        self.patches = 0 if whole else self.patches + 1
        self.last_seq = encoded.seq
        message, frame = encoded.delta_message(self.prefix, whole=whole)
        deflate = self.connection.deflate
        if deflate is not None:  # permessage-deflate, as for a whole result (RawSink.deliver)
            body = encoded.delta_payload(whole=whole)
            frame = deflate.frame(body, head=self.prefix, tail=b"}") or frame
        self.connection.write(message, key=key, frame=frame)


_END = object()


class QueueSink:
    """A bounded queue of results read by the member's own task.

    Latest-value groups keep only the newest result; a stream group's member that falls
    ``capacity`` results behind gets a SUBSCRIBER_LAGGED error and its stream ends.
    """

    __slots__ = (
        "_items",
        "_room",
        "_since",
        "_wakeup",
        "capacity",
        "conflated",
        "max_lag_s",
        "refusal",
    )

    def __init__(self, capacity: int, max_lag_s: float | None = None) -> None:
        self.capacity = capacity
        self.max_lag_s = max_lag_s
        """A stream result waiting longer than this (seconds) ends the stream as lagged too."""
        self._since: deque[float] | None = None
        """When each waiting stream result came, oldest first (with ``max_lag_s`` only)."""
        self._items: deque[object] = deque()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self.conflated = 0
        self.refusal: PreExecutionError | None = None

    @property
    def full(self) -> bool:
        """Another result would end the stream as lagged."""
        return len(self._items) >= self.capacity

    async def room(self) -> None:
        """Until another result fits without ending the stream as lagged."""
        while len(self._items) >= self.capacity:
            self._room.clear()
            await self._room.wait()

    def deliver(self, encoded: Encoded, policy: DeliveryPolicy) -> None:
        if self._items and self._items[-1] is _END:
            return
        if policy is LATEST_VALUE:
            if self._items:
                self.conflated += len(self._items)
                counts.stream_conflated += len(self._items)
                self._items.clear()
        elif len(self._items) >= self.capacity:
            self._lag(_lagged(self.capacity))
            return
        elif self.max_lag_s is not None:
            now = time.monotonic()
            since = self._since
            if since is None:
                since = self._since = deque()
            while len(since) > len(self._items):  # the times of results already taken
                since.popleft()
            if since and now - since[0] > self.max_lag_s:
                self._lag(_lagged_for(self.max_lag_s))
                return
            since.append(now)
        self._items.append(encoded.result)
        self._wakeup.set()

    def _lag(self, error: ExecutionResult) -> None:
        counts.stream_lagged += 1
        self._items.clear()
        self._since = None
        self._items.extend((error, _END))
        self._wakeup.set()

    def end(self, refusal: PreExecutionError | None) -> None:
        self.refusal = refusal
        if not self._items or self._items[-1] is not _END:
            self._items.append(_END)
        self._wakeup.set()

    async def results(self) -> AsyncGenerator[ExecutionResult | PreExecutionError, None]:
        """Every result, then the refusal if the group refused to start."""
        while True:
            while not self._items:
                self._wakeup.clear()
                await self._wakeup.wait()
            item = self._items.popleft()
            self._room.set()
            if item is _END:
                if self.refusal is not None:
                    yield self.refusal
                return
            assert isinstance(item, ExecutionResult)
            yield item


def _failed(schema: Any, exc: Exception) -> ExecutionResult:
    """The last result of a subscription whose source or execution raised, as Strawberry makes
    it (``_coerce_error``)."""
    error = exc if isinstance(exc, GraphQLError) else GraphQLError(str(exc), original_error=exc)
    schema._process_errors([error])
    return ExecutionResult(data=None, errors=[error])


def _lagged(capacity: int) -> ExecutionResult:
    error = GraphQLError(
        f"subscription fell more than {capacity} events behind and was ended; resubscribe",
        extensions={"code": "SUBSCRIBER_LAGGED"},
    )
    return ExecutionResult(data=None, errors=[error])


def _lagged_for(lag_s: float) -> ExecutionResult:
    error = GraphQLError(
        f"subscription fell more than {lag_s:g} s behind and was ended; resubscribe",
        extensions={"code": "SUBSCRIBER_LAGGED"},
    )
    return ExecutionResult(data=None, errors=[error])


class Starts:
    """Admission of subscription starts: at most ``per_turn`` begin per turn of the event loop,
    the others wait their turn, in order of arrival.

    A subscription's start (validation, its resolver's first steps, its snapshot reads, its first
    result) is work no event paces: when thousands of clients subscribe at once (a deploy, a
    replica's restart), every start is a task ready to run, and one turn of the loop runs the
    first step of every one of them; everything else (delivering events to the subscriptions
    already running, answering a query or a ``publishPrice``) waits seconds for that turn to end.
    Admitted a few per turn, starts spread over turns that stay short. Once begun, a start is not
    held back: its later steps mostly wait for the database, whose pool already paces them, and a
    start that waits (for a read, for its first event) lets the next ones begin. A bound on the
    starts in progress instead (a semaphore) would hold a slot through each of those waits and
    make thousands of starts take as many round trips each as they have reads, one slot's worth at
    a time: 2,000 ``positions`` starts took ten seconds so.
    """

    def __init__(self, per_turn: int = STARTS_PER_TURN) -> None:
        self.per_turn = per_turn
        self._admitted = 0
        """Starts admitted in this turn of the loop."""
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._turn: asyncio.Handle | None = None
        """The callback that opens the next turn, scheduled while this one admitted any."""

    @property
    def waiting(self) -> int:
        """Starts waiting for their turn."""
        return sum(not future.done() for future in self._waiting)

    async def turn(self) -> None:
        """Until this start may begin."""
        if self._admitted < self.per_turn and not self._waiting:
            self._admitted += 1
            self._next_turn()
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._next_turn()
        await future

    def _next_turn(self) -> None:
        if self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self._open)

    def _open(self) -> None:
        """A new turn of the loop: admit the next waiting starts."""
        self._turn = None
        self._admitted = 0
        while self._waiting and self._admitted < self.per_turn:
            future = self._waiting.popleft()
            if not future.done():  # a start cancelled while it waited
                future.set_result(None)
                self._admitted += 1
        if self._admitted:
            self._next_turn()


class Member:
    """One subscriber of a group; counted as an open subscription of the group's field until it
    ends or leaves."""

    __slots__ = ("ended", "group", "sink")

    def __init__(self, group: Group, sink: Sink) -> None:
        self.group = group
        self.sink = sink
        self.ended = False
        counts.subscriptions[group.field] += 1

    def finish(self, refusal: PreExecutionError | None = None) -> None:
        if not self.ended:
            self._end()
            self.sink.end(refusal)

    def leave(self) -> None:
        """The subscriber is gone (or unsubscribed): no more results, and no ending sent."""
        if not self.ended:
            self._end()
        self.group.leave(self)

    def _end(self) -> None:
        self.ended = True
        counts.subscriptions[self.group.field] -= 1


class Group:
    """One execution shared by every member; ends when its stream ends or its last member leaves."""

    def __init__(
        self, groups: Groups, key: Hashable, open_stream: Callable[[], Awaitable[Stream]]
    ) -> None:
        self.groups = groups
        self.key = key
        self.field = groups.field_of(key)
        """The subscription's root field: the label of its metrics."""
        self.event_at: datetime | None = None
        """When the newest event this execution read was published
        (:func:`api.streaming.hub.note_event`), until a result is delivered."""
        self.members: dict[int, Member] = {}
        self.policy = LATEST_VALUE
        self.merge: Merge | None = None
        """How its results merge for a slow socket, if they do (:func:`note_merge`)."""
        self.started = False
        self.last: Encoded | None = None
        self.seq = 0
        """Results handed out so far: the number of the last (:attr:`Encoded.seq`)."""
        self.deltas = 0
        """Members that asked for deltas (:class:`DeltaSink`): while any, each result's data is
        kept until the next, for its patch."""
        self.previous: Any = None
        """The data of the last result, while :attr:`deltas`; None after errors."""
        self.refusal: PreExecutionError | None = None
        self._open_stream = open_stream
        self.task: asyncio.Task[None] | None = None
        """Started by the first member to join, so no result can precede every member; dropped
        once done (see :meth:`_done`)."""
        self.finished = False
        """The execution is over (set as the task's last step, so before ``task.done()``)."""
        self.checks: list[tuple[Check, object]] = []
        """The access decisions the execution made before its first result: every member
        passed them (members share a scope), and a member whose credentials change is asked
        them again (:func:`api.graphql.access.refusal`)."""

    @property
    def joinable(self) -> bool:
        if self.finished:
            return False
        return not (self.started and self.policy is STREAM)

    def join(self, sink: Sink) -> Member:
        member = Member(self, sink)
        if self.finished:
            member.finish(self.refusal)  # it ended just before this member came
            return member
        self.members[id(member)] = member
        if isinstance(sink, DeltaSink):
            self.deltas += 1
        if self.last is not None:
            sink.deliver(self.last, self.policy)
            counts.delivered[self.field] += 1
        if self.task is None:
            self.task = asyncio.create_task(self._pump(), name="fanout-group")
            self.task.add_done_callback(self._done)
        return member

    def _done(self, task: asyncio.Task[None]) -> None:
        # No reference cycle may outlive the execution: a cancelled task keeps its CancelledError,
        # whose traceback keeps the frames of the whole execution (``_pump``'s ``self`` among
        # them), so a group holding its done task would be freed by the cyclic collector only.
        # An execution that lived through a collection of the middle generation is then in the
        # oldest one, which the server's collector thresholds (api/cli.py) almost never collect:
        # a few KB per execution, for good (tests/api/graphql/test_reference_cycles.py).
        if self.task is task:
            self.task = None

    def leave(self, member: Member) -> None:
        if self.members.pop(id(member), None) is None:
            return
        if isinstance(member.sink, DeltaSink):
            self.deltas -= 1
        if not self.members:
            self.groups.forget(self)
            if self.task is not None:
                self.task.cancel()

    async def _pump(self) -> None:
        reader.set(self)
        record_checks(self.checks)
        # The task was started by the first member's connection or request, but serves them all.
        logs.connection_id.set(None)
        logs.request_id.set(None)
        taken: list[tuple[PlannedExecutionContext, AsyncIterator[Any]]] = []

        def take(executor: PlannedExecutionContext, source: AsyncIterator[Any]) -> None:
            if not taken:
                taken.append((executor, source))

        planned_source.set(take)
        try:
            await self.groups.starts.turn()
            stream = await self._open_stream()
            async with contextlib.aclosing(stream):
                async for result in stream:
                    if not self.started and isinstance(result, PreExecutionError):
                        # Validation or a resolver refusing before the first event: each member
                        # answers it as its own (an ``error`` message on graphql-transport-ws).
                        self.refusal = result
                        for member in list(self.members.values()):
                            member.finish(result)
                        return
                    self.started = True
                    await self._publish(result)
                    if taken:
                        break
                if taken:
                    await self._direct(*taken[0])
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("shared subscription execution failed")
            encoded = self._encode(
                ExecutionResult(
                    data=None,
                    errors=[GraphQLError("internal error", extensions={"code": "INTERNAL"})],
                )
            )
            members = list(self.members.values())
            for member in members:
                member.sink.deliver(encoded, STREAM)
            self._count(len(members))
        finally:
            self.groups.forget(self)
            for member in list(self.members.values()):
                member.finish()
            # The task's context would keep this group (and the group its task): see _done.
            reader.set(None)
            self.finished = True

    async def _publish(self, result: ExecutionResult) -> None:
        if not self._hand_out(result):
            await self._paced()

    async def _paced(self) -> None:
        """Until the group's one member has room (none if it has left meanwhile)."""
        member = next(iter(self.members.values()), None)
        if member is not None:
            await self._paced_by(member.sink)

    def _hand_out(self, result: ExecutionResult) -> bool:
        """Encode ``result`` once and hand it to every member; False when the group must wait
        for its one member to take it before the next (see :meth:`_paced_by`)."""
        encoded = self._encode(result)
        members = list(self.members.values())
        for member in members:
            member.sink.deliver(encoded, self.policy)
        encoded.base = None  # no chain of results through their bases
        if self.policy is LATEST_VALUE:
            self.last = encoded.keep()
        self._count(len(members))
        if len(members) == 1 and self.policy is STREAM:
            sink = members[0].sink
            return not (isinstance(sink, QueueSink) and sink.full)
        return True

    def _encode(self, result: ExecutionResult) -> Encoded:
        """``result`` encoded and numbered, its patch (if a member asks) against the last."""
        self.seq += 1
        if not self.deltas:
            self.previous = None
            encoded = Encoded(result, self.seq)
        else:
            encoded = Encoded(result, self.seq, self.previous)
            self.previous = None if result.errors or result.extensions else result.data
        if self.merge is not None and not result.errors:
            encoded.merge = self.merge
        return encoded

    def _publish_failed_now(self, result: ExecutionResult) -> None:
        """The last result (an error), handed out at once; its pacing does not matter."""
        self._hand_out(result)

    async def _direct(self, executor: PlannedExecutionContext, source: AsyncIterator[Any]) -> None:
        """The rest of the subscription, straight from its source stream (:class:`_Stepper`):
        each event executed by the operation's plan (:mod:`api.graphql.plans`) and handed out,
        without the layers Strawberry's stream puts around every result (graphql-core's mapping
        iterator, Strawberry's result handling) and without a task wake-up per event. What those
        layers do is done here: a failure of the source stream or of an execution ends the
        subscription with it as the last result's error, and errors go through the schema's
        ``process_errors`` (the masking), as Strawberry ends and sends them."""
        stepper = _Stepper(self, executor, source)
        try:
            await stepper.run()
        finally:
            stepper.release()

    @staticmethod
    async def _paced_by(sink: Sink) -> None:
        """A stream group of one SSE or multipart member waits for it to take a result before
        handing it the next, where a shared group would end a member that falls behind: a resumed
        subscription (``after:`` makes it a group of its own) replays its missed events from the
        history in one go, faster than any response is written, and would otherwise end as lagged
        every time it is behind by more than the queue holds. What it waits for here backs up
        into the hub's bounded queue for the group, which still ends it if it falls behind live
        events for good."""
        if isinstance(sink, QueueSink):
            await sink.room()

    def _count(self, delivered: int) -> None:
        """Metrics of one result handed to ``delivered`` members: once per result, never per
        member, and timed once (at the end of the loop, so an upper bound for each member)."""
        counts.delivered[self.field] += delivered
        event_at = self.event_at
        if event_at is not None:
            fanout_latency.observe(time.time() - _timestamp(event_at), delivered)
            self.event_at = None


class _Stepper:
    """Runs a group's subscription from its source stream, stepping the stream synchronously
    from whoever wakes it (:mod:`api.streaming.stepping`): the hub's delivery loop, once per event.

    The group's task (:meth:`run`) starts the stepping and then waits for a *hand-off*: what a
    synchronous step cannot finish itself (an await on anything but a hub queue, an execution
    graphql-core answers with an awaitable, a paced member's room, the end) is finished there, in
    the group's task, and the stepping goes on.
    """

    __slots__ = (
        "_stepping",
        "context",
        "executor",
        "group",
        "handoff",
        "loop",
        "pending",
        "running",
        "schema",
        "source",
        "task",
    )

    def __init__(
        self, group: Group, executor: PlannedExecutionContext, source: AsyncIterator[Any]
    ) -> None:
        self.group: Group | None = group
        self.executor: PlannedExecutionContext | None = executor
        self.source: AsyncIterator[Any] | None = source
        self.schema: Any = executor.schema._strawberry_schema  # type: ignore[attr-defined]
        self.context = contextvars.copy_context()
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self.task: asyncio.Task[Any] | None = task
        self.pending: Coroutine[Any, Any, Any] | None = None
        """The source's ``__anext__`` in progress, parked on a hub queue's wakeup."""
        self.handoff: asyncio.Future[tuple[Any, ...]] | None = None
        """What the group's task waits for while the stepping goes on."""
        self.running = False
        self._stepping: Stepping | None = Stepping(self, self.loop, task)

    async def run(self) -> None:
        try:
            while True:
                handoff = self.handoff = self.loop.create_future()
                self.resume()
                what = await handoff
                self.handoff = None
                if not await self._finish(what):
                    return
        except BaseException as exc:
            await self._throw_pending(exc)
            raise

    async def _finish(self, what: tuple[Any, ...]) -> bool:
        """In the group's task: what a step handed off; False when the subscription is over."""
        group = self.group
        assert group is not None
        kind = what[0]
        if kind == "end":
            return False
        if kind == "raise":
            raise what[1]
        if kind == "pace":
            await group._paced()
            return True
        if kind == "await":
            try:
                payload = await Continue(what[1], what[2], self.context)
            except StopAsyncIteration:
                return False
            except Exception as exc:
                await group._publish(_failed(self.schema, exc))
                return False
            what = ("execute", payload)
        try:
            if what[0] == "execute":
                assert self.executor is not None
                outcome = self.executor.execute_event(what[1])
            else:
                outcome = what[1]
            if isinstance(outcome, Awaitable):
                outcome = await outcome
        except Exception as exc:
            await group._publish(_failed(self.schema, exc))
            return False
        await group._publish(self._result(outcome))
        return True

    def resume(self) -> None:
        """Step the source until it parks on a hub queue or hands something off. Called by the
        group's task, and by the wakeup the source was parked on (from any task)."""
        handoff = self.handoff
        stepping = self._stepping
        if self.running or handoff is None or handoff.done() or stepping is None:
            return
        self.running = True
        try:
            with stepping:
                what = self.context.run(self._advance)
        except BaseException as exc:
            what = ("raise", exc)
        finally:
            self.running = False
        if what is not None and not handoff.done():
            handoff.set_result(what)

    def _advance(self) -> tuple[Any, ...] | None:
        """The synchronous step: None when parked, else what the group's task must finish."""
        source = self.source
        executor = self.executor
        group = self.group
        assert source is not None
        assert executor is not None
        assert group is not None
        while True:
            coroutine = self.pending
            if coroutine is None:
                coroutine = source.__anext__()  # type: ignore[assignment]
            self.pending = None
            try:
                yielded = coroutine.send(None)  # type: ignore[union-attr]
            except StopIteration as stop:
                payload = stop.value
            except StopAsyncIteration:
                return ("end",)
            except Exception as exc:
                group._publish_failed_now(_failed(self.schema, exc))
                return ("end",)
            else:
                if yielded is PARKED:
                    self.pending = coroutine
                    return None
                return ("await", coroutine, yielded)
            try:
                outcome = executor.execute_event(payload)
            except Exception as exc:
                group._publish_failed_now(_failed(self.schema, exc))
                return ("end",)
            if isinstance(outcome, Awaitable):
                return ("outcome", outcome)
            if not group._hand_out(self._result(outcome)):
                return ("pace",)

    def _result(self, outcome: Any) -> ExecutionResult:
        if outcome.errors:
            self.schema._process_errors(outcome.errors)
        return ExecutionResult(data=outcome.data, errors=outcome.errors)

    async def _throw_pending(self, exc: BaseException) -> None:
        """The group's task is ending (cancelled, above all) while the source is parked inside
        its ``__anext__``: the exception goes in there, as a task would throw it into the await
        it is in, so the source ends in its own ``finally`` and ``async with`` blocks."""
        coroutine, self.pending = self.pending, None
        if coroutine is None:
            return
        try:
            yielded = self.context.run(coroutine.throw, exc)
        except BaseException:
            return
        with contextlib.suppress(BaseException):
            await Continue(coroutine, yielded, self.context)

    def release(self) -> None:
        """Drop every reference: a group's execution leaves no cycle behind (see
        :meth:`Group._done`)."""
        self.group = self.executor = self.source = self.task = None
        self.pending = self.handoff = self._stepping = None


_last_timestamp: list[Any] = [None, 0.0]


def _timestamp(at: datetime) -> float:
    """``at.timestamp()``, remembered for the last ``at``: every group of one event reads the
    very same datetime (the hub hands them one Event)."""
    if _last_timestamp[0] is not at:
        _last_timestamp[0] = at
        _last_timestamp[1] = at.timestamp()
    return float(_last_timestamp[1])


class Groups:
    """Every open group of this process, by key."""

    def __init__(
        self,
        *,
        queue_size: int,
        field_of: Callable[[Hashable], str] = lambda key: "unknown",
        starts: Starts | None = None,
        max_lag_s: float | None = None,
    ) -> None:
        self.queue_size = queue_size
        self.max_lag_s = max_lag_s
        """How long a stream result may wait in an SSE or multipart member's queue
        (``SUBSCRIBER_MAX_LAG_S``)."""
        self.field_of = field_of
        """The root field of a key's subscription, for metrics."""
        self.starts = starts or Starts()
        """Admission of the groups' starts."""
        self._by_key: dict[Hashable, Group] = {}
        """The group a new subscriber of each key joins."""
        self._live: set[Group] = set()
        """Every group still running: also those a newer group of the same key replaced in
        ``_by_key`` (a stream group takes no member after its first result)."""
        self._emptied: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._live)

    @property
    def members(self) -> int:
        return sum(len(g.members) for g in self._live)

    def forget(self, group: Group) -> None:
        self._live.discard(group)
        if self._by_key.get(group.key) is group:
            del self._by_key[group.key]
        if not self._live and self._emptied is not None:
            self._emptied.set()

    async def ended(self, within_s: float) -> bool:
        """Wait until no group runs (True), or ``within_s`` seconds (False). Once the hub is
        drained every group hands its members the error saying why, then ends: at shutdown,
        what lets each WebSocket subscriber read SHUTTING_DOWN before its socket is closed."""
        if not self._live:
            return True
        self._emptied = asyncio.Event()
        try:
            async with asyncio.timeout(within_s):
                await self._emptied.wait()
        except TimeoutError:
            return not self._live
        finally:
            self._emptied = None
        return True

    def join(
        self, key: Hashable, open_stream: Callable[[], Awaitable[Stream]], sink: Sink
    ) -> Member:
        """Add a subscriber of the operation ``key`` to its group, starting one if needed."""
        group = self._by_key.get(key)
        if group is None or not group.joinable:
            group = self._by_key[key] = Group(self, key, open_stream)
            self._live.add(group)
        return group.join(sink)

    async def results(
        self, key: Hashable, open_stream: Callable[[], Awaitable[Stream]]
    ) -> AsyncGenerator[ExecutionResult | PreExecutionError, None]:
        """One subscriber's results of the operation ``key``, as a stream (SSE, multipart)."""
        sink = QueueSink(self.queue_size, self.max_lag_s)
        member = self.join(key, open_stream, sink)
        try:
            async for result in sink.results():
                yield result
        finally:
            member.leave()
