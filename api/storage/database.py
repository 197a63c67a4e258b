"""Connections to PostgreSQL, and telling "the database is unavailable" apart from a bug.

Every connection is opened with a bound (``DATABASE_CONNECT_TIMEOUT_S``) and every command runs
with one (``DATABASE_COMMAND_TIMEOUT_S``), so a database that is down or hung fails a request in a
bounded time instead of holding it.

While PostgreSQL is down, asyncpg's pool needs nothing from us: a connection whose server went
away is closed, and the pool replaces it lazily, on the next ``acquire()``, which fails at once
(connection refused, or "the database system is starting up") until the server is back. So the
same process recovers by itself; :func:`unavailable` lets the GraphQL layer answer the failures
in between with ``SERVICE_UNAVAILABLE`` instead of masking them as a bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from asyncpg import exceptions as pg

if TYPE_CHECKING:
    from types import TracebackType

    from asyncpg.pool import PoolConnectionProxy

    from api.settings import Settings

    Executor = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy
    """A pool in the server; a connection inside a transaction where a caller needs one."""
    Connection = asyncpg.Connection | PoolConnectionProxy

UNAVAILABLE_MESSAGE = "The database is unavailable; retry later."

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    pg.PostgresConnectionError,  # SQLSTATE class 08, and a connection lost mid-command
    pg.OperatorInterventionError,  # class 57: shutting down, starting up, query cancelled
    pg.TooManyConnectionsError,
    # The protocol out of step: the server's FATAL ("terminating connection due to administrator
    # command") arrived unprompted on an idle connection, before its socket closed; the next
    # command on it then fails with "cannot switch to state ...; another operation is in
    # progress".
    pg.InternalClientError,
)
"""What the server (or asyncpg, on its behalf) raises when it cannot serve, whatever the query."""


async def create_pool(dsn: str, settings: Settings) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=settings.database_pool_size,
        timeout=settings.database_connect_timeout_s,
        command_timeout=settings.database_command_timeout_s,
        reset=_keep_session,
    )


async def _keep_session(connection: asyncpg.Connection) -> None:
    """What the pool does to a connection it takes back, besides what asyncpg always does (roll
    back a transaction left open, drop local listeners): nothing.

    asyncpg's default also sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``,
    a round trip of its own after every query made through the pool, which doubled the round
    trips of the many one-query reads (a subscription's start makes several). Nothing here leaves
    that state on a pool connection: no session ``SET``, no ``LISTEN`` (the LISTEN connection is
    not the pool's, :mod:`api.streaming.broadcast`), no cursor outside a transaction, and the one
    session
    advisory lock (the migrations') is unlocked by the code that takes it. The leader's lock
    lives on a connection of its own (:func:`connect`).
    """


async def connect(dsn: str, settings: Settings) -> asyncpg.Connection:
    """A connection of its own, outside the pool (the leader's lock lives on one)."""
    return await asyncpg.connect(
        dsn,
        timeout=settings.database_connect_timeout_s,
        command_timeout=settings.database_command_timeout_s,
    )


def unavailable(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says PostgreSQL could not be reached, went away,
    or did not answer in time, rather than a query being wrong."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNAVAILABLE):
            return True
        if _lost_connection(current) and _raised_in_asyncpg(current.__traceback__):
            return True
        current = current.__cause__
    return False


def _lost_connection(error: BaseException) -> bool:
    # OSError: refused, reset, unreachable; TimeoutError: the connect or command timeout;
    # InterfaceError "connection is closed": a command on a connection that died meanwhile.
    if isinstance(error, OSError | TimeoutError):
        return True
    return isinstance(error, pg.InterfaceError) and "connection is closed" in str(error)


def _raised_in_asyncpg(traceback: TracebackType | None) -> bool:
    """A socket error or a timeout is the database's only when asyncpg raised it."""
    while traceback is not None:
        module = traceback.tb_frame.f_globals.get("__name__", "")
        if isinstance(module, str) and module.split(".", 1)[0] == "asyncpg":
            return True
        traceback = traceback.tb_next
    return False
