"""The broadcaster backend between domain workers and subscriptions, chosen by ``BROADCAST_URL``.

``memory://`` serves one process; ``redis://`` and ``postgres://`` cross processes and hosts.
Each backend can be pinged, so ``/readyz`` tells whether the broker answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from typing import Any, Protocol
from urllib.parse import urlparse

import asyncpg
import broadcaster
from broadcaster._backends.memory import MemoryBackend
from redis import asyncio as redis

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
    """Redis PUBLISH/SUBSCRIBE.

    broadcaster's own Redis backend starts reading before its first SUBSCRIBE has gone out; with
    redis-py 8 the reader then finds nothing subscribed, stops, and never reads again, so no
    message is ever delivered. This reader is woken by each subscribe, and a reader that fails
    (connection lost) surfaces through :meth:`next_published` instead of hanging subscribers.
    """

    def __init__(self, url: str) -> None:
        self._url = url

    async def connect(self) -> None:
        self._conn = redis.Redis.from_url(self._url)
        self._pubsub = self._conn.pubsub(ignore_subscribe_messages=True)
        self._queue: asyncio.Queue[broadcaster.Event | BaseException] = asyncio.Queue()
        self._subscribed = asyncio.Event()
        await self._conn.ping()
        self._reader = asyncio.create_task(self._read(), name="broadcast:redis")

    async def disconnect(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        await self._conn.aclose()

    async def subscribe(self, channel: str) -> None:
        await self._pubsub.subscribe(channel)
        self._subscribed.set()

    async def unsubscribe(self, channel: str) -> None:
        await self._pubsub.unsubscribe(channel)

    async def publish(self, channel: str, message: Any) -> None:
        await self._conn.publish(channel, message)

    async def next_published(self) -> broadcaster.Event:
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def ping(self) -> None:
        if self._reader.done():
            raise ConnectionError("the Redis subscriber connection is lost")
        await self._conn.ping()

    async def _read(self) -> None:
        try:
            while True:
                await self._subscribed.wait()
                if not self._pubsub.subscribed:
                    self._subscribed.clear()
                    continue
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
                if message is not None and message["type"] == "message":
                    self._queue.put_nowait(
                        broadcaster.Event(
                            channel=message["channel"].decode(), message=message["data"].decode()
                        )
                    )
        except Exception as exc:
            self._queue.put_nowait(exc)
            raise


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
        # Named, so an operator (or a test) can tell this process's LISTEN connection apart.
        self._listen = await asyncpg.connect(
            self._url, server_settings={"application_name": listen_connection_name()}
        )
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4)

    async def disconnect(self) -> None:
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
            await self._listen.remove_listener(pg_channel, self._on_notify)
        self._topics.pop(pg_channel, None)

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

    async def ping(self) -> None:
        """Raise unless the backend answers and the listener that feeds subscribers is alive."""
        listener: asyncio.Task[None] = self._listener_task
        if listener.done():
            raise ConnectionError("the broadcast listener has stopped")
        await self._pingable.ping()
