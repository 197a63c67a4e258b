"""The per-WebSocket send queue, driven through its ASGI fallback with a send that can stall, and
its direct writes on a compressed socket."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from api.streaming.connection import CLOSE_SLOW_CONSUMER, Connection, text_frame


class StallingSend:
    """An ASGI ``send`` that blocks while ``gate`` is closed, recording what it sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, message: dict[str, Any]) -> None:
        await self.gate.wait()
        self.sent.append(message)

    @property
    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_frames_go_out_in_order() -> None:
    send = StallingSend()
    connection = Connection(send, max_pending_bytes=1024)  # type: ignore[arg-type]
    assert not connection.direct
    for i in range(5):
        connection.write(b'{"n":%d}' % i)
    await connection.drained()
    assert send.texts == [f'{{"n":{i}}}' for i in range(5)]
    assert connection.pending_bytes == 0


async def test_a_stalled_reader_gets_only_the_newest_result_per_key() -> None:
    send = StallingSend()
    send.gate.clear()
    connection = Connection(send, max_pending_bytes=1024)  # type: ignore[arg-type]
    connection.write(b'"first"')  # taken by the writer, which then stalls in send
    await settle()
    for i in range(10):
        connection.write(b'{"a":%d}' % i, key="a")
        connection.write(b'{"b":%d}' % i, key="b")
    connection.write(b'"control"')  # no key: never replaced
    assert connection.conflated == 18
    send.gate.set()
    await connection.drained()
    assert send.texts == ['"first"', '{"a":9}', '{"b":9}', '"control"']


def _sum(older: bytes, newer: bytes) -> bytes | None:
    """A merge of changes ``{"add": n}``: two waiting ones are one adding both; anything else
    (``{"set": n}``) cannot be merged."""
    a, b = orjson.loads(older), orjson.loads(newer)
    if "add" not in a or "add" not in b:
        return None
    return orjson.dumps({"add": a["add"] + b["add"]})


async def test_a_stalled_reader_gets_mergeable_changes_merged_in_their_place() -> None:
    send = StallingSend()
    send.gate.clear()
    connection = Connection(send, max_pending_bytes=1024)  # type: ignore[arg-type]
    connection.write(b'"first"')  # taken by the writer, which then stalls in send
    await settle()
    for _ in range(10):
        connection.write(b'{"add":1}', key="book", merge=_sum)
        connection.write(b'{"add":2}', key="other", merge=_sum)
    connection.write(b'"control"')
    assert connection.conflated == 18
    send.gate.set()
    await connection.drained()
    assert send.texts == ['"first"', '{"add":10}', '{"add":20}', '"control"']


async def test_a_change_that_cannot_be_merged_waits_behind_and_takes_the_next_ones() -> None:
    send = StallingSend()
    send.gate.clear()
    connection = Connection(send, max_pending_bytes=1024)  # type: ignore[arg-type]
    connection.write(b'"first"')
    await settle()
    connection.write(b'{"add":1}', key="book", merge=_sum)
    connection.write(b'{"add":1}', key="book", merge=_sum)
    connection.write(b'{"set":5}', key="book", merge=_sum)  # a snapshot: not merged
    connection.write(b'{"add":1}', key="book", merge=_sum)  # after the snapshot: its own frame
    connection.write(b'{"add":1}', key="book", merge=_sum)
    send.gate.set()
    await connection.drained()
    assert send.texts == ['"first"', '{"add":2}', '{"set":5}', '{"add":2}']
    assert connection.pending_bytes == 0


async def test_merged_changes_never_count_as_lag_but_their_bytes_are_bounded() -> None:
    """A merged change holds everything since it was queued: however long it waits, nothing is
    behind. What cannot be merged still counts towards the bytes bound."""
    send = StallingSend()
    send.gate.clear()
    connection = Connection(send, max_pending_bytes=60, max_lag_s=0.05)  # type: ignore[arg-type]
    connection.write(b'"first"')
    await settle()
    connection.write(b'{"add":1}', key="book", merge=_sum)
    await asyncio.sleep(0.08)
    connection.write(b'{"add":1}', key="book", merge=_sum)
    assert not connection.closed
    for n in range(5):  # unmergeable: each waits behind the last, 9 bytes each
        connection.write(b'{"set":%d}' % n, key="book", merge=_sum)
    assert not connection.closed
    connection.write(b'{"set":9}', key="book", merge=_sum)
    assert connection.closed
    send.gate.set()
    await settle()
    [close] = [m for m in send.sent if m["type"] == "websocket.close"]
    assert close["code"] == CLOSE_SLOW_CONSUMER
    await connection.close()


async def test_overflow_closes_with_4008_and_drops_the_rest() -> None:
    send = StallingSend()
    send.gate.clear()
    connection = Connection(send, max_pending_bytes=100)  # type: ignore[arg-type]
    connection.write(b'"first"')
    await settle()
    for i in range(20):  # stream events: no key, so they wait in order until the bound
        connection.write(b'{"event":%d}' % i)
    assert connection.closed
    assert connection.pending_bytes == 0
    send.gate.set()
    await settle()
    closes = [m for m in send.sent if m["type"] == "websocket.close"]
    assert closes[0]["code"] == CLOSE_SLOW_CONSUMER
    assert "slow consumer" in closes[0]["reason"]
    connection.write(b'"after"')
    await settle()
    assert '"after"' not in send.texts
    await connection.close()


async def test_a_stream_frame_waiting_too_long_closes_with_4008_before_the_bytes_bound() -> None:
    send = StallingSend()
    send.gate.clear()
    connection = Connection(send, max_pending_bytes=1 << 20, max_lag_s=0.05)  # type: ignore[arg-type]
    connection.write(b'"first"')  # taken by the writer, which then stalls in send
    await settle()
    for i in range(10):  # replaceable results never count as lag
        connection.write(b'{"price":%d}' % i, key="p")
    connection.write(b'{"event":1}')
    await asyncio.sleep(0.08)
    assert not connection.closed
    connection.write(b'{"event":2}')  # event 1 has waited 80 ms
    assert connection.closed
    send.gate.set()
    await settle()
    [close] = [m for m in send.sent if m["type"] == "websocket.close"]
    assert close["code"] == CLOSE_SLOW_CONSUMER
    assert close["reason"] == "slow consumer: a stream event waited more than 0.05 s to be sent"
    await connection.close()


async def test_frames_sent_in_time_never_count_as_lag() -> None:
    send = StallingSend()
    connection = Connection(send, max_pending_bytes=1024, max_lag_s=0.05)  # type: ignore[arg-type]
    for i in range(3):
        connection.write(b'{"event":%d}' % i)
        await connection.drained()
        await asyncio.sleep(0.03)
    assert not connection.closed
    assert len(send.texts) == 3


async def test_close_stops_writing() -> None:
    send = StallingSend()
    connection = Connection(send, max_pending_bytes=1024)  # type: ignore[arg-type]
    await connection.close()
    connection.write(b'"late"')
    await settle()
    assert send.sent == []


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
async def test_text_frames_parse_as_websocket_frames(size: int) -> None:
    payload = b"x" * size
    reader = StreamReader()
    reader.feed_data(text_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    else:  # pragma: no cover
        pytest.fail("frame incomplete")
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.TEXT, True, payload)


async def test_a_result_replacing_one_already_being_sent_is_sent_too() -> None:
    send = StallingSend()
    send.gate.clear()
    connection = Connection(send, max_pending_bytes=1024)  # type: ignore[arg-type]
    connection.write(b'{"a":1}', key="a")  # the writer takes it and stalls in send
    await settle()
    connection.write(b'{"a":2}', key="a")
    send.gate.set()
    await connection.drained()
    await settle()
    assert send.texts == ['{"a":1}', '{"a":2}']


class _Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)


def _compressed_socket() -> tuple[Connection, WebSocketsSansIOProtocol, _Transport]:
    """A direct connection over uvicorn's protocol (its few attributes the connection reads),
    with permessage-deflate negotiated."""
    protocol = WebSocketsSansIOProtocol.__new__(WebSocketsSansIOProtocol)
    transport = _Transport()
    protocol.transport = transport  # type: ignore[assignment]
    protocol.conn = SimpleNamespace(extensions=[PerMessageDeflate(True, True, 15, 15)])  # type: ignore[assignment]
    protocol.writable = asyncio.Event()
    protocol.writable.set()
    protocol.close_sent = protocol.disconnected = False
    protocol.request = protocol.response = None  # type: ignore[assignment]
    connection = Connection(protocol.send, max_pending_bytes=1 << 20)  # type: ignore[arg-type]
    assert connection.direct
    assert connection.deflate is not None
    return connection, protocol, transport


async def test_on_a_compressed_socket_each_message_goes_compressed_if_that_is_shorter() -> None:
    connection, _, transport = _compressed_socket()
    long = b'{"type":"next","payload":{"data":{"rows":[' + b'{"a":1},' * 50 + b"{}]}}}"
    connection.write(b'{"type":"pong"}')
    connection.write(long)
    short, compressed = transport.written
    assert short == text_frame(b'{"type":"pong"}')
    assert compressed[0] == 0xC1  # FIN, RSV1, text
    decoder = PerMessageDeflate(True, True, 15, 15)
    frame = Frame(Opcode.TEXT, compressed[2:], rsv1=True)
    assert len(compressed) == 2 + compressed[1]
    assert decoder.decode(frame).data == long


async def test_a_frame_built_for_the_socket_goes_out_as_built_even_after_waiting() -> None:
    connection, protocol, transport = _compressed_socket()
    built = b"\xc1\x03abc"  # what the fan-out made once for every socket of its group
    protocol.writable.clear()  # the client reads slowly: frames wait
    connection.write(b'{"n":1}', key="1", frame=b"\xc1\x03old")
    connection.write(b'{"n":2}', key="1", frame=built)  # replaces the waiting one
    await settle()
    assert transport.written == []
    protocol.writable.set()
    await connection.drained()
    assert transport.written == [built]
