"""Subscribers that count the bytes a subscription costs on the wire, for ``bench.deltas``.

Each is one graphql-transport-ws socket (the ``websockets`` client) with one subscription, with or
without ``extensions.delta`` and with or without permessage-deflate. What arrives on its TCP
socket is counted in :meth:`CountingConnection.data_received`, before the websockets library
parses it: frame headers included, compressed bytes as they are, while the shared
:class:`Window` is open. The ``next`` messages received meanwhile and their text (UTF-8, after
decompression) are counted too.

Every subscriber also checks what it receives:

- :class:`ResultSubscriber` keeps a digest of every result a whole-result subscriber gets, and a
  delta subscriber applies each patch (python-json-patch) to the result numbered just before it,
  so that ``bench.deltas`` can check every result it rebuilt is one a whole-result subscriber of
  the same operation got;
- :class:`BookSubscriber` rebuilds ``orderBook``'s levels from its snapshot and deltas, each
  delta's ``previous`` the sequence applied last, and computes for each change the ``next``
  message that would have carried the whole book (:meth:`BookSubscriber.whole_message`: what a
  subscription re-sending the book on every change would cost; no such subscription exists).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from decimal import Decimal
from typing import Any

import jsonpatch
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.typing import Subprotocol

from api.streaming.deflate import Deflate
from bench.processes import BenchError

PROTOCOL = Subprotocol("graphql-transport-ws")
ROW_INDEX = re.compile(r"/\d+(?=/|$)")
OPERATION_ID = "1"


class Window:
    """The measured seconds, shared by every subscriber of a run: counting happens only while it
    is open."""

    def __init__(self) -> None:
        self.open = False


class Meter:
    """What one socket received while the window was open."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.wire = 0
        """Bytes read from the TCP socket: frame headers included, compressed as they came."""
        self.messages = 0
        """``next`` messages."""
        self.text = 0
        """Those messages' bytes as text (UTF-8), after decompression."""


class CountingConnection(ClientConnection):
    """A client connection that adds every chunk read from its socket to its :class:`Meter`."""

    meter: Meter | None = None

    def data_received(self, data: bytes) -> None:
        meter = self.meter
        if meter is not None and meter.window.open:
            meter.wire += len(data)
        super().data_received(data)


def digest(result: Any) -> bytes:
    """A result's identity: the digest of its JSON with sorted keys."""
    return hashlib.blake2b(
        orjson.dumps(result, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).digest()


class Subscriber:
    """One socket, one subscription, its :class:`Meter`; :meth:`take` reads each ``next``
    payload."""

    def __init__(
        self, window: Window, *, compressed: bool, delta: bool = False, init: dict[str, Any]
    ) -> None:
        self.meter = Meter(window)
        self.compressed = compressed
        self.delta = delta
        self.init = init
        """The ``connection_init`` payload (a token, for a per-user stream)."""
        self.started = asyncio.Event()
        """Set once the first result has arrived."""
        self.stopped = False
        """Set to ignore what arrives from then on (the socket stays open until cancelled)."""

    async def follow(self, url: str, query: str, variables: dict[str, Any]) -> None:
        async with connect(
            url,
            subprotocols=[PROTOCOL],
            compression="deflate" if self.compressed else None,
            create_connection=CountingConnection,
            ping_interval=None,  # the client's own pings' pongs are not the subscription's cost
            max_size=2**24,
        ) as ws:
            assert isinstance(ws, CountingConnection)
            negotiated = any(isinstance(e, PerMessageDeflate) for e in ws.protocol.extensions)
            if negotiated != self.compressed:
                raise BenchError(
                    f"permessage-deflate negotiated: {negotiated}, wanted {self.compressed}"
                )
            ws.meter = self.meter
            await ws.send(orjson.dumps({"type": "connection_init", "payload": self.init}).decode())
            ack = orjson.loads(await ws.recv())
            if ack.get("type") != "connection_ack":
                raise BenchError(f"connection_init answered {ack}")
            payload: dict[str, Any] = {"query": query, "variables": variables}
            if self.delta:
                payload["extensions"] = {"delta": True}
            message = {"id": OPERATION_ID, "type": "subscribe", "payload": payload}
            await ws.send(orjson.dumps(message).decode())
            async for raw in ws:
                frame = raw.encode() if isinstance(raw, str) else raw
                message = orjson.loads(frame)
                if message.get("type") != "next":
                    raise BenchError(f"the subscription answered {frame[:300]!r}")
                if self.stopped:
                    continue
                counting = self.meter.window.open
                if counting:
                    self.meter.messages += 1
                    self.meter.text += len(frame)
                self.take(message["payload"], counting, len(frame))
                self.started.set()

    def take(self, payload: dict[str, Any], counting: bool, size: int) -> None:
        """One ``next`` payload, of a message of ``size`` bytes (text); ``counting`` while the
        window is open."""
        raise NotImplementedError


class ResultSubscriber(Subscriber):
    """A subscriber of whole results (``delta`` False) or of deltas.

    A whole-result subscriber keeps the digest of every result it gets (:attr:`seen`); a delta
    subscriber rebuilds each result from the one before and its patch, checking the numbering,
    and keeps the digests of those it rebuilt while counting (:attr:`rebuilt`)."""

    def __init__(
        self, window: Window, *, compressed: bool, delta: bool, init: dict[str, Any]
    ) -> None:
        super().__init__(window, compressed=compressed, delta=delta, init=init)
        self.seen: set[bytes] = set()
        self.rebuilt: list[bytes] = []
        self.last: dict[str, Any] | None = None
        self.seq: int | None = None
        self.patches = 0
        """Patches received while counting (the rest of the delta messages were whole)."""
        self.operations: Counter[str] = Counter()
        self.operation_bytes: Counter[str] = Counter()
        """The counted patches' operations and their bytes (encoded, with a comma each) by
        kind: the op and its path, row indices as ``N`` (``replace /data/x/rows/N/rank``)."""

    def take(self, payload: dict[str, Any], counting: bool, size: int) -> None:
        if not self.delta:
            self.seen.add(digest(payload))
            return
        delta = payload.pop("extensions", {}).get("delta")
        if not isinstance(delta, dict) or not isinstance(delta.get("seq"), int):
            raise BenchError(f"a delta subscriber's result has no extensions.delta.seq: {delta}")
        seq: int = delta["seq"]
        if "patch" in delta:
            if self.last is None or seq != (self.seq or 0) + 1:
                raise BenchError(f"patch numbered {seq} after result {self.seq}")
            self.last = jsonpatch.apply_patch(self.last, delta["patch"])
            if counting:
                self.patches += 1
                for operation in delta["patch"]:
                    kind = f"{operation['op']} {ROW_INDEX.sub('/N', operation['path'])}"
                    self.operations[kind] += 1
                    self.operation_bytes[kind] += len(orjson.dumps(operation)) + 1
        else:
            self.last = payload
        self.seq = seq
        if counting:
            self.rebuilt.append(digest(self.last))


LEVEL_SIDES = {"BID": "bids", "ASK": "asks"}


class BookSubscriber(Subscriber):
    """A subscriber of ``orderBook``'s native deltas that rebuilds the book, and computes for each
    change the whole-book ``next`` message (:meth:`whole_message`) and its wire bytes, plain and
    compressed."""

    def __init__(self, window: Window, *, compressed: bool, depth: int) -> None:
        super().__init__(window, compressed=compressed, init={})
        self.depth = depth
        self.sequence: int | None = None
        self.at: Any = None
        self.books: dict[str, dict[str, Any]] = {"bids": {}, "asks": {}}
        """Each side's levels, price (as the server wrote it) to size."""
        self.snapshots = 0
        self.changes = 0
        """Snapshots and deltas applied while counting."""
        self.whole_wire = 0
        self.whole_text = 0
        self.whole_deflated = 0
        """What the whole book's messages for those changes would have cost: on the wire
        uncompressed, as text, and on the wire compressed as the server compresses a shared
        result (:func:`deflated_size`)."""
        self.larger = 0
        """Deltas (counted) whose message was larger than the whole book's at that change."""
        self.smaller_wire = 0
        self.smaller_deflated = 0
        """What the counted messages would have cost had each been the smaller of the delta and
        the whole book (a snapshot in the middle of the stream, which a client already takes:
        docs/orderbook.md), uncompressed and compressed; computed."""
        self.sent_wire = 0
        self.sent_deflated = 0
        """The counted messages' bytes computed as the whole book's are, uncompressed and
        compressed: the check of that computation against what the socket measured."""
        self.sent = b""
        """The message just received, as the server encoded it."""
        self.history: dict[int, bytes] = {}
        """The book's JSON after each sequence applied (the last ``HISTORY`` of them)."""

    HISTORY = 2000

    def take(self, payload: dict[str, Any], counting: bool, size: int) -> None:
        event = payload["data"]["orderBook"]
        self.sent = orjson.dumps({"id": OPERATION_ID, "type": "next", "payload": payload})
        if "bids" in event:  # a snapshot: replaces the book
            self.books = {
                side: {level["price"]: level["size"] for level in event[side]}
                for side in ("bids", "asks")
            }
            self.snapshots += counting
        elif "changes" in event:
            if event["previous"] != self.sequence:
                raise BenchError(
                    f"orderBook delta from {event['previous']} after sequence {self.sequence}"
                )
            for change in event["changes"]:
                levels = self.books[LEVEL_SIDES[change["side"]]]
                if Decimal(change["size"]) == 0:
                    levels.pop(change["price"], None)
                else:
                    levels[change["price"]] = change["size"]
            self.changes += counting
        else:
            raise BenchError(f"orderBook sent {event}")
        self.sequence = event["sequence"]
        self.at = event["at"]
        for side, levels in self.books.items():
            if len(levels) > self.depth:
                raise BenchError(f"the rebuilt book holds {len(levels)} {side}, over {self.depth}")
        whole = self.whole_message()
        self.history[self.sequence] = whole
        if len(self.history) > self.HISTORY:
            del self.history[min(self.history)]
        if counting:
            self.larger += "changes" in event and size > len(whole)
            sent_deflated = deflated_size(self.sent)
            self.smaller_wire += frame_size(min(size, len(whole)))
            self.smaller_deflated += min(sent_deflated, deflated_size(whole))
            self.sent_wire += frame_size(len(self.sent))
            self.sent_deflated += sent_deflated
            self.whole_wire += frame_size(len(whole))
            self.whole_text += len(whole)
            self.whole_deflated += deflated_size(whole)

    def book(self) -> dict[str, Any]:
        """The book as ``orderBook``'s snapshot selection shows it: best first."""
        bids = sorted(self.books["bids"].items(), key=lambda level: Decimal(level[0]), reverse=True)
        asks = sorted(self.books["asks"].items(), key=lambda level: Decimal(level[0]))
        return {
            "sequence": self.sequence,
            "at": self.at,
            "bids": [{"price": p, "size": s} for p, s in bids],
            "asks": [{"price": p, "size": s} for p, s in asks],
        }

    def whole_message(self) -> bytes:
        """The ``next`` message of a subscription that sent the whole book at this change: the
        same operation id and selection, encoded as the server encodes (orjson, compact)."""
        message = {
            "id": OPERATION_ID,
            "type": "next",
            "payload": {"data": {"orderBook": self.book()}},
        }
        return orjson.dumps(message)


def frame_size(payload: int) -> int:
    """A server-to-client WebSocket frame's bytes (unmasked) for a payload of ``payload`` bytes."""
    if payload < 126:
        return 2 + payload
    if payload < 65536:
        return 4 + payload
    return 10 + payload


def deflated_size(message: bytes) -> int:
    """The wire bytes of ``message``, a ``next`` of a shared result, on a compressed socket, as
    the server frames it (:class:`api.streaming.deflate.Deflate`, a 15-bit window): the prefix
    stored, the payload and closing brace compressed; or uncompressed when that is not shorter."""
    head_end = message.index(b'"payload":') + len(b'"payload":')
    head, body, tail = message[:head_end], message[head_end:-1], message[-1:]
    frame = Deflate(15).frame(body, head=head, tail=tail)
    return frame_size(len(message)) if frame is None else len(frame)
