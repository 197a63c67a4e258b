"""Settling one mining round for 100,000 active martingale strategies, and delivering every
owner's update.

    .venv/bin/python -m bench.rounds                 # 100,000 strategies over 20,000 wallets
    .venv/bin/python -m bench.rounds --quick         # 10,000 over 2,000: a check that it works
    .venv/bin/python -m bench.rounds --strategies 50000 --wallets 5000 --subscribers 500

Set-up (not measured): a database of its own (a fresh one on ``DATABASE_URL`` if set, dropped
afterwards; else an embedded PostgreSQL in a temporary directory), migrated, then the strategies
created in bulk by one SQL statement (not through ``startStrategy``: 100,000 mutations would
take minutes and measure something else), every one active from round 1, spread evenly over the
wallets, with a mix of settings (multipliers 1 to 3, stop-losses, take-profits, budgets) so that
the round ends about 6% of them (2% play a single round, 4% reach a take-profit of one base
amount) and keeps the rest. Round 1 is stored as ended.
Then a real server (``python -m api.cli serve``, ``MARTINGALE_OUTCOMES=service`` so that nothing
settles before the benchmark does, ``BROADCAST_URL=memory://``, no simulated feeds) and real
WebSocket subscribers: ``--subscribers`` owners (1,000; all 100,000 sockets are too many for a
shared two-core machine), each following its own wallet with ``martingaleProgress``, each
waited for until it has its first message.

Measured: one ``settleRound`` mutation (won, reward multiplier 2), as a ``service`` caller:

- ``settle``: seconds from sending the mutation to its answer. The server answers after the
  settlement's transaction committed and every event was handed to the broker: one per wallet,
  one admin summary, one round event. Beside it, the CPU seconds the server's process used
  meanwhile (on a busy machine, what the settlement itself costs), and its resident memory
  before and at its peak.
- ``delivered``: seconds from sending the mutation until every subscriber has the update showing
  round 1 settled for every strategy of its wallet. Target: at most 5 s.

Then checked: every strategy stored as having played round 1 (``rounds_played``, and one row
each in ``martingale_rounds``), every wallet's topic numbered exactly once (``topic_sequences``),
and the server's ``events_published`` counter for the ``martingale`` kind equal to the wallets
plus the summary: every owner's event was published, including the owners nobody subscribed for.
Each figure is printed next to its target. Traffic goes to 127.0.0.1 only; the run stops by
itself (every wait is bounded).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from api.auth import Role, mint
from api.storage.embedded_postgres import EmbeddedPostgres
from api.storage.migrate import migrate
from bench.processes import (
    BenchError,
    Server,
    cpu_seconds,
    free_port,
    own_database,
    peak_rss_bytes,
    raise_open_files_limit,
    rss_bytes,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from websockets.asyncio.client import ClientConnection

TARGET_S = 5.0
"""The issue's target: a round for 100,000 strategies settled and delivered in at most 5 s."""
SECRET = "bench-rounds-secret-0123456789abcdef"
TOKEN_TTL = timedelta(hours=1)
WAIT_S = 120.0
"""The longest any one wait of the run lasts (server start, subscriptions, delivery)."""
WATCH = (
    "subscription($w: String!) { martingaleProgress(wallet: $w) { "
    "strategies { strategyId currentRound lastRound status } } }"
)
SETTLE = "mutation($i: SettleRoundInput!) { settleRound(input: $i) { number settledAt } }"

_CREATE = """
INSERT INTO martingale_strategies
    (id, owner, wallet_address, base_amount, multiplier, total_rounds, stop_loss, take_profit,
     budget, status, first_round, created_at, updated_at)
SELECT 'mg_bench_' || lpad(i::text, 7, '0'), w, w, base, (ARRAY[2, 1.5, 3, 1])[1 + i % 4],
       CASE WHEN i % 50 = 0 THEN 1 ELSE (ARRAY[10, 100, 1000])[1 + i % 3] END,
       CASE WHEN i % 5 = 0 THEN base * 20 END,
       CASE WHEN i % 25 = 0 THEN base WHEN i % 7 = 0 THEN base * 5 END,
       CASE WHEN i % 11 = 0 THEN base * 1000 END,
       'active', 1, now(), now()
FROM (SELECT i, 'bench-wallet-' || (i % $2) AS w,
             (ARRAY[0.01, 0.05, 0.002, 1])[1 + i % 4]::numeric AS base
      FROM generate_series(0, $1 - 1) AS i) AS s
"""


@dataclass(frozen=True, slots=True)
class Size:
    strategies: int
    wallets: int
    subscribers: int


FULL = Size(100_000, 20_000, 1_000)
QUICK = Size(10_000, 2_000, 200)


@dataclass(frozen=True, slots=True)
class Result:
    size: Size
    settle_s: float
    server_cpu_s: float
    """CPU seconds the server's process used from the mutation to its answer: what the
    settlement costs it whatever else runs on the machine (PostgreSQL's share not included)."""
    server_before_mb: float
    """The server process's resident memory before the settlement: subscribers connected."""
    server_peak_mb: float
    """The server process's peak resident memory (VmHWM), the settlement included."""
    delivered_s: float
    stored: int
    """Strategies stored as having played round 1."""
    rounds_stored: int
    """Rows of round 1 in ``martingale_rounds``."""
    wallet_topics: int
    """Wallet topics numbered exactly once."""
    published: int
    """``martingale`` events the server published."""
    updates: int
    """Subscribers that got their update."""


def wallet(k: int) -> str:
    return f"bench-wallet-{k}"


def strategies_of(size: Size, k: int) -> int:
    """How many of the strategies wallet ``k`` holds (strategy i is wallet i mod wallets')."""
    return len(range(k, size.strategies, size.wallets))


async def prepare(database_url: str, size: Size) -> None:
    """Migrate, create the strategies in bulk, store round 1 as ended."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        await migrate(pool)
        await pool.execute(_CREATE, size.strategies, size.wallets)
        await pool.execute(
            """INSERT INTO mining_rounds (number, starts_at, ends_at)
               VALUES (1, now() - interval '2 minutes', now() - interval '1 minute')"""
        )
        await pool.execute("ANALYZE martingale_strategies")
    finally:
        await pool.close()


def server(database_url: str, workdir: Path, broadcast_url: str = "memory://") -> Server:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "DATABASE_URL"))},
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "DATA_DIR": str(workdir / "data"),
        "JWT_SECRET": SECRET,
        "LOG_LEVEL": "warning",
        "SIMULATED_FEEDS": "false",
        "BROADCAST_URL": broadcast_url,
        "MARTINGALE_OUTCOMES": "service",
        "MARTINGALE_ROUND_PERIOD_S": "3600",
        "MAX_CONNECTIONS_PER_CLIENT": "1000000",
    }
    argv = [sys.executable, "-m", "api.cli", "serve"]
    return Server("tradestream", argv, env, workdir, workdir / "server.log", port, "/readyz")


class Subscriber:
    """One owner following its wallet over graphql-transport-ws."""

    def __init__(self, ws: ClientConnection, k: int, expected: int) -> None:
        self.ws = ws
        self.k = k
        self.expected = expected
        """How many strategies the wallet's update shows."""
        self.updated_at: float | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, k: int, expected: int) -> AsyncIterator[Subscriber]:
        token = mint(SECRET, sub=wallet(k), role=Role.USER, ttl=TOKEN_TTL)
        async with connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")], compression=None
        ) as ws:
            subscriber = cls(ws, k, expected)
            await subscriber.send(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            )
            ack = await subscriber.receive()
            if ack.get("type") != "connection_ack":
                raise BenchError(f"{wallet(k)}: no connection_ack but {ack}")
            payload = {"query": WATCH, "variables": {"w": wallet(k)}}
            await subscriber.send({"id": "p", "type": "subscribe", "payload": payload})
            first = await subscriber.strategies()
            if len(first) != expected or any(s["currentRound"] != 0 for s in first):
                raise BenchError(f"{wallet(k)}: unexpected first message {first}")
            yield subscriber

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def receive(self) -> dict[str, Any]:
        message: dict[str, Any] = orjson.loads(await self.ws.recv())
        return message

    async def strategies(self) -> list[dict[str, Any]]:
        message = await self.receive()
        if message.get("type") != "next" or "errors" in message["payload"]:
            raise BenchError(f"{wallet(self.k)}: {message}")
        shown: list[dict[str, Any]] = message["payload"]["data"]["martingaleProgress"]["strategies"]
        return shown

    async def await_update(self) -> None:
        """Until the update that shows round 1 settled for every strategy of the wallet."""
        while True:
            shown = await self.strategies()
            if len(shown) == self.expected and all(s["lastRound"] == 1 for s in shown):
                self.updated_at = time.perf_counter()
                return


async def measure(
    database_url: str, size: Size, workdir: Path, broadcast_url: str = "memory://"
) -> Result:
    """Prepare the database, start the server, subscribe, settle round 1, check."""
    await prepare(database_url, size)
    tradestream = server(database_url, workdir, broadcast_url)
    await asyncio.to_thread(tradestream.start, WAIT_S)
    try:
        return await _settle(tradestream, database_url, size)
    finally:
        await asyncio.to_thread(tradestream.stop)


async def _settle(tradestream: Server, database_url: str, size: Size) -> Result:
    http_url = f"http://127.0.0.1:{tradestream.port}"
    watched = [k * size.wallets // size.subscribers for k in range(size.subscribers)]
    async with contextlib.AsyncExitStack() as stack:
        subscribers = []
        for chunk in range(0, len(watched), 100):  # a hundred handshakes at a time
            opening = [
                stack.enter_async_context(
                    Subscriber.open(tradestream.url, k, strategies_of(size, k))
                )
                for k in watched[chunk : chunk + 100]
            ]
            async with asyncio.timeout(WAIT_S):
                subscribers += await asyncio.gather(*opening)
        waiting = [asyncio.create_task(s.await_update()) for s in subscribers]
        service = mint(SECRET, sub="bench-oracle", role=Role.SERVICE, ttl=TOKEN_TTL)
        variables = {"i": {"roundNumber": 1, "won": True, "rewardMultiplier": "2"}}
        async with httpx.AsyncClient(timeout=WAIT_S) as http:
            cpu_before = cpu_seconds(tradestream.pid) or 0.0
            before = rss_bytes(tradestream.pid) or 0
            began = time.perf_counter()
            response = await http.post(
                f"{http_url}/graphql",
                json={"query": SETTLE, "variables": variables},
                headers={"authorization": f"Bearer {service}"},
            )
            settled = time.perf_counter()
            cpu_after = cpu_seconds(tradestream.pid) or 0.0
            peak = peak_rss_bytes(tradestream.pid) or 0
            body = response.json()
            if "errors" in body:
                raise BenchError(f"settleRound: {body['errors']}")
            try:
                async with asyncio.timeout(WAIT_S):
                    await asyncio.gather(*waiting)
            finally:
                for task in waiting:
                    task.cancel()
            metrics = (await http.get(f"{http_url}/metrics")).text
    delivered = max(s.updated_at or settled for s in subscribers)
    published = re.search(
        r'^tradestream_events_published_total\{kind="martingale"\} (\S+)$', metrics, re.M
    )
    connection = await asyncpg.connect(database_url)
    try:
        stored = await connection.fetchval(
            "SELECT count(*) FROM martingale_strategies WHERE rounds_played = 1 AND last_round = 1"
        )
        rounds_stored = await connection.fetchval(
            "SELECT count(*) FROM martingale_rounds WHERE round_number = 1"
        )
        wallet_topics = await connection.fetchval(
            """SELECT count(*) FROM topic_sequences
               WHERE topic LIKE 'martingale:bench-wallet-%' AND sequence = 1"""
        )
    finally:
        await connection.close()
    return Result(
        size,
        settle_s=settled - began,
        server_cpu_s=cpu_after - cpu_before,
        server_before_mb=before / 2**20,
        server_peak_mb=peak / 2**20,
        delivered_s=delivered - began,
        stored=stored,
        rounds_stored=rounds_stored,
        wallet_topics=wallet_topics,
        published=0 if published is None else int(float(published.group(1))),
        updates=sum(1 for s in subscribers if s.updated_at is not None),
    )


def report(result: Result) -> bool:
    """Print every figure beside its target; whether every one is met."""
    size = result.size
    rows = [
        ("settle (mutation answered)", f"{result.settle_s:.2f} s", "-"),
        ("  server CPU meanwhile", f"{result.server_cpu_s:.2f} s", "-"),
        ("  server memory before", f"{result.server_before_mb:.0f} MB", "-"),
        ("  server peak memory", f"{result.server_peak_mb:.0f} MB", "-"),
        ("settled and delivered", f"{result.delivered_s:.2f} s", f"<= {TARGET_S:g} s"),
        ("subscribers updated", f"{result.updates}", f"{size.subscribers}"),
        ("strategies stored as settled", f"{result.stored}", f"{size.strategies}"),
        ("rounds stored", f"{result.rounds_stored}", f"{size.strategies}"),
        ("wallet topics numbered once", f"{result.wallet_topics}", f"{size.wallets}"),
        ("martingale events published", f"{result.published}", f"{size.wallets + 1}"),
    ]
    print(
        f"rounds: {size.strategies:,} active strategies over {size.wallets:,} wallets, "
        f"{size.subscribers:,} owners subscribed over WebSocket; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    width = max(len(r[0]) for r in rows)
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value:>10}   target {target}")
    return (
        result.delivered_s <= TARGET_S
        and result.updates == size.subscribers
        and result.stored == result.rounds_stored == size.strategies
        and result.wallet_topics == size.wallets
        and result.published == size.wallets + 1
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10,000 strategies, 2,000 wallets")
    parser.add_argument("--strategies", type=int)
    parser.add_argument("--wallets", type=int)
    parser.add_argument("--subscribers", type=int)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--broadcast",
        default="memory://",
        help="the server's BROADCAST_URL (default memory://; e.g. a local redis://127.0.0.1:PORT)",
    )
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    size = Size(
        base.strategies if args.strategies is None else args.strategies,
        base.wallets if args.wallets is None else args.wallets,
        base.subscribers if args.subscribers is None else args.subscribers,
    )
    if not 1 <= size.subscribers <= size.wallets <= size.strategies:
        parser.error("need 1 <= subscribers <= wallets <= strategies")
    args.size = size
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_open_files_limit(args.size.subscribers + 1024)
    workdir = Path(tempfile.mkdtemp(prefix="bench-rounds-", dir=args.workdir))
    try:
        database_url = os.environ.get("DATABASE_URL")
        if database_url:
            with own_database(database_url, workdir, "rounds") as (url, _):
                assert url is not None
                result = asyncio.run(measure(url, args.size, workdir, args.broadcast))
        else:
            embedded = EmbeddedPostgres(workdir / "postgres")
            try:
                url = embedded.start()
                result = asyncio.run(measure(url, args.size, workdir, args.broadcast))
            finally:
                embedded.stop()
    except BenchError as exc:
        print(f"rounds: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report(result) else 1


if __name__ == "__main__":
    sys.exit(main())
