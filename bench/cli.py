"""``python -m bench``: set up the peers, run the scenarios one server at a time, report."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import nodeenv, report
from bench.processes import BenchError, raise_open_files_limit, stop_leftover_postgres
from bench.scenarios import (
    LABELS,
    PRICE_SOURCES,
    SCENARIOS,
    SERVERS,
    Config,
    Result,
    measure,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

PROJECT = Path(__file__).resolve().parent.parent
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "tradestream-bench"
FD_HEADROOM = 1024


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Subscription fan-out: tradestream against the graphql-ws reference and the "
        "raw floor, one server at a time. See bench/README.md.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="run only this scenario (repeatable; default: all, in the order "
        + ", ".join(SCENARIOS)
        + ")",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller numbers, for a smoke run of a few minutes"
    )
    parser.add_argument(
        "--server",
        action="append",
        choices=list(SERVERS),
        help="run only against this server (repeatable; default: every one meaningful)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help=f"where the Node peers, logs and results go (default {DEFAULT_WORKDIR})",
    )
    parser.add_argument(
        "--rate", type=float, default=20.0, help="events/s each server publishes (default 20)"
    )
    parser.add_argument(
        "--idle-rate",
        type=float,
        default=0.1,
        help="events/s during the idle scenario (default 0.1: one event every 10 s)",
    )
    parser.add_argument(
        "--price-source",
        choices=PRICE_SOURCES,
        default="feed",
        help="positions scenarios, tradestream: where the prices come from: the simulated feed "
        "(PRICE_FEED_HZ) or the benchmark calling publishPrice over HTTP as an oracle does, with "
        "the simulated feeds off (default feed)",
    )
    parser.add_argument(
        "--pause", type=float, default=3.0, help="seconds between two servers (default 3)"
    )
    args = parser.parse_args(argv)
    if not (0 < args.rate <= 1000 and 0 < args.idle_rate <= 1000):
        parser.error("rates must be in (0, 1000] events/s")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def entry(name: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """A benchmark command's exit status: ``run(args)``'s, 2 (the reason on stderr) when it
    cannot measure, 130 when interrupted (SIGTERM too), its servers and clients stopped."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(args)
    except BenchError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted; servers and clients stopped", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return entry("bench", run, parse_args(argv))


def run(args: argparse.Namespace) -> int:
    shared = nodeenv.shared_folder(PROJECT)
    node_version = nodeenv.node_version()
    node = shutil.which("node") or "node"
    workdir: Path = args.workdir.resolve()
    if workdir.is_relative_to(PROJECT):
        raise BenchError(f"--workdir must be outside the project tree, not {workdir}")
    installed = nodeenv.prepare(shared, workdir, PROJECT / "bench" / nodeenv.CLIENT)
    print(
        f"peers and load client in {workdir} (node {node_version}; "
        f"{'npm install ran' if installed else 'node_modules reused'})",
        flush=True,
    )
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)

    scenarios = [
        SCENARIOS[name] for name in SCENARIOS if not args.scenario or name in args.scenario
    ]
    most = max(s.quick_subscribers if args.quick else s.subscribers for s in scenarios)
    soft, hard = raise_open_files_limit(most + FD_HEADROOM)
    if soft < most + 256:
        print(
            f"warning: open files limited to {soft} (hard limit {hard}); {most} sockets need more, "
            "expect failed connections (raise the hard limit: ulimit -Hn)",
            file=sys.stderr,
        )

    database_url = os.environ.get("DATABASE_URL") or None
    data_dir = None if database_url else Path(tempfile.mkdtemp(prefix="pgdata-", dir=workdir))
    config = Config(
        project=PROJECT,
        workdir=workdir,
        logs=logs,
        node=node,
        rate_hz=args.rate,
        idle_rate_hz=args.idle_rate,
        quick=args.quick,
        database_url=database_url,
        data_dir=data_dir,
        price_source=args.price_source,
    )
    print(
        f"tradestream database: {'DATABASE_URL' if database_url else f'embedded, {data_dir}'}; "
        f"open files limit {soft}; {'quick' if args.quick else 'full'} run",
        flush=True,
    )

    started = datetime.datetime.now(datetime.UTC)
    all_results: list[Result] = []
    reports: list[str] = []
    try:
        first = True
        for scenario in scenarios:
            servers = [s for s in scenario.servers if not args.server or s in args.server]
            results = []
            for server in servers:
                if not first:
                    time.sleep(args.pause)
                first = False
                print(f"-- {scenario.name}: {LABELS[server]} ...", end=" ", flush=True)
                t0 = time.monotonic()
                result = measure(scenario, server, config)
                print(_progress(result, time.monotonic() - t0), flush=True)
                results.append(result)
            if results:
                all_results += results
                reports.append(
                    report.scenario_report(scenario.name, scenario.summary, results, args.quick)
                )
    finally:
        if data_dir is not None:
            stop_leftover_postgres(data_dir / "postgres")
            shutil.rmtree(data_dir, ignore_errors=True)

    print()
    print("\n\n".join(reports))
    cores = os.cpu_count()
    caption = (
        f"`python -m bench{' --quick' if args.quick else ''}`, {started:%Y-%m-%d}, {cores} cores "
        f"(servers and load client on the same machine), {args.rate:g} events/s "
        f"(idle: {args.idle_rate:g}/s), node {node_version}, Python {platform.python_version()}"
    )
    caption += "".join(f"; {s.name} at {s.rate_hz:g}/s" for s in scenarios if s.rate_hz)
    if any(s.workload == "positions" for s in scenarios):
        caption += f"; tradestream's prices for positions: --price-source {args.price_source}"
    print("\nMarkdown, ready for the README:\n")
    print(report.markdown(all_results, caption))

    out = workdir / "latest.json"
    out.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "command": " ".join(["python -m bench", *sys.argv[1:]]),
                "quick": args.quick,
                "rate_hz": args.rate,
                "idle_rate_hz": args.idle_rate,
                "price_source": args.price_source,
                "machine": machine(node_version, soft),
                "project": project_version(),
                "targets": report.TARGETS,
                "results": [dataclasses.asdict(r) for r in all_results],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nraw results: {out}\nlogs: {logs}")
    return 1 if any(r.error for r in all_results) else 0


def _progress(result: Result, seconds: float) -> str:
    if result.error is not None:
        return f"ERROR ({seconds:.0f} s)"
    done = "caught up" if result.mode == "resume" else "subscribed"
    if result.mode == "stream":
        what = f"{result.msgs_per_s} msgs/s, p99 {result.p99_ms} ms"
    elif result.mode == "idle":
        what = f"{result.bytes_per_subscriber} bytes/subscriber"
    else:
        seconds_text = "timed out" if result.seconds is None else f"{result.seconds} s"
        what = f"{seconds_text} to all {done}"
    return f"{result.subscribers_ok}/{result.asked} {done}, {what} ({seconds:.0f} s)"


def machine(node_version: str, open_files: int | None = None) -> dict[str, Any]:
    """What a benchmark's results file says of the machine it ran on."""
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "node": node_version,
    }
    if open_files is not None:
        facts["open_files_limit"] = open_files
    return facts


def project_version() -> dict[str, Any]:
    """The commit measured, and whether the tree had changes on top of it."""
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(PROJECT)]
        info["commit"] = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", "api", "domain", "pyproject.toml"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        info["uncommitted_changes"] = bool(status.strip())
    return info
