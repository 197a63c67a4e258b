"""The broadcaster backend between domain workers and subscriptions, chosen by ``BROADCAST_URL``.

``memory://`` serves one process; ``redis://`` and ``postgres://`` cross processes and hosts.
Each backend can be pinged, so ``/readyz`` tells whether the broker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from typing import Any, Protocol
from urllib.parse import urlparse

import asyncpg
import broadcaster
from broadcaster._backends.memory import MemoryBackend
from redis import asyncio as redis

from api.ops.metrics import note_backend_reconnect

logger = logging.getLogger(__name__)

RECONNECTED = "\x00reconnected"
"""What a backend delivers on each of its channels after it lost its connection and subscribed
again: messages published meanwhile may be missing (never a valid event, which is JSON)."""

RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0
"""Backoff between tries to reach a lost broker: from the first to at most the second."""

NOTIFY_MAX_BYTES = 7999
"""PostgreSQL refuses NOTIFY payloads of 8000 bytes and more."""

CHANNEL_MAX_BYTES = 63
"""PostgreSQL identifiers, LISTEN channels among them, are at most 63 bytes."""


class _Pingable(Protocol):
    async def ping(self) -> None: ...


class MessageTooLargeError(ValueError):
    """A message the backend cannot carry."""


class _MemoryBackend(MemoryBackend):
    async def ping(self) -> None:
        return None


class _RedisBackend(broadcaster.BroadcastBackend):
    """Redis PUBLISH/SUBSCRIBE that survives a Redis restart.

    broadcaster's own Redis backend starts reading before its first SUBSCRIBE has gone out; with
    redis-py 8 the reader then finds nothing subscribed, stops, and never reads again, so no
    message is ever delivered. This reader is woken by each subscribe. When the connection is
    lost it reconnects with backoff, subscribes to every channel again and then sends
    :data:`RECONNECTED` on each, so the hub can fill what was published meanwhile.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._channels: set[str] = set()
        self.connected = False

    async def connect(self) -> None:
        self._conn = redis.Redis.from_url(self._url)
        self._lock = asyncio.Lock()
        self._pubsub = self._conn.pubsub(ignore_subscribe_messages=True)
        self._queue: asyncio.Queue[broadcaster.Event] = asyncio.Queue()
        self._subscribed = asyncio.Event()
        await self._conn.ping()
        self.connected = True
        self._reader = asyncio.create_task(self._read(), name="broadcast:redis")

    async def disconnect(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._pubsub.aclose()
        await self._conn.aclose()

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            await self._pubsub.subscribe(channel)
            self._channels.add(channel)
        self._subscribed.set()

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            self._channels.discard(channel)
            if self.connected:
                await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self._conn.publish(channel, message)

    async def next_published(self) -> broadcaster.Event:
        return await self._queue.get()

    async def ping(self) -> None:
        if not self.connected:
            raise ConnectionError("the Redis subscriber connection is lost; reconnecting")
        await self._conn.ping()

    async def _read(self) -> None:
        while True:
            try:
                await self._receive()
            except (redis.RedisError, OSError) as exc:
                # redis.ConnectionError and TimeoutError are RedisError; OSError covers a socket
                # that failed under it.
                self.connected = False
                logger.warning("lost the Redis subscriber connection (%s); reconnecting", exc)
                await self._reconnect()

    async def _receive(self) -> None:
        while True:
            if not self._pubsub.subscribed:
                self._subscribed.clear()
                await self._subscribed.wait()
                continue
            message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None and message["type"] == "message":
                self._queue.put_nowait(
                    broadcaster.Event(
                        channel=message["channel"].decode(), message=message["data"].decode()
                    )
                )

    async def _reconnect(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            await asyncio.sleep(delay)
            async with self._lock:
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()
                self._pubsub = self._conn.pubsub(ignore_subscribe_messages=True)
                try:
                    await self._conn.ping()
                    if self._channels:
                        await self._pubsub.subscribe(*self._channels)
                except (redis.RedisError, OSError) as exc:
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    logger.info("Redis still unavailable (%s); next try in %.1fs", exc, delay)
                    continue
                channels = list(self._channels)
            self.connected = True
            note_backend_reconnect()
            logger.warning("reconnected to Redis; resubscribed %d channels", len(channels))
            for channel in channels:
                self._queue.put_nowait(broadcaster.Event(channel=channel, message=RECONNECTED))
            return


def listen_connection_name(pid: int | None = None) -> str:
    """``application_name`` of a process's LISTEN connection (pg_stat_activity)."""
    return f"tradestream listen {os.getpid() if pid is None else pid}"


class _PostgresBackend(broadcaster.BroadcastBackend):
    """LISTEN/NOTIFY, with the two on separate connections.

    broadcaster's own Postgres backend runs LISTEN and NOTIFY on one connection, so two publishes at
    once fail with "another operation is in progress". Here listening has a connection of its own
    (its commands serialized by a lock) and publishing goes through a small pool.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = asyncio.Lock()
        self._topics: dict[str, str] = {}  # channel -> topic, for topics too long to be channels

    async def connect(self) -> None:
        self._queue: asyncio.Queue[broadcaster.Event] = asyncio.Queue()
        self._closing = False
        self._reconnecting: asyncio.Task[None] | None = None
        self._listen = await self._connect_listener()
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4)

    async def _connect_listener(self) -> asyncpg.Connection:
        # Named, so an operator (or a test) can tell this process's LISTEN connection apart.
        conn = await asyncpg.connect(
            self._url, server_settings={"application_name": listen_connection_name()}
        )
        conn.add_termination_listener(self._on_lost)
        return conn

    def _on_lost(self, _conn: Any) -> None:
        if not self._closing and self._reconnecting is None:
            logger.warning("lost the PostgreSQL LISTEN connection; reconnecting")
            self._reconnecting = asyncio.get_running_loop().create_task(
                self._reconnect(), name="broadcast:postgres-reconnect"
            )

    async def _reconnect(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            await asyncio.sleep(delay)
            async with self._lock:
                try:
                    conn = await self._connect_listener()
                    for pg_channel in self._topics:
                        await conn.add_listener(pg_channel, self._on_notify)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    delay = min(delay * 2, RECONNECT_MAX_S)
                    logger.info("PostgreSQL still unavailable (%s); next try in %.1fs", exc, delay)
                    continue
                self._listen = conn
                topics = list(self._topics.values())
            self._reconnecting = None
            note_backend_reconnect()
            logger.warning(
                "reconnected the LISTEN connection; listening on %d channels", len(topics)
            )
            for topic in topics:
                self._queue.put_nowait(broadcaster.Event(channel=topic, message=RECONNECTED))
            return

    async def disconnect(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        await self._listen.close()
        await self._pool.close()

    async def subscribe(self, channel: str) -> None:
        pg_channel = _pg_channel(channel)
        self._topics[pg_channel] = channel
        async with self._lock:
            await self._listen.add_listener(pg_channel, self._on_notify)

    async def unsubscribe(self, channel: str) -> None:
        pg_channel = _pg_channel(channel)
        async with self._lock:
            self._topics.pop(pg_channel, None)
            if not self._listen.is_closed():
                await self._listen.remove_listener(pg_channel, self._on_notify)

    async def publish(self, channel: str, message: Any) -> None:
        size = len(str(message).encode())
        if size > NOTIFY_MAX_BYTES:
            raise MessageTooLargeError(
                f"{size} bytes on {channel!r}: PostgreSQL NOTIFY carries at most "
                f"{NOTIFY_MAX_BYTES}; use the Redis backend"
            )
        await self._pool.execute("SELECT pg_notify($1, $2)", _pg_channel(channel), message)

    async def next_published(self) -> broadcaster.Event:
        return await self._queue.get()

    async def ping(self) -> None:
        if self._listen.is_closed():
            raise ConnectionError("the LISTEN connection is closed")
        await self._pool.fetchval("SELECT 1")

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        topic = self._topics.get(channel, channel)
        self._queue.put_nowait(broadcaster.Event(channel=topic, message=str(payload)))


def _pg_channel(topic: str) -> str:
    """The LISTEN channel of a topic: the topic itself, or a digest of one too long to be a name."""
    if len(topic.encode()) <= CHANNEL_MAX_BYTES:
        return topic
    return "t:" + hashlib.sha256(topic.encode()).hexdigest()[:40]


class Broadcast(broadcaster.Broadcast):
    """broadcaster's ``Broadcast`` over the backend ``url`` names, with a health check."""

    def __init__(self, url: str) -> None:
        scheme = urlparse(url).scheme
        backend: _MemoryBackend | _RedisBackend | _PostgresBackend
        if scheme == "memory":
            backend = _MemoryBackend(url)
        elif scheme in ("redis", "rediss"):
            backend = _RedisBackend(url)
        elif scheme in ("postgres", "postgresql"):
            backend = _PostgresBackend(url)
        else:
            raise ValueError(f"unsupported broadcast backend {scheme!r}")
        super().__init__(backend=backend)
        self._pingable: _Pingable = backend
        self.scheme = scheme
        self.max_message_bytes: int | None = (
            NOTIFY_MAX_BYTES if isinstance(backend, _PostgresBackend) else None
        )
        """The largest message the backend carries (None: no limit worth planning for)."""

    async def ping(self) -> None:
        """Raise unless the backend answers and the listener that feeds subscribers is alive."""
        listener: asyncio.Task[None] = self._listener_task
        if listener.done():
            raise ConnectionError("the broadcast listener has stopped")
        await self._pingable.ping()
