"""The scenarios, the servers under test, and one measurement of one server in one scenario."""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from api.settings import ENVIRONMENT_VARIABLES
from bench.processes import (
    BenchError,
    Client,
    Server,
    cpu_seconds,
    free_port,
    listen_overflows,
    peak_rss_bytes,
    rss_bytes,
)

if TYPE_CHECKING:
    from pathlib import Path

Mode = Literal["stream", "idle", "storm"]
VarsMode = Literal["same", "distinct"]

TRADESTREAM = "tradestream"
GRAPHQL_WS = "graphql-ws"
RAW = "raw"
SERVERS = (TRADESTREAM, GRAPHQL_WS, RAW)
LABELS = {
    TRADESTREAM: "tradestream",
    GRAPHQL_WS: "graphql-ws reference",
    RAW: "raw floor",
}

TRADESTREAM_QUERY = (
    "subscription($m: String!) { priceUpdates(market: $m) { market price confidence publishedAt } }"
)
"""The peers use the load client's default document, the same fields with ``ts`` (seconds)."""
FIELD = "priceUpdates"
VARIABLES = {"m": "BTC-PERP"}

CONNECT_WINDOW_S = 30
"""The load client gives each socket this long to be acknowledged."""
IDLE_HOLD_S = 120
IDLE_SETTLE_S = 2.0
IDLE_SAMPLES = 3


@dataclass(frozen=True)
class Scenario:
    name: str
    mode: Mode
    subscribers: int
    quick_subscribers: int
    vars_mode: VarsMode
    servers: tuple[str, ...]
    summary: str
    duration_s: float = 10.0
    quick_duration_s: float = 5.0


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "hot",
            "stream",
            3000,
            500,
            "same",
            SERVERS,
            "one hot topic: every subscriber on BTC-PERP with the same variables; "
            "delivered msgs/s and publish-to-receive latency",
        ),
        Scenario(
            "distinct",
            "stream",
            2000,
            300,
            "distinct",
            (TRADESTREAM, GRAPHQL_WS),
            "the same topic, but subscriber i also sends an undeclared variable n=i, so no server "
            "can share work between subscribers",
        ),
        Scenario(
            "idle",
            "idle",
            10000,
            1000,
            "same",
            SERVERS,
            "memory per subscribed connection: server RSS before and while N are subscribed "
            "(events at the idle rate)",
        ),
        Scenario(
            "storm",
            "storm",
            5000,
            500,
            "same",
            SERVERS,
            "reconnect storm: N sockets opened at once; seconds until each has its first event",
        ),
    )
}


@dataclass(frozen=True)
class Config:
    project: Path
    workdir: Path
    logs: Path
    node: str
    rate_hz: float
    idle_rate_hz: float
    quick: bool
    database_url: str | None
    data_dir: Path | None
    """DATA_DIR for tradestream's embedded PostgreSQL (when no DATABASE_URL is set)."""

    @property
    def tradestream(self) -> Path:
        return self.project / ".venv" / "bin" / "tradestream"


@dataclass
class Result:
    scenario: str
    server: str
    label: str
    mode: Mode
    vars_mode: VarsMode
    asked: int
    rate_hz: float
    duration_s: float | None
    subscribers_ok: int | None = None
    failed_conns: int | None = None
    sub_errors: int | None = None
    msgs_per_s: float | None = None
    offered_msgs_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    rss_mb: float | None = None
    """stream and storm: the server's RSS at the end of the run, its sockets still open; idle: RSS
    while the N are connected."""
    rss_peak_mb: float | None = None
    rss_before_mb: float | None = None
    bytes_per_subscriber: float | None = None
    seconds: float | None = None
    listen_overflows: int | None = None
    """Connections the kernel dropped meanwhile because a listen queue was full (machine-wide)."""
    server_cpu_s: float | None = None
    wall_s: float | None = None
    client: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def make_server(name: str, config: Config, rate_hz: float, tag: str) -> Server:
    port = free_port()
    log = config.logs / f"{tag}-{name}.log"
    log.unlink(missing_ok=True)
    if name == TRADESTREAM:
        if not config.tradestream.is_file():
            raise BenchError(
                f"{config.tradestream} not found: install the project first (make run or "
                "python -m venv .venv && .venv/bin/pip install -e .)"
            )
        env = {
            k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES
        }  # passed on below, as needed
        env |= {
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "PRICE_FEED_HZ": f"{rate_hz:g}",
            "LOG_LEVEL": "warning",
            "BROADCAST_URL": "memory://",
            # The load client is one address: the per-client cap would refuse it.
            "MAX_CONNECTIONS_PER_CLIENT": "1000000",
        }
        pgdata = None
        if config.database_url:
            env["DATABASE_URL"] = config.database_url
        else:
            assert config.data_dir is not None
            env["DATA_DIR"] = str(config.data_dir)
            pgdata = config.data_dir / "postgres"
        return Server(
            name,
            [str(config.tradestream), "serve"],
            env,
            config.workdir,
            log,
            port,
            ready_path="/readyz",
            pgdata=pgdata,
        )
    script = {GRAPHQL_WS: "node_graphql_ws_server.mjs", RAW: "node_raw_broadcast.mjs"}[name]
    env = dict(os.environ) | {"PORT": str(port), "RATE": f"{rate_hz:g}"}
    return Server(
        name,
        [config.node, str(config.workdir / script)],
        env,
        config.workdir,
        log,
        port,
        ready_path=None,
        stop_timeout=10,
    )


def client_env(server: str, mode: Mode, vars_mode: VarsMode) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("QUERY", "VARS", "FIELD", "INIT", "HOLD")
    }
    env |= {
        "MODE": mode,
        "VARS_MODE": vars_mode,
        "VARS": json.dumps(VARIABLES),
        "FIELD": FIELD,
        "PER_CONN": "1",
        "HOLD": str(IDLE_HOLD_S),
    }
    if server == TRADESTREAM:
        env["QUERY"] = TRADESTREAM_QUERY
    return env


def measure(scenario: Scenario, server_name: str, config: Config) -> Result:
    """Start the server, load it as the scenario says, stop it; failures land in ``error``."""
    n = scenario.quick_subscribers if config.quick else scenario.subscribers
    rate = config.idle_rate_hz if scenario.mode == "idle" else config.rate_hz
    duration = scenario.quick_duration_s if config.quick else scenario.duration_s
    result = Result(
        scenario=scenario.name,
        server=server_name,
        label=LABELS[server_name],
        mode=scenario.mode,
        vars_mode=scenario.vars_mode,
        asked=n,
        rate_hz=rate,
        duration_s=duration if scenario.mode == "stream" else None,
    )
    tag = scenario.name
    try:
        server = make_server(server_name, config, rate, tag)
    except (BenchError, OSError) as exc:
        result.error = str(exc)
        return result
    try:
        server.start(timeout=120 if server_name == TRADESTREAM else 20)
        argv = [config.node, str(config.workdir / "load_client.mjs"), server.url, str(n)]
        env = client_env(server_name, scenario.mode, scenario.vars_mode)
        log = config.logs / f"{tag}-{server_name}-client.log"
        log.unlink(missing_ok=True)
        if scenario.mode == "idle":
            rss_before = _settled_rss(server.pid)
            client = Client(argv, env, config.workdir, log, hold=True)
            _idle(server, client, result, rss_before)
        else:
            if scenario.mode == "stream":
                argv.append(f"{duration:g}")
                timeout = CONNECT_WINDOW_S + 2 + duration + 60
            else:
                timeout = 60 + 60
            _run(server, Client(argv, env, config.workdir, log, hold=False), result, timeout)
    except (BenchError, OSError) as exc:
        result.error = str(exc)
    finally:
        server.stop()
    return result


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / (1024 * 1024), 1)


def _run(server: Server, client: Client, result: Result, timeout: float) -> None:
    """stream and storm: one JSON line; the server's RSS is sampled while the client runs."""
    pid = server.pid
    samples: list[int] = []

    def sample() -> None:
        rss = rss_bytes(pid)
        if rss is not None:
            samples.append(rss)

    cpu0, t0, drops0 = cpu_seconds(pid), time.monotonic(), listen_overflows()
    try:
        line = client.read_line(timeout, on_tick=sample)
    except BaseException:
        client.kill()
        raise
    client.wait(15)
    cpu1, t1, drops1 = cpu_seconds(pid), time.monotonic(), listen_overflows()
    if drops0 is not None and drops1 is not None:
        result.listen_overflows = drops1 - drops0
    result.client = client.lines
    result.rss_mb = _mb(samples[-1] if samples else rss_bytes(pid))
    result.rss_peak_mb = _mb(peak_rss_bytes(pid))
    if cpu0 is not None and cpu1 is not None:
        result.server_cpu_s = round(cpu1 - cpu0, 2)
    result.wall_s = round(t1 - t0, 2)
    result.failed_conns = line.get("failed_conns")
    result.sub_errors = line.get("sub_errors")
    if result.mode == "stream":
        result.subscribers_ok = line.get("subscribers_ok")
        result.msgs_per_s = line.get("msgs_per_s")
        result.offered_msgs_per_s = round(result.asked * result.rate_hz)
        result.p50_ms = line.get("p50_ms")
        result.p99_ms = line.get("p99_ms")
    else:
        result.subscribers_ok = line.get("subscribed")
        result.seconds = line.get("seconds_to_all_subscribed")


def _settled_rss(pid: int) -> int | None:
    """The server's RSS once it has been ready and unloaded for a moment."""
    time.sleep(1.0)
    return rss_bytes(pid)


def _idle(server: Server, client: Client, result: Result, rss_before: int | None) -> None:
    """Wait until the client has its N subscribed, read the server's RSS a few times while they
    stay connected, then let the client go."""
    pid = server.pid
    timeout = CONNECT_WINDOW_S + 3 + result.asked / 100 * 0.02 + 60
    try:
        line = client.read_line(timeout)
        time.sleep(IDLE_SETTLE_S)
        samples = []
        for i in range(IDLE_SAMPLES):
            if i:
                time.sleep(1.0)
            rss = rss_bytes(pid)
            if rss is not None:
                samples.append(rss)
        client.release()
        client.read_line(30)
    except BaseException:
        client.kill()
        raise
    client.wait(15)
    result.client = client.lines
    result.subscribers_ok = line.get("subscribers_ok")
    result.failed_conns = line.get("failed_conns")
    result.sub_errors = line.get("sub_errors")
    rss_connected = round(statistics.median(samples)) if samples else None
    result.rss_before_mb = _mb(rss_before)
    result.rss_mb = _mb(rss_connected)
    result.rss_peak_mb = _mb(peak_rss_bytes(pid))
    ok = result.subscribers_ok or 0
    if rss_before is not None and rss_connected is not None and ok > 0:
        result.bytes_per_subscriber = round((rss_connected - rss_before) / ok)
