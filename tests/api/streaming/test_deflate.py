"""Frames compressed once per broadcast decode, on their own and in any order, as a client's
permessage-deflate decoder reads them."""

from __future__ import annotations

import random

import orjson
import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from api.streaming.deflate import Deflate, compress, negotiated

BODY = orjson.dumps(
    {"data": {"rows": [{"login": 1000 + i, "profit": f"{i * 1.5:.2f}"} for i in range(100)]}}
)
TAIL = b"}"


def head(id: str) -> bytes:
    return b'{"id":' + orjson.dumps(id) + b',"type":"next","payload":'


def parse(frame: bytes) -> Frame:
    """The frame as the client reads it: FIN, RSV1 and the text opcode, unmasked, one length."""
    first, second = frame[0], frame[1]
    assert first & 0x80, "FIN"
    assert first & 0x0F == 0x1, "a text frame"
    assert not second & 0x80, "a server's frame is not masked"
    n, start = second & 0x7F, 2
    if n == 126:
        n, start = int.from_bytes(frame[2:4]), 4
    elif n == 127:
        n, start = int.from_bytes(frame[2:10]), 10
    assert len(frame) == start + n
    return Frame(Opcode.TEXT, frame[start:], rsv1=bool(first & 0x40))


def client(window_bits: int = 15, *, context_takeover: bool = False) -> PerMessageDeflate:
    """A client's side of the extension: its decoder is the server's encoder mirrored."""
    return PerMessageDeflate(
        remote_no_context_takeover=not context_takeover,
        local_no_context_takeover=True,
        remote_max_window_bits=window_bits,
        local_max_window_bits=15,
    )


def read(extension: PerMessageDeflate, frame: bytes) -> bytes:
    return bytes(extension.decode(parse(frame)).data)


def test_a_shared_frame_decodes_to_its_prefix_the_payload_and_the_brace() -> None:
    deflate = Deflate(15)
    frame = deflate.frame(BODY, head=head("1"), tail=TAIL)
    assert frame is not None
    assert parse(frame).rsv1
    assert read(client(), frame) == head("1") + BODY + TAIL
    assert len(frame) * 3 < len(head("1") + BODY + TAIL)


def test_the_payload_is_compressed_once_for_every_prefix() -> None:
    deflate = Deflate(15)
    ids = ("1", "2", "a-long-id", "x" * 70_000)  # the last one's prefix takes two stored blocks
    frames = {id: deflate.frame(BODY, head=head(id), tail=TAIL) for id in ids}
    body = compress(BODY, TAIL, window_bits=15)
    for id, frame in frames.items():
        assert frame is not None
        # The same compressed bytes after every prefix.
        assert frame.endswith(body)
        assert orjson.loads(read(client(), frame)) == {
            "id": id,
            "type": "next",
            "payload": orjson.loads(BODY),
        }
    # The prefix as a stored block: its length, the length's complement, its bytes.
    one = frames["1"]
    assert one is not None
    assert one[4:9] == bytes((0, len(head("1")), 0, len(head("1")) ^ 0xFF, 0xFF))
    assert one[9 : 9 + len(head("1"))] == head("1")
    # Subscribers with equal ids, one after the other: the very same frame.
    first = deflate.frame(BODY, head=head("7"), tail=TAIL)
    assert deflate.frame(BODY, head=head("7"), tail=TAIL) is first


def test_frames_decode_in_turn_by_a_client_that_keeps_its_window() -> None:
    """A client that did not get client-side no-context-takeover, or an old one that ignores
    the server's, decodes each message after the others with one decompressor."""
    deflate = Deflate(15)
    reader = client(context_takeover=True)
    bodies = [BODY, BODY.replace(b"1.50", b"9.99"), orjson.dumps({"data": {"ok": True}}) * 20]
    for n, body in enumerate(bodies):
        frame = deflate.frame(body, head=head(str(n)), tail=TAIL)
        assert frame is not None
        assert read(reader, frame) == head(str(n)) + body + TAIL
        single = deflate.message_frame(b'{"type":"pong","payload":' + body + b"}")
        assert single is not None
        assert read(reader, single) == b'{"type":"pong","payload":' + body + b"}"


@pytest.mark.parametrize("window_bits", [9, 12, 15])
def test_the_window_is_the_negotiated_one(window_bits: int) -> None:
    """Repeats farther apart than a small window allows must not be referred back to."""
    body = b"[" + b",".join(orjson.dumps(f"row-{i:04d}-" + "x" * 40) for i in range(400)) + b"]"
    deflate = Deflate(window_bits)
    frame = deflate.frame(body, head=head("1"), tail=TAIL)
    assert frame is not None
    assert read(client(window_bits), frame) == head("1") + body + TAIL
    single = deflate.message_frame(body)
    assert single is not None
    assert read(client(window_bits), single) == body


def test_a_message_compression_does_not_shorten_goes_uncompressed() -> None:
    deflate = Deflate(15)
    assert deflate.message_frame(b'{"type":"pong"}') is None
    assert deflate.frame(b'{"a":1}', head=head("x7"), tail=TAIL) is None


@pytest.mark.parametrize(("size", "length_code"), [(1000, 126), (100_000, 127)])
def test_a_frames_length_takes_as_many_bytes_as_it_needs(size: int, length_code: int) -> None:
    body = orjson.dumps(random.Random(size).randbytes(size).hex())  # hex: 4 bits of 8 compress
    deflate = Deflate(15)
    frame = deflate.message_frame(body)
    assert frame is not None
    assert frame[1] == length_code
    assert read(client(), frame) == body


def test_negotiated_is_the_one_for_the_servers_window() -> None:
    assert negotiated([]) is None
    extension = PerMessageDeflate(True, True, 15, 11)
    found = negotiated([extension])
    assert found is not None
    assert found.window_bits == 11
    assert negotiated([PerMessageDeflate(True, True, 15, 11)]) is found
