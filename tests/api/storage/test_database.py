"""Telling "the database is unavailable" apart from a bug, on real failures."""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions import InternalClientError

from api.settings import Settings
from api.storage.database import connect, unavailable
from tests.support import free_port


async def test_a_refused_connection_is_unavailable() -> None:
    settings = Settings(database_connect_timeout_s=2)
    with pytest.raises(ConnectionRefusedError) as refused:
        await connect(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", settings)
    assert unavailable(refused.value)


@pytest.mark.parametrize("attempt", range(5))
async def test_a_terminated_session_is_unavailable(database_url: str, attempt: int) -> None:
    conn = await connect(database_url, Settings())
    admin = await asyncpg.connect(database_url)
    try:
        pid = conn.get_server_pid()
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        # Which error depends on what asyncpg has read of the session's end: the server's
        # FATAL, the closed socket, or both.
        with pytest.raises(
            (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, InternalClientError)
        ) as lost:
            await conn.fetchval("SELECT 1")
        assert unavailable(lost.value), repr(lost.value)
    finally:
        await admin.close()
        await conn.close()


async def test_a_command_timeout_is_unavailable(database_url: str) -> None:
    conn = await connect(database_url, Settings(database_command_timeout_s=0.2))
    try:
        with pytest.raises(TimeoutError) as slow:
            await conn.execute("SELECT pg_sleep(5)")
        assert unavailable(slow.value)
    finally:
        await conn.close()


async def test_a_wrong_query_or_an_error_of_our_own_is_not(database_url: str) -> None:
    conn = await connect(database_url, Settings())
    try:
        with pytest.raises(asyncpg.PostgresError) as wrong:
            await conn.fetchval("SELECT * FROM no_such_table")
        assert not unavailable(wrong.value)
    finally:
        await conn.close()
    # A socket error or a timeout raised outside asyncpg is not the database's.
    assert not unavailable(ConnectionRefusedError(111, "Connection refused"))
    with pytest.raises(TimeoutError) as own:
        raise TimeoutError("a timeout of our own")
    assert not unavailable(own.value)
