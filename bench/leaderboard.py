"""``python -m bench.leaderboard``: marathon leaderboard updates per second, incremental
(``domain.marathons.Leaderboard``) against a full re-sort per update.

A marathon of ``--accounts`` registered accounts, each with a first snapshot (seeded random
deposits and equities; about half with an explicit initial balance, the rest derived), then
``--updates`` random snapshots applied one after the other. Only the updates are timed, each
including ``Change.moved_within(100)`` (the question a top-100 view asks); the snapshots are built
beforehand. The reference is the naive approach: cached sort keys, but the whole ranking sorted
again after every update (``--naive-updates`` of them, as it is slow), applied to the same initial
state and the same first updates, whose ranks must agree with the incremental ones.
"""

from __future__ import annotations

import argparse
import bisect
import datetime
import json
import os
import platform
import random
import resource
import sys
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bench.cli import DEFAULT_WORKDIR, project_version
from bench.report import text_table
from domain.marathons import AccountSnapshot, Change, Leaderboard, profit_percentage

if TYPE_CHECKING:
    from collections.abc import Sequence

TARGET_UPDATES_PER_S = 10_000
TOP = 100
T0 = datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
DEPOSITS = (500, 1_000, 5_000, 10_000, 25_000, 50_000, 100_000)

_Key = tuple[int, Decimal, Decimal, datetime.datetime, int]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.leaderboard",
        description="Marathon leaderboard: incremental updates per second against a full re-sort "
        "per update. See bench/README.md.",
    )
    parser.add_argument(
        "--accounts", type=int, default=100_000, help="registered accounts (default 100,000)"
    )
    parser.add_argument(
        "--updates", type=int, default=100_000, help="timed snapshots (default 100,000)"
    )
    parser.add_argument(
        "--naive-updates",
        type=int,
        default=200,
        help="snapshots for the full re-sort reference (default 200; it is slow)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.updates < 1 or args.naive_updates < 0:
        parser.error("--accounts and --updates must be positive, --naive-updates not negative")
    args.naive_updates = min(args.naive_updates, args.updates)
    return args


def _cents(value: float) -> Decimal:
    return Decimal(round(value * 100)).scaleb(-2)


class Market:
    """Seeded accounts and their snapshots."""

    def __init__(self, accounts: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.logins = [1_000_000 + i for i in range(accounts)]
        self.deposits = {login: self.rng.choice(DEPOSITS) for login in self.logins}

    def snapshot(self, login: int, at: datetime.datetime) -> AccountSnapshot:
        """Balance within -40%..+60% of the deposit, and open positions floating -5%..+5%."""
        rng, deposit = self.rng, self.deposits[login]
        balance = _cents(deposit * rng.uniform(0.6, 1.6))
        profit = _cents(deposit * rng.uniform(-0.05, 0.05)) if rng.random() < 0.7 else Decimal(0)
        margin = _cents(deposit * rng.uniform(0, 0.3))
        equity = balance + profit
        return AccountSnapshot(
            login=login,
            balance=balance,
            equity=equity,
            profit=profit,
            margin=margin,
            free_margin=equity - margin,
            server_time=at,
        )


def build(market: Market) -> tuple[Leaderboard, float]:
    """Every account registered (a few share a registration second) with a first snapshot."""
    leaderboard = Leaderboard()
    rng = market.rng
    started = time.perf_counter()
    for i, login in enumerate(market.logins):
        explicit = Decimal(market.deposits[login]) if rng.random() < 0.5 else None
        leaderboard.register(login, T0 + datetime.timedelta(seconds=i // 3), explicit)
        leaderboard.update(market.snapshot(login, T0))
    return leaderboard, time.perf_counter() - started


def _key(leaderboard: Leaderboard, login: int) -> _Key:
    """The documented key, from a row: what a naive implementation sorts on."""
    row = leaderboard.row(login)
    assert row is not None
    percentage = profit_percentage(row.equity, row.initial_balance)
    profit = row.equity - row.initial_balance
    if percentage is None:
        return (1, Decimal(0), profit.copy_negate(), row.registered_at, login)
    return (0, percentage.copy_negate(), profit.copy_negate(), row.registered_at, login)


def naive(
    leaderboard: Leaderboard, updates: Sequence[AccountSnapshot]
) -> tuple[list[int], list[tuple[int | None, int | None]]]:
    """Re-sorts every key after each update. Starts from ``leaderboard``'s state, which it reads
    (untimed) but does not change. Returns the latencies (ns) and the (old, new) ranks."""
    initial = {row.login: row.initial_balance for row in leaderboard.top(len(leaderboard))}
    keys = {login: _key(leaderboard, login) for login in initial}
    ranking = sorted(keys.values())
    latencies: list[int] = []
    ranks: list[tuple[int | None, int | None]] = []
    clock = time.perf_counter_ns
    for snapshot in updates:
        started = clock()
        login = snapshot.login
        old = keys[login]
        old_rank = bisect.bisect_left(ranking, old) + 1
        profit = snapshot.equity - initial[login]
        percentage = profit_percentage(snapshot.equity, initial[login])
        keys[login] = (
            (1, Decimal(0), profit.copy_negate(), old[3], login)
            if percentage is None
            else (0, percentage.copy_negate(), profit.copy_negate(), old[3], login)
        )
        ranking = sorted(keys.values())
        new_rank = bisect.bisect_left(ranking, keys[login]) + 1
        Change(login, old_rank, new_rank).moved_within(TOP)
        latencies.append(clock() - started)
        ranks.append((old_rank, new_rank))
    return latencies, ranks


def incremental(
    leaderboard: Leaderboard, updates: Sequence[AccountSnapshot]
) -> tuple[list[int], float, list[Change], int]:
    """Applies every update; returns the latencies (ns), the total seconds, the changes and how
    many moved the top 100."""
    latencies = [0] * len(updates)
    changes: list[Change] = [Change(0, None, None)] * len(updates)
    moved = 0
    clock = time.perf_counter_ns
    started = clock()
    for i, snapshot in enumerate(updates):
        t0 = clock()
        change = leaderboard.update(snapshot)
        if change.moved_within(TOP):
            moved += 1
        latencies[i] = clock() - t0
        changes[i] = change
    return latencies, (clock() - started) / 1e9, changes, moved


def _percentile(latencies_ns: Sequence[int], fraction: float) -> float:
    ordered = sorted(latencies_ns)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1000


def _stats(latencies_ns: Sequence[int], seconds: float | None = None) -> dict[str, float]:
    total = seconds if seconds is not None else sum(latencies_ns) / 1e9
    return {
        "updates": len(latencies_ns),
        "seconds": round(total, 4),
        "updates_per_s": round(len(latencies_ns) / total, 1),
        "p50_us": round(_percentile(latencies_ns, 0.50), 2),
        "p99_us": round(_percentile(latencies_ns, 0.99), 2),
        "max_us": round(max(latencies_ns) / 1000, 2),
    }


def _row(label: str, stats: dict[str, float]) -> list[str]:
    return [
        label,
        f"{stats['updates']:,.0f}",
        f"{stats['updates_per_s']:,.0f}",
        f"{stats['p50_us']:,.1f}",
        f"{stats['p99_us']:,.1f}",
        f"{stats['max_us']:,.1f}",
    ]


def run(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.UTC)
    market = Market(args.accounts, args.seed)
    print(f"building a marathon of {args.accounts:,} accounts ...", end=" ", flush=True)
    leaderboard, build_seconds = build(market)
    print(f"{build_seconds:.2f} s", flush=True)
    rng = market.rng
    updates = [
        market.snapshot(rng.choice(market.logins), T0 + datetime.timedelta(seconds=1 + i // 1000))
        for i in range(args.updates)
    ]

    naive_stats: dict[str, float] | None = None
    naive_ranks: list[tuple[int | None, int | None]] = []
    if args.naive_updates:
        print(f"full re-sort reference: {args.naive_updates:,} updates ...", end=" ", flush=True)
        naive_latencies, naive_ranks = naive(leaderboard, updates[: args.naive_updates])
        naive_stats = _stats(naive_latencies)
        print(f"{naive_stats['seconds']:.1f} s", flush=True)

    print(f"incremental: {args.updates:,} updates ...", end=" ", flush=True)
    latencies, seconds, changes, moved = incremental(leaderboard, updates)
    stats = _stats(latencies, seconds)
    print(f"{seconds:.2f} s", flush=True)

    agree = all(
        (c.old_rank, c.new_rank) == ranks for c, ranks in zip(changes, naive_ranks, strict=False)
    )
    final = sorted(market.logins, key=lambda login: _key(leaderboard, login))
    consistent = [row.login for row in leaderboard.top(TOP)] == final[:TOP] and all(
        leaderboard.rank(login) == rank for rank, login in enumerate(final, start=1)
    )

    ratio = stats["updates_per_s"] / TARGET_UPDATES_PER_S
    speedup = None if naive_stats is None else stats["updates_per_s"] / naive_stats["updates_per_s"]
    header = ["approach", "updates", "updates/s", "p50 us", "p99 us", "max us"]
    rows = [_row("incremental (SortedList)", stats)]
    if naive_stats is not None:
        rows.append(_row("full re-sort per update", naive_stats))
    print()
    print(
        f"== leaderboard: {args.accounts:,} accounts, seed {args.seed}, "
        f"moved_within({TOP}) on every update"
    )
    print(text_table(header, rows))
    print(f"   updates that moved the top {TOP}: {moved:,} of {args.updates:,}")
    if speedup is not None:
        print(f"   incremental / full re-sort: {speedup:,.0f}x updates/s")
    verdict = "MET" if ratio >= 1 else "MISSED"
    print(
        f"   target ({TARGET_UPDATES_PER_S:,} updates/s): {verdict}, "
        f"{stats['updates_per_s']:,.0f} updates/s = {ratio:.2f}x the target"
    )
    print(
        f"   ranks equal a full sort after the run: {'yes' if consistent else 'NO'}; "
        f"the first {len(naive_ranks)} changes equal the reference's: {'yes' if agree else 'NO'}"
    )

    out = DEFAULT_WORKDIR / "leaderboard.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, Any] = {
        "started": started.isoformat(),
        "command": " ".join(["python -m bench.leaderboard", *sys.argv[1:]]),
        "accounts": args.accounts,
        "seed": args.seed,
        "top": TOP,
        "build_seconds": round(build_seconds, 3),
        "incremental": stats,
        "full_resort": naive_stats,
        "moved_top": moved,
        "target_updates_per_s": TARGET_UPDATES_PER_S,
        "target_ratio": round(ratio, 2),
        "speedup_over_full_resort": None if speedup is None else round(speedup, 1),
        "consistent_with_full_sort": consistent,
        "agrees_with_reference": agree,
        "peak_rss_mb": round(peak_rss_mb, 1),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "project": project_version(),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nraw results: {out}")
    return 0 if consistent and agree else 1


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:
        print("bench.leaderboard: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
