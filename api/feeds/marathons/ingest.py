"""The RabbitMQ ingest of the marathon feed: account snapshots from collectors, one per message,
handled a window at a time.

:class:`SnapshotConsumer` reads ``<queue>`` (``docs/marathon-ingest.md`` is the collector-facing
reference). The broker keeps up to ``prefetch`` unacknowledged messages here; the consumer takes a
*window* of them (what has arrived, up to ``window`` messages, waiting at most ``window_wait_s`` for
more so a lone message is not held up) and hands its valid snapshots to ``handle`` as one batch, in
delivery order. Each message is validated as it arrives, while the previous window is being
stored. A window is at most half of ``prefetch`` by default, so the broker delivers the next
window while one is being stored.

- the window is acknowledged (one ``ack`` with ``multiple`` on its last delivery tag) only after
  ``handle`` returned, i.e. after the batch was stored in one transaction and its events were
  sent: a crash before that loses nothing (the broker redelivers every unacknowledged message).
  Delivery is therefore at least once: ``handle`` must recognise a snapshot it stored already
  (the store keeps each login's newest ``server_time`` and announces nothing for an older or
  equal one, so a redelivered window has no effect);
- a message that is not a snapshot (:class:`~api.feeds.marathons.messages.InvalidSnapshotError`)
  is logged (the reason, never the body) and rejected alone, without requeue, which dead-letters
  it through the fanout exchange ``<queue>.dlx`` into the durable queue ``<queue>.dead``; the rest
  of its window is stored;
- when ``handle`` raises (the database is down) or takes longer than ``handle_timeout_s`` (it is
  then cancelled), the whole window is requeued (``nack`` with ``multiple``) after a backoff that
  doubles with each consecutive failure up to ``max_retry_delay_s``; a success resets it. A
  requeued window goes back to the broker, so the messages already delivered here go on in the
  meantime, and snapshots of one account may then be handled out of order: ``handle`` keeps the
  newest ``server_time``.

The connection is robust (``aio_pika.connect_robust``): when the broker restarts or closes it,
aio-pika reconnects every ``reconnect_interval_s`` and re-declares the channel's QoS, exchanges,
queues, bindings and the consumer. Messages delivered on the lost channel were requeued by the
broker, so those still waiting here are dropped, not handled (their acknowledgement could not be
sent anyway).

The main queue is declared with ``x-dead-letter-exchange``. If a queue of that name already exists
with other arguments (declared by a collector or an older deployment without it, or with another
durability), RabbitMQ refuses the declaration with PRECONDITION_FAILED: :meth:`start` logs which
queue and what differs, and raises :class:`QueueDeclarationError`. The fix is operational: drain
and delete the old queue so that it is declared anew, and have collectors publish without declaring
it (or declare it passively).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelPreconditionFailed

from api.feeds.marathons.messages import InvalidSnapshotError, parse_snapshot

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

    from aio_pika.abc import (
        AbstractIncomingMessage,
        AbstractRobustChannel,
        AbstractRobustConnection,
        AbstractRobustQueue,
    )

    from domain.marathons import AccountSnapshot

logger = logging.getLogger(__name__)

_SETTLE_ERRORS = (AMQPError, ChannelInvalidStateError, ConnectionError)
"""What acknowledging can raise when the channel the message came on is gone."""


_Parsed = tuple["AbstractIncomingMessage", "AccountSnapshot | InvalidSnapshotError"]
"""A delivered message, and the snapshot it holds or why it holds none."""


class QueueDeclarationError(RuntimeError):
    """The queue, its dead-letter exchange or its dead-letter queue already exists with other
    arguments than the consumer declares (RabbitMQ's PRECONDITION_FAILED)."""


class _ClosedIfNeverConnected(aio_pika.RobustConnection):
    """``connect_robust`` drops a connection whose first attempt failed without closing it, and
    its ``__del__`` then makes a ``close()`` coroutine from wherever the garbage collector runs,
    which nothing awaits when no loop runs there ("coroutine ... was never awaited", an error in
    whichever test was running). Closed here instead, where it failed."""

    async def connect(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (its signature)
        try:
            await super().connect(timeout)
        except BaseException:
            await self.close()
            raise


class SnapshotConsumer:
    """Consumes account snapshots from ``queue`` on the broker at ``url``, a window at a time.

    ``processed`` counts snapshots handled and acknowledged, ``dead_lettered`` messages rejected as
    invalid, ``failed`` handler failures (each one a window requeued), ``reconnects`` the times the
    connection was lost and made again.
    """

    def __init__(
        self,
        url: str,
        queue: str,
        handle: Callable[[Sequence[AccountSnapshot]], Awaitable[object]],
        *,
        prefetch: int = 2000,
        window: int | None = None,
        window_wait_s: float = 0.005,
        retry_delay_s: float = 0.2,
        max_retry_delay_s: float = 5.0,
        reconnect_interval_s: float = 1.0,
        handle_timeout_s: float = 30.0,
    ) -> None:
        if not queue:
            raise ValueError("the queue name must not be empty")
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        if window is not None and not 1 <= window <= prefetch:
            raise ValueError("window must be between 1 and prefetch")
        self.url = url
        self.queue = queue
        self.dead_letter_exchange = f"{queue}.dlx"
        self.dead_letter_queue = f"{queue}.dead"
        self.prefetch = prefetch
        self.window = window if window is not None else max(1, prefetch // 2)
        self._window_wait_s = window_wait_s
        self._handle = handle
        self._retry_delay_s = retry_delay_s
        self._max_retry_delay_s = max_retry_delay_s
        self._reconnect_interval_s = reconnect_interval_s
        self._handle_timeout_s = handle_timeout_s

        self.processed = 0
        self.dead_lettered = 0
        self.failed = 0
        self.reconnects = 0
        self._consecutive_failures = 0

        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractRobustQueue | None = None
        self._consumer_tag: str | None = None
        self._inbox: asyncio.Queue[_Parsed | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # lifecycle

    async def start(self) -> None:
        """Connect, declare the queues and start consuming. Raises what the connection attempt
        raises (the broker is unreachable, the credentials are wrong) and
        :class:`QueueDeclarationError`; nothing is left open when it does."""
        if self._connection is not None:
            raise RuntimeError("the consumer is already started")
        self._stopping = asyncio.Event()
        connection = await aio_pika.connect_robust(
            self.url,
            client_properties={"connection_name": f"tradestream marathon ingest ({self.queue})"},
            reconnect_interval=self._reconnect_interval_s,
            connection_class=_ClosedIfNeverConnected,
        )
        connection.reconnect_callbacks.add(self._on_reconnect)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await self._declare(channel)
            self._inbox = asyncio.Queue()
            self._worker = asyncio.create_task(self._work(), name=f"rabbitmq:{self.queue}")
            self._consumer_tag = await queue.consume(self._on_message)
        except BaseException:
            await self._discard_worker()
            await connection.close()
            raise
        self._connection, self._channel, self._queue = connection, channel, queue
        logger.info(
            "consuming account snapshots from %r (dead letters to %r, prefetch %d)",
            self.queue,
            self.dead_letter_queue,
            self.prefetch,
        )

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop consuming, let the window being handled finish (at most ``grace_s`` seconds, then
        it is cancelled), and close the connection. Every message not acknowledged by then goes
        back to the queue. Safe to call twice, or without :meth:`start`."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        self._stopping.set()
        queue, tag = self._queue, self._consumer_tag
        self._queue = self._channel = self._consumer_tag = None
        if queue is not None and tag is not None and not connection.is_closed:
            try:
                await asyncio.wait_for(queue.cancel(tag), grace_s)
            except (TimeoutError, *_SETTLE_ERRORS) as exc:
                logger.debug("could not cancel the consumer on %r: %s", self.queue, exc)
        worker = self._worker
        if worker is not None:
            self._inbox.put_nowait(None)  # wakes an idle worker
            await asyncio.wait({worker}, timeout=grace_s)
            await self._discard_worker()
        await connection.close()
        logger.info(
            "stopped consuming %r: %d processed, %d dead-lettered, %d failed",
            self.queue,
            self.processed,
            self.dead_lettered,
            self.failed,
        )

    async def run(self) -> None:
        """:meth:`start` (retried while the broker cannot be reached, every 1 s doubling up to
        30 s), then consume until cancelled, then :meth:`stop`. For a background worker task;
        :class:`QueueDeclarationError` is raised, not retried."""
        if self._connection is not None:
            raise RuntimeError("the consumer is already started")
        delay = 1.0
        while True:
            try:
                await self.start()
                break
            except QueueDeclarationError:
                raise
            except (OSError, AMQPError, RuntimeError) as exc:
                logger.warning(
                    "cannot consume %r yet (%s: %s); retrying in %.0f s",
                    self.queue,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    # health and stats

    @property
    def ready(self) -> bool:
        """Connected, with the channel open and the worker running (False while reconnecting)."""
        connection, channel, worker = self._connection, self._channel, self._worker
        return (
            connection is not None
            and not connection.is_closed
            and connection.connected.is_set()
            and channel is not None
            and not channel.is_closed
            and worker is not None
            and not worker.done()
        )

    async def ping(self) -> None:
        """Raise :class:`ConnectionError` unless :attr:`ready` (for a readiness probe)."""
        if self._connection is None:
            raise ConnectionError(f"not consuming {self.queue!r}")
        if not self.ready:
            raise ConnectionError(f"the RabbitMQ connection for {self.queue!r} is down")

    def stats(self) -> dict[str, object]:
        return {
            "queue": self.queue,
            "ready": self.ready,
            "processed": self.processed,
            "deadLettered": self.dead_lettered,
            "failed": self.failed,
            "reconnects": self.reconnects,
        }

    # internals

    async def _declare(self, channel: AbstractRobustChannel) -> AbstractRobustQueue:
        what = f"exchange {self.dead_letter_exchange!r}"
        try:
            dlx = await channel.declare_exchange(
                self.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
            )
            what = f"queue {self.dead_letter_queue!r}"
            dead = await channel.declare_queue(self.dead_letter_queue, durable=True)
            await dead.bind(dlx)
            what = f"queue {self.queue!r}"
            return await channel.declare_queue(
                self.queue,
                durable=True,
                arguments={"x-dead-letter-exchange": self.dead_letter_exchange},
            )
        except ChannelPreconditionFailed as exc:
            reason = _reply_text(exc)
            logger.error(
                "RabbitMQ refused to declare %s: it already exists with other arguments (%s). "
                "Delete it (after draining it) so that it is declared again as a durable %s",
                what,
                reason,
                "fanout exchange" if what.startswith("exchange") else "queue",
            )
            raise QueueDeclarationError(
                f"{what} already exists with other arguments than tradestream declares: {reason}"
            ) from exc

    def _on_reconnect(self, _connection: object, /) -> None:
        self.reconnects += 1
        logger.warning("reconnected to RabbitMQ, consuming %r again", self.queue)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # aio-pika runs this in a task per delivery; one worker handles them in order. Parsed
        # here, as it arrives: while the worker waits for the database to store a window, the
        # next one is validated meanwhile.
        try:
            parsed: AccountSnapshot | InvalidSnapshotError = parse_snapshot(message.body)
        except InvalidSnapshotError as exc:
            parsed = exc
        self._inbox.put_nowait((message, parsed))

    async def _work(self) -> None:
        while not self._stopping.is_set():
            first = await self._inbox.get()
            if first is None:
                return
            window, stopping = await self._window(first)
            try:
                await self._process(window)
            except Exception:  # a bug here must not stop the consumer
                logger.exception("unexpected error processing messages from %r", self.queue)
            if stopping:
                return

    async def _window(self, first: _Parsed) -> tuple[list[_Parsed], bool]:
        """``first`` and the messages behind it, up to ``window`` of them: those already here,
        and those arriving within ``window_wait_s``; True when :meth:`stop` was met meanwhile."""
        window = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._window_wait_s
        while len(window) < self.window:
            try:
                message = self._inbox.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        message = await self._inbox.get()
                except TimeoutError:
                    break
            if message is None:
                return window, True
            window.append(message)
        return window, False

    async def _process(self, window: list[_Parsed]) -> None:
        taken: list[tuple[AbstractIncomingMessage, AccountSnapshot]] = []
        for message, parsed in window:
            if not _channel_open(message):
                logger.info(
                    "dropped %s: its channel closed, the broker redelivers it", _describe(message)
                )
                continue
            if isinstance(parsed, InvalidSnapshotError):
                logger.warning(
                    "dead-lettering %s from %r: %s", _describe(message), self.queue, parsed
                )
                if await _settle(message.reject(requeue=False), message):
                    self.dead_lettered += 1
            else:
                taken.append((message, parsed))
        if not taken:
            return
        try:
            async with asyncio.timeout(self._handle_timeout_s):
                await self._handle([snapshot for _, snapshot in taken])
        except Exception:  # TimeoutError too: a hung handler must not hold the queue forever
            self.failed += 1
            self._consecutive_failures += 1
            delay = min(
                self._retry_delay_s * 2 ** (self._consecutive_failures - 1),
                self._max_retry_delay_s,
            )
            logger.error(
                "handling %s up to %s failed; requeueing the window in %.1f s",
                _logins(snapshot for _, snapshot in taken),
                _describe(taken[-1][0]),
                delay,
                exc_info=True,
            )
            with contextlib.suppress(TimeoutError):  # stop() cuts the backoff short
                await asyncio.wait_for(self._stopping.wait(), delay)
            for message, _ in _last_per_channel(taken):
                await _settle(message.nack(multiple=True, requeue=True), message)
            return
        self._consecutive_failures = 0
        for message, count in _last_per_channel(taken):
            if await _settle(message.ack(multiple=True), message):
                self.processed += count

    async def _discard_worker(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


async def _settle(settling: Awaitable[None], message: AbstractIncomingMessage) -> bool:
    """Ack, nack or reject; False (logged) when the channel is gone: the broker has requeued the
    message and will deliver it again."""
    try:
        await settling
    except _SETTLE_ERRORS as exc:
        logger.warning(
            "could not settle %s (%s); it will be redelivered",
            _describe(message),
            str(exc) or type(exc).__name__,
        )
        return False
    return True


def _last_per_channel(
    taken: list[tuple[AbstractIncomingMessage, AccountSnapshot]],
) -> list[tuple[AbstractIncomingMessage, int]]:
    """The last message of each channel in a window, and how many of the window came on it: an
    ack (or nack) with ``multiple`` on it settles them all. A window spans two channels only when
    the connection was made again while it was taken."""
    last: dict[int, tuple[AbstractIncomingMessage, int]] = {}
    for message, _ in taken:
        key = id(message.channel)
        last[key] = (message, last[key][1] + 1 if key in last else 1)
    return list(last.values())


def _logins(snapshots: Iterable[AccountSnapshot]) -> str:
    """``"1 snapshot (login 42)"``, ``"3 snapshots (logins 1, 2, 3)"``, the first five named."""
    logins = [s.login for s in snapshots]
    named = ", ".join(str(login) for login in logins[:5]) + (", ..." if len(logins) > 5 else "")
    if len(logins) == 1:
        return f"1 snapshot (login {named})"
    return f"{len(logins)} snapshots (logins {named})"


def _channel_open(message: AbstractIncomingMessage) -> bool:
    try:
        return not message.channel.is_closed
    except ChannelInvalidStateError:
        return False


def _describe(message: AbstractIncomingMessage) -> str:
    parts = [f"delivery tag {message.delivery_tag}"]
    if message.message_id:
        parts.append(f"message id {message.message_id!r}")
    parts.append(f"{len(message.body)} bytes")
    if message.redelivered:
        parts.append("redelivered")
    return "message (" + ", ".join(parts) + ")"


def _reply_text(exc: ChannelPreconditionFailed) -> str:
    """The broker's explanation, e.g. ``PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-
    exchange' for queue 'q' in vhost '/': received the value 'q.dlx' of type 'longstr' but current
    is none``."""
    for arg in exc.args:
        text = getattr(arg, "reply_text", None)
        if isinstance(text, str):
            return text
    return str(exc)
