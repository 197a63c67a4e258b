"""permessage-deflate without server context takeover (WS_PER_MESSAGE_DEFLATE): negotiated by the
clients that offer it (websockets, Node's ws, Chromium), a shared result compressed once and read
the same on every socket of its group, today's bytes for a client that offers nothing, and an
offer the websockets library cannot accept answered as it answers it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from api.streaming.connection import text_frame
from tests.support import (
    PRICE_SUBSCRIPTION,
    GraphQLWS,
    ServerProcess,
    node_packages,
    price_sequences,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from playwright.async_api import Browser

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "js"
MARKET = "BTC-PERP"
COUNT = 8
"""Prices each client reads (at 10 a second)."""


@pytest.fixture(scope="module")
def deflate_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    server = ServerProcess(
        {"DATABASE_URL": database_url, "PRICE_FEED_HZ": "10", "WS_PER_MESSAGE_DEFLATE": "1"},
        tmp_path_factory.mktemp("deflate") / "server.log",
    ).start()
    yield server
    server.stop()


class RawClient:
    """A WebSocket client that shows each frame as it came (RSV1, the bytes), offering the
    ``Sec-WebSocket-Extensions`` it is given, decompressing as RFC 7692 says (no context
    takeover on the server's side, as negotiated)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.decoder = PerMessageDeflate(True, True, 15, 15)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls, server: ServerProcess, extensions: str | None
    ) -> AsyncIterator[RawClient]:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        client = cls(reader, writer)
        try:
            await client._handshake(server.port, extensions)
            yield client
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _handshake(self, port: int, extensions: str | None) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /graphql HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: graphql-transport-ws",
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        status, *fields = head.decode("latin-1").split("\r\n")
        self.status = int(status.split()[1])
        for field in filter(None, fields):
            name, _, value = field.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    async def send(self, message: dict[str, Any]) -> None:
        payload = orjson.dumps(message)
        assert len(payload) < 65536
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        if len(payload) < 126:
            header = bytes((0x81, 0x80 | len(payload)))
        else:
            header = bytes((0x81, 0x80 | 126)) + len(payload).to_bytes(2)
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def frame(self) -> tuple[bytes, Frame]:
        """The next frame: its bytes as sent, and as read (decompressed)."""
        head = await asyncio.wait_for(self.reader.readexactly(2), 10)
        n = head[1] & 0x7F
        extra = b""
        if n == 126:
            extra = await self.reader.readexactly(2)
        elif n == 127:
            extra = await self.reader.readexactly(8)
        if extra:
            n = int.from_bytes(extra)
        data = await self.reader.readexactly(n)
        raw = head + extra + data
        frame = Frame(Opcode(head[0] & 0x0F), data, rsv1=bool(head[0] & 0x40))
        return raw, self.decoder.decode(frame)

    async def message(self) -> tuple[bytes, bool, dict[str, Any]]:
        """The next data frame's bytes, whether it was compressed, and its message."""
        while True:
            raw, frame = await self.frame()
            if frame.opcode is Opcode.TEXT:
                return raw, bool(raw[0] & 0x40), orjson.loads(frame.data)

    async def init(self) -> None:
        await self.send({"type": "connection_init"})
        _, _, ack = await self.message()
        assert ack == {"type": "connection_ack"}

    async def subscribe(self, id: str) -> None:
        await self.send(
            {
                "id": id,
                "type": "subscribe",
                "payload": {"query": PRICE_SUBSCRIPTION, "variables": {"m": MARKET}},
            }
        )

    async def prices(self, count: int) -> list[tuple[bytes, bool, dict[str, Any]]]:
        return [await self.message() for _ in range(count)]


def increasing(sequences: list[int]) -> bool:
    """Each price after the one before: a latest-value feed may skip, never repeat or reorder."""
    return all(a < b for a, b in itertools.pairwise(sequences))


def by_sequence(messages: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {m["payload"]["data"]["priceUpdates"]["sequence"]: m["payload"] for m in messages}


async def test_a_websockets_client_negotiates_it_and_reads_every_price(
    deflate_server: ServerProcess,
) -> None:
    async with GraphQLWS.connect(deflate_server.ws_url, compression="deflate") as client:
        assert client.ws.response is not None
        offer = client.ws.response.headers["Sec-WebSocket-Extensions"]
        assert offer.startswith("permessage-deflate")
        assert "server_no_context_takeover" in offer
        await client.subscribe("1", PRICE_SUBSCRIPTION, {"m": MARKET})
        prices = await price_sequences(client, "1", COUNT)
    assert {p["market"] for p in prices} == {MARKET}
    assert increasing([p["sequence"] for p in prices])


async def test_one_group_reads_the_same_json_on_compressed_and_uncompressed_sockets(
    deflate_server: ServerProcess,
) -> None:
    async with (
        RawClient.connect(deflate_server, "permessage-deflate") as first,
        RawClient.connect(deflate_server, "permessage-deflate; client_max_window_bits") as second,
        RawClient.connect(deflate_server, None) as plain,
        GraphQLWS.connect(deflate_server.ws_url, compression="deflate") as library,
    ):
        assert "permessage-deflate" in first.headers["sec-websocket-extensions"]
        assert "sec-websocket-extensions" not in plain.headers
        for raw in (first, second, plain):
            await raw.init()
        # Two ids (a prefix of each) on the compressed sockets, in one group with the others.
        await first.subscribe("1")
        await second.subscribe("a-much-longer-operation-id")
        await plain.subscribe("1")
        await library.subscribe("1", PRICE_SUBSCRIPTION, {"m": MARKET})
        read = await asyncio.gather(first.prices(COUNT), second.prices(COUNT), plain.prices(COUNT))
        library_read = [await library.receive() for _ in range(COUNT)]

    (first_read, second_read, plain_read) = read
    assert all(compressed for _, compressed, _ in first_read + second_read)
    assert not any(compressed for _, compressed, _ in plain_read)
    # The uncompressed socket gets today's bytes: the message, framed as it always was.
    for frame, _, message in plain_read:
        assert frame == text_frame(orjson.dumps(message))
    assert {m["id"] for _, _, m in second_read} == {"a-much-longer-operation-id"}
    payloads = [
        by_sequence([m for _, _, m in first_read]),
        by_sequence([m for _, _, m in second_read]),
        by_sequence([m for _, _, m in plain_read]),
        by_sequence(library_read),
    ]
    common = set.intersection(*(set(p) for p in payloads))
    assert len(common) >= COUNT // 2
    for sequence in common:
        assert all(p[sequence] == payloads[0][sequence] for p in payloads)
    # The same id on a compressed and an uncompressed socket: the same bytes, once inflated.
    compressed_bytes = {
        m["payload"]["data"]["priceUpdates"]["sequence"]: orjson.dumps(m) for _, _, m in first_read
    }
    for frame, _, message in plain_read:
        sequence = message["payload"]["data"]["priceUpdates"]["sequence"]
        if sequence in compressed_bytes:
            assert frame.endswith(compressed_bytes[sequence])


LEADERBOARD = (
    'subscription { marathonLeaderboard(marathonId: "demo", top: 100) { '
    "accounts rows { rank login profit profitPercentage equity balance margin freeMargin } } }"
)
"""The demo marathon's board (40 rows; a few accounts move every second): large enough that a
patch is smaller than the result."""


def patch_of(message: dict[str, Any]) -> list[Any]:
    patch: list[Any] = message["payload"]["extensions"]["delta"].get("patch", [])
    return patch


async def test_a_delta_subscriber_gets_its_patches_compressed(
    deflate_server: ServerProcess,
) -> None:
    subscribe = {
        "id": "d",
        "type": "subscribe",
        "payload": {"query": LEADERBOARD, "extensions": {"delta": True}},
    }
    async with (
        RawClient.connect(deflate_server, "permessage-deflate") as compressed,
        RawClient.connect(deflate_server, None) as plain,
    ):
        for client in (compressed, plain):
            await client.init()
            await client.send(subscribe)

        async def read(client: RawClient) -> dict[int, tuple[bytes, bool, dict[str, Any]]]:
            """Results by their delta number, until two non-empty patches came (at most 12
            results)."""
            results = {}
            for _ in range(12):
                raw, rsv1, message = await client.message()
                assert message["type"] == "next", message
                results[message["payload"]["extensions"]["delta"]["seq"]] = (raw, rsv1, message)
                if sum(bool(patch_of(m)) for _, _, m in results.values()) >= 2:
                    break
            return results

        by_compressed, by_plain = await asyncio.gather(read(compressed), read(plain))

    patches = 0
    for seq, (raw, rsv1, message) in by_compressed.items():
        # Whole results and patches alike; a short one (an empty patch: nothing selected
        # changed) is sent as it is, which compressing would not shorten.
        assert rsv1 or len(raw) < 100, message
        if seq in by_plain:
            plain_raw, plain_rsv1, plain_message = by_plain[seq]
            assert not plain_rsv1
            assert message == plain_message  # the same patch (or result), once inflated
            assert len(raw) <= len(plain_raw)
            patches += rsv1 and bool(patch_of(message))
    assert patches >= 1


@pytest.mark.parametrize(
    ("offer", "status"),
    [
        ("permessage-deflate; server_max_window_bits=20", 101),  # a value out of range
        ("permessage-deflate; server_max_window_bits=8", 101),  # zlib cannot: declined
        ("permessage-deflate; no_such_parameter", 101),
        ("permessage-deflate; client_no_context_takeover=1", 101),
        ("permessage-deflate; server_no_context_takeover, permessage-deflate", 101),
        ("permessage-deflate;;", 400),  # not a header websockets can parse
        ('permessage-deflate; server_max_window_bits="', 400),
    ],
)
async def test_an_offer_the_library_cannot_accept_is_declined_or_refused_and_others_go_on(
    deflate_server: ServerProcess, offer: str, status: int
) -> None:
    async with GraphQLWS.connect(deflate_server.ws_url, compression="deflate") as bystander:
        await bystander.subscribe("1", PRICE_SUBSCRIPTION, {"m": MARKET})
        before = await bystander.next_data("1", "priceUpdates")
        async with RawClient.connect(deflate_server, offer) as client:
            assert client.status == status, client.headers
            if status == 101:
                if "server_no_context_takeover, permessage-deflate" in offer:
                    # The first offer is taken, the second declined.
                    assert "permessage-deflate" in client.headers["sec-websocket-extensions"]
                else:
                    assert "sec-websocket-extensions" not in client.headers
                    await client.init()
                    await client.subscribe("1")
                    prices = await client.prices(2)
                    assert not any(compressed for _, compressed, _ in prices)
        after = await bystander.next_data("1", "priceUpdates")
    assert after["sequence"] > before["sequence"]


NODE_CLIENT = """
import WebSocket from 'ws';
const [url, count, query] = process.argv.slice(2);
const read = (options) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url, 'graphql-transport-ws', options);
  const messages = [];
  let extensions = '';
  ws.on('upgrade', (response) => {
    extensions = response.headers['sec-websocket-extensions'] || '';
  });
  ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
  ws.on('message', (data) => {
    const message = JSON.parse(data.toString());
    if (message.type === 'connection_ack') {
      ws.send(JSON.stringify({ id: '1', type: 'subscribe',
        payload: { query, variables: { m: 'BTC-PERP' } } }));
    } else {
      messages.push(message);
      if (messages.length === Number(count)) { ws.close(); resolve({ extensions, messages }); }
    }
  });
  ws.on('error', reject);
});
const results = await Promise.all([
  read({ perMessageDeflate: true }),
  read({ perMessageDeflate: true }),
  read({ perMessageDeflate: false }),
]);
process.stdout.write(JSON.stringify(results));
"""


def test_nodes_ws_negotiates_it_and_reads_every_price(
    deflate_server: ServerProcess, tmp_path: Path
) -> None:
    node = node_packages(EXAMPLES)
    script = tmp_path / "client.mjs"
    script.write_text(NODE_CLIENT)
    (tmp_path / "node_modules").symlink_to(EXAMPLES / "node_modules")
    done = subprocess.run(
        [node, str(script), deflate_server.ws_url, str(COUNT), PRICE_SUBSCRIPTION],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    first, second, plain = json.loads(done.stdout)
    for compressed in (first, second):
        assert compressed["extensions"].startswith("permessage-deflate")
        assert "server_no_context_takeover" in compressed["extensions"]
    assert plain["extensions"] == ""
    for result in (first, second, plain):
        prices = [m["payload"]["data"]["priceUpdates"] for m in result["messages"]]
        assert all(m["type"] == "next" and m["id"] == "1" for m in result["messages"])
        assert {p["market"] for p in prices} == {MARKET}
        assert increasing([p["sequence"] for p in prices])
    groups = [by_sequence(r["messages"]) for r in (first, second, plain)]
    for sequence in set.intersection(*(set(g) for g in groups)):
        assert groups[0][sequence] == groups[1][sequence] == groups[2][sequence]


BROWSER_CLIENT = """
async ([url, count, query]) => {
  const ws = new WebSocket(url, 'graphql-transport-ws');
  const messages = [];
  await new Promise((resolve, reject) => {
    ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init' }));
    ws.onerror = () => reject(new Error('socket error'));
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === 'connection_ack') {
        ws.send(JSON.stringify({ id: '1', type: 'subscribe',
          payload: { query, variables: { m: 'BTC-PERP' } } }));
      } else {
        messages.push(message);
        if (messages.length === count) resolve();
      }
    };
  });
  ws.close();
  return { extensions: ws.extensions, messages };
}
"""


async def test_chromium_negotiates_it_and_reads_every_price(
    deflate_server: ServerProcess, browser: Browser
) -> None:
    page = await browser.new_page()
    try:
        await page.goto(deflate_server.base_url + "/")  # the server's own origin
        result = await page.evaluate(
            BROWSER_CLIENT, [deflate_server.ws_url, COUNT, PRICE_SUBSCRIPTION]
        )
    finally:
        await page.close()
    assert result["extensions"].startswith("permessage-deflate")
    assert "server_no_context_takeover" in result["extensions"]
    prices = [m["payload"]["data"]["priceUpdates"] for m in result["messages"]]
    assert {p["market"] for p in prices} == {MARKET}
    assert increasing([p["sequence"] for p in prices])
