"""The scenarios, the servers under test, and one measurement of one server in one scenario."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import statistics
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import httpx

from api.settings import ENVIRONMENT_VARIABLES
from bench import positions, resume
from bench.probe import Caller, Probe
from bench.processes import (
    BenchError,
    Client,
    Server,
    cpu_seconds,
    embedded_database_url,
    free_port,
    listen_overflows,
    own_database,
    peak_rss_bytes,
    rss_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping
    from pathlib import Path

Mode = Literal["stream", "idle", "storm", "resume"]
VarsMode = Literal["same", "distinct"]
Workload = Literal["prices", "positions", "resume", "book"]
PriceSource = Literal["feed", "publish"]
PRICE_SOURCES: tuple[PriceSource, ...] = ("feed", "publish")

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

PROBE_HZ = 5.0
"""positions scenarios: queries a second, and in feed mode publishPrice calls a second, that the
probe times while the load runs."""
PROBE_MARKET = "SOL-PERP"
"""feed mode: the market the probe publishes prices for, which no benchmark user holds."""
PROBE_QUERY = '{ positions(user: "user-0") { id } }'
MUTATIONS_PER_S = "1000000"
"""tradestream's per-caller mutation allowance in the benchmark (MUTATION_RATE_PER_S and
MUTATION_BURST; 5 a second by default): the set-up and the oracle are one caller each."""


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
    """stream: seconds measured; resume: seconds the clients stay away."""
    rate_hz: float | None = None
    """Events/s for this scenario; None: the run's --rate."""
    workload: Workload = "prices"
    """prices: every subscriber on priceUpdates(market:); positions: subscriber i on
    positions(user: "user-<i>"), user i holding a position created before the run; resume: see
    :mod:`bench.resume`."""


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
        Scenario(
            "positions",
            "stream",
            2000,
            300,
            "same",
            (TRADESTREAM, GRAPHQL_WS),
            "per-user streams: subscriber i on positions(user: user-<i>), one BTC-PERP position "
            "each, re-valued on every price; nothing shared between subscribers",
            workload="positions",
        ),
        Scenario(
            "positions-wide",
            "stream",
            10000,
            1000,
            "same",
            (TRADESTREAM, GRAPHQL_WS),
            "positions with five times the users at a tenth of the rate",
            workload="positions",
            rate_hz=2.0,
        ),
        Scenario(
            "book",
            "stream",
            2000,
            300,
            "same",
            (TRADESTREAM,),
            "order book: every subscriber on orderBook(market: BTC-PERP, depth: 50), the makers "
            "re-quoting at the rate; delivered deltas/s against the book changes published, and "
            "publish-to-receive latency",
            rate_hz=50.0,
            workload="book",
        ),
        Scenario(
            "resume-storm",
            "resume",
            5000,
            500,
            "same",
            (TRADESTREAM,),
            "N clients resume together with after: cursors from the time away: half each on "
            "positions(user: user-<i>), half on the same marketStats(BTC-PERP) and rounds; "
            "seconds until every one has caught up, events lost, history reads per distinct "
            "(topic, cursor)",
            duration_s=30.0,
            quick_duration_s=10.0,
            rate_hz=1.0,
            workload="resume",
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
    price_source: PriceSource = "feed"
    """positions scenarios, tradestream: the simulated feed, or the benchmark's own oracle
    calling publishPrice."""
    jwt_secret: str = field(default_factory=lambda: secrets.token_hex(32))
    """tradestream's JWT_SECRET: the benchmark signs its callers' tokens with it."""
    server_env: Mapping[str, str] = field(default_factory=dict)
    """tradestream settings on top of the scenario's (:mod:`bench.compression`:
    WS_PER_MESSAGE_DEFLATE)."""
    load_env: Mapping[str, str] = field(default_factory=dict)
    """The load client's environment on top of the scenario's (:mod:`bench.compression`:
    COMPRESS)."""

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
    receiving_conns: int | None = None
    """Subscribers that got at least one result."""
    price_source: str | None = None
    """positions scenarios, tradestream: feed or publish (the reference has its own timer)."""
    book_changes_per_s: float | None = None
    """book: the order book changes the server published a second while the load ran."""
    setup: dict[str, Any] | None = None
    """positions scenarios, tradestream: users, positions stored, BTC-PERP's price, seconds."""
    resume: dict[str, Any] | None = None
    """resume: the client's two lines, the changes made while away, the newest sequences' sum
    and the server's history reads during the storm (:func:`_resume_storm`)."""
    wire_bytes_per_msg: float | None = None
    """stream: bytes the load client read from its sockets while counting, per ``next``."""
    payload_bytes_per_msg: float | None = None
    """stream: the ``next`` messages' own bytes (decompressed), per message."""
    compressed_conns: int | None = None
    """stream and idle: sockets that negotiated permessage-deflate."""
    probes: list[dict[str, Any]] = field(default_factory=list)
    """positions scenarios, tradestream: each probe's CallStats during the measured seconds."""
    client: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def make_server(
    name: str,
    config: Config,
    rate_hz: float,
    tag: str,
    extra_env: Mapping[str, str] | None = None,
) -> Server:
    """``extra_env``: tradestream settings on top of the benchmark's."""
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
            **(extra_env or {}),
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


def client_env(
    server: str, scenario: Scenario, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("QUERY", "VARS", "FIELD", "INIT", "HOLD", "MARK_CLOCK")
    }
    env |= {
        "MODE": scenario.mode,
        "VARS_MODE": scenario.vars_mode,
        "VARS": json.dumps(VARIABLES),
        "FIELD": FIELD,
        "PER_CONN": "1",
        "HOLD": str(IDLE_HOLD_S),
    }
    if scenario.workload == "positions":
        env |= {
            "QUERY": positions.REFERENCE_SUBSCRIPTION,
            "VARS": positions.VARIABLES,
            "FIELD": "positions",
        }
        if server == TRADESTREAM:
            # PositionsUpdate.at is when the update was made, after it waited its turn: the
            # latency runs from the publication of the price the position is marked at.
            env |= {"QUERY": positions.SUBSCRIPTION, "MARK_CLOCK": positions.MARKET}
    elif scenario.workload == "book":
        env |= {"QUERY": BOOK_SUBSCRIPTION, "FIELD": "orderBook"}
    elif server == TRADESTREAM:
        env["QUERY"] = TRADESTREAM_QUERY
    return env | dict(extra or {})


def scenario_rate(scenario: Scenario, config: Config) -> float:
    if scenario.mode == "idle":
        return config.idle_rate_hz
    return config.rate_hz if scenario.rate_hz is None else scenario.rate_hz


def measure(scenario: Scenario, server_name: str, config: Config) -> Result:
    """Start the server, load it as the scenario says, stop it; failures land in ``error``."""
    n = scenario.quick_subscribers if config.quick else scenario.subscribers
    rate = scenario_rate(scenario, config)
    duration = scenario.quick_duration_s if config.quick else scenario.duration_s
    per_user = scenario.workload == "positions"
    own = scenario.workload in ("positions", "resume") and server_name == TRADESTREAM
    result = Result(
        scenario=scenario.name,
        server=server_name,
        label=LABELS[server_name],
        mode=scenario.mode,
        vars_mode=scenario.vars_mode,
        asked=n,
        rate_hz=rate,
        duration_s=duration if scenario.mode in ("stream", "resume") else None,
        price_source=config.price_source if per_user and server_name == TRADESTREAM else None,
    )
    tag = scenario.name
    try:
        with _database(config, own) as server_config:
            server = make_server(
                server_name,
                server_config,
                rate,
                tag,
                _server_env(scenario, config, rate) | dict(config.server_env),
            )
            try:
                server.start(timeout=120 if server_name == TRADESTREAM else 20)
                _load(scenario, server, server_config, result, duration)
            finally:
                server.stop()
    except (BenchError, OSError) as exc:
        result.error = str(exc)
    return result


@contextlib.contextmanager
def _database(config: Config, own: bool) -> Iterator[Config]:
    """The configuration a server runs with: a database of its own when ``own`` (the positions
    and resume scenarios store thousands of positions, which nothing else should see), else the
    run's."""
    if not own:
        yield config
        return
    with own_database(config.database_url, config.workdir, "bench") as (url, data_dir):
        yield dataclasses.replace(config, database_url=url, data_dir=data_dir)


def _server_env(scenario: Scenario, config: Config, rate: float) -> dict[str, str]:
    if scenario.workload == "prices":
        return {}
    env = {
        "JWT_SECRET": config.jwt_secret,
        "MUTATION_RATE_PER_S": MUTATIONS_PER_S,
        "MUTATION_BURST": MUTATIONS_PER_S,
    }
    if scenario.workload == "resume":
        return env | resume.SERVER_ENV
    if scenario.workload == "book":
        # The makers look twice as often as prices come, so each price moves the book once.
        return env | {"BOOK_QUOTE_HZ": f"{2 * rate:g}"}
    if config.price_source == "publish":
        env["SIMULATED_FEEDS"] = "false"
    return env


def _load(
    scenario: Scenario, server: Server, config: Config, result: Result, duration: float
) -> None:
    argv = [config.node, str(config.workdir / "load_client.mjs"), server.url, str(result.asked)]
    log = config.logs / f"{scenario.name}-{server.name}-client.log"
    log.unlink(missing_ok=True)
    if scenario.mode == "resume":
        _resume_storm(scenario, server, config, result, argv, log, duration)
        return
    if scenario.mode == "idle":
        rss_before = _settled_rss(server.pid)
        env = client_env(server.name, scenario, config.load_env)
        client = Client(argv, env, config.workdir, log, hold=True)
        try:
            _idle(server, client, result, rss_before)
        finally:
            client.close()
        return
    if scenario.mode == "stream":
        argv.append(f"{duration:g}")
        timeout = CONNECT_WINDOW_S + 2 + duration + 60
    else:
        timeout = 60 + 60
    if scenario.workload == "positions" and server.name == TRADESTREAM:
        _positions(scenario, server, config, result, argv, log, timeout)
        return
    env = client_env(server.name, scenario, config.load_env)
    # book: what the makers published is what a subscriber can be sent, so the offered rate is
    # that, not the nominal one (a price that did not move changes no level).
    book = scenario.workload == "book"
    http_url = f"http://127.0.0.1:{server.port}"
    if book:
        published, started = _book_sequence(http_url), time.monotonic()
    client = Client(argv, env, config.workdir, log, hold=False)
    try:
        _run(server, client, result, timeout)
    finally:
        client.close()
    if book:
        rate = (_book_sequence(http_url) - published) / (time.monotonic() - started)
        result.book_changes_per_s = round(rate, 1)
        result.offered_msgs_per_s = round(result.asked * rate)


BOOK_SUBSCRIPTION = (
    "subscription($m: String!) { orderBook(market: $m, depth: 50) { "
    "... on OrderBookSnapshot { sequence at } ... on OrderBookDelta { sequence at } } }"
)
"""Every delta carries when its change was made (``at``): the latency runs from there."""

_BOOK_SEQUENCE = '{ orderBook(market: "BTC-PERP", depth: 1) { sequence } }'


def _book_sequence(http_url: str) -> int:
    """Where BTC-PERP's book stands: its sequence grows by one per change of the book."""
    answer = httpx.post(f"{http_url}/graphql", json={"query": _BOOK_SEQUENCE}, timeout=30).json()
    book = (answer.get("data") or {}).get("orderBook")
    if book is None:
        raise BenchError(f"no order book for BTC-PERP: {answer}")
    sequence: int = book["sequence"]
    return sequence


def _positions(
    scenario: Scenario,
    server: Server,
    config: Config,
    result: Result,
    argv: list[str],
    log: Path,
    timeout: float,
) -> None:
    """tradestream's positions run: the users' positions first, then the load with the probe
    (and, with --price-source publish, the benchmark's oracle) alongside."""
    tokens = positions.Tokens.signed(config.jwt_secret)
    url = f"http://127.0.0.1:{server.port}/graphql"
    publish = config.price_source == "publish"
    setup, probe_price = asyncio.run(_set_up(url, tokens, result.asked, publish))
    result.setup = setup.summary()
    probe = Probe(url, _callers(tokens, setup.price, probe_price, result.rate_hz, publish))
    init = json.dumps({"authorization": f"Bearer {tokens.admin}"})
    env = client_env(TRADESTREAM, scenario, {"INIT": init})
    probe.start()
    line_at = None
    try:
        client = Client(argv, env, config.workdir, log, hold=False)
        line_at = _run(server, client, result, timeout)
    finally:
        seconds = result.client[0].get("seconds") if result.client else None
        # Only the calls sent while the client counted, not during its connect and warm-up.
        window = None if line_at is None or seconds is None else (line_at - seconds, line_at)
        stats = probe.stop(window)
    if probe.error is not None:
        raise BenchError(f"the probe failed: {probe.error!r}")
    result.probes = [dataclasses.asdict(s) for s in stats]


async def _set_up(
    url: str, tokens: positions.Tokens, users: int, publish: bool
) -> tuple[positions.SetUp, Decimal]:
    """The users' positions, and the price the feed-mode probe publishes for PROBE_MARKET."""
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            setup = await positions.create_positions(
                http, url, tokens, users, publish_if_missing=publish
            )
            probe_price = await positions.latest_price(http, url, tokens.admin, PROBE_MARKET)
    except httpx.HTTPError as exc:
        raise BenchError(f"the positions set-up failed: {exc!r}") from exc
    return setup, probe_price or Decimal(150)


def _callers(
    tokens: positions.Tokens, price: Decimal, probe_price: Decimal, rate: float, publish: bool
) -> list[Caller]:
    """publish: the oracle sends ``rate`` BTC-PERP prices a second (and its calls are the
    publishPrice probe); feed: the probe publishes PROBE_HZ prices a second for PROBE_MARKET.
    Both: PROBE_HZ queries a second."""
    if publish:
        oracle = Caller(
            "publishPrice",
            f"publishPrice({positions.MARKET}), the oracle",
            rate,
            lambda k: positions.publish_body(positions.MARKET, positions.oracle_price(price, k)),
            tokens.service,
        )
    else:
        body = positions.publish_body(PROBE_MARKET, probe_price)
        oracle = Caller(
            "publishPrice",
            f"publishPrice({PROBE_MARKET})",
            PROBE_HZ,
            lambda k: body,
            tokens.service,
        )
    query = Caller("query", PROBE_QUERY, PROBE_HZ, lambda k: {"query": PROBE_QUERY}, tokens.admin)
    return [oracle, query]


def _resume_storm(
    scenario: Scenario,
    server: Server,
    config: Config,
    result: Result,
    argv: list[str],
    log: Path,
    away_s: float,
) -> None:
    """tradestream's resume storm (:mod:`bench.resume`): the users' positions, the clients
    subscribed and dropped, ``away_s`` seconds of events, then every client back at once; the
    server's history reads are read just before the clients come back and once they are done."""
    tokens = positions.Tokens.signed(config.jwt_secret)
    url = f"http://127.0.0.1:{server.port}/graphql"
    users = resume.users(result.asked)
    setup, _ = asyncio.run(_set_up(url, tokens, users, publish=False))
    result.setup = setup.summary()
    database_url = config.database_url
    if database_url is None:
        assert server.pgdata is not None
        database_url = embedded_database_url(server.pgdata)
    init = json.dumps({"authorization": f"Bearer {tokens.admin}"})
    extra = {"INIT": init, "USERS": str(users), "MARKET": resume.MARKET}
    client = Client(argv, client_env(TRADESTREAM, scenario, extra), config.workdir, log, hold=True)
    try:
        dropped = client.read_line(CONNECT_WINDOW_S + 60 + result.asked / 100 * 0.02)
        t0 = time.monotonic()
        increases = asyncio.run(resume.while_away(url, tokens.service, setup.price, users, away_s))
        before = resume.read_metrics(url.removesuffix("/graphql"))
        newest = asyncio.run(resume.newest(database_url, users))
        away = time.monotonic() - t0
        client.send(newest)
        _run(server, client, result, 60 + 60)
        after = resume.read_metrics(url.removesuffix("/graphql"))
    finally:
        client.close()
    reads = resume.difference(before, after)
    issued = sum(n for key, n in reads.items() if key.endswith(" issued"))
    pairs = dropped.get("distinct_pairs") or 0
    result.resume = {
        "dropped": dropped,
        "resumed": result.client[-1] if result.client else {},
        "away_s": round(away, 1),
        "increases_stored": increases,
        "newest": {
            "marketStats": newest["marketStats"],
            "rounds": newest["rounds"],
            "positions_total": sum(newest["positions"]),
        },
        "history_reads": reads,
        "reads_issued": issued,
        "distinct_pairs": pairs,
        "reads_per_pair": round(issued / pairs, 3) if pairs else None,
    }


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / (1024 * 1024), 1)


def _run(server: Server, client: Client, result: Result, timeout: float) -> float:
    """stream, storm and resume's storm: one JSON line; the server's RSS is sampled while the
    client runs.
    Returns when (time.monotonic()) the line came."""
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
    line_at = time.monotonic()
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
    if result.mode == "resume":
        result.subscribers_ok = line.get("caught_up")
        result.seconds = line.get("seconds_to_all_caught_up")
    elif result.mode == "stream":
        result.subscribers_ok = line.get("subscribers_ok")
        result.msgs_per_s = line.get("msgs_per_s")
        result.offered_msgs_per_s = round(result.asked * result.rate_hz)
        result.p50_ms = line.get("p50_ms")
        result.p99_ms = line.get("p99_ms")
        result.receiving_conns = line.get("receiving_conns")
        result.wire_bytes_per_msg = line.get("wire_bytes_per_msg")
        result.payload_bytes_per_msg = line.get("payload_bytes_per_msg")
        result.compressed_conns = line.get("compressed_conns")
    else:
        result.subscribers_ok = line.get("subscribed")
        result.seconds = line.get("seconds_to_all_subscribed")
    return line_at


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
    result.compressed_conns = line.get("compressed_conns")
    rss_connected = round(statistics.median(samples)) if samples else None
    result.rss_before_mb = _mb(rss_before)
    result.rss_mb = _mb(rss_connected)
    result.rss_peak_mb = _mb(peak_rss_bytes(pid))
    ok = result.subscribers_ok or 0
    if rss_before is not None and rss_connected is not None and ok > 0:
        result.bytes_per_subscriber = round((rss_connected - rss_before) / ok)
