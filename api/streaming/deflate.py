"""permessage-deflate (RFC 7692) without server context takeover: a shared result compressed once
for every socket of its group.

The server accepts a client's ``permessage-deflate`` offer with ``server_no_context_takeover`` and
``client_no_context_takeover`` (:data:`SERVER_EXTENSIONS`): every message either side sends is
compressed on its own, from an empty window, so a socket keeps no compressor and no decompressor
between messages (they would cost tens of KB per idle subscriber), and the bytes of one message
do not depend on what that socket was sent before.

That is what lets a result be compressed once. A DEFLATE stream is a sequence of blocks; a block
that ends byte-aligned (a sync flush ends so, after an empty stored block, ``00 00 ff ff``) can
be followed by any block that refers to nothing before it. A ``next`` frame of a shared result is:

- the operation's prefix (``{"id":"1","type":"next","payload":``) as a *stored* block (DEFLATE's
  uncompressed block type: 5 bytes of header, then the bytes as they are). Compressed from an empty
  window, 34 to 70 bytes of such JSON come out 2 or 3 bytes shorter than stored, which would not
  pay for a compressor per prefix, or for a cache of compressed prefixes (clients such as
  graphql-ws number their operations with random ids: one prefix per subscriber);
- the result's payload and closing brace, compressed once per broadcast and ending in a sync
  flush, whose final ``00 00 ff ff`` is stripped (RFC 7692 §7.2.1).

The frame has RSV1 set. A message compressed on its own (every other message: acks, pongs,
errors, the results of unshared operations, a slow client's queued frames) is compressed whole
the same way. A message that compression would not shorten is sent uncompressed, RSV1 clear, as
RFC 7692 allows per message. The frames are the server's own, never the websockets library's
encoder: a compressor with context takeover would refer to earlier messages, and the client's
window would then hold frames it did not make.
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
"""zlib's default."""
MEM_LEVEL = 5
"""What websockets uses for its own compressors: a fresh compressor per message zeroes a hash
table of ``2 ** (MEM_LEVEL + 8)`` bytes first, 64 KB at zlib's default of 8 (three times the
time to compress a price update), 8 KB at 5, with the same output on messages of a few KB."""

SERVER_EXTENSIONS: Sequence[ServerExtensionFactory] = (
    ServerPerMessageDeflateFactory(
        server_no_context_takeover=True, client_no_context_takeover=True
    ),
)
"""The extension the server negotiates: permessage-deflate, no context takeover on either side,
window sizes as the client asks (15 bits when it does not), every parameter checked by the
websockets library (an offer it cannot accept is declined: that socket is not compressed). One
tuple for every socket: the factory keeps no state."""

_SYNC_TAIL = b"\x00\x00\xff\xff"
_COMPRESSED_TEXT = 0xC1
"""FIN, RSV1 (compressed, RFC 7692 §6) and the text opcode."""
_STORED = struct.Struct("<BHH")
"""A stored block's header from a byte boundary: BFINAL 0 and BTYPE 00 (padded to a byte), LEN
and its one's complement NLEN, little-endian (RFC 1951 §3.2.4)."""
_STORED_MAX = 65535
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def negotiated(extensions: Sequence[Extension]) -> Deflate | None:
    """The frames for a socket's negotiated extensions; None without permessage-deflate."""
    for extension in extensions:
        if isinstance(extension, PerMessageDeflate):
            return _BY_WINDOW[extension.local_max_window_bits]
    return None


def compress(*pieces: bytes, window_bits: int) -> bytes:
    """``pieces`` compressed as one, from an empty window, ending in a sync flush with its final
    ``00 00 ff ff`` stripped."""
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -window_bits, MEM_LEVEL)
    out = [compressor.compress(piece) for piece in pieces]
    out.append(compressor.flush(zlib.Z_SYNC_FLUSH))
    return b"".join(out)[: -len(_SYNC_TAIL)]


def stored(data: bytes) -> bytes:
    """``data`` as DEFLATE stored blocks, from and to a byte boundary."""
    return b"".join(
        _STORED.pack(0, len(chunk), len(chunk) ^ 0xFFFF) + chunk
        for chunk in (data[i : i + _STORED_MAX] for i in range(0, len(data), _STORED_MAX))
    )


def _frame(*parts: bytes) -> bytes:
    """A compressed text frame holding ``parts``."""
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

    It remembers the body it compressed last, and the last frame it made of it: a group hands one
    result to all its members in one synchronous loop, so every member's frame after the first
    reuses the compressed body, and members whose operation ids are equal the very frame.
    """

    __slots__ = ("_body", "_compressed", "_frame", "_head", "_tail", "window_bits")

    def __init__(self, window_bits: int) -> None:
        self.window_bits = window_bits
        self._body: bytes | None = None
        self._tail: bytes | None = None
        self._compressed: bytes | None = None
        """The body and tail compressed; None when that does not make them shorter."""
        self._head: bytes | None = None
        self._frame: bytes | None = None

    def frame(self, body: bytes, *, head: bytes, tail: bytes) -> bytes | None:
        """The compressed frame of ``head + body + tail`` (a ``next`` message: ``head`` its
        prefix, ``body`` the shared payload), or None if compressing does not make it shorter.

        ``body + tail`` is compressed once for consecutive calls with the same (identical)
        ``body`` and ``tail``, which ``bytes`` guarantees cannot have changed in between.
        """
        if body is not self._body or tail is not self._tail:
            self._body = body
            self._tail = tail
            shared = compress(body, tail, window_bits=self.window_bits)
            # The stored prefix costs 5 bytes more than the prefix itself.
            shorter = len(shared) + _STORED.size < len(body) + len(tail)
            self._compressed = shared if shorter else None
            self._head = self._frame = None
        elif head == self._head:
            return self._frame
        compressed = self._compressed
        frame = None if compressed is None else _frame(stored(head), compressed)
        self._head = head
        self._frame = frame
        return frame

    def message_frame(self, payload: bytes) -> bytes | None:
        """The compressed frame of one message on its own, or None if compressing does not
        make it shorter."""
        compressed = compress(payload, window_bits=self.window_bits)
        if len(compressed) >= len(payload):
            return None
        return _frame(compressed)


_BY_WINDOW = {bits: Deflate(bits) for bits in range(9, 16)}
"""websockets negotiates 9 to 15 bits for the server's window (zlib cannot compress with 8)."""
