"""The GraphQL context: one per HTTP request or WebSocket connection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from strawberry.types import Info as _Info

from api.auth import ANONYMOUS, Principal

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket

    from api.runtime.services import Services
    from api.streaming.connection import Connection


class Renewable(Protocol):
    """A connection whose credentials can be replaced while it is open (the graphql-transport-ws
    handler, :mod:`api.transport.graphql_transport_ws`; :mod:`api.graphql.session`)."""

    def renew(self, principal: Principal) -> int:
        """Take ``principal`` as the connection's caller from now on; the number of running
        subscriptions it ended because the new caller may not see them."""
        ...


@dataclass(slots=True)
class Context:
    services: Services
    request: Request | WebSocket
    response: Response | WebSocket | None = None
    connection_params: dict[str, Any] = field(default_factory=dict)
    """The ``connection_init`` payload on WebSockets (set by the protocol handler)."""
    connection: Connection | None = None
    """The WebSocket's outgoing side, when results can be written to it directly."""
    principal: Principal = ANONYMOUS
    """Who is calling: from the Authorization header (HTTP) or ``connection_init`` (WebSocket),
    replaced by ``renewSession`` on a WebSocket."""
    session: Renewable | None = None
    """The graphql-transport-ws connection, whose credentials ``renewSession`` replaces."""


Info = _Info[Context, None]
