"""What one price tick costs the perps engine with 100,000 open positions, against valuing every
position (issue 19).

    .venv/bin/python -m bench.engine                # 100,000 positions, 20 s of ticks
    .venv/bin/python -m bench.engine --quick        # 5,000 positions, 3 s of ticks

A real PostgreSQL (``DATABASE_URL``'s server, else an embedded one under ``--workdir``) gets
``--positions`` open positions over BTC-, ETH- and SOL-PERP (seeded random sides, sizes,
leverage 2-20x, entries within 5% of the start price, each safe at it: health >= 1.05), each with
its opening fill, written in bulk; then a copy of that database (``CREATE DATABASE ... TEMPLATE``).
The indexed :class:`domain.perps_engine.PerpsEngine` runs on the first with the real
:class:`api.feeds.perps.store.PgPositionBook`, the reference :class:`domain.perps_reference.
FullScanEngine` (today's algorithm: read and value every position) on the copy.

Ticks: ``--rate`` per second per market (default 20), markets in turn, each a seeded random-walk
step of one market's oracle price (``--volatility``, its standard deviation: 0.02% by default,
about ten times what BTC moves in a calm 50 ms; ``--volatility 0.001`` is a crash), on a simulated
clock that moves 1 / (rate * 3) s per tick (so a candidate is liquidated after the engine's 1 s
grace delay).
After each tick the engine runs one pass (``evaluate``): read the book's changes (a real query),
value what the move may have changed, warn, rank, liquidate (real transactions), market stats.
Prices are recorded in PostgreSQL as the price feed records them (outside the measured time) and
read by the engine from there; events are published as the server publishes them (numbered, and
kept in history or as the newest state, by PostgreSQL; sent through an in-memory broadcast that no
one subscribes to). Measured per pass: wall time p50/p99/max, the part of it in
liquidation transactions (reported apart), positions valued.

Checks: for the first ``--reference-ticks`` ticks (every tick with ``--quick``) the reference
engine runs the same ticks on the copy, and every event both published (warnings, liquidations,
candidates, market stats: topic, sequence, type, payload) must be identical; its time per pass is
the brute-force figure. At the end a fresh reference engine values every position on the first
database at the final prices: the warned positions, the candidates and the open interest must
equal the indexed engine's. Exit status 1 on any difference.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from api.cli import GC_THRESHOLD
from api.feeds.perps.store import PgPositionBook
from api.settings import Settings
from api.storage.database import create_pool
from api.storage.embedded_postgres import EmbeddedPostgres
from api.storage.migrate import migrate
from api.storage.prices import PgPriceRepository, load_markets
from api.streaming.broadcast import Broadcast
from api.streaming.publisher import BroadcastPublisher
from domain.perps import Position, Side, mark_to_market
from domain.perps_engine import (
    LIQUIDATIONS_UPDATED,
    MARKET_STATS_UPDATED,
    POSITION_LIQUIDATED,
    POSITION_WARNING,
    EngineSettings,
    PerpsEngine,
)
from domain.perps_reference import FullScanEngine
from domain.perps_trades import up
from domain.prices import OraclePrice

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

    from domain.events import Event
    from domain.markets import MarketCatalog
    from domain.perps_engine import Announcement, PositionChanges
    from domain.perps_trades import Trade

D = Decimal
TARGET_P99_MS = 5.0
START_PRICES = {"BTC-PERP": D(50000), "ETH-PERP": D(3000), "SOL-PERP": D(150)}
SIZES = {
    "BTC-PERP": (D("0.001"), D(2)),
    "ETH-PERP": (D("0.01"), D(30)),
    "SOL-PERP": (D("0.1"), D(500)),
}
STEP_SD = 0.0002
MIN_START_HEALTH = D("1.05")
"""Some positions start near their liquidation price, in the warning band, as on any venue."""
SETTINGS = EngineSettings(
    liquidation_delay_s=1.0, price_max_age_s=30.0, funding_interval_s=7 * 24 * 3600.0
)
"""No funding settlement within a run: one charges every position of a market (a pass that
reads them all), once an hour in the server."""


# --- the engines' surroundings --------------------------------------------------------------------


class VirtualClock:
    def __init__(self, start: datetime) -> None:
        self.wall = start
        self.mono = 0.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        pass


class Publisher(BroadcastPublisher):
    """The server's publisher: events numbered (and a stream topic's kept in history) by
    PostgreSQL, each sent through an in-memory broadcast that nothing subscribes to; every event
    sent is kept for the comparison."""

    def __init__(self, broadcast: Broadcast, pool: asyncpg.Pool, clock: VirtualClock) -> None:
        super().__init__(broadcast, pool, clock)
        self.events: list[Event] = []

    async def send(self, event: Event) -> None:
        await super().send(event)
        self.events.append(event)


class TimedBook:
    """The real book, with the time spent in liquidation transactions counted apart."""

    def __init__(self, book: PgPositionBook) -> None:
        self.book = book
        self.liquidating_s = 0.0

    async def open_positions(self) -> list[Position]:
        return await self.book.open_positions()

    async def position_changes(self, cursor: int | None) -> PositionChanges:
        return await self.book.position_changes(cursor)

    async def oldest_fill_since(self, since: datetime) -> datetime | None:
        return await self.book.oldest_fill_since(since)

    async def liquidate_all(
        self, liquidations: Sequence[tuple[Trade, Announcement]]
    ) -> list[Event | None]:
        started = time.perf_counter()
        try:
            return await self.book.liquidate_all(liquidations)
        finally:
            self.liquidating_s += time.perf_counter() - started

    async def settle_funding(
        self,
        market: str,
        rate: Decimal,
        mark: Decimal,
        index: Decimal,
        at: datetime,
        payment: Callable[[Position], Decimal],
        announce: Callable[[Position], Announcement],
    ) -> list[Event]:
        return await self.book.settle_funding(market, rate, mark, index, at, payment, announce)

    async def volumes_since(self, since: datetime) -> dict[str, Decimal]:
        return await self.book.volumes_since(since)

    async def last_funding(self) -> dict[str, tuple[Decimal, datetime]]:
        return await self.book.last_funding()


@dataclass
class Rig:
    engine: PerpsEngine
    book: TimedBook
    prices: PgPriceRepository
    publisher: Publisher
    clock: VirtualClock


def rig(
    engine_class: type[PerpsEngine],
    pool: asyncpg.Pool,
    markets: MarketCatalog,
    start: datetime,
    broadcast: Broadcast,
) -> Rig:
    clock = VirtualClock(start)
    book = TimedBook(PgPositionBook(pool, clock))
    prices = PgPriceRepository(pool)
    publisher = Publisher(broadcast, pool, clock)
    engine = engine_class(
        markets,
        book=book,
        prices=prices,
        publisher=publisher,
        clock=clock,
        settings=SETTINGS,
    )
    return Rig(engine, book, prices, publisher, clock)


# --- the positions --------------------------------------------------------------------------------


def make_positions(markets: MarketCatalog, count: int, seed: int) -> list[Position]:
    """Seeded random positions, none a candidate at its market's start price (health >= 1.05)."""
    rng = random.Random(seed)
    at = datetime.now(UTC)
    ids = list(START_PRICES)
    positions: list[Position] = []
    while len(positions) < count:
        market = markets.get(ids[len(positions) % len(ids)])
        start = START_PRICES[market.id]
        low, high = SIZES[market.id]
        steps = int((high - low) / market.step_size)
        size = low + rng.randint(0, steps) * market.step_size
        entry = (start * D(str(1 + rng.uniform(-0.05, 0.05)))).quantize(market.tick_size)
        leverage = D(rng.randint(2, 20))
        position = Position(
            id=f"bench_{len(positions):07d}",
            owner=f"user-{len(positions) % 20000}",
            market=market.id,
            side=rng.choice((Side.LONG, Side.SHORT)),
            size=size,
            entry_price=entry,
            collateral=up(size * entry / leverage),
            opened_at=at,
            realized_pnl=D(0),
            revision=1,
        )
        health = mark_to_market(position, start, market).health
        if health is not None and health >= MIN_START_HEALTH:
            positions.append(position)
    return positions


async def store_positions(pool: asyncpg.Pool, positions: list[Position]) -> None:
    """In bulk (COPY), each with its opening fill."""
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "perp_positions",
            columns=[
                "id",
                "owner",
                "market",
                "side",
                "size",
                "entry_price",
                "collateral",
                "realized_pnl",
                "revision",
                "opened_at",
                "updated_at",
            ],
            records=[
                (
                    p.id,
                    p.owner,
                    p.market,
                    p.side.value,
                    p.size,
                    p.entry_price,
                    p.collateral,
                    p.realized_pnl,
                    p.revision,
                    p.opened_at,
                    p.opened_at,
                )
                for p in positions
            ],
        )
        await conn.copy_records_to_table(
            "perp_fills",
            columns=[
                "position_id",
                "owner",
                "market",
                "side",
                "kind",
                "size",
                "price",
                "notional",
                "fee",
                "realized_pnl",
                "at",
            ],
            records=[
                (
                    p.id,
                    p.owner,
                    p.market,
                    p.side.value,
                    "open",
                    p.size,
                    p.entry_price,
                    p.size * p.entry_price,
                    D(0),
                    D(0),
                    p.opened_at,
                )
                for p in positions
            ],
        )
        await conn.execute("ANALYZE perp_positions; ANALYZE perp_fills")


# --- databases ------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[str]:
    """``DATABASE_URL``'s server, else an embedded one (removed afterwards)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield url
        return
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="pgdata-engine-", dir=workdir))
    embedded = EmbeddedPostgres(data_dir)
    try:
        yield embedded.start()
    finally:
        embedded.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def databases(server_url: str, names: Sequence[str]) -> AsyncIterator[list[str]]:
    """URLs of fresh databases (dropped afterwards)."""
    made: list[str] = []
    admin = await asyncpg.connect(server_url)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
            made.append(name)
        yield [urlunsplit(urlsplit(server_url)._replace(path=f"/{n}")) for n in names]
    finally:
        for name in made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    positions: int
    ticks: int
    load_s: float
    indexed_ms: list[float] = field(default_factory=list)
    indexed_cpu_ms: list[float] = field(default_factory=list)
    liquidating_ms: list[float] = field(default_factory=list)
    valued: list[int] = field(default_factory=list)
    reference_ms: list[float] = field(default_factory=list)
    compared_events: int = 0
    mismatches: list[str] = field(default_factory=list)
    warnings: int = 0
    liquidations: int = 0
    max_candidates: int = 0
    volatility: float = STEP_SD


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def event_key(e: Event) -> tuple[str, int, str, dict[str, Any]]:
    return (e.topic, e.sequence, e.type, e.payload)


async def run(
    server_url: str,
    positions_count: int,
    seconds: float,
    rate: float,
    reference_ticks: int,
    seed: int,
    say: Callable[[str], None] = print,
    step_sd: float = STEP_SD,
) -> Outcome:
    tag = uuid.uuid4().hex[:10]
    name, copy = f"tradestream_bench_engine_{tag}", f"tradestream_bench_engine_{tag}_ref"
    async with databases(server_url, [name]) as (url,):
        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        await migrate(pool)
        markets = await load_markets(pool)
        started = time.perf_counter()
        await store_positions(pool, make_positions(markets, positions_count, seed))
        say(f"stored {positions_count:,} positions in {time.perf_counter() - started:.1f} s")
        await pool.close()
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
        finally:
            await admin.close()
        copy_url = urlunsplit(urlsplit(server_url)._replace(path=f"/{copy}"))
        try:
            # The server's own pool (api.storage.database): no reset round trip after each use.
            pools = [await create_pool(u, Settings()) for u in (url, copy_url)]
            try:
                broadcast = Broadcast("memory://")
                await broadcast.connect()
                try:
                    return await ticks(
                        pools,
                        markets,
                        broadcast,
                        seconds,
                        rate,
                        reference_ticks,
                        seed,
                        say,
                        step_sd,
                    )
                finally:
                    await broadcast.disconnect()
            finally:
                for p in pools:
                    await p.close()
        finally:
            admin = await asyncpg.connect(server_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
            finally:
                await admin.close()


async def ticks(
    pools: list[asyncpg.Pool],
    markets: MarketCatalog,
    broadcast: Broadcast,
    seconds: float,
    rate: float,
    reference_ticks: int,
    seed: int,
    say: Callable[[str], None],
    step_sd: float,
) -> Outcome:
    start = datetime.now(UTC)
    indexed = rig(PerpsEngine, pools[0], markets, start, broadcast)
    reference = rig(FullScanEngine, pools[1], markets, start, broadcast)
    rigs = (indexed, reference)
    prices = dict(START_PRICES)
    ids = list(START_PRICES)
    for r in rigs:
        for market_id, price in prices.items():
            await set_price(r, market_id, price)
    started = time.perf_counter()
    await indexed.engine.evaluate()
    load_s = time.perf_counter() - started
    say(f"first pass (every position loaded and valued): {load_s:.2f} s")
    await reference.engine.evaluate()

    rng = random.Random(seed + 1)
    total = int(seconds * rate * len(ids))
    outcome = Outcome(len(indexed.engine.positions), total, load_s, volatility=step_sd)
    compared = [len(indexed.publisher.events), len(reference.publisher.events)]
    for tick in range(total):
        market_id = ids[tick % len(ids)]
        step = D(str(round(rng.gauss(0, step_sd), 6)))
        price = (prices[market_id] * (1 + step)).quantize(markets.get(market_id).tick_size)
        prices[market_id] = price
        with_reference = tick < reference_ticks
        for r in rigs if with_reference else (indexed,):
            r.clock.advance(1 / (rate * len(ids)))
            await set_price(r, market_id, price)
        liquidating = indexed.book.liquidating_s
        started, cpu = time.perf_counter(), time.process_time()
        await indexed.engine.evaluate()
        outcome.indexed_ms.append((time.perf_counter() - started) * 1000)
        outcome.indexed_cpu_ms.append((time.process_time() - cpu) * 1000)
        outcome.liquidating_ms.append((indexed.book.liquidating_s - liquidating) * 1000)
        outcome.valued.append(indexed.engine.valued)
        if with_reference:
            started = time.perf_counter()
            await reference.engine.evaluate()
            outcome.reference_ms.append((time.perf_counter() - started) * 1000)
            mine = indexed.publisher.events[compared[0] :]
            theirs = reference.publisher.events[compared[1] :]
            compared = [len(indexed.publisher.events), len(reference.publisher.events)]
            outcome.compared_events += len(mine)
            if [event_key(e) for e in mine] != [event_key(e) for e in theirs]:
                outcome.mismatches.append(f"tick {tick}: events differ")
        candidates = sum(len(m.liquidatable) for m in indexed.engine.positions.markets.values())
        outcome.max_candidates = max(outcome.max_candidates, candidates)
    events = indexed.publisher.events
    outcome.warnings = sum(e.type == POSITION_WARNING for e in events)
    outcome.liquidations = sum(e.type == POSITION_LIQUIDATED for e in events)
    outcome.mismatches += await final_check(indexed, pools[0], markets)
    return outcome


async def set_price(r: Rig, market_id: str, price: Decimal) -> None:
    """As the price feed stores a tick (not part of the engine's time)."""
    await r.prices.record([OraclePrice(market_id, price, D(1), r.clock.now())])


async def final_check(indexed: Rig, pool: asyncpg.Pool, markets: MarketCatalog) -> list[str]:
    """A fresh reference engine values every position at the final prices."""
    fresh = rig(FullScanEngine, pool, markets, indexed.clock.wall, indexed.publisher.broadcast)
    fresh.clock.mono = indexed.clock.mono
    await fresh.engine.evaluate()
    problems = []
    if fresh.engine.watch.warned != indexed.engine.watch.warned:
        problems.append("final state: the warned positions differ")

    def newest(r: Rig, type: str, topic: str) -> dict[str, Any]:
        return next(
            e.payload for e in reversed(r.publisher.events) if (e.type, e.topic) == (type, topic)
        )

    if newest(fresh, LIQUIDATIONS_UPDATED, "liquidations") != newest(
        indexed, LIQUIDATIONS_UPDATED, "liquidations"
    ):
        problems.append("final state: the candidates differ")
    for market in markets:
        topic = f"market-stats:{market.id}"
        a, b = (
            newest(fresh, MARKET_STATS_UPDATED, topic),
            newest(indexed, MARKET_STATS_UPDATED, topic),
        )
        fields = ("openInterestLong", "openInterestShort", "markPrice", "indexPrice", "volume24h")
        if any(a[f] != b[f] for f in fields):
            problems.append(f"final state: {market.id}'s stats differ")
    return problems


def report(outcome: Outcome, load: float, say: Callable[[str], None] = print) -> None:
    ms = outcome.indexed_ms
    without = [t - w for t, w in zip(ms, outcome.liquidating_ms, strict=True)]
    say(
        f"positions: {outcome.positions:,}; ticks: {outcome.ticks} (3 markets); volatility "
        f"{outcome.volatility:g} a tick; load average {load:.2f}"
    )
    say(
        f"indexed engine, ms per tick: p50 {percentile(ms, 50):.3f}  p99 {percentile(ms, 99):.3f}  "
        f"max {max(ms):.3f}   (target p99 <= {TARGET_P99_MS} ms)"
    )
    say(
        f"  without liquidation transactions: p50 {percentile(without, 50):.3f}  "
        f"p99 {percentile(without, 99):.3f}  max {max(without):.3f}"
    )
    cpu = outcome.indexed_cpu_ms
    say(
        f"  this process's CPU time: p50 {percentile(cpu, 50):.3f}  p99 {percentile(cpu, 99):.3f}  "
        f"max {max(cpu):.3f}   (PostgreSQL's work and waiting for it not included)"
    )
    liquidation_ticks = [w for w in outcome.liquidating_ms if w > 0]
    say(
        f"  liquidation transactions: {outcome.liquidations} in {len(liquidation_ticks)} ticks, "
        f"{sum(liquidation_ticks):.1f} ms in all"
    )
    say(
        f"  positions valued per tick: mean {statistics.fmean(outcome.valued):.1f}  "
        f"max {max(outcome.valued)}; warnings {outcome.warnings}; "
        f"candidates at most {outcome.max_candidates}"
    )
    say(
        f"  first pass (load {outcome.positions:,} positions and value them): "
        f"{outcome.load_s:.2f} s"
    )
    ref = outcome.reference_ms
    if ref:
        ratio = percentile(ref, 50) / percentile(ms[: len(ref)], 50)
        say(
            f"brute force (every position read and valued), ms per tick over {len(ref)} ticks: "
            f"p50 {percentile(ref, 50):.1f}  p99 {percentile(ref, 99):.1f}  "
            f"(p50 ratio {ratio:.0f}x)"
        )
    verdict = (
        "identical" if not outcome.mismatches else "DIFFERENT: " + "; ".join(outcome.mismatches[:5])
    )
    say(
        f"results vs brute force: {outcome.compared_events} events over {len(ref)} ticks and the "
        f"final state: {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--positions", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="of simulated ticks")
    parser.add_argument("--rate", type=float, default=20.0, help="ticks per second per market")
    parser.add_argument("--reference-ticks", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--volatility", type=float, default=STEP_SD, help="standard deviation of a tick's move"
    )
    parser.add_argument(
        "--quick", action="store_true", help="5,000 positions, 3 s, every tick checked"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tradestream-bench"))
    args = parser.parse_args(argv)
    if args.quick:
        args.positions, args.seconds = 5000, 3.0
        args.reference_ticks = int(args.seconds * args.rate * 3)
    # As the server collects garbage (api/cli.py): young objects rarely.
    gc.set_threshold(GC_THRESHOLD, 50, 100)
    with postgres_server(args.workdir) as server_url:
        outcome = asyncio.run(
            run(
                server_url,
                args.positions,
                args.seconds,
                args.rate,
                args.reference_ticks,
                args.seed,
                step_sd=args.volatility,
            )
        )
    report(outcome, os.getloadavg()[0])
    return 1 if outcome.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
