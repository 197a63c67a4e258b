"""The graphql-transport-ws handler (api/transport/graphql_transport_ws.py) without a server, where
a server cannot show it; through the server, tests/e2e."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from strawberry.types.unset import UNSET

from api.graphql.context import Context
from api.graphql.fanout import Groups, Starts
from api.transport.graphql_transport_ws import TransportWSHandler


class Gate(Starts):
    """Admission held closed until the test opens it."""

    def __init__(self) -> None:
        super().__init__()
        self.open = asyncio.Event()
        self.waited = 0

    async def turn(self) -> None:
        self.waited += 1
        await self.open.wait()


class Socket:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send_json(self, message: Any) -> None:
        self.sent.append(message)

    async def close(self, code: int, reason: str) -> None:  # pragma: no cover
        self.sent.append(("close", code, reason))


class View:
    async def on_ws_connect(self, context: Context) -> Any:
        return UNSET


async def test_a_connection_init_is_acknowledged_in_its_turn() -> None:
    """Verifying a token and acknowledging are a connection's start: admitted as subscriptions'
    starts are (api.graphql.fanout.Starts), so a reconnect storm's thousands of connection_init
    messages spread over the loop's turns instead of all running in one."""
    gate = Gate()
    services = SimpleNamespace(groups=Groups(queue_size=4, starts=gate))
    request = SimpleNamespace(headers={})  # the handshake, with no Authorization header
    context = Context(services=services, request=request)  # type: ignore[arg-type]
    socket = Socket()
    handler = TransportWSHandler(
        View(),  # type: ignore[arg-type]
        socket,  # type: ignore[arg-type]
        context,
        None,
        None,  # type: ignore[arg-type]
        timedelta(seconds=10),
    )
    init = asyncio.ensure_future(handler.handle_connection_init({"type": "connection_init"}))
    await asyncio.sleep(0.01)
    assert (gate.waited, socket.sent) == (1, []), "no acknowledgement before its turn"
    gate.open.set()
    await asyncio.wait_for(init, 2)
    assert socket.sent == [{"type": "connection_ack"}]
    assert handler.connection_acknowledged
