"""``python -m bench.compression``: tradestream with per-message compression off and on, in one
run: the ``hot`` scenario (bytes per message on the wire, delivered msgs/s, p99) and the ``idle``
scenario (server memory per subscriber), each measured twice on a fresh server.

- off: today's server (``WS_PER_MESSAGE_DEFLATE`` unset) and a load client that offers nothing;
- on: ``WS_PER_MESSAGE_DEFLATE=1`` and every socket offering permessage-deflate (``COMPRESS=1``:
  Node's ``ws`` with ``perMessageDeflate: true``).

The targets are issue 21's: with compression on, at least 3x fewer bytes per message on the wire,
at least 0.9x of the delivered msgs/s with it off, p99 at most 50 ms, idle memory per subscriber
at most 10% above it off.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench import nodeenv
from bench.cli import DEFAULT_WORKDIR, FD_HEADROOM, PROJECT, entry, machine, project_version
from bench.processes import BenchError, raise_open_files_limit, stop_leftover_postgres
from bench.report import text_table
from bench.scenarios import SCENARIOS, TRADESTREAM, Config, Result, measure

if TYPE_CHECKING:
    from collections.abc import Sequence

BYTES_RATIO = 3.0
DELIVERED_RATIO = 0.9
P99_MS = 50.0
IDLE_RATIO = 1.10

VARIANTS: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "off": ({}, {"COMPRESS": "0"}),
    "on": ({"WS_PER_MESSAGE_DEFLATE": "1"}, {"COMPRESS": "1"}),
}
"""Each variant's tradestream settings and load client environment."""
SCENARIO_NAMES = ("hot", "idle")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compression", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="the scenarios' --quick sizes")
    parser.add_argument("--rate", type=float, default=20.0, help="hot: events/s (default 20)")
    parser.add_argument("--idle-rate", type=float, default=0.1, help="idle: events/s (default 0.1)")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs (default 3)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return entry("bench.compression", run, parse_args(argv))


def run(args: argparse.Namespace) -> int:
    shared = nodeenv.shared_folder(PROJECT)
    node_version = nodeenv.node_version()
    workdir: Path = args.workdir.resolve()
    if workdir.is_relative_to(PROJECT):
        raise BenchError(f"--workdir must be outside the project tree, not {workdir}")
    nodeenv.prepare(shared, workdir, PROJECT / "bench" / nodeenv.CLIENT)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    most = max(
        SCENARIOS[n].quick_subscribers if args.quick else SCENARIOS[n].subscribers
        for n in SCENARIO_NAMES
    )
    soft, hard = raise_open_files_limit(most + FD_HEADROOM)
    if soft < most + 256:
        print(f"warning: open files limited to {soft} (hard {hard})", file=sys.stderr)
    database_url = os.environ.get("DATABASE_URL") or None
    data_dir = None if database_url else Path(tempfile.mkdtemp(prefix="pgdata-", dir=workdir))
    base = Config(
        project=PROJECT,
        workdir=workdir,
        logs=logs,
        node=shutil.which("node") or "node",
        rate_hz=args.rate,
        idle_rate_hz=args.idle_rate,
        quick=args.quick,
        database_url=database_url,
        data_dir=data_dir,
    )
    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Result] = {}
    try:
        for name in SCENARIO_NAMES:
            for variant, (server_env, load_env) in VARIANTS.items():
                if results:
                    time.sleep(args.pause)
                print(f"-- {name}, compression {variant} ...", end=" ", flush=True)
                config = dataclasses.replace(base, server_env=server_env, load_env=load_env)
                result = measure(SCENARIOS[name], TRADESTREAM, config)
                print(result.error or "done", flush=True)
                results[f"{name}-{variant}"] = result
    finally:
        if data_dir is not None:
            stop_leftover_postgres(data_dir / "postgres")
            shutil.rmtree(data_dir, ignore_errors=True)

    verdicts = checks(results)
    print()
    print(table(results))
    print()
    print("\n".join(f"{'met   ' if ok else 'missed'}  {what}" for what, ok in verdicts))
    out = workdir / "compression.json"
    out.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "command": " ".join(["python -m bench.compression", *sys.argv[1:]]),
                "machine": machine(node_version),
                "project": project_version(),
                "results": {k: dataclasses.asdict(r) for k, r in results.items()},
                "checks": [{"check": what, "met": ok} for what, ok in verdicts],
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nraw results: {out}\nlogs: {logs}")
    return 1 if any(r.error for r in results.values()) else 0


def _cell(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(results: dict[str, Result]) -> str:
    header = (
        "run",
        "subscribers",
        "compressed",
        "msgs/s",
        "p50 ms",
        "p99 ms",
        "wire B/msg",
        "JSON B/msg",
        "idle B/subscriber",
        "server CPU s",
    )
    rows = [
        [
            key,
            f"{_cell(r.subscribers_ok)}/{r.asked}",
            _cell(r.compressed_conns),
            _cell(r.msgs_per_s),
            _cell(r.p50_ms, 1),
            _cell(r.p99_ms, 1),
            _cell(r.wire_bytes_per_msg, 1),
            _cell(r.payload_bytes_per_msg, 1),
            _cell(r.bytes_per_subscriber),
            _cell(r.server_cpu_s, 1),
        ]
        for key, r in results.items()
    ]
    return text_table(header, rows)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def checks(results: dict[str, Result]) -> Sequence[tuple[str, bool]]:
    """The issue's targets, each with its figure."""
    hot_off, hot_on = results.get("hot-off"), results.get("hot-on")
    idle_off, idle_on = results.get("idle-off"), results.get("idle-on")
    found: list[tuple[str, bool]] = []
    if hot_off is not None and hot_on is not None:
        fewer = _ratio(hot_off.wire_bytes_per_msg, hot_on.wire_bytes_per_msg)
        found.append(
            (
                f"bytes per message on the wire: {_fmt(fewer)}x fewer with compression "
                f"(target >= {BYTES_RATIO:g}x)",
                fewer is not None and fewer >= BYTES_RATIO,
            )
        )
        share = _ratio(hot_on.msgs_per_s, hot_off.msgs_per_s)
        found.append(
            (
                f"delivered msgs/s: {_fmt(share)}x of compression off's "
                f"(target >= {DELIVERED_RATIO:g}x)",
                share is not None and share >= DELIVERED_RATIO,
            )
        )
        p99 = hot_on.p99_ms
        found.append(
            (
                f"p99 with compression: {_fmt(p99, 1)} ms (target <= {P99_MS:g} ms)",
                p99 is not None and p99 <= P99_MS,
            )
        )
        negotiated = hot_on.compressed_conns == hot_on.subscribers_ok
        found.append(
            (
                f"every socket negotiated it: {hot_on.compressed_conns} of {hot_on.subscribers_ok}",
                negotiated,
            )
        )
    if idle_off is not None and idle_on is not None:
        more = _ratio(idle_on.bytes_per_subscriber, idle_off.bytes_per_subscriber)
        found.append(
            (
                f"idle memory per subscriber: {_fmt(more)}x of compression off's "
                f"(target <= {IDLE_RATIO:g}x)",
                more is not None and more <= IDLE_RATIO,
            )
        )
    return found


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    sys.exit(main())
