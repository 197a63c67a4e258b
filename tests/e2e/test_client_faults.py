"""Clients that misbehave at the socket level: one that stops reading, many that vanish without
closing, a whole client process that is killed or frozen. Each is noticed and freed, within a
bound, and costs the clients that behave nothing."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import struct
import subprocess
import sys
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import httpx
import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from tests.support import (
    PRICE_SUBSCRIPTION,
    GraphQLWS,
    ServerProcess,
    contiguous,
    following,
    token,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

POSITIONS = (
    "subscription { positions { __typename ... on PositionsUpdate "
    "{ positions { id market size unrealizedPnl healthFactor liquidationPrice } at } } }"
)
"""The demo user's positions: a stream (never conflated), one result per price tick."""
SMALL_RCVBUF = 4096
"""The slow client's socket receive buffer: its TCP window fills after a few KB."""
RSS_SLACK = 32 * 1024 * 1024
"""How much a server's RSS may grow during a fault test: allocator noise, not a backlog."""
FREED_WITHIN_S = 15.0
TASK_SLACK = 2
"""Tasks the server may hold above its baseline once the clients are freed (a request in
flight, a worker's pass)."""
SLOW_OPERATIONS = 100
"""Operations of the slow client: with 50 results a second each, enough to fill the kernel's
socket buffers (up to 4 MiB on the server's side) within a few seconds."""


def rss(server: ServerProcess) -> int:
    """VmRSS of the server process, in bytes."""
    assert server.process is not None
    with open(f"/proc/{server.process.pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def stats(http: httpx.AsyncClient, server: ServerProcess) -> dict[str, Any]:
    body: dict[str, Any] = (await http.get(server.base_url + "/stats")).json()
    return body


async def until(
    probe: Callable[[], Any], condition: Callable[[Any], bool], timeout: float
) -> tuple[Any, float]:
    """Poll ``probe()`` until ``condition`` holds on its value; return the value and the seconds
    it took. Fails with the last value seen after ``timeout``."""
    t0 = time.monotonic()
    while True:
        value = await probe()
        if condition(value):
            return value, time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"not within {timeout:g} s; last seen: {value}"
        await asyncio.sleep(0.2)


def freed(now: dict[str, Any], baseline: dict[str, Any]) -> bool:
    """Whether /stats shows the same subscriptions as at the baseline: no member, group or hub
    subscription of a client that is gone is left, and no more tasks than a moment's work (a
    connection's last tasks may end a moment after it is uncounted)."""
    return all(now[k] == baseline[k] for k in ("groups", "groupMembers", "topics")) and (
        now["tasks"] <= baseline["tasks"] + TASK_SLACK
    )


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed: {code} {reason!r}")
        self.code = code
        self.reason = reason


class RawWS:
    """A graphql-transport-ws client on a raw socket: it reads only when the test calls
    ``receive``, and its receive buffer can be made small, so not reading fills its TCP window.
    It answers the server's pings only while it reads."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self._loop = asyncio.get_running_loop()
        self._texts: list[bytes] = []

    @classmethod
    async def open(cls, url: str, *, rcvbuf: int | None = None, init: bool = True) -> Self:
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf is not None:  # before connect: it sets the window scale offered
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        protocol = ClientProtocol(
            parse_uri(url), subprotocols=[Subprotocol("graphql-transport-ws")], max_size=None
        )
        client = cls(sock, protocol)
        protocol.send_request(protocol.connect())
        await client._flush()
        while not any(isinstance(e, Response) for e in await client._read_events(10)):
            pass
        assert protocol.handshake_exc is None, protocol.handshake_exc
        if init:
            await client.send({"type": "connection_init", "payload": {}})
            assert await client.receive() == {"type": "connection_ack"}
        return client

    async def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(orjson.dumps(message))
        await self._flush()

    async def subscribe(self, id: str, query: str, variables: dict[str, Any] | None = None) -> None:
        payload: dict[str, Any] = {"query": query}
        if variables is not None:
            payload["variables"] = variables
        await self.send({"id": id, "type": "subscribe", "payload": payload})

    async def subscribe_all(self, messages: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Subscribe ``(id, query, variables)`` each, written to the socket at once: the server
        reads them together, so identical ones join one shared execution."""
        for id, query, variables in messages:
            payload = {"query": query, "variables": variables}
            message = {"id": id, "type": "subscribe", "payload": payload}
            self.protocol.send_text(orjson.dumps(message))
        await self._flush()

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:
        """The next text message; ``Closed`` once the server closed (or dropped) the socket."""
        while not self._texts:
            await self._read_events(timeout)
        message: dict[str, Any] = orjson.loads(self._texts.pop(0))
        return message

    async def until_closed(self, timeout: float = 30.0) -> tuple[int | None, str, int]:
        """Read everything until the socket closes: the close code (None if it was dropped with
        no close frame), its reason, and how many messages came before it."""
        count = 0
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                await self.receive(deadline - time.monotonic())
                count += 1
        except Closed as closed:
            return closed.code, closed.reason, count
        raise AssertionError(f"still open after {timeout:g} s")

    def reset(self) -> None:
        """Vanish: close with SO_LINGER 0, so the kernel sends RST and no close frame or FIN."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    async def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                await self._loop.sock_sendall(self.sock, chunk)

    async def _read_events(self, timeout: float) -> list[Any]:
        try:
            data = await asyncio.wait_for(self._loop.sock_recv(self.sock, 65536), timeout)
        except ConnectionResetError:
            data = b""
        if not data:
            self.protocol.receive_eof()
            close = self.protocol.close_rcvd
            raise Closed(
                None if close is None else close.code, "" if close is None else close.reason
            )
        self.protocol.receive_data(data)
        events = self.protocol.events_received()
        for event in events:
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._texts.append(bytes(event.data))
        with contextlib.suppress(OSError):
            await self._flush()  # pongs, and the answer to a close frame
        if self._texts:
            return events
        close = self.protocol.close_rcvd
        if close is not None:
            raise Closed(close.code, close.reason)
        return events


@contextlib.asynccontextmanager
async def started(env: dict[str, str], database_url: str, log: Any) -> AsyncIterator[ServerProcess]:
    server = await asyncio.to_thread(
        ServerProcess({"DATABASE_URL": database_url, **env}, log).start
    )
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_a_stream_reader_that_falls_behind_by_time_is_closed_before_its_queue_fills(
    isolated_database_url: str, tmp_path: Any
) -> None:
    """SUBSCRIBER_MAX_LAG_S bounds a stream reader by time as well as size: with a send queue
    far larger than a few seconds of events, a reader that stops reading is closed with 4008
    once a stream event has waited that long, not minutes later when the bytes run out; the
    fast reader beside it keeps every event."""
    max_lag_s = 1.0
    env = {
        "PRICE_FEED_HZ": "50",
        "SEND_QUEUE_MAX_BYTES": str(256 * 1024 * 1024),
        "SUBSCRIBER_MAX_LAG_S": str(max_lag_s),
    }
    demo = token("demo")
    async with (
        started(env, isolated_database_url, tmp_path / "server.log") as server,
        GraphQLWS.connect(server.ws_url, token=demo, close_timeout=1) as fast,
    ):
        await fast.subscribe("p", POSITIONS)
        await fast.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        while len((await fast.next_data("p", "positions")).get("positions", [])) < 3:
            pass
        slow = await RawWS.open(server.ws_url, rcvbuf=SMALL_RCVBUF, init=False)
        await slow.send({"type": "connection_init", "payload": {"authorization": f"Bearer {demo}"}})
        assert await slow.receive() == {"type": "connection_ack"}
        for i in range(SLOW_OPERATIONS):
            await slow.subscribe(f"s{i}", POSITIONS)
        t0 = time.monotonic()
        prices: list[int] = []
        closed: list[tuple[int | None, str, int]] = []

        async def slow_reader() -> None:
            await asyncio.sleep(5)  # reads nothing for 5 s, then everything until the close
            closed.append(await slow.until_closed())

        reader = asyncio.create_task(slow_reader())
        while not reader.done():
            message = await fast.receive()
            if message.get("id") == "btc":
                prices.append(message["payload"]["data"]["priceUpdates"]["sequence"])
        await reader
        slow.close()
        last = await fast.next_data("btc", "priceUpdates")

    [(code, reason, _)] = closed
    assert code == 4008, (code, reason)
    assert reason == f"slow consumer: a stream event waited more than {max_lag_s:g} s to be sent"
    assert prices == list(range(prices[0], prices[0] + len(prices))), "the fast client lost prices"
    assert last["sequence"] > prices[-1]
    assert time.monotonic() - t0 < 30


async def test_a_stream_reader_that_stops_reading_is_closed_with_4008_and_others_keep_up(
    isolated_database_url: str, tmp_path: Any
) -> None:
    """The demo user's positions are a stream: results wait in order, never conflated. A reader
    whose TCP window is full makes them pile up to SEND_QUEUE_MAX_BYTES, then it is closed with
    4008; a reader of the same group and of the prices keeps every event meanwhile."""
    queue_max = 64 * 1024
    env = {"PRICE_FEED_HZ": "50", "SEND_QUEUE_MAX_BYTES": str(queue_max)}
    demo = token("demo")
    async with (
        started(env, isolated_database_url, tmp_path / "server.log") as server,
        httpx.AsyncClient(timeout=5) as http,
        GraphQLWS.connect(server.ws_url, token=demo, close_timeout=1) as fast,
    ):
        await fast.subscribe("p", POSITIONS)
        await fast.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        # A positions stream follows the prices of the markets its user holds: the baseline
        # is taken once the simulator has opened the demo's three.
        while len((await fast.next_data("p", "positions")).get("positions", [])) < 3:
            pass
        baseline = await stats(http, server)
        rss_before = rss(server)

        slow = await RawWS.open(server.ws_url, rcvbuf=SMALL_RCVBUF, init=False)
        await slow.send({"type": "connection_init", "payload": {"authorization": f"Bearer {demo}"}})
        assert await slow.receive() == {"type": "connection_ack"}
        for i in range(SLOW_OPERATIONS):
            await slow.subscribe(f"s{i}", POSITIONS)
        # The slow client reads nothing from here on, while the fast one reads everything.
        prices: list[int] = []
        positions = 0
        pending: list[int] = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0:
            message = await fast.receive()
            assert message["type"] == "next", message
            assert "errors" not in message["payload"], message
            if message["id"] == "btc":
                prices.append(message["payload"]["data"]["priceUpdates"]["sequence"])
            else:
                positions += 1
            if len(prices) % 10 == 0:
                pending.append((await stats(http, server))["maxPendingBytes"])
        elapsed = time.monotonic() - t0
        rss_during = rss(server)

        code, reason, read = await slow.until_closed()
        slow.close()
        after, freed_s = await until(
            lambda: stats(http, server),
            lambda s: s["webSockets"] == 1 and freed(s, baseline),
            FREED_WITHIN_S,
        )
        # The fast client still receives, with no gap, after the slow one is gone.
        last = await fast.next_data("btc", "priceUpdates")

    assert code == 4008, (code, reason, read)
    assert reason == f"slow consumer: more than {queue_max} bytes waiting to be sent"
    assert prices == list(range(prices[0], prices[0] + len(prices))), "the fast client lost prices"
    assert len(prices) >= 0.7 * 50 * elapsed, f"{len(prices)} prices in {elapsed:.1f} s at 50/s"
    assert positions >= 0.7 * 50 * elapsed, f"{positions} positions updates in {elapsed:.1f} s"
    assert last["sequence"] > prices[-1]
    assert max(pending) <= queue_max + 16 * 1024, pending  # one result past the bound at most
    assert after["topics"] == baseline["topics"]
    assert after["groups"] == baseline["groups"]
    assert after["pendingBytes"] == 0
    assert rss_during - rss_before < RSS_SLACK
    assert freed_s < FREED_WITHIN_S


BOOK = """subscription($m: String!, $d: Int!) {
  orderBook(market: $m, depth: $d) {
    __typename
    ... on OrderBookSnapshot { sequence bids { price size } asks { price size } }
    ... on OrderBookDelta { previous sequence changes { side price size } }
  }
}"""
BOOK_OPERATIONS = 100
"""Operations of the slow book reader (a socket's most), one shared execution: enough deltas to
fill the kernel's socket buffers within seconds."""


class Book:
    """A client's copy of the order book, from its snapshot and the deltas after it, each of
    which must follow the last; and the book as of each of the last ``keep`` sequences it saw."""

    def __init__(self, keep: int) -> None:
        self.sequence = -1
        self.levels: dict[tuple[str, str], Decimal] = {}
        self.jumps: list[int] = []
        """How far each message after the first moved the sequence: how many of the book's
        changes it holds."""
        self.keep = keep
        self.states: dict[int, dict[tuple[str, str], Decimal]] = {}

    def take(self, item: dict[str, Any]) -> None:
        if self.sequence >= 0:
            self.jumps.append(item["sequence"] - self.sequence)
        if item["__typename"] == "OrderBookSnapshot":
            self.levels = {
                (side, str(Decimal(level["price"]))): Decimal(level["size"])
                for side, key in (("BID", "bids"), ("ASK", "asks"))
                for level in item[key]
            }
        else:
            assert item["__typename"] == "OrderBookDelta", item
            assert item["previous"] == self.sequence, (item["previous"], self.sequence)
            for change in item["changes"]:
                level = (change["side"], str(Decimal(change["price"])))
                if Decimal(change["size"]):
                    self.levels[level] = Decimal(change["size"])
                else:
                    self.levels.pop(level, None)
        self.sequence = item["sequence"]
        self.states[self.sequence] = dict(self.levels)
        if len(self.states) > self.keep:
            del self.states[next(iter(self.states))]


async def test_a_book_reader_that_falls_behind_gets_each_operation_s_deltas_merged_and_stays(
    isolated_database_url: str, tmp_path: Any
) -> None:
    """The order book is a stream, yet a book message waiting on a socket that does not read
    takes in the deltas after it, each level at its newest size, and a snapshot replaces it
    (per-socket conflation): a slow reader of a shared execution holds one message per
    operation, not a backlog, so it is neither closed
    for its bytes (SEND_QUEUE_MAX_BYTES) nor for its lag (SUBSCRIBER_MAX_LAG_S); when it reads
    again, each operation's deltas chain with no gap to the very book a fast reader holds at the
    same sequence, and the fast reader got every change meanwhile."""
    # The default bound: a snapshot of 50 levels a side for each of 100 operations fits, and
    # what waits per operation is never more than one message.
    queue_max = 1024 * 1024
    env = {
        "PRICE_FEED_HZ": "20",
        "BOOK_QUOTE_HZ": "20",
        "SEND_QUEUE_MAX_BYTES": str(queue_max),
        "SUBSCRIBER_MAX_LAG_S": "1",
    }
    variables = {"m": "BTC-PERP", "d": 50}
    async with (
        started(env, isolated_database_url, tmp_path / "server.log") as server,
        httpx.AsyncClient(timeout=5) as http,
        GraphQLWS.connect(server.ws_url, close_timeout=1) as fast,
    ):
        await fast.subscribe("b", BOOK, variables)
        fast_book = Book(keep=100_000)
        fast_book.take(await fast.next_data("b", "orderBook"))
        baseline = await stats(http, server)

        slow = await RawWS.open(server.ws_url, rcvbuf=SMALL_RCVBUF)
        await slow.subscribe_all([(f"s{i}", BOOK, variables) for i in range(BOOK_OPERATIONS)])
        members = baseline["groupMembers"] + BOOK_OPERATIONS
        shared, _ = await until(
            lambda: stats(http, server), lambda s: s["groupMembers"] == members, 10
        )
        # The slow client reads nothing for a while, the fast one everything.
        t0 = time.monotonic()
        pending = []
        while time.monotonic() - t0 < 6.0:
            fast_book.take(await fast.next_data("b", "orderBook"))
            pending.append((await stats(http, server))["maxPendingBytes"])
        behind = await stats(http, server)

        # It reads again (Closed is raised if it was closed) until every operation has caught
        # up with where the fast reader was.
        books = {f"s{i}": Book(keep=50) for i in range(BOOK_OPERATIONS)}
        target = fast_book.sequence
        t0 = time.monotonic()
        while min(book.sequence for book in books.values()) < target:
            assert time.monotonic() - t0 < 30, "the slow reader did not catch up"
            message = await slow.receive()
            assert message["type"] == "next", message
            books[message["id"]].take(message["payload"]["data"]["orderBook"])
        slow.close()

    assert shared["groups"] - baseline["groups"] < BOOK_OPERATIONS / 10, (baseline, shared)
    assert behind["conflated"] > BOOK_OPERATIONS, behind  # waiting messages took later ones in
    assert max(pending) <= queue_max, max(pending)
    for id, book in books.items():
        assert max(book.jumps) > 20, (id, sorted(book.jumps)[-5:])  # many changes as one
        # The newest book it held that the fast reader held too (each shared execution may
        # merge what waited for it, so either may have skipped a sequence the other has).
        common = max(set(book.states) & set(fast_book.states))
        assert book.states[common] == fast_book.states[common], (id, common)


async def test_a_price_reader_that_stops_reading_is_conflated_then_dropped_by_the_keepalive(
    isolated_database_url: str, tmp_path: Any
) -> None:
    """Latest-value results never pile up, so a reader that stops is not closed as slow: it
    holds one waiting result per operation. It stops answering pings too, so the keepalive
    closes it, and the socket is dropped even though what was written to it is never read."""
    env = {"PRICE_FEED_HZ": "50", "WS_PING_INTERVAL_S": "2", "WS_PING_TIMEOUT_S": "2"}
    async with (
        started(env, isolated_database_url, tmp_path / "server.log") as server,
        httpx.AsyncClient(timeout=5) as http,
        GraphQLWS.connect(server.ws_url, close_timeout=1) as fast,
    ):
        await fast.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await fast.next_data("btc", "priceUpdates")
        async with following(fast, "btc") as prices:
            baseline = await stats(http, server)
            rss_before = rss(server)
            slow = await RawWS.open(server.ws_url, rcvbuf=SMALL_RCVBUF)
            for i in range(SLOW_OPERATIONS):
                await slow.subscribe(str(i), PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
            # It reads nothing from here on.
            loaded, _ = await until(
                lambda: stats(http, server), lambda s: s["conflated"] > 0, FREED_WITHIN_S
            )
            rss_during = rss(server)
            after, dropped_s = await until(
                lambda: stats(http, server),
                lambda s: s["webSockets"] == 1 and freed(s, baseline),
                FREED_WITHIN_S,
            )
            count = len(prices)
            await until(lambda: asyncio.sleep(0.1, len(prices)), lambda n: n >= count + 10, 5)
        code, _, _ = await slow.until_closed()
        slow.close()

    assert loaded["webSockets"] == 2
    assert loaded["groupMembers"] == baseline["groupMembers"] + SLOW_OPERATIONS
    assert loaded["maxPendingBytes"] < SLOW_OPERATIONS * 300  # one result per operation
    assert contiguous(prices), "the fast client lost prices"
    assert code in (1011, None)  # the keepalive's close frame, if it got past the backlog
    assert after["pendingBytes"] == 0
    assert after["tasks"] <= baseline["tasks"] + TASK_SLACK, (baseline["tasks"], after["tasks"])
    assert dropped_s < 2 + 2 + 5, dropped_s  # ping interval and timeout, and the close's grace
    assert rss_during - rss_before < RSS_SLACK


async def test_a_hundred_clients_that_vanish_with_a_reset_are_freed(
    isolated_database_url: str, tmp_path: Any
) -> None:
    async with (
        started({"PRICE_FEED_HZ": "20"}, isolated_database_url, tmp_path / "server.log") as server,
        httpx.AsyncClient(timeout=5) as http,
        GraphQLWS.connect(server.ws_url, close_timeout=1) as fast,
    ):
        await fast.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await fast.next_data("btc", "priceUpdates")
        baseline = await stats(http, server)
        rss_before = rss(server)

        vanishing = []
        for i in range(100):
            client = await RawWS.open(server.ws_url)
            market = ("BTC-PERP", "ETH-PERP", "SOL-PERP")[i % 3]
            await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": market})
            # and one execution of its own (an undeclared variable makes its key unique)
            await client.subscribe("2", PRICE_SUBSCRIPTION, {"m": market, "n": i})
            vanishing.append(client)
        for client in vanishing:  # both subscriptions live (in either order: one is shared)
            live: set[str] = set()
            for _ in range(50):
                message = await client.receive()
                assert message["type"] == "next", message
                live.add(message["id"])
                if live == {"1", "2"}:
                    break
            assert live == {"1", "2"}
        loaded = await stats(http, server)
        for client in vanishing:
            client.reset()
        after, freed_s = await until(
            lambda: stats(http, server),
            # Tasks too: a connection's last tasks may end a moment after it is uncounted.
            lambda s: (
                s["webSockets"] == 1
                and s["groupMembers"] == baseline["groupMembers"]
                and s["tasks"] <= baseline["tasks"] + TASK_SLACK
            ),
            FREED_WITHIN_S,
        )
        prices = [(await fast.next_data("btc", "priceUpdates"))["sequence"] for _ in range(20)]
        rss_after = rss(server)

    assert loaded["webSockets"] == 101
    assert loaded["groupMembers"] == baseline["groupMembers"] + 200
    assert loaded["groups"] >= baseline["groups"] + 100
    assert after["topics"] == baseline["topics"]
    assert after["groups"] == baseline["groups"]
    assert after["tasks"] <= baseline["tasks"] + TASK_SLACK, (baseline["tasks"], after["tasks"])
    assert prices == list(range(prices[0], prices[0] + 20))
    assert rss_after - rss_before < RSS_SLACK
    assert freed_s < FREED_WITHIN_S


CLIENT_PROCESS = """
import asyncio, json, sys
from websockets.asyncio.client import connect

async def main(url, n):
    sockets = []
    for i in range(n):
        ws = await connect(url, subprotocols=["graphql-transport-ws"], compression=None,
                           ping_interval=None)
        await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": "subscription { priceUpdates(market: \\"ETH-PERP\\") { sequence } }"}}))
        assert json.loads(await ws.recv())["type"] == "next"
        sockets.append(ws)
    print("ready", flush=True)
    await asyncio.sleep(120)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def client_process(server: ServerProcess, n: int) -> subprocess.Popen[bytes]:
    """A Python process holding ``n`` subscribed WebSockets; it prints ``ready`` when it does."""
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-c", CLIENT_PROCESS, server.ws_url, str(n)],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
    assert line == b"ready\n", line
    return process


async def test_a_killed_client_process_and_a_frozen_one_are_freed(
    isolated_database_url: str, tmp_path: Any
) -> None:
    """SIGKILL: the kernel closes the client's sockets, and the server notices at once.
    SIGSTOP: the sockets stay open and the kernel keeps acknowledging, but nothing answers the
    server's pings; the keepalive frees them after WS_PING_INTERVAL_S + WS_PING_TIMEOUT_S."""
    env = {"PRICE_FEED_HZ": "10", "WS_PING_INTERVAL_S": "2", "WS_PING_TIMEOUT_S": "2"}
    async with (
        started(env, isolated_database_url, tmp_path / "server.log") as server,
        httpx.AsyncClient(timeout=5) as http,
        GraphQLWS.connect(server.ws_url, close_timeout=1) as fast,
    ):
        await fast.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await fast.next_data("btc", "priceUpdates")
        outcomes = {}
        async with following(fast, "btc") as prices:
            baseline = await stats(http, server)
            for how in (signal.SIGKILL, signal.SIGSTOP):
                process = await client_process(server, 50)
                try:
                    loaded = await stats(http, server)
                    assert loaded["webSockets"] == 51
                    assert loaded["groupMembers"] == baseline["groupMembers"] + 50
                    process.send_signal(how)
                    after, seconds = await until(
                        lambda: stats(http, server),
                        lambda s: s["webSockets"] == 1 and freed(s, baseline),
                        FREED_WITHIN_S,
                    )
                    outcomes[how.name] = (seconds, after)
                finally:
                    process.kill()
                    process.wait(10)
                    assert process.stdout is not None
                    process.stdout.close()
            count = len(prices)
            await until(lambda: asyncio.sleep(0.1, len(prices)), lambda n: n >= count + 5, 5)

    assert outcomes["SIGKILL"][0] < 3, outcomes
    assert 2 <= outcomes["SIGSTOP"][0] < 2 + 2 + 5, outcomes
    for _, after in outcomes.values():
        assert after["tasks"] <= baseline["tasks"] + TASK_SLACK, (baseline["tasks"], after["tasks"])
    assert contiguous(prices), "the fast client lost prices"
