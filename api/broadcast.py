"""The broadcaster backend between domain workers and subscriptions, chosen by ``BROADCAST_URL``.

``memory://`` serves one process; ``redis://`` and ``postgres://`` cross processes and hosts.
Each backend can be pinged, so ``/readyz`` tells whether the broker answers.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol
from urllib.parse import urlparse

import asyncpg
import broadcaster
from broadcaster._backends.memory import MemoryBackend
from broadcaster._backends.redis import RedisBackend

NOTIFY_MAX_BYTES = 7999
"""PostgreSQL refuses NOTIFY payloads of 8000 bytes and more."""


class _Pingable(Protocol):
    async def ping(self) -> None: ...


class MessageTooLargeError(ValueError):
    """A message the backend cannot carry."""


class _MemoryBackend(MemoryBackend):
    async def ping(self) -> None:
        return None


class _RedisBackend(RedisBackend):
    async def ping(self) -> None:
        await self._conn.ping()


class _PostgresBackend(broadcaster.BroadcastBackend):
    """LISTEN/NOTIFY, with the two on separate connections.

    broadcaster's own Postgres backend runs LISTEN and NOTIFY on one connection, so two publishes at
    once fail with "another operation is in progress". Here listening has a connection of its own
    (its commands serialized by a lock) and publishing goes through a small pool.
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._lock = asyncio.Lock()

    async def connect(self) -> None:
        self._queue: asyncio.Queue[broadcaster.Event] = asyncio.Queue()
        self._listen = await asyncpg.connect(self._url)
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4)

    async def disconnect(self) -> None:
        await self._listen.close()
        await self._pool.close()

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            await self._listen.add_listener(channel, self._on_notify)

    async def unsubscribe(self, channel: str) -> None:
        async with self._lock:
            await self._listen.remove_listener(channel, self._on_notify)

    async def publish(self, channel: str, message: Any) -> None:
        if len(str(message).encode()) > NOTIFY_MAX_BYTES:
            raise MessageTooLargeError(
                f"{len(str(message).encode())} bytes on {channel!r}: "
                f"PostgreSQL NOTIFY carries at most {NOTIFY_MAX_BYTES}; use the Redis backend"
            )
        await self._pool.execute("SELECT pg_notify($1, $2)", channel, message)

    async def next_published(self) -> broadcaster.Event:
        return await self._queue.get()

    async def ping(self) -> None:
        if self._listen.is_closed():
            raise ConnectionError("the LISTEN connection is closed")
        await self._pool.fetchval("SELECT 1")

    def _on_notify(self, _conn: Any, _pid: int, channel: str, payload: object) -> None:
        self._queue.put_nowait(broadcaster.Event(channel=channel, message=str(payload)))


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
