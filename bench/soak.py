"""``python -m bench.soak``: thousands of WebSocket subscribers that come and go for minutes, while
the server's memory, connections, subscriptions and asyncio tasks are sampled; then a verdict on
growth, leftovers, lost events and failures. See bench/README.md."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import nodeenv
from bench.cli import DEFAULT_WORKDIR, FD_HEADROOM, PROJECT, entry, machine, project_version
from bench.processes import (
    MB,
    BenchError,
    Client,
    Server,
    cpu_seconds,
    own_database,
    raise_open_files_limit,
    rss_bytes,
)
from bench.scenarios import TRADESTREAM, Config, make_server

QUERY = "subscription($m: String!) { priceUpdates(market: $m) { market price sequence } }"
SETTLE_TIMEOUT_S = 30.0
"""How long the server has, once every client has left, to be back at its baseline."""
TASK_SLACK = 2
"""Tasks the server may hold above its baseline after the clients left (a request in flight)."""


@dataclass
class Sample:
    t: float
    client_open: int
    connects: int
    msgs_per_s: float
    lost: int
    failures: int
    web_sockets: int
    members: int
    groups: int
    tasks: int
    rss_mb: float
    cpu_percent: float


@dataclass
class Outcome:
    args: dict[str, Any]
    baseline: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    client_final: dict[str, Any] = field(default_factory=dict)
    settled: dict[str, Any] = field(default_factory=dict)
    settle_s: float | None = None
    verdict: dict[str, Any] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Connection churn for minutes against one tradestream server, sampling its "
        "RSS, connections, subscriptions and asyncio tasks. See bench/README.md.",
    )
    parser.add_argument("--duration", type=float, default=180, help="seconds of load (default 180)")
    parser.add_argument(
        "--connections", type=int, default=2000, help="connection slots (default 2000)"
    )
    parser.add_argument(
        "--rate", type=float, default=5.0, help="prices/s per market (default 5; 3 markets)"
    )
    parser.add_argument(
        "--life",
        type=float,
        nargs=2,
        default=(5.0, 60.0),
        metavar=("MIN", "MAX"),
        help="seconds a connection lives, drawn uniformly (default 5 60)",
    )
    parser.add_argument(
        "--abrupt",
        type=float,
        default=0.2,
        help="fraction of departures that are a TCP reset with no close (default 0.2)",
    )
    parser.add_argument(
        "--distinct",
        type=float,
        default=0.1,
        help="fraction of subscriptions with variables of their own, each its own execution "
        "(default 0.1)",
    )
    parser.add_argument(
        "--sample", type=float, default=10.0, help="seconds between samples (default 10)"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=60.0,
        help="seconds before the steady state the RSS growth is measured from (default 60; at "
        "most a third of the duration)",
    )
    parser.add_argument(
        "--max-growth-mb",
        type=float,
        default=32.0,
        help="RSS growth over the steady state that fails the verdict (default 32)",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    args = parser.parse_args(argv)
    if not 10 <= args.duration <= 3600:
        parser.error("--duration must be in [10, 3600] seconds")
    if not 1 <= args.connections <= 50_000:
        parser.error("--connections must be in [1, 50000]")
    if not 0 < args.rate <= 1000:
        parser.error("--rate must be in (0, 1000]")
    if not 0 < args.life[0] <= args.life[1]:
        parser.error("--life needs 0 < MIN <= MAX")
    if not (0 <= args.abrupt <= 1 and 0 <= args.distinct <= 1):
        parser.error("--abrupt and --distinct are fractions in [0, 1]")
    if not 1 <= args.sample <= args.duration:
        parser.error("--sample must be in [1, duration] seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    return entry("bench.soak", run, parse_args(argv))


def server_stats(server: Server) -> dict[str, Any]:
    try:
        response = httpx.get(f"http://127.0.0.1:{server.port}/stats", timeout=10)
        body: dict[str, Any] = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise BenchError(f"GET /stats failed: {exc}") from exc
    return body


def run(args: argparse.Namespace) -> int:
    shared = nodeenv.shared_folder(PROJECT)
    node_version = nodeenv.node_version()
    node = shutil.which("node") or "node"
    workdir: Path = args.workdir.resolve()
    if workdir.is_relative_to(PROJECT):
        raise BenchError(f"--workdir must be outside the project tree, not {workdir}")
    nodeenv.prepare(shared, workdir, PROJECT / "bench" / nodeenv.CLIENT)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    soft, hard = raise_open_files_limit(args.connections * 2 + FD_HEADROOM)
    if soft < args.connections + 256:
        print(f"warning: open files limited to {soft} (hard {hard})", file=sys.stderr)

    outcome = Outcome(
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    )
    started = datetime.datetime.now(datetime.UTC)
    with own_database(os.environ.get("DATABASE_URL") or None, workdir, "soak") as (
        database_url,
        data_dir,
    ):
        config = Config(
            project=PROJECT,
            workdir=workdir,
            logs=logs,
            node=node,
            rate_hz=args.rate,
            idle_rate_hz=args.rate,
            quick=False,
            database_url=database_url,
            data_dir=data_dir,
        )
        server = make_server(TRADESTREAM, config, args.rate, "soak")
        try:
            server.start(timeout=120)
            _soak(server, config, args, outcome)
        finally:
            server.stop()

    print()
    print(table(outcome.samples))
    print()
    print(verdict_text(outcome.verdict))
    out = workdir / "soak.json"
    out.write_text(
        json.dumps(
            {
                "started": started.isoformat(),
                "command": " ".join(["python -m bench.soak", *sys.argv[1:]]),
                "machine": machine(node_version),
                "project": project_version(),
                **asdict(outcome),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nraw results: {out}\nlogs: {logs}/soak-*.log")
    return 0 if outcome.verdict.get("pass") else 1


def _soak(server: Server, config: Config, args: argparse.Namespace, outcome: Outcome) -> None:
    pid = server.pid
    time.sleep(2.0)  # let start-up settle before the baseline
    baseline = server_stats(server)
    baseline["rssMb"] = _mb(rss_bytes(pid))
    outcome.baseline = baseline
    print(
        f"server ready (pid {pid}): {baseline['tasks']} tasks, {baseline['rssMb']} MB RSS; "
        f"{args.connections} connections for {args.duration:g} s, {args.rate:g} prices/s per "
        "market",
        flush=True,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("QUERY", "VARS", "FIELD", "INIT")}
    env |= {
        "MODE": "soak",
        "QUERY": QUERY,
        "FIELD": "priceUpdates",
        "LIFE_MIN": f"{args.life[0]:g}",
        "LIFE_MAX": f"{args.life[1]:g}",
        "ABRUPT": f"{args.abrupt:g}",
        "DISTINCT": f"{args.distinct:g}",
        "REPORT": f"{args.sample:g}",
    }
    log = config.logs / "soak-client.log"
    log.unlink(missing_ok=True)
    argv = [
        config.node,
        str(config.workdir / "load_client.mjs"),
        server.url,
        str(args.connections),
        f"{args.duration:g}",
    ]
    client = Client(argv, env, config.workdir, log, hold=False)
    print(header(), flush=True)
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    try:
        while True:
            line = client.read_line(args.sample + 60)
            if line.get("final"):
                outcome.client_final = line
                break
            stats = server_stats(server)
            cpu1, t1 = cpu_seconds(pid), time.monotonic()
            cpu = 0.0 if cpu0 is None or cpu1 is None else (cpu1 - cpu0) / (t1 - t0) * 100
            cpu0, t0 = cpu1, t1
            sample = Sample(
                t=line["t"],
                client_open=line["open"],
                connects=line["connects"],
                msgs_per_s=round(line["msgs"] / max(line["seconds"], 0.1)),
                lost=line["lost"] + line["backwards"],
                failures=line["failed_conns"] + line["sub_errors"] + line["server_closed"],
                web_sockets=stats["webSockets"],
                members=stats["groupMembers"],
                groups=stats["groups"],
                tasks=stats["tasks"],
                rss_mb=_mb(rss_bytes(pid)) or 0.0,
                cpu_percent=round(cpu),
            )
            outcome.samples.append(sample)
            print(row(sample), flush=True)
    except BaseException:
        client.kill()
        raise
    client.wait(30)

    # Every client has left: the server must come back to where it started.
    t_end = time.monotonic()
    while True:
        settled = server_stats(server)
        back = (
            settled["webSockets"] == 0
            and settled["groups"] == 0
            and settled["groupMembers"] == 0
            and settled["topics"] == baseline["topics"]
            and settled["tasks"] <= baseline["tasks"] + TASK_SLACK
        )
        if back or time.monotonic() - t_end > SETTLE_TIMEOUT_S:
            break
        time.sleep(0.5)
    settled["rssMb"] = _mb(rss_bytes(pid))
    outcome.settled = settled
    outcome.settle_s = round(time.monotonic() - t_end, 1) if back else None
    outcome.verdict = verdict(outcome, args)


def verdict(outcome: Outcome, args: argparse.Namespace) -> dict[str, Any]:
    samples = outcome.samples
    final = outcome.client_final
    warmup = min(args.warmup, args.duration / 3)
    steady = [s for s in samples if s.t >= warmup] or samples[-1:]
    first, last = steady[0], steady[-1]
    growth = round(last.rss_mb - first.rss_mb, 1)
    minutes = (last.t - first.t) / 60
    slope = round(growth / minutes, 2) if minutes > 0 else None
    lost = final.get("lost", 0) + final.get("backwards", 0)
    failures = {
        "failedConnections": final.get("failed_conns", 0),
        "subscriptionErrors": final.get("sub_errors", 0),
        "closedByServer": final.get("server_closed", 0),
        "serverCloseCodes": final.get("server_close_codes", {}),
    }
    baseline_tasks = outcome.baseline["tasks"]
    end_tasks = outcome.settled["tasks"]
    checks = {
        "rss": growth <= args.max_growth_mb,
        "tasks": end_tasks <= baseline_tasks + TASK_SLACK,
        "freed": outcome.settle_s is not None,
        "lost": lost == 0,
        "failures": not any(
            failures[k] for k in ("failedConnections", "subscriptionErrors", "closedByServer")
        ),
    }
    return {
        "steadyFromS": first.t,
        "rssSteadyStartMb": first.rss_mb,
        "rssEndMb": last.rss_mb,
        "rssGrowthMb": growth,
        "rssGrowthMbPerMin": slope,
        "rssAfterMb": outcome.settled.get("rssMb"),
        "rssBaselineMb": outcome.baseline.get("rssMb"),
        "tasksBaseline": baseline_tasks,
        "tasksPeak": max((s.tasks for s in samples), default=None),
        "tasksAfter": end_tasks,
        "settleS": outcome.settle_s,
        "leftAfter": {
            k: outcome.settled.get(k) for k in ("webSockets", "groups", "groupMembers", "topics")
        },
        "connections": final.get("connects", 0),
        "messages": final.get("msgs", 0),
        "lostEvents": lost,
        "gaps": final.get("gaps", 0),
        "backwards": final.get("backwards", 0),
        "failures": failures,
        "checks": checks,
        "pass": all(checks.values()),
    }


COLUMNS = (
    ("t s", 6),
    ("open", 6),
    ("joined", 7),
    ("msgs/s", 8),
    ("lost", 5),
    ("fail", 5),
    ("ws", 6),
    ("members", 8),
    ("groups", 7),
    ("tasks", 6),
    ("RSS MB", 8),
    ("CPU %", 6),
)


def header() -> str:
    return " ".join(name.rjust(width) for name, width in COLUMNS)


def row(s: Sample) -> str:
    values = (
        f"{s.t:g}",
        s.client_open,
        s.connects,
        s.msgs_per_s,
        s.lost,
        s.failures,
        s.web_sockets,
        s.members,
        s.groups,
        s.tasks,
        f"{s.rss_mb:.1f}",
        s.cpu_percent,
    )
    return " ".join(str(v).rjust(width) for v, (_, width) in zip(values, COLUMNS, strict=True))


def table(samples: list[Sample]) -> str:
    """Every sample; ``joined``, ``lost`` and ``fail`` count what happened in its period."""
    return "\n".join([header(), *(row(s) for s in samples)])


def verdict_text(v: dict[str, Any]) -> str:
    ok = {True: "ok", False: "FAIL"}
    c = v["checks"]
    f = v["failures"]
    return "\n".join(
        [
            f"verdict: {'PASS' if v['pass'] else 'FAIL'}",
            f"  RSS {v['rssSteadyStartMb']} MB at {v['steadyFromS']:g} s -> {v['rssEndMb']} MB at "
            f"the end: {v['rssGrowthMb']:+} MB ({v['rssGrowthMbPerMin']} MB/min); baseline "
            f"{v['rssBaselineMb']} MB, after the clients left {v['rssAfterMb']} MB  "
            f"[{ok[c['rss']]}]",
            f"  tasks: {v['tasksBaseline']} before, {v['tasksPeak']} at the peak, "
            f"{v['tasksAfter']} after the clients left  [{ok[c['tasks']]}]",
            f"  freed: {v['leftAfter']} "
            + (f"within {v['settleS']} s" if v["settleS"] is not None else "NOT within 30 s")
            + f"  [{ok[c['freed']]}]",
            f"  events: {v['messages']} received over {v['connections']} connections; "
            f"{v['lostEvents']} lost ({v['gaps']} gaps, {v['backwards']} backwards)  "
            f"[{ok[c['lost']]}]",
            f"  failures: {f['failedConnections']} failed connections, {f['subscriptionErrors']} "
            f"subscription errors, {f['closedByServer']} closed by the server "
            f"{f['serverCloseCodes'] or ''}  [{ok[c['failures']]}]",
        ]
    )


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 1)


if __name__ == "__main__":
    raise SystemExit(main())
