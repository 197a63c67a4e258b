"""Test helpers that go through the real thing: a server process, WebSocket, SSE and multipart
clients."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeAlias

import httpx
import orjson
import pytest
from httpx_sse import EventSource, aconnect_sse
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from api.auth import Role, mint
from api.settings import ENVIRONMENT_VARIABLES

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from aio_pika.abc import AbstractConnection

TEST_JWT_SECRET = "test-secret-with-at-least-32-bytes-of-entropy"
"""What test servers verify tokens with, unless a test configures another key."""

RECEIVE_TIMEOUT_S = 10.0
MAX_SKIPPED = 1000
"""Messages of other operations a wait may skip before it gives up."""

PRICE_FIELDS = "market price confidence publishedAt sequence"
PRICE_SUBSCRIPTION = (
    "subscription($m: String!) { priceUpdates(market: $m) { " + PRICE_FIELDS + " } }"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """``tradestream serve`` in a child process on a free port, with the given environment."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_path: Path,
        *,
        open_files: tuple[int, int] | None = None,
    ) -> None:
        """``open_files``: the (soft, hard) limit on open files the process starts with."""
        self.port = free_port()
        self.open_files = open_files
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ENVIRONMENT_VARIABLES},
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "LOG_LEVEL": "warning",
            "DATA_DIR": str(log_path.parent / "data"),
            "JWT_SECRET": TEST_JWT_SECRET,
            **env,
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Self:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "serve"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if self.open_files is None else self._limit_open_files,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def _limit_open_files(self) -> None:
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(self.url, json={"query": query, "variables": variables}, timeout=10)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body


class GraphQLWS:
    """A graphql-transport-ws client over a real WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        init: bool = True,
        subprotocols: tuple[str, ...] = ("graphql-transport-ws",),
        close_timeout: float = 10,
        token: str | None = None,
        compression: str | None = None,
    ) -> AsyncIterator[GraphQLWS]:
        """``compression="deflate"`` offers permessage-deflate, as websockets does by default."""
        protocols = [Subprotocol(p) for p in subprotocols]
        async with connect(
            url, subprotocols=protocols, compression=compression, close_timeout=close_timeout
        ) as ws:
            client = cls(ws)
            if init:
                payload = {} if token is None else {"authorization": f"Bearer {token}"}
                await client.send({"type": "connection_init", "payload": payload})
                assert (await client.receive()) == {"type": "connection_ack"}
            yield client

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else orjson.dumps(message).decode())

    async def receive(self, timeout: float = RECEIVE_TIMEOUT_S) -> dict[str, Any]:
        # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancellation that
        # arrives as the message does (it returns the message instead), so a reader cancelled
        # while messages stream in (tests/support.following) could read on for good.
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        message: dict[str, Any] = orjson.loads(raw)
        return message

    async def subscribe(self, id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        await self.send({"id": id, "type": "subscribe", "payload": payload})

    async def next_data(self, id: str, field: str) -> dict[str, Any]:
        """The data of the next ``next`` message for operation ``id`` (others are skipped)."""
        for _ in range(MAX_SKIPPED):
            message = await self.receive()
            if message.get("id") == id:
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message
                data: dict[str, Any] = message["payload"]["data"][field]
                return data
        raise AssertionError(f"no message for operation {id} among {MAX_SKIPPED}")

    async def closed(self, timeout: float = RECEIVE_TIMEOUT_S) -> tuple[int, str]:
        """Wait for the server to close the socket; return its close code and reason."""
        with contextlib.suppress(ConnectionClosed):
            for _ in range(MAX_SKIPPED):
                async with asyncio.timeout(timeout):
                    await self.ws.recv()
        assert self.ws.close_code is not None
        return self.ws.close_code, self.ws.close_reason or ""


async def price_sequences(client: GraphQLWS, id: str, count: int) -> list[dict[str, Any]]:
    return [await client.next_data(id, "priceUpdates") for _ in range(count)]


def parse_multipart(body: str, boundary: str = "graphql") -> list[dict[str, Any]]:
    """The JSON parts of a multipart/mixed subscription body (heartbeats included, as ``{}``)."""
    parts = []
    for chunk in body.split(f"--{boundary}"):
        head, _, content = chunk.partition("\r\n\r\n")
        if "application/json" in head and content.strip():
            parts.append(orjson.loads(content.strip()))
    return parts


def stats(server: ServerProcess) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(server.base_url + "/stats", timeout=5).json()
    return body


Samples: TypeAlias = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Metric samples by name and labels."""


def scrape(server: ServerProcess) -> Samples:
    """``GET /metrics``, parsed as Prometheus parses it (a malformed exposition raises)."""
    response = httpx.get(server.base_url + "/metrics", timeout=5)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the exposition has no such sample (a label never counted)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


SUITE_TOKEN_TTL_S = 6 * 3600.0
"""The lifetime of a token minted when a module is imported and used by tests all through the
run: longer than any run (CI allows 90 minutes), or a slow run's later tests fail as expired."""


def token(sub: str, role: str = "user", ttl_s: float = 600, secret: str = TEST_JWT_SECRET) -> str:
    """A token the test servers accept."""
    return mint(secret, sub=sub, role=Role(role), ttl=timedelta(seconds=ttl_s))


def price_sse(
    http: httpx.AsyncClient, server: ServerProcess, market: str, token: str | None = None
) -> contextlib.AbstractAsyncContextManager[EventSource]:
    """An SSE subscription to ``market``'s prices (with a bearer token, if given)."""
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    body = {"query": PRICE_SUBSCRIPTION, "variables": {"m": market}}
    return aconnect_sse(http, "POST", server.url, json=body, headers=headers)


@contextlib.asynccontextmanager
async def following(client: GraphQLWS, id: str) -> AsyncIterator[list[int]]:
    """Read ``client`` in the background, as a live client does (so its library answers the
    server's pings), keeping the price sequences of operation ``id``; fails if anything else
    than a result arrives."""
    sequences: list[int] = []

    async def read() -> None:
        while True:
            message = await client.receive(timeout=30)
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            if message["id"] == id:
                sequences.append(message["payload"]["data"]["priceUpdates"]["sequence"])

    task = asyncio.create_task(read())
    try:
        yield sequences
    finally:
        if task.done():
            task.result()  # the reader's failure
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def contiguous(sequences: list[int]) -> bool:
    return len(sequences) > 0 and sequences == list(range(sequences[0], sequences[-1] + 1))


def unavailable(reason: str) -> NoReturn:
    """Skip a test whose tool (Node, npm, a package) is missing here; with
    TRADESTREAM_REQUIRE_EXAMPLES=1, as ``.ci/run`` sets it, fail instead: CI must run it."""
    if os.environ.get("TRADESTREAM_REQUIRE_EXAMPLES") == "1":
        pytest.fail(f"{reason} (TRADESTREAM_REQUIRE_EXAMPLES=1)")
    pytest.skip(reason)


def installed_matches_lock(folder: Path) -> bool:
    """Whether ``folder``'s node_modules holds what its package-lock.json pins (npm writes what it
    installed to node_modules/.package-lock.json; optional packages for other platforms are left
    out)."""
    installed_path = folder / "node_modules" / ".package-lock.json"
    if not installed_path.exists():
        return False
    installed = json.loads(installed_path.read_text())["packages"]
    locked = json.loads((folder / "package-lock.json").read_text())["packages"]
    locked.pop("", None)  # the project itself
    if set(installed) - set(locked):
        return False
    return all(
        installed[name]["version"] == package["version"]
        if name in installed
        else package.get("optional", False)
        for name, package in locked.items()
    )


def node_packages(folder: Path) -> str:
    """The path of ``node``, once ``folder``'s packages are installed as its package-lock.json pins
    them (``npm ci`` if node_modules does not match). Without Node 20+ and npm, or when ``npm ci``
    fails (offline), :func:`unavailable`."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable(f"node and npm are not on PATH: {folder.name} needs Node 20+")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    if int(version.stdout.strip().lstrip("v").split(".")[0]) < 20:
        unavailable(f"{folder.name} needs Node 20+, not {version.stdout.strip()}")
    if not installed_matches_lock(folder):
        npm_ci = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=150,
        )
        if npm_ci.returncode != 0:
            unavailable(f"npm ci in {folder} failed (offline?):\n{npm_ci.stderr[-2000:]}")
    return node


@contextlib.asynccontextmanager
async def loop_watch(server: ServerProcess) -> AsyncIterator[dict[str, float]]:
    """While the body runs, a price subscriber and a /healthz poller stand by. On exit the
    subscriber has had two more prices, in order, and the dict holds the slowest /healthz
    answer in seconds: a request that held the server's event loop shows there."""
    worst = {"healthz_s": 0.0}

    async def poll(http: httpx.AsyncClient) -> None:
        while True:
            started = time.monotonic()
            assert (await http.get(server.base_url + "/healthz")).status_code == 200
            worst["healthz_s"] = max(worst["healthz_s"], time.monotonic() - started)
            await asyncio.sleep(0.02)

    async with (
        httpx.AsyncClient(timeout=30) as http,
        GraphQLWS.connect(server.ws_url) as client,
    ):
        await client.subscribe("b", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await client.next_data("b", "priceUpdates")
        async with following(client, "b") as sequences:
            poller = asyncio.create_task(poll(http))
            try:
                yield worst
                seen = len(sequences)
                for _ in range(1000):  # ten seconds at most
                    if len(sequences) >= seen + 2:
                        break
                    await asyncio.sleep(0.01)
            finally:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
            assert len(sequences) >= seen + 2
            # Latest value: a price may be skipped for a newer one, never repeated or reordered.
            assert sequences == sorted(set(sequences)), sequences


@contextlib.asynccontextmanager
async def loop_gaps() -> AsyncIterator[list[float]]:
    """While the body runs, a bystander task of this process takes every turn of its event loop
    it can; the list gets the seconds between two of its turns (a step that held the loop shows
    there). The collector is off meanwhile: the test process's heap (every test before this one)
    is not what is measured, and a full collection of it can take longer than the bound."""
    gaps: list[float] = []
    done = asyncio.Event()
    collecting = gc.isenabled()
    gc.collect()
    gc.disable()

    async def bystander() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    watcher = asyncio.create_task(bystander())
    try:
        yield gaps
    finally:
        done.set()
        await watcher
        if collecting:
            gc.enable()


async def delete_ingest_queues(broker: AbstractConnection, queue: str) -> None:
    """What a server consuming account snapshots from ``queue`` declares on the broker: the
    queue, its dead-letter queue and the dead-letter exchange."""
    channel = await broker.channel()
    for name in (queue, f"{queue}.dead"):
        await channel.queue_delete(name)
    await channel.exchange_delete(f"{queue}.dlx")
