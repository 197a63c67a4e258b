"""Shared fixtures: a real PostgreSQL (``DATABASE_URL`` or the embedded one) and a real server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from api.storage.embedded_postgres import EmbeddedPostgres
from api.storage.migrate import migrate
from tests.support import ServerProcess

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from playwright.async_api import Browser

ALLOWED_ORIGIN = "http://localhost:3000"
"""The one other origin whose browser pages the test server lets in."""

CHROMIUM = "/usr/bin/chromium"
"""Debian's chromium, which Playwright drives (it downloads no browser of its own)."""

FEED_HZ = "10"
"""Fast enough that tests see several events in a second, slow enough for two cores."""


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``DATABASE_URL`` if set; otherwise an embedded PostgreSQL for this test session."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("embedded"))
    yield embedded.start()
    embedded.stop()


@contextlib.asynccontextmanager
async def isolated_database(database_url: str) -> AsyncIterator[str]:
    """A fresh database on the same server, dropped afterwards: for a server that must be the
    only publisher of its topics (sequences are per database, and every test server with
    simulated feeds on publishes every market)."""
    name = f"tradestream_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@contextlib.contextmanager
def isolated_server(
    database_url: str, env: dict[str, str], log_path: Path
) -> Iterator[ServerProcess]:
    """A server alone on a fresh database, for a module whose tests must be the only writers
    (from a synchronous, module-scoped fixture: the database is made on a loop of its own)."""
    with asyncio.Runner() as runner:
        database = isolated_database(database_url)
        url = runner.run(database.__aenter__())
        process = ServerProcess({"DATABASE_URL": url, **env}, log_path).start()
        try:
            yield process
        finally:
            process.stop()
            runner.run(database.__aexit__(None, None, None))


@pytest.fixture
async def isolated_database_url(database_url: str) -> AsyncIterator[str]:
    async with isolated_database(database_url) as url:
        yield url


@pytest.fixture
async def pool(isolated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh, migrated database of this test's own (the stores' and history's tests)."""
    pool = await asyncpg.create_pool(isolated_database_url, min_size=1, max_size=4)
    await migrate(pool)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set: start Redis and set REDIS_URL to run this test")
    return url


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    url = os.environ.get("RABBITMQ_URL")
    if not url:
        pytest.skip("RABBITMQ_URL is not set: start RabbitMQ and set RABBITMQ_URL to run this test")
    return url


@pytest.fixture(scope="session")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the suite: memory broadcaster, simulated feeds at 10 Hz."""
    process = ServerProcess(
        {
            "DATABASE_URL": database_url,
            "PRICE_FEED_HZ": FEED_HZ,
            "CONNECTION_INIT_WAIT_TIMEOUT_S": "2",
            "MAX_SUBSCRIPTIONS_PER_CONNECTION": "5",
            "ALLOWED_ORIGINS": ALLOWED_ORIGIN,
        },
        tmp_path_factory.mktemp("server") / "server.log",
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium)"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True)
        yield browser
        await browser.close()
