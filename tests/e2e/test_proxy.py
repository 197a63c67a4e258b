"""The cluster of docker-compose.yml, run for real without Docker: Debian's nginx with
deploy/nginx.conf in front of two production-mode replicas on Redis, PostgreSQL and RabbitMQ.

Clients subscribe through the proxy over graphql-transport-ws, SSE and multipart to ``rounds``
(a stream feed the leader's round clock writes at a steady rate, every event kept in
``topic_history``). One replica is stopped with SIGTERM and started again; then the other is
killed with SIGKILL. Every client reconnects through the proxy, resumes ``after:`` its last cursor,
and ends up with every event exactly once, in order, as the history has them. Around it, with one
replica: the proxy answers 404 for /metrics and /stats, passes the client's Host (a browser's
same-origin WebSocket is let in) and Authorization, and gives up on a replica that does not
answer within its connect timeout.

The proxy's configuration is the shipped file with three things replaced, each checked to have
been there: the listen port, the resolver (Docker's DNS; its line takes the paths of a run
directory instead) and the upstream's ``server server:8000 resolve`` (one line per local replica,
its other parameters kept; ``resolve`` needs nginx 1.27.3, Debian 12 has 1.22).

nginx is Debian's package (``apt-get install nginx``): without it these tests are skipped, unless
TRADESTREAM_REQUIRE_NGINX=1 (``.ci/run`` sets it), which makes that a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import asyncpg
import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin, Subprotocol

from domain.topics import rounds_topic
from tests.conftest import isolated_database, isolated_server
from tests.support import ServerProcess, free_port, sample, scrape, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = ROOT / "deploy" / "nginx.conf"

ROUNDS = (
    "subscription($after: String) { rounds(after: $after) { __typename "
    "... on Round { number startsAt settledAt won cursor } "
    "... on StreamReset { reason cursor } } }"
)
ROUND_PERIOD_S = "0.25"
"""Two events a round (opened, settled): eight a second on the stream."""
TRANSPORTS = ("ws", "sse", "multipart")
CLIENTS_PER_TRANSPORT = 2
"""Connected one after the other, so that each replica holds one of each transport."""
RETRY_S = 0.2
"""How long a client waits before it connects again (graphql-ws and Apollo back off similarly)."""
WAIT_S = 30.0
"""The longest any one step of the scenario may take."""
MULTIPART_ACCEPT = "multipart/mixed;subscriptionSpec=1.0,application/json"


def nginx_binary() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        unavailable("nginx is not installed: apt-get install nginx (Debian's package)")
    return found


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("TRADESTREAM_REQUIRE_NGINX") == "1":
        pytest.fail(f"{reason} (TRADESTREAM_REQUIRE_NGINX=1)")
    pytest.skip(reason)


def replace_once(text: str, pattern: str, replacement: str | Callable[[re.Match[str]], str]) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"deploy/nginx.conf no longer has exactly one match for {pattern!r}"
    return new


def proxy_config(shipped: str, port: int, replicas: Sequence[int], run_dir: Path) -> str:
    """The shipped configuration, pointed at ``replicas`` and listening on ``port``."""
    text = replace_once(shipped, r"^(\s*)listen 8000;", rf"\g<1>listen 127.0.0.1:{port};")
    local_paths = " ".join(
        f"{directive} {run_dir / name};"
        for directive, name in [
            ("access_log", "access.log"),
            ("client_body_temp_path", "client_body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        ]
    )
    text = replace_once(text, r"^(\s*)resolver [^;\n]*;.*$", rf"\g<1>{local_paths}")

    def servers(match: re.Match[str]) -> str:
        indent, parameters = match.group(1), match.group(2)
        return "\n".join(f"{indent}server 127.0.0.1:{p}{parameters};" for p in replicas)

    return replace_once(text, r"^(\s*)server server:8000 resolve([^;\n]*);", servers)


class Proxy:
    """nginx in the foreground, a child of the test, everything it writes under ``run_dir``, in
    front of the replicas on ``upstreams`` (ports of 127.0.0.1)."""

    def __init__(self, upstreams: Sequence[int], run_dir: Path) -> None:
        self.port = free_port()
        self.run_dir = run_dir
        self.config_path = run_dir / "nginx.conf"
        self.config_path.write_text(
            proxy_config(SHIPPED_CONFIG.read_text(), self.port, upstreams, run_dir)
        )
        self.error_log = run_dir / "error.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def start(self, binary: str, timeout: float = 10.0) -> None:
        directives = (
            f"daemon off; pid {self.run_dir / 'nginx.pid'}; error_log {self.error_log} info;"
        )
        command = [binary, "-p", str(self.run_dir), "-c", str(self.config_path)]
        command += ["-e", str(self.error_log), "-g", directives]
        with (self.run_dir / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(command, stdout=stderr, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"nginx not answering after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # fast shutdown: open connections are closed
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.run_dir / "stderr.log", self.error_log)
            if path.exists()
        )


def sequence(cursor: str) -> int:
    return int(cursor.split(".")[0])


@dataclasses.dataclass(eq=False)
class Follower:
    """A client that follows ``rounds`` through the proxy on one transport, as a resuming client
    does: whenever its stream ends, it connects again and subscribes ``after:`` its last cursor."""

    name: str
    transport: str
    bearer: str
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    subscriptions: int = 0
    """Streams the proxy opened for it (answered 200 or upgraded)."""
    endings: list[str] = dataclasses.field(default_factory=list)
    """How each stream ended: ``close 1012`` (a WebSocket's close code), ``error SHUTTING_DOWN``
    (an error result's code), ``dropped`` (an HTTP response cut short), ..."""
    refused: list[int] = dataclasses.field(default_factory=list)
    """HTTP statuses of attempts the proxy turned away (502: no replica to take it)."""
    received_at: float = 0.0
    """When the newest event came (``time.monotonic()``)."""

    def state(self) -> str:
        return (
            f"{self.name}: {len(self.events)} events to {self.last} (the newest "
            f"{time.monotonic() - self.received_at:.1f} s ago), {self.subscriptions} "
            f"subscriptions, endings {self.endings}, refused {self.refused}"
        )

    def started(self) -> bool:
        """Its first event (the current round) and one more came."""
        return len(self.events) >= 2

    @property
    def cursor(self) -> str | None:
        return self.events[-1]["cursor"] if self.events else None

    @property
    def last(self) -> int:
        return sequence(self.events[-1]["cursor"]) if self.events else -1

    @property
    def variables(self) -> dict[str, Any]:
        return {"after": self.cursor}

    def take(self, payload: dict[str, Any]) -> bool:
        """One result; False when it ends the stream (an error result)."""
        if payload.get("errors"):
            codes = sorted({e.get("extensions", {}).get("code", "?") for e in payload["errors"]})
            self.endings.append("error " + ",".join(codes))
            return False
        self.events.append(payload["data"]["rounds"])
        self.received_at = time.monotonic()
        return True

    async def run(self, proxy: Proxy) -> None:
        session = {"ws": self.ws, "sse": self.sse, "multipart": self.multipart}[self.transport]
        while True:
            try:
                await session(proxy)
            except (OSError, httpx.HTTPError) as exc:  # cut short, or refused at connect
                self.endings.append(f"dropped {type(exc).__name__}")
            except InvalidStatus as exc:
                self.refused.append(exc.response.status_code)
            await asyncio.sleep(RETRY_S)

    async def ws(self, proxy: Proxy) -> None:
        protocols = [Subprotocol("graphql-transport-ws")]
        async with connect(
            proxy.ws_url, subprotocols=protocols, compression=None, open_timeout=5, close_timeout=2
        ) as ws:
            try:
                init = {"authorization": f"Bearer {self.bearer}"}
                await ws.send(orjson.dumps({"type": "connection_init", "payload": init}).decode())
                assert orjson.loads(await ws.recv()) == {"type": "connection_ack"}
                payload = {"query": ROUNDS, "variables": self.variables}
                await ws.send(
                    orjson.dumps({"id": "r", "type": "subscribe", "payload": payload}).decode()
                )
                self.subscriptions += 1
                while True:
                    message = orjson.loads(await ws.recv())
                    if message["type"] == "next" and not self.take(message["payload"]):
                        continue  # the server sends "complete" next
                    if message["type"] == "error":
                        self.take({"errors": message["payload"]})
                    if message["type"] in ("error", "complete"):
                        break
                # The subscription is over: wait for the server to close (1012 on SIGTERM).
                await asyncio.wait_for(ws.recv(), 10)
                self.endings.append("socket left open")
            except ConnectionClosed:
                self.endings.append(f"close {ws.close_code}")

    async def sse(self, proxy: Proxy) -> None:
        body = {"query": ROUNDS, "variables": self.variables}
        headers = {"authorization": f"Bearer {self.bearer}"}
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(5, read=30)) as http,
            aconnect_sse(http, "POST", proxy.url, json=body, headers=headers) as source,
        ):
            if source.response.status_code != 200:
                self.refused.append(source.response.status_code)
                return
            self.subscriptions += 1
            async for event in source.aiter_sse():
                if event.event == "next":
                    self.take(orjson.loads(event.data))
                elif event.event == "complete":
                    self.endings.append("complete")
                    return
            self.endings.append("ended without complete")

    async def multipart(self, proxy: Proxy) -> None:
        body = {"query": ROUNDS, "variables": self.variables}
        headers = {"authorization": f"Bearer {self.bearer}", "accept": MULTIPART_ACCEPT}
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(5, read=30)) as http,
            http.stream("POST", proxy.url, json=body, headers=headers) as response,
        ):
            if response.status_code != 200:
                self.refused.append(response.status_code)
                return
            self.subscriptions += 1
            pending = ""
            async for text in response.aiter_text():
                *complete, pending = (pending + text).split("--graphql")
                for part in complete:
                    head, _, content = part.partition("\r\n\r\n")
                    if "application/json" not in head or not content.strip():
                        continue
                    parsed = orjson.loads(content)
                    if parsed.get("payload"):  # {} is a heartbeat
                        self.take(parsed["payload"])
                    elif parsed.get("errors"):  # a transport error, no payload
                        self.take({"errors": parsed["errors"]})
            self.endings.append("complete" if pending.startswith("--") else "ended early")


async def until(
    condition: Callable[[], bool], running: dict[Follower, asyncio.Task[None]], what: str
) -> None:
    """Wait (at most WAIT_S) for ``condition``; a follower that crashed fails the test at once."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        for task in running.values():
            if task.done():
                task.result()
                raise AssertionError(f"a follower stopped while waiting for {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {states(running)}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def following(
    followers: Sequence[Follower], proxy: Proxy
) -> AsyncIterator[dict[Follower, asyncio.Task[None]]]:
    running: dict[Follower, asyncio.Task[None]] = {}
    try:
        for follower in followers:  # one at a time, so least_conn spreads them evenly
            running[follower] = asyncio.create_task(follower.run(proxy))
            await until(follower.started, running, f"{follower.name} to start")
        yield running
    finally:
        for task in running.values():
            task.cancel()
        for task in running.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def history(database_url: str) -> dict[int, dict[str, Any]]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT sequence, payload FROM topic_history WHERE topic = $1 ORDER BY sequence",
            rounds_topic(),
        )
    finally:
        await connection.close()
    return {row["sequence"]: orjson.loads(row["payload"]) for row in rows}


def as_stored(event: dict[str, Any]) -> tuple[int, datetime, datetime | None, bool | None]:
    """What a received Round and a stored one must agree on."""
    settled = event["settledAt"]
    return (
        event["number"],
        datetime.fromisoformat(event["startsAt"]),
        None if settled is None else datetime.fromisoformat(settled),
        event["won"],
    )


def connections(server: ServerProcess) -> dict[str, float]:
    samples = scrape(server)
    return {t: sample(samples, "tradestream_connections", transport=t) for t in TRANSPORTS}


def states(followers: Iterable[Follower]) -> str:
    return "\n".join(f.state() for f in followers)


def since(followers: Sequence[Follower], marks: dict[str, int]) -> list[Follower]:
    """The followers that subscribed again since ``marks`` (their subscription counts)."""
    return [f for f in followers if f.subscriptions > marks[f.name]]


def ended_as_expected(follower: Follower, endings: list[str], signal_name: str) -> bool:
    """Whether ``endings`` are how a follower's streams end when its replica gets
    ``signal_name``."""
    if signal_name == "SIGKILL":
        dropped = "close 1006" if follower.transport == "ws" else "dropped RemoteProtocolError"
        return endings == [dropped]
    # SIGTERM: the stream ends with SHUTTING_DOWN (a WebSocket is then closed with 1012). The
    # error is sent as the hub is drained, the close up to one uvicorn tick (0.1 s) later: on a
    # busy machine the close has been seen to win. A client that connects again in that tick
    # lands on the same replica, still listening, and is refused the same way.
    if follower.transport == "ws":
        shapes = [["error SHUTTING_DOWN", "close 1012"], ["close 1012"]]
    else:
        shapes = [["error SHUTTING_DOWN", "complete"]]
    while endings:
        shape = next((s for s in shapes if endings[: len(s)] == s), None)
        if shape is None:
            return False
        endings = endings[len(shape) :]
    return True


async def test_clients_resume_through_the_proxy_across_a_stop_and_a_kill(
    database_url: str, redis_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    binary = nginx_binary()
    async with isolated_database(database_url) as url:
        env = {
            "DATABASE_URL": url,
            "BROADCAST_URL": redis_url,
            "RABBITMQ_URL": rabbitmq_url,
            "RABBITMQ_QUEUE": f"socket_data_test_{uuid.uuid4().hex[:8]}",
            "ENVIRONMENT": "production",  # as docker-compose.yml runs it (JWT_SECRET set)
            "MARTINGALE_ROUND_PERIOD_S": ROUND_PERIOD_S,
            "LEADER_POLL_S": "0.5",
        }
        first = ServerProcess(env, tmp_path / "first.log").start()
        second = ServerProcess(env, tmp_path / "second.log").start()
        replicas = [first, second]
        run_dir = tmp_path / "nginx"
        run_dir.mkdir()
        proxy = Proxy([r.port for r in replicas], run_dir)
        followers = [
            Follower(f"{transport}-{n}", transport, token(f"{transport}-{n}"))
            for transport in TRANSPORTS
            for n in range(CLIENTS_PER_TRANSPORT)
        ]
        try:
            proxy.start(binary)
            async with following(followers, proxy) as running:
                # Every transport has a client on the replica about to be stopped.
                assert connections(first) == dict.fromkeys(TRANSPORTS, 1.0)
                assert connections(second) == dict.fromkeys(TRANSPORTS, 1.0)

                # 1. SIGTERM: the first replica ends its streams (WebSockets close with 1012);
                # its clients come back through the proxy, to the second.
                marks = {f.name: f.subscriptions for f in followers}
                at_stop = max(f.last for f in followers)
                assert first.process is not None
                first.process.send_signal(signal.SIGTERM)
                await asyncio.to_thread(first.process.wait, WAIT_S)
                # uvicorn shuts down, then exits by the signal it caught, as an unhandled one would.
                assert first.process.returncode == -signal.SIGTERM, first.log()
                await until(
                    lambda: all(f.last >= at_stop + 8 for f in followers), running, "the resume"
                )
                moved = since(followers, marks)
                assert sorted(f.transport for f in moved) == sorted(TRANSPORTS), states(moved)
                for follower in moved:
                    assert ended_as_expected(follower, follower.endings, "SIGTERM"), states(moved)

                # 2. Started again, the cluster is two; then the second replica, which every client
                # is on now, is killed at once. nginx saw the first one refuse connections seconds
                # ago and has sent it nothing since: with nginx's default max_fails=1 it would
                # still count it as down, and answer 502 "no live upstreams".
                first.log_path = tmp_path / "first-again.log"
                await asyncio.to_thread(first.start)
                assert connections(second) == dict.fromkeys(TRANSPORTS, 2.0)
                marks = {f.name: f.subscriptions for f in followers}
                endings = {f.name: len(f.endings) for f in followers}
                refused = sum(len(f.refused) for f in followers)
                at_kill = max(f.last for f in followers)
                assert second.process is not None
                second.process.kill()
                await asyncio.to_thread(second.process.wait, WAIT_S)
                await until(
                    lambda: all(f.last >= at_kill + 8 for f in followers), running, "the resume"
                )
                assert since(followers, marks) == followers
                for follower in followers:
                    ended = follower.endings[endings[follower.name] :]
                    assert ended_as_expected(follower, ended, "SIGKILL"), states(followers)
                # nginx tried the dead replica (it holds the fewest connections), and passed
                # every client on to the other one: none was refused.
                assert sum(len(f.refused) for f in followers) == refused, states(followers)
                assert any(
                    "connect() failed (111: Connection refused)" in line
                    and f"127.0.0.1:{second.port}" in line
                    for line in proxy.log().splitlines()
                )
                assert "no live upstreams" not in proxy.log()
                assert connections(first) == dict.fromkeys(TRANSPORTS, 2.0)

                # Until every client has what was stored by now.
                await asyncio.sleep(1)
                stored = await history(url)
                end = max(stored)
                await until(lambda: all(f.last >= end for f in followers), running, "the end")
        finally:
            proxy.stop()
            for replica in replicas:
                replica.stop()

    # The history itself: numbered without a hole, each round opened then settled, in turn.
    numbers = sorted(stored)
    assert numbers == list(range(numbers[0], end + 1))
    rounds = [as_stored(stored[n]) for n in numbers]
    for (number, _, settled, _), (next_number, _, next_settled, _) in itertools.pairwise(rounds):
        if settled is None:
            assert (next_number, next_settled is None) == (number, False), rounds
        else:
            assert (next_number, next_settled) == (number + 1, None), rounds
    for follower in followers:
        snapshot, *events = follower.events
        start = sequence(snapshot["cursor"])
        received = [
            (sequence(e["cursor"]), as_stored(e)) for e in events if sequence(e["cursor"]) <= end
        ]
        expected = [(n, as_stored(stored[n])) for n in range(start + 1, end + 1)]
        assert received == expected, follower.name
        assert as_stored(snapshot) == as_stored(stored[start]), follower.name
        assert {e["__typename"] for e in follower.events} == {"Round"}
        assert len({e["cursor"].split(".")[1] for e in follower.events}) == 1  # one epoch


@pytest.fixture(scope="module")
def proxied(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Proxy, ServerProcess]]:
    """The proxy in front of one production-mode replica."""
    binary = nginx_binary()
    run_dir = tmp_path_factory.mktemp("nginx")
    env = {"ENVIRONMENT": "production"}
    with isolated_server(database_url, env, run_dir / "server.log") as replica:
        proxy = Proxy([replica.port], run_dir)
        proxy.start(binary)
        try:
            yield proxy, replica
        finally:
            proxy.stop()


def raw_get(port: int, target: str) -> int:
    """The status of ``GET target`` sent as written (no client library normalizing it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        connection.sendall(request.encode())
        status_line = connection.makefile("rb").readline().decode()
    return int(status_line.split()[1])


@pytest.mark.parametrize(
    "target",
    [
        "/metrics",
        "/stats",
        "/metrics/",
        "/stats?format=json",
        "//metrics",
        "/%73tats",
        "/./metrics",
        "/graphql/../stats",
    ],
)
def test_the_proxy_answers_404_for_metrics_and_stats(
    proxied: tuple[Proxy, ServerProcess], target: str
) -> None:
    proxy, _ = proxied
    assert raw_get(proxy.port, target) == 404


def test_metrics_and_stats_answer_on_the_replica_and_the_api_through_the_proxy(
    proxied: tuple[Proxy, ServerProcess],
) -> None:
    proxy, replica = proxied
    metrics = httpx.get(f"{replica.base_url}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "tradestream_connections" in metrics.text
    assert httpx.get(f"{replica.base_url}/stats", timeout=5).json()["leader"] is True
    for path in ("/healthz", "/readyz"):  # for load balancers and orchestrators
        assert httpx.get(proxy.base_url + path, timeout=5).status_code == 200
    query = {"query": "{ markets { id } }"}
    answer = httpx.post(proxy.url, json=query, timeout=5).json()
    assert {m["id"] for m in answer["data"]["markets"]} >= {"BTC-PERP"}
    # The Authorization header reaches the replica, which verifies it (production: JWT_SECRET).
    for bearer, status in [(token("ada"), 200), (token("ada", secret="another" * 8), 401)]:
        headers = {"authorization": f"Bearer {bearer}"}
        assert httpx.post(proxy.url, json=query, headers=headers, timeout=5).status_code == status


async def test_a_page_served_through_the_proxy_may_open_a_websocket_and_others_may_not(
    proxied: tuple[Proxy, ServerProcess],
) -> None:
    """The server lets a browser's WebSocket in when its Origin is the Host it was sent to: the
    proxy must pass the Host the browser sent, port included (``$http_host``, not ``$host``).
    No Sec-Fetch-Site header here, as from a browser that sends none."""
    proxy, _ = proxied
    protocols = [Subprotocol("graphql-transport-ws")]
    async with connect(
        proxy.ws_url, subprotocols=protocols, origin=Origin(proxy.base_url), open_timeout=5
    ) as ws:
        await ws.send(orjson.dumps({"type": "connection_init", "payload": {}}).decode())
        assert orjson.loads(await ws.recv()) == {"type": "connection_ack"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(
            proxy.ws_url,
            subprotocols=protocols,
            origin=Origin("http://evil.example"),
            open_timeout=5,
        ):
            pass
    assert refused.value.response.status_code == 403


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port whose connections are never accepted, as a replica whose host stopped answering:
    its accept queue is full, so the kernel drops further SYNs and a connect hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port: int = listener.getsockname()[1]
        queued: list[socket.socket] = []
        try:
            for _ in range(8):
                probe = socket.socket()
                probe.settimeout(0.3)
                try:
                    probe.connect(("127.0.0.1", port))
                except TimeoutError:
                    probe.close()
                    break  # full: this SYN was dropped
                queued.append(probe)
            else:
                raise AssertionError("the accept queue never filled")
            yield port
        finally:
            for connection in queued:
                connection.close()


def test_a_replica_that_does_not_answer_costs_a_request_the_connect_timeout_only(
    proxied: tuple[Proxy, ServerProcess], tmp_path: Path
) -> None:
    """nginx's default proxy_connect_timeout is 60 s; deploy/nginx.conf gives up after 2 s and
    passes the request to the next replica."""
    _, replica = proxied
    with silent_listener() as silent:
        proxy = Proxy([silent, replica.port], tmp_path)
        proxy.start(nginx_binary())
        try:
            took = []
            for _ in range(2):  # least_conn takes turns between the two (both idle)
                started = time.monotonic()
                response = httpx.get(f"{proxy.base_url}/readyz", timeout=10)
                took.append(time.monotonic() - started)
                assert response.status_code == 200
        finally:
            proxy.stop()
    assert max(took) < 4, took
    assert max(took) > 1.5, took  # one of them waited on the silent one first
    assert "upstream timed out (110: Connection timed out) while connecting" in proxy.log()
