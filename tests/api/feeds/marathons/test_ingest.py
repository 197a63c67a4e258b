"""The marathon feed's RabbitMQ consumer against a real broker (``RABBITMQ_URL``).

Each test has queues of its own (a uuid name), deleted afterwards with their dead-letter exchange
and queue. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import re
import shutil
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg
import orjson
import pytest

from api.feeds.marathons.ingest import QueueDeclarationError, SnapshotConsumer
from api.feeds.marathons.messages import EXAMPLE_MESSAGE
from api.feeds.marathons.store import PgMarathonStore
from api.runtime.clock import SystemClock
from domain.marathons import ACCOUNT_SNAPSHOTS, SNAPSHOT_BATCH
from domain.topics import marathon_feed_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from aio_pika.abc import AbstractChannel, AbstractConnection

    from domain.events import Event
    from domain.marathons import AccountSnapshot

WAIT_S = 5.0
"""Longest any single wait in these tests may take."""


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[AbstractConnection]:
    """A plain (not robust) connection of the test's own, to publish and inspect."""
    connection = await aio_pika.connect(rabbitmq_url)
    yield connection
    await connection.close()


@pytest.fixture
async def queue(broker: AbstractConnection) -> AsyncIterator[str]:
    """A unique queue name; the queue, its dead-letter queue and exchange are deleted afterwards."""
    name = f"tradestream-test-{uuid.uuid4().hex[:12]}"
    yield name
    channel = await broker.channel()
    for queue_name in (name, f"{name}.dead"):
        await channel.queue_delete(queue_name)
    await channel.exchange_delete(f"{name}.dlx")
    await channel.close()


@pytest.fixture
async def channel(broker: AbstractConnection) -> AsyncIterator[AbstractChannel]:
    channel = await broker.channel()
    yield channel
    await channel.close()


@pytest.fixture
async def consumers() -> AsyncIterator[list[SnapshotConsumer]]:
    """Consumers a test made; stopped at the end even when the test fails."""
    made: list[SnapshotConsumer] = []
    yield made
    for consumer in made:
        await consumer.stop(grace_s=0.5)


@dataclass
class Recorder:
    """A handler that records what it was given (each window, and the snapshots of all in a
    row), optionally failing or blocking first."""

    handled: list[AccountSnapshot] = field(default_factory=list)
    windows: list[list[int]] = field(default_factory=list)
    calls: int = 0
    fail_first: int = 0
    release: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def __call__(self, snapshots: Sequence[AccountSnapshot]) -> None:
        self.calls += 1
        self.entered.set()
        if self.calls <= self.fail_first:
            raise ConnectionError("the database is down")
        if self.release is not None:
            await self.release.wait()
        async with self.changed:
            self.handled.extend(snapshots)
            self.windows.append([s.login for s in snapshots])
            self.changed.notify_all()

    async def wait_for(self, count: int) -> None:
        async with asyncio.timeout(WAIT_S), self.changed:
            await self.changed.wait_for(lambda: len(self.handled) >= count)


def snapshot_body(login: object, **changes: Any) -> bytes:
    message = copy.deepcopy(EXAMPLE_MESSAGE)
    message.update(login=login, **changes)
    return json.dumps(message).encode()


async def publish(channel: AbstractChannel, queue: str, body: bytes) -> None:
    """Persistent, confirmed by the broker (aio-pika channels confirm by default)."""
    await channel.default_exchange.publish(
        aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=uuid.uuid4().hex,
        ),
        routing_key=queue,
    )


async def message_count(broker: AbstractConnection, queue: str) -> int:
    """Messages ready in ``queue`` (a passive declare; unacknowledged ones are not counted)."""
    channel = await broker.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        count = declared.declaration_result.message_count
        assert count is not None
        return count
    finally:
        await channel.close()


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds (broker state has no notifications to wait on)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            if await check():
                return
            await asyncio.sleep(0.05)


async def started(
    consumers: list[SnapshotConsumer],
    url: str,
    queue: str,
    handle: Callable[[Sequence[AccountSnapshot]], Awaitable[object]],
    **options: Any,
) -> SnapshotConsumer:
    consumer = SnapshotConsumer(url, queue, handle, **options)
    consumers.append(consumer)
    await consumer.start()
    return consumer


async def declared(url: str, queue: str) -> None:
    """Have a consumer declare the queues, and stop it: messages published now wait in the queue
    (published before the queue exists, the default exchange drops them)."""
    consumer = SnapshotConsumer(url, queue, Recorder())
    await consumer.start()
    await consumer.stop()


async def test_good_messages_are_handled_in_order_and_acked(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    recorder = Recorder()
    consumer = await started(consumers, rabbitmq_url, queue, recorder, prefetch=3)
    assert consumer.ready
    await consumer.ping()
    for login in range(1, 21):
        await publish(channel, queue, snapshot_body(login))
    await recorder.wait_for(20)
    assert [s.login for s in recorder.handled] == list(range(1, 21))
    await consumer.stop()  # lets the last message be acknowledged
    assert consumer.processed == 20
    assert (consumer.dead_lettered, consumer.failed) == (0, 0)
    assert not consumer.ready
    assert await message_count(broker, queue) == 0  # nothing unacked went back
    assert await message_count(broker, f"{queue}.dead") == 0


async def test_messages_waiting_before_the_start_are_handled(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    await declared(rabbitmq_url, queue)
    for login in (7, 8, 9):
        await publish(channel, queue, snapshot_body(login))
    recorder = Recorder()
    await started(consumers, rabbitmq_url, queue, recorder)
    await recorder.wait_for(3)
    assert [s.login for s in recorder.handled] == [7, 8, 9]


async def test_a_malformed_message_is_dead_lettered_and_the_next_one_arrives(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    consumer = await started(consumers, rabbitmq_url, queue, recorder)
    bad = snapshot_body("secret-do-not-log")
    with caplog.at_level(logging.WARNING, logger="api.feeds.marathons.ingest"):
        await publish(channel, queue, b"not json at all")
        await publish(channel, queue, bad)
        await publish(channel, queue, snapshot_body(2))
        await recorder.wait_for(1)
        await eventually(lambda: _equals(message_count(broker, f"{queue}.dead"), 2))
    assert [s.login for s in recorder.handled] == [2]
    await consumer.stop()
    assert (consumer.processed, consumer.dead_lettered, consumer.failed) == (1, 2, 0)

    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "api.feeds.marathons.ingest" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 2
    assert "not JSON" in warnings[0]
    assert re.search(r"delivery tag \d+, message id '[0-9a-f]{32}'", warnings[0])
    assert 'login: Input should be a valid integer (got "secret-do-not-log")' in warnings[1]
    assert "EURUSD" not in warnings[1]  # the reason, never the body

    dead_channel = await broker.channel()
    dead_queue = await dead_channel.declare_queue(f"{queue}.dead", passive=True)
    dead = await dead_queue.get(timeout=WAIT_S)
    assert dead.body == b"not json at all"
    death = dead.headers["x-death"]
    assert isinstance(death, list)
    assert isinstance(death[0], dict)
    assert death[0]["reason"] == "rejected"
    assert death[0]["queue"] == queue
    await dead.ack()
    await dead_channel.close()


async def test_a_handler_failure_is_retried(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(fail_first=2)
    consumer = await started(consumers, rabbitmq_url, queue, recorder, retry_delay_s=0.05)
    with caplog.at_level(logging.ERROR, logger="api.feeds.marathons.ingest"):
        await publish(channel, queue, snapshot_body(42))
        await recorder.wait_for(1)
    assert [s.login for s in recorder.handled] == [42]
    assert recorder.calls == 3
    await consumer.stop()
    assert (consumer.processed, consumer.dead_lettered, consumer.failed) == (1, 0, 2)
    failures = [
        r
        for r in caplog.records
        if r.name == "api.feeds.marathons.ingest" and r.levelno >= logging.ERROR
    ]
    assert len(failures) == 2
    assert "login 42" in failures[0].getMessage()
    assert "requeueing the window in 0.1 s" in failures[1].getMessage()  # the backoff doubled
    assert failures[0].exc_info is not None
    assert await message_count(broker, queue) == 0
    assert await message_count(broker, f"{queue}.dead") == 0


async def test_a_handler_that_hangs_is_timed_out_and_retried(
    rabbitmq_url: str,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    calls = 0
    recorder = Recorder()

    async def handle(snapshots: Sequence[AccountSnapshot]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # hangs: the database never answers
        await recorder(snapshots)

    consumer = SnapshotConsumer(
        rabbitmq_url, queue, handle, retry_delay_s=0.01, handle_timeout_s=0.2
    )
    consumers.append(consumer)
    await consumer.start()
    await publish(channel, queue, snapshot_body(9))
    await recorder.wait_for(1)
    assert calls == 2
    assert consumer.failed == 1


async def test_a_failing_window_is_requeued_whole_and_handled_later(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    """Storing a window is all or nothing: when it fails, every message of it goes back to the
    queue (one nack with ``multiple``), and all of them are handled once it succeeds."""
    recorder = Recorder()
    failures = 0

    async def handle(snapshots: Sequence[AccountSnapshot]) -> None:
        nonlocal failures
        if any(s.login == 1 for s in snapshots) and failures < 3:
            failures += 1
            raise RuntimeError("this window fails for a while")
        await recorder(snapshots)

    await declared(rabbitmq_url, queue)
    consumer = SnapshotConsumer(rabbitmq_url, queue, handle, retry_delay_s=0.01)
    consumers.append(consumer)
    for login in (1, 2, 3):
        await publish(channel, queue, snapshot_body(login))
    await consumer.start()
    await recorder.wait_for(3)
    assert sorted(s.login for s in recorder.handled) == [1, 2, 3]
    assert consumer.failed == 3
    await consumer.stop()
    assert consumer.processed == 3
    assert await message_count(broker, queue) == 0


async def test_a_window_is_handled_as_one_batch_and_acked_at_once(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    """Messages waiting together form one window, up to ``window``; a malformed one in the middle
    is dead-lettered alone and the rest of its window handled."""
    await declared(rabbitmq_url, queue)
    for login in range(1, 13):
        await publish(channel, queue, b"{}" if login == 5 else snapshot_body(login))
    recorder = Recorder()
    consumer = await started(
        consumers, rabbitmq_url, queue, recorder, prefetch=20, window=8, window_wait_s=0.5
    )
    await recorder.wait_for(11)
    assert recorder.windows == [[1, 2, 3, 4, 6, 7, 8], [9, 10, 11, 12]]
    await eventually(lambda: _equals(message_count(broker, f"{queue}.dead"), 1))
    await consumer.stop()
    assert (consumer.processed, consumer.dead_lettered, consumer.failed) == (11, 1, 0)
    assert await message_count(broker, queue) == 0  # every one acked: none went back


async def test_a_lone_message_waits_at_most_window_wait(
    rabbitmq_url: str,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    recorder = Recorder()
    await started(consumers, rabbitmq_url, queue, recorder, window_wait_s=0.05)
    loop = asyncio.get_running_loop()
    sent = loop.time()
    await publish(channel, queue, snapshot_body(3))
    await recorder.wait_for(1)
    assert loop.time() - sent < 1.0
    assert recorder.windows == [[3]]


def test_the_window_must_fit_the_prefetch() -> None:
    with pytest.raises(ValueError, match="window must be between 1 and prefetch"):
        SnapshotConsumer("amqp://x/", "q", Recorder(), prefetch=10, window=11)
    with pytest.raises(ValueError, match="window must be between 1 and prefetch"):
        SnapshotConsumer("amqp://x/", "q", Recorder(), window=0)
    assert SnapshotConsumer("amqp://x/", "q", Recorder(), prefetch=10).window == 5
    assert SnapshotConsumer("amqp://x/", "q", Recorder(), prefetch=1).window == 1


async def test_a_message_is_not_acked_before_the_handler_finishes(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    blocked = Recorder(release=asyncio.Event())
    consumer = await started(consumers, rabbitmq_url, queue, blocked)
    await publish(channel, queue, snapshot_body(5))
    async with asyncio.timeout(WAIT_S):
        await blocked.entered.wait()
    await consumer.stop(grace_s=0.1)  # the handler is still blocked: it is cancelled
    assert blocked.handled == []
    assert consumer.processed == 0
    await eventually(lambda: _equals(message_count(broker, queue), 1))

    recorder = Recorder()
    await started(consumers, rabbitmq_url, queue, recorder)
    await recorder.wait_for(1)
    assert [s.login for s in recorder.handled] == [5]


async def test_stop_lets_the_message_being_handled_finish(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    release = asyncio.Event()
    slow = Recorder(release=release)
    consumer = await started(consumers, rabbitmq_url, queue, slow)
    await publish(channel, queue, snapshot_body(6))
    async with asyncio.timeout(WAIT_S):
        await slow.entered.wait()
    asyncio.get_running_loop().call_later(0.1, release.set)
    await consumer.stop(grace_s=WAIT_S)
    assert [s.login for s in slow.handled] == [6]
    assert consumer.processed == 1
    assert await message_count(broker, queue) == 0


async def test_it_reconnects_when_the_broker_closes_its_connection(
    rabbitmq_url: str,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    recorder = Recorder()
    consumer = await started(consumers, rabbitmq_url, queue, recorder, reconnect_interval_s=0.1)
    await publish(channel, queue, snapshot_body(1))
    await recorder.wait_for(1)

    await close_connection_named(f"tradestream marathon ingest ({queue})")
    await eventually(_true(lambda: consumer.reconnects == 1))
    await publish(channel, queue, snapshot_body(2))
    await recorder.wait_for(2)
    assert [s.login for s in recorder.handled] == [1, 2]
    assert consumer.ready
    await consumer.ping()


async def test_messages_in_hand_when_the_connection_drops_are_redelivered(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
) -> None:
    """The window being handled cannot be acknowledged on the lost channel: it is handled again
    (at least once). The one waiting behind it is dropped unhandled, and redelivered."""
    release = asyncio.Event()
    recorder = Recorder(release=release)
    await declared(rabbitmq_url, queue)
    await publish(channel, queue, snapshot_body(1))
    await publish(channel, queue, snapshot_body(2))
    consumer = await started(
        consumers, rabbitmq_url, queue, recorder, reconnect_interval_s=0.1, window=1
    )
    async with asyncio.timeout(WAIT_S):
        await recorder.entered.wait()

    await close_connection_named(f"tradestream marathon ingest ({queue})")
    await eventually(_true(lambda: consumer.reconnects == 1))
    release.set()
    await recorder.wait_for(3)
    assert [s.login for s in recorder.handled] == [1, 1, 2]
    await consumer.stop()
    assert consumer.processed == 2
    assert await message_count(broker, queue) == 0


async def test_an_existing_queue_with_other_arguments_is_reported(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await channel.declare_queue(queue, durable=True)  # no dead-letter exchange
    consumer = SnapshotConsumer(rabbitmq_url, queue, Recorder())
    with (
        caplog.at_level(logging.ERROR, logger="api.feeds.marathons.ingest"),
        pytest.raises(QueueDeclarationError) as caught,
    ):
        await consumer.start()
    message = str(caught.value)
    assert f"queue {queue!r} already exists with other arguments" in message
    assert "inequivalent arg 'x-dead-letter-exchange'" in message
    logged = [
        r.getMessage()
        for r in caplog.records
        if r.name == "api.feeds.marathons.ingest" and r.levelno >= logging.ERROR
    ]
    assert any(queue in m and "x-dead-letter-exchange" in m for m in logged)
    assert not consumer.ready
    with pytest.raises(ConnectionError, match="not consuming"):
        await consumer.ping()
    await consumer.stop()  # nothing to stop: start left nothing open


async def test_run_consumes_until_cancelled(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
) -> None:
    recorder = Recorder()
    consumer = SnapshotConsumer(rabbitmq_url, queue, recorder)
    task = asyncio.create_task(consumer.run())
    await eventually(_true(lambda: consumer.ready))
    await publish(channel, queue, snapshot_body(3))
    await recorder.wait_for(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, WAIT_S)
    assert not consumer.ready
    assert consumer.stats() == {
        "queue": queue,
        "ready": False,
        "processed": 1,
        "deadLettered": 0,
        "failed": 0,
        "reconnects": 0,
    }


async def test_start_fails_when_the_broker_cannot_be_reached() -> None:
    consumer = SnapshotConsumer("amqp://guest:guest@127.0.0.1:1/", "q", Recorder())
    with pytest.raises(ConnectionError, match="Connect call failed"):
        await asyncio.wait_for(consumer.start(), WAIT_S)
    assert not consumer.ready


async def test_run_keeps_trying_while_the_broker_cannot_be_reached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = SnapshotConsumer("amqp://guest:guest@127.0.0.1:1/", "q", Recorder())
    with caplog.at_level(logging.WARNING, logger="api.feeds.marathons.ingest"):
        task = asyncio.create_task(consumer.run())
        await eventually(
            _true(lambda: any(r.name == "api.feeds.marathons.ingest" for r in caplog.records))
        )
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, WAIT_S)
    logged = [r.getMessage() for r in caplog.records if r.name == "api.feeds.marathons.ingest"]
    assert "cannot consume 'q' yet" in logged[0]
    assert "retrying in 1 s" in logged[0]
    assert not consumer.ready


# With the real store: exactly once over at-least-once delivery -------------------------------


@dataclass
class Storing:
    """A handler that stores each window with the real store and keeps the events it numbered;
    ``hang_after_commit`` makes the first call block once its transaction committed (the process
    dies, or loses the broker, between storing and acknowledging)."""

    store: PgMarathonStore
    announced: list[Event] = field(default_factory=list)
    calls: int = 0
    hang_after_commit: asyncio.Event | None = None
    committed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, snapshots: Sequence[AccountSnapshot]) -> None:
        self.calls += 1
        self.announced += (await self.store.ingest(snapshots)).events
        self.committed.set()
        if self.hang_after_commit is not None and self.calls == 1:
            await self.hang_after_commit.wait()

    def logins(self) -> list[int]:
        return sorted(
            s.login for e in self.announced for s in SNAPSHOT_BATCH.decode(e.payload).snapshots
        )


def timed_body(login: int, minute: int) -> bytes:
    return snapshot_body(login, server_time=f"2024-05-06T07:{minute:02d}:00+00:00")


async def stored_snapshots(pool: asyncpg.Pool) -> dict[int, str]:
    rows = await pool.fetch("SELECT login, server_time FROM account_snapshots")
    return {r["login"]: f"{r['server_time'].minute:02d}" for r in rows}


async def announced_logins(pool: asyncpg.Pool) -> list[int]:
    """Every login the marathon feed's history announced, as often as it did."""
    rows = await pool.fetch(
        "SELECT payload::text AS p FROM topic_history WHERE topic = $1 AND type = $2",
        marathon_feed_topic(),
        ACCOUNT_SNAPSHOTS,
    )
    return sorted(s["login"] for r in rows for s in orjson.loads(r["p"])["snapshots"])


async def test_a_window_is_stored_and_announced_once_and_its_malformed_message_dead_lettered(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
    pool: asyncpg.Pool,
) -> None:
    await declared(rabbitmq_url, queue)
    bodies = [timed_body(login, 1) for login in range(1, 6)]
    bodies.insert(3, b'{"login": 3}')  # malformed, in the middle
    bodies += [timed_body(2, 1), timed_body(2, 3), timed_body(4, 0)]  # same, newer, older
    for body in bodies:
        await publish(channel, queue, body)
    storing = Storing(PgMarathonStore(pool, SystemClock()))
    consumer = await started(consumers, rabbitmq_url, queue, storing, window_wait_s=0.5)
    await eventually(_true(lambda: consumer.processed == 8))
    await eventually(lambda: _equals(message_count(broker, f"{queue}.dead"), 1))
    assert storing.calls == 1  # one window
    assert await stored_snapshots(pool) == {1: "01", 2: "03", 3: "01", 4: "01", 5: "01"}
    # login 2 had none stored: its first (07:01) and its newest (07:03), each once
    assert storing.logins() == [1, 2, 2, 3, 4, 5]
    assert len(storing.announced) == 1

    # the same snapshots again, in another window: nothing stored, nothing announced
    for body in bodies:
        await publish(channel, queue, body)
    await eventually(_true(lambda: consumer.processed == 16))
    assert await announced_logins(pool) == [1, 2, 2, 3, 4, 5]
    assert len(storing.announced) == 1
    await consumer.stop()
    assert await message_count(broker, queue) == 0


@pytest.mark.parametrize("how", ["stopped", "connection closed"])
async def test_a_window_stored_but_not_acked_is_redelivered_and_changes_nothing(
    how: str,
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
    pool: asyncpg.Pool,
) -> None:
    """A crash (or the broker lost) after the transaction committed and before the ack: the
    broker redelivers the window, which stores nothing twice and announces nothing twice."""
    await declared(rabbitmq_url, queue)
    for login in range(1, 11):
        await publish(channel, queue, timed_body(login, 1))
    store = PgMarathonStore(pool, SystemClock())
    first = Storing(store, hang_after_commit=asyncio.Event())
    consumer = await started(
        consumers, rabbitmq_url, queue, first, window_wait_s=0.5, reconnect_interval_s=0.1
    )
    async with asyncio.timeout(WAIT_S):
        await first.committed.wait()
    assert first.logins() == list(range(1, 11))
    if how == "stopped":
        await consumer.stop(grace_s=0.1)  # the handler still hangs: cancelled, nothing acked
        await eventually(lambda: _equals(message_count(broker, queue), 10))
        again = Storing(store)
        await started(consumers, rabbitmq_url, queue, again)
    else:
        await close_connection_named(f"tradestream marathon ingest ({queue})")
        await eventually(_true(lambda: consumer.reconnects == 1))
        assert first.hang_after_commit is not None
        first.hang_after_commit.set()  # its ack goes to a closed channel
        again = first
    await eventually(_true(lambda: again.calls >= (1 if again is not first else 2)))
    await eventually(lambda: _equals(message_count(broker, queue), 0))
    assert again.logins() == (list(range(1, 11)) if again is first else [])
    assert await announced_logins(pool) == list(range(1, 11))
    assert len(await stored_snapshots(pool)) == 10


async def test_a_window_whose_database_connection_dies_is_requeued_and_stored_later(
    rabbitmq_url: str,
    broker: AbstractConnection,
    channel: AbstractChannel,
    queue: str,
    consumers: list[SnapshotConsumer],
    pool: asyncpg.Pool,
    isolated_database_url: str,
) -> None:
    """The database fails in the middle of the window's transaction (its connection is
    terminated while it waits for a lock): the window goes back to the queue, none is lost."""
    await declared(rabbitmq_url, queue)
    for login in range(1, 21):
        await publish(channel, queue, timed_body(login, 1))
    admin = await asyncpg.connect(isolated_database_url)
    try:
        locking = admin.transaction()
        await locking.start()
        await admin.execute("LOCK TABLE account_snapshots IN ACCESS EXCLUSIVE MODE")
        storing = Storing(PgMarathonStore(pool, SystemClock()))
        consumer = await started(
            consumers, rabbitmq_url, queue, storing, window_wait_s=0.5, retry_delay_s=0.05
        )

        async def terminated() -> bool:
            # not on ``admin``: a transaction sees pg_stat_activity as it first read it
            killed: bool | None = await pool.fetchval(
                "SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE '%account_snapshots%' "
                "AND pid <> pg_backend_pid()"
            )
            return bool(killed)

        await eventually(terminated)
        await eventually(_true(lambda: consumer.failed == 1))
        await locking.rollback()
    finally:
        await admin.close()
    await eventually(_true(lambda: consumer.processed == 20))
    assert storing.logins() == list(range(1, 21))
    assert await announced_logins(pool) == list(range(1, 21))
    assert len(await stored_snapshots(pool)) == 20
    await consumer.stop()
    assert await message_count(broker, queue) == 0


async def _equals(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


def _true(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check


async def close_connection_named(name: str) -> None:
    """Close, from the broker side, the one connection whose client named itself ``name``."""
    listing = await rabbitmqctl("list_connections", "pid", "client_properties")
    pids = [
        line.split("\t", 1)[0]
        for line in listing.splitlines()
        if f'{{"connection_name","{name}"}}' in line
    ]
    if len(pids) != 1:
        pytest.fail(f"expected one connection named {name!r}, found {len(pids)}:\n{listing}")
    await rabbitmqctl("close_connection", pids[0], "tradestream test: simulated broker restart")


async def rabbitmqctl(*args: str) -> str:
    """``rabbitmqctl -q ...``; the test is skipped when rabbitmqctl is missing or refuses us."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl is not on PATH: it is needed to close a connection broker-side")
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    if process.returncode != 0:
        pytest.skip(
            f"rabbitmqctl {args[0]} failed as this user (exit {process.returncode}): "
            f"{stderr.decode().strip()[:300]}"
        )
    return stdout.decode()
