"""The ``resume-storm`` scenario's server side: what happens while the clients are away, where
every resumed topic stands when they come back, and what the server's read counters say.

Client *i* of N (the load client's ``MODE=resume``) is one socket. The first N/2 each follow
their own ``positions(user: "user-<i>")`` (a BTC-PERP position each, created as the positions
scenarios create theirs); the others all follow the same public streams, ``marketStats(market:
"BTC-PERP")`` (stream topic ``funding:BTC-PERP``) and ``rounds`` (topic ``rounds``), two
subscriptions on the socket. Every client records its newest cursor and all drop together.

While they are away, events happen on every resumed topic through the server's own paths:
funding is settled every FUNDING_INTERVAL_S (a ``funding.settled`` event on ``funding:BTC-PERP``
and a ``position.modified`` with reason ``funding`` on each charged user's topic), the round
clock opens and settles a round every MARTINGALE_ROUND_PERIOD_S (two events on ``rounds``), and
the benchmark, as a venue's indexer, sends each user INCREASES increases of their position
through ``ingestPositionChange`` (a ``position.modified`` each). Then the benchmark reads each
topic's newest sequence from ``topic_sequences`` and the server's
``tradestream_history_reads_total`` from ``/metrics``, and hands the sequences to the load client,
which reconnects every socket at once and resumes with ``after:`` its cursor from before.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx

from bench import positions
from bench.processes import BenchError
from domain.topics import funding_topic, positions_topic, rounds_topic

if TYPE_CHECKING:
    from decimal import Decimal

MARKET = positions.MARKET
FUNDING_INTERVAL_S = 5.0
ROUND_PERIOD_S = 5.0
SERVER_ENV = {
    "FUNDING_INTERVAL_S": f"{FUNDING_INTERVAL_S:g}",
    "MARTINGALE_ROUND_PERIOD_S": f"{ROUND_PERIOD_S:g}",
}
"""tradestream's settings for the scenario: funding and rounds often enough that every public
topic moves several times while the clients are away (hourly funding and minute rounds would not
move at all in 30 s)."""
INCREASES = 2
"""Position increases each user gets while away, spread evenly over the time away."""

CATCH_UP_TARGET_S = 10.0
READS_PER_PAIR_TARGET = 2.0

_HISTORY_READS = re.compile(
    r'^tradestream_history_reads_total\{kind="([^"]+)",outcome="([^"]+)"\} (\S+)$', re.M
)


def users(subscribers: int) -> int:
    """How many of ``subscribers`` follow their own positions (the rest share public streams)."""
    return subscribers // 2


async def while_away(url: str, token: str, price: Decimal, count: int, away_s: float) -> int:
    """Spend ``away_s`` seconds giving users 0 to ``count - 1`` INCREASES increases each, evenly
    spread; the number of changes stored."""
    t0 = time.monotonic()
    stored = 0
    async with httpx.AsyncClient(timeout=60) as http:
        for k in range(1, INCREASES + 1):
            await asyncio.sleep(max(0.0, t0 + away_s * k / (INCREASES + 1) - time.monotonic()))
            now = datetime.now(UTC)
            changes = [positions.position_of(i, price).increase(k, now) for i in range(count)]
            try:
                stored += await positions.ingest_changes(http, url, token, changes)
            except httpx.HTTPError as exc:
                raise BenchError(f"an increase while away failed: {exc!r}") from exc
    await asyncio.sleep(max(0.0, t0 + away_s - time.monotonic()))
    return stored


async def newest(database_url: str, count: int) -> dict[str, Any]:
    """Where each resumed topic stands (its newest sequence), keyed as the load client reads
    them: ``marketStats``, ``rounds``, and ``positions`` (user i's at index i)."""
    topics = [funding_topic(MARKET), rounds_topic(), *map(positions_topic, _users(count))]
    try:
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT topic, sequence FROM topic_sequences WHERE topic = ANY($1::text[])", topics
            )
        finally:
            await connection.close()
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot read the topics' sequences: {exc}") from exc
    at = {row["topic"]: row["sequence"] for row in rows}
    return {
        "marketStats": at.get(topics[0], 0),
        "rounds": at.get(topics[1], 0),
        "positions": [at.get(topic, 0) for topic in topics[2:]],
    }


def _users(count: int) -> list[str]:
    return [positions.user(i) for i in range(count)]


def history_reads(metrics: str) -> dict[str, int]:
    """``tradestream_history_reads_total`` from a ``/metrics`` page, as ``{"<kind> <outcome>":
    count}``."""
    return {
        f"{kind} {outcome}": round(float(value))
        for kind, outcome, value in _HISTORY_READS.findall(metrics)
    }


def read_metrics(http_url: str) -> dict[str, int]:
    try:
        page = httpx.get(f"{http_url}/metrics", timeout=30)
    except httpx.HTTPError as exc:
        raise BenchError(f"cannot read {http_url}/metrics: {exc!r}") from exc
    if page.status_code != 200:
        raise BenchError(f"{http_url}/metrics answered {page.status_code}")
    return history_reads(page.text)


def difference(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {key: after[key] - before.get(key, 0) for key in sorted(after)}
