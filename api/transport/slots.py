"""Connection slots: every long-lived connection on ``/graphql`` (WebSockets, SSE and multipart
responses) holds one while it is open, so one count bounds what the process holds and what one
client holds.

A process has ``MAX_CONNECTIONS`` slots, and one client at most ``MAX_CONNECTIONS_PER_CLIENT`` of
them. A client is a signed-in user (its token's ``sub``), or else an address: the peer's, or the
one a trusted proxy names in ``X-Forwarded-For`` (uvicorn's ``FORWARDED_ALLOW_IPS`` decides that
before the request gets here). IPv6 addresses count by their /64, which one host usually holds
whole. A WebSocket takes its slot at the handshake, under its address, and moves it to its user
when ``connection_init`` carries a token (:mod:`api.transport.graphql_transport_ws`); an SSE or
multipart response
takes its slot before it starts, under the user of its ``Authorization`` header if it has one.

Every slot must be released once its connection ends, however it ends: :meth:`Slot.release` is
idempotent, and the callers release in ``finally``.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import resource
import sys
from collections import Counter
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from starlette.types import Scope

    from api.auth import Principal

logger = logging.getLogger(__name__)

SCOPE_KEY = "tradestream.slot"
"""Where a connection's :class:`Slot` waits in its ASGI scope."""

Transport: TypeAlias = Literal["ws", "sse", "multipart"]
TRANSPORTS: tuple[Transport, ...] = ("ws", "sse", "multipart")

MAX_CONNECTIONS_CEILING = 20_000
"""The default ``MAX_CONNECTIONS`` when the open-file limit leaves room for it."""
MAX_CONNECTIONS_PER_CLIENT_CEILING = 200
"""The default ``MAX_CONNECTIONS_PER_CLIENT`` when ``MAX_CONNECTIONS`` leaves room for it."""


class Refusal(enum.Enum):
    """Why a connection got no slot."""

    PROCESS = "process"
    """The process holds ``MAX_CONNECTIONS``."""
    CLIENT = "client"
    """This client holds ``MAX_CONNECTIONS_PER_CLIENT``."""


class Slot:
    """One open connection's place; :meth:`release` gives it back (once, whatever happens)."""

    __slots__ = ("client", "held", "slots", "transport")

    def __init__(self, slots: ConnectionSlots, client: str, transport: Transport) -> None:
        self.slots = slots
        self.client = client
        self.transport = transport
        self.held = True

    def move_to(self, client: str) -> bool:
        """Count this connection as ``client``'s from now on (a WebSocket whose
        ``connection_init`` named its user). False, and nothing moved, when that client already
        holds its share."""
        if not self.held or client == self.client:
            return True
        slots = self.slots
        if slots.held_by(client) >= slots.max_per_client:
            return False
        slots._leave(self.client)
        slots._by_client[client] += 1
        self.client = client
        return True

    def release(self) -> None:
        if self.held:
            self.held = False
            self.slots._leave(self.client)
            self.slots.open -= 1
            self.slots.by_transport[self.transport] -= 1


class ConnectionSlots:
    """The process's slots, and how many each client holds."""

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = max_per_client
        self.open = 0
        self.by_transport: Counter[Transport] = Counter(dict.fromkeys(TRANSPORTS, 0))
        self.refused: Counter[tuple[Transport, Refusal]] = Counter()
        """Connections refused since start, by transport and limit (for metrics)."""
        self._by_client: Counter[str] = Counter()

    def take(self, client: str, transport: Transport) -> Slot | Refusal:
        refusal = None
        if self.open >= self.max_total:
            refusal = Refusal.PROCESS
        elif self._by_client[client] >= self.max_per_client:
            refusal = Refusal.CLIENT
        if refusal is not None:
            self.refused[transport, refusal] += 1
            return refusal
        self.open += 1
        self.by_transport[transport] += 1
        self._by_client[client] += 1
        # One string per client, not one per connection: a client may hold thousands.
        return Slot(self, sys.intern(client), transport)

    def reason(self, refusal: Refusal) -> str:
        """What a refused client is told (at most 123 bytes: it is a WebSocket close reason)."""
        if refusal is Refusal.PROCESS:
            return f"server at its connection limit ({self.max_total}); try again later"
        return (
            f"too many connections from this client (at most {self.max_per_client}); "
            "close one or try again later"
        )

    def held_by(self, client: str) -> int:
        return self._by_client.get(client, 0)

    @property
    def clients(self) -> int:
        """Clients holding at least one slot."""
        return len(self._by_client)

    def _leave(self, client: str) -> None:
        left = self._by_client[client] - 1
        if left > 0:
            self._by_client[client] = left
        else:  # forget it: the map holds only clients that are connected now
            del self._by_client[client]


def user_key(principal: Principal) -> str | None:
    """The client a signed-in caller is counted as; None for an anonymous one."""
    return None if principal.sub is None else f"user:{principal.sub}"


def address_key(scope: Scope) -> str:
    """The client an anonymous caller is counted as: its address (IPv6: its /64)."""
    client = scope.get("client")
    host = client[0] if client else None
    if not host:
        return "address:unknown"  # a Unix socket: everything through it is one client
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"address:{host}"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return f"address:{address.ipv4_mapped}"
        return f"address:{ipaddress.IPv6Network((address, 64), strict=False)}"
    return f"address:{address}"


def client_key(scope: Scope, principal: Principal) -> str:
    return user_key(principal) or address_key(scope)


def scope_slot(scope: Scope) -> Slot | None:
    slot: Slot | None = scope.get(SCOPE_KEY)
    return slot


def open_files_limit() -> int | None:
    """The process's soft limit on open files (None: unlimited)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit, as far as the kernel lets this
    process, and return (soft, hard) as they are now. Every connection is a file descriptor:
    a soft limit of 1024 (a common default) caps a server far below what it can serve."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:  # an unlimited hard limit is not a number of files
            logger.warning(
                "could not raise the open-files limit from %d to %d: %s", soft, hard, exc
            )
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def default_max_connections(files: int | None) -> int:
    """``MAX_CONNECTIONS`` when unset: 20,000, or three quarters of the open-file limit when that
    is lower. The last quarter is for what is not counted: queries over HTTP, PostgreSQL and
    broker connections, log files."""
    if files is None:
        return MAX_CONNECTIONS_CEILING
    return max(1, min(MAX_CONNECTIONS_CEILING, files * 3 // 4))


def default_max_per_client(max_total: int) -> int:
    """``MAX_CONNECTIONS_PER_CLIENT`` when unset: 200, or a quarter of ``MAX_CONNECTIONS`` when
    that is lower, so no one client can hold the process."""
    return max(1, min(MAX_CONNECTIONS_PER_CLIENT_CEILING, max_total // 4))


def connection_slots(max_total: int | None, max_per_client: int | None) -> ConnectionSlots:
    """The process's slots, from the settings (None: the defaults above), with what was chosen
    logged."""
    files = open_files_limit()
    total = max_total or default_max_connections(files)
    per_client = max_per_client or default_max_per_client(total)
    origin = "MAX_CONNECTIONS" if max_total else f"default for an open-files limit of {files}"
    logger.info("connection limits: %d in all (%s), %d per client", total, origin, per_client)
    if files is not None and total > files * 3 // 4:
        logger.warning(
            "MAX_CONNECTIONS=%d leaves little of the open-files limit (%d) for anything else: "
            "past it, new connections and files fail for every client",
            total,
            files,
        )
    return ConnectionSlots(total, per_client)
