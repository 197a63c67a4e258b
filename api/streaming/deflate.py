"""permessage-deflate (RFC 7692) without server context takeover: a shared result compressed once
for every socket of its group.

The server accepts a client's ``permessage-deflate`` offer with ``server_no_context_takeover`` and
``client_no_context_takeover`` (:data:`SERVER_EXTENSIONS`): every message either side sends is
compressed on its own, from an empty window, so a socket keeps no compressor and no decompressor
between messages (they would cost tens of KB per idle subscriber), and the bytes of one message
do not depend on what that socket was sent before.

That is what lets a result be compressed once. Raw DEFLATE that ends in a sync flush ends
byte-aligned, after an empty stored block (``00 00 ff ff``); two such pieces, each compressed
from an empty window, concatenate into one valid stream. A ``next`` frame of a shared result is
the operation's prefix (``{"id":"1","type":"next","payload":``), compressed once per distinct
prefix and remembered, followed by the result's payload and closing brace, compressed once per
broadcast; the final ``00 00 ff ff`` is stripped (RFC 7692 §7.2.1) and RSV1 set. A message
compressed on its own (every other message: acks, pongs, errors, the results of unshared
operations, a slow client's queued frames) is made the same way from one piece.

A message that compression would not shorten is sent uncompressed, RSV1 clear, as RFC 7692
allows per message. The frames are the server's own, never the websockets library's encoder: a
compressor with context takeover would refer to earlier messages, and the client's window would
then hold frames it did not make.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from websockets.extensions.base import Extension, ServerExtensionFactory

LEVEL = 6
"""zlib's default: a shared result is compressed once, so a slower level costs little."""
HEADS_KEPT = 4096
"""Compressed prefixes remembered per window size; past this many distinct operation ids the
memory starts over (clients numbering their ids from 1 share a handful)."""

_SYNC_TAIL = b"\x00\x00\xff\xff"
_COMPRESSED_TEXT = 0xC1
"""FIN, RSV1 (compressed, RFC 7692 §6) and the text opcode."""
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
_NOT_MADE = b""
"""No frame made yet for a prefix (a made frame is never empty)."""


SERVER_EXTENSIONS: Sequence[ServerExtensionFactory] = (
    ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True
    ),
)
"""The extension the server negotiates: permessage-deflate, no context takeover on either side,
window sizes as the client asks (15 bits when it does not), every parameter checked by the
websockets library (an offer it cannot accept is declined: that socket is not compressed). One
tuple for every socket: the factory keeps no state."""


def negotiated(extensions: Sequence[Extension]) -> Deflate | None:
    """The compressor for a socket's negotiated extensions; None without permessage-deflate."""
    for extension in extensions:
        if isinstance(extension, PerMessageDeflate):
            return _BY_WINDOW[extension.local_max_window_bits]
    return None


def compress(*pieces: bytes, window_bits: int) -> bytes:
    """``pieces`` compressed as one, from an empty window, ending in a sync flush (its
    ``00 00 ff ff`` kept: another piece may follow)."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -window_bits)
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(out)


def _frame(*parts: bytes) -> bytes:
    """A compressed text frame holding ``parts`` (the last one's ``00 00 ff ff`` stripped)."""
    n = sum(len(part) for part in parts)
    if n < 126:
        header = bytes((_COMPRESSED_TEXT, n))
    elif n < 65536:
        header = _HEADER_16.pack(_COMPRESSED_TEXT, 126, n)
    else:
        header = _HEADER_64.pack(_COMPRESSED_TEXT, 127, n)
    return b"".join((header, *parts))


class Deflate:
    """The frames of every socket that negotiated one window size (one instance each, shared by
    all of them: a socket holds nothing of its own).

    It remembers the body it compressed last: a group hands one result to all its members in one
    synchronous loop, so every member's frame after the first reuses those bytes.
    """

    __slots__ = ("_body", "_body_compressed", "_frames", "_heads", "_tail", "window_bits")

    def __init__(self, window_bits: int) -> None:
        self.window_bits = window_bits
        self._body: bytes | None = None
        self._tail: bytes | None = None
        self._body_compressed = b""
        self._frames: dict[bytes, bytes | None] = {}
        """This body's frame per prefix; None where compressing does not shorten it."""
        self._heads: dict[bytes, bytes] = {}

    def frame(self, body: bytes, *, head: bytes, tail: bytes) -> bytes | None:
        """The compressed frame of ``head + body + tail`` (a ``next`` message: ``head`` its
        prefix, ``body`` the shared payload), or None if compressing does not make it shorter.

        ``body + tail`` is compressed once for consecutive calls with the same (identical)
        ``body`` and ``tail``: they must not be mutated in between, as ``bytes`` cannot be.
        """
        if body is not self._body or tail is not self._tail:
            self._body = body
            self._tail = tail
            compressed = compress(body, tail, window_bits=self.window_bits)
            self._body_compressed = compressed[: -len(_SYNC_TAIL)]
            self._frames = {}
        else:
            made = self._frames.get(head, _NOT_MADE)
            if made != _NOT_MADE:
                return made
        compressed_head = self._heads.get(head)
        if compressed_head is None:
            if len(self._heads) >= HEADS_KEPT:
                self._heads.clear()
            compressed_head = self._heads[head] = compress(head, window_bits=self.window_bits)
        made = None
        if len(compressed_head) + len(self._body_compressed) < len(head) + len(body) + len(tail):
            made = _frame(compressed_head, self._body_compressed)
        self._frames[head] = made
        return made

    def message_frame(self, payload: bytes) -> bytes | None:
        """The compressed frame of one message on its own, or None if compressing does not
        make it shorter."""
        compressed = compress(payload, window_bits=self.window_bits)[: -len(_SYNC_TAIL)]
        if len(compressed) >= len(payload):
            return None
        return _frame(compressed)


_BY_WINDOW = {bits: Deflate(bits) for bits in range(9, 16)}
"""websockets negotiates 9 to 15 bits for the server's window (zlib cannot compress with 8)."""
