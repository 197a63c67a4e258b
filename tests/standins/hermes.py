"""A local Pyth Hermes: ``GET /v2/updates/price/stream`` on a real uvicorn on 127.0.0.1, speaking
Hermes' SSE format (as its server writes it: apps/hermes/server/src/api/rest/v2/sse.rs in
pyth-network/pyth-crosschain), replaying the documented messages of ``hermes_messages.json``.

A test scripts what the stream sends: :meth:`HermesStandIn.send` an update (filtered to the ids
the request asked for, as Hermes does), :meth:`~HermesStandIn.send_raw` any text as an event's data
(a malformed event), :meth:`~HermesStandIn.send_error` Hermes' own ``error`` event,
:meth:`~HermesStandIn.drop` the connection mid-stream (no end of the chunked body, as a network cut
leaves it), :meth:`~HermesStandIn.refuse_next` answer the next requests with an error status. Ids
it does not know get Hermes' 404 ``Price ids not found: ...``. The script is shared by the
connections one after another: what is sent while the client is away reaches it once it has
connected again.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

    from starlette.requests import Request

MESSAGES: dict[str, Any] = json.loads((Path(__file__).parent / "hermes_messages.json").read_text())
"""The recorded bodies, by name (``_source`` says where each came from)."""

BTC = MESSAGES["btc"]["parsed"][0]["id"]
ETH = MESSAGES["btc_eth"]["parsed"][1]["id"]

_DROP = object()


class _ErrorEvent(str):
    """The data of an ``event: error``."""


class DroppedError(Exception):
    """Raised inside the response to cut the connection without ending the body."""


def update(name: str, *, prices: dict[str, tuple[str, str, int]] | None = None) -> dict[str, Any]:
    """The recorded message ``name``, with the feeds of ``prices`` (id -> price, conf,
    publish_time) changed in ``price`` and nothing else."""
    body: dict[str, Any] = copy.deepcopy(MESSAGES[name])
    for entry in body["parsed"]:
        if prices and entry["id"] in prices:
            price, conf, publish_time = prices[entry["id"]]
            entry["price"].update(price=price, conf=conf, publish_time=publish_time)
    return body


def normalized(feed_id: str) -> str:
    return feed_id.lower().removeprefix("0x")


class HermesStandIn:
    def __init__(
        self,
        known_ids: Iterable[str] = (BTC, ETH),
        keepalive_s: float | None = None,
        prefix: str = "",
    ) -> None:
        """``keepalive_s``: send a keep-alive comment after this long without an event (Hermes:
        15 s); None sends none, so the stream falls silent. ``prefix``: a path before Hermes'
        own, as providers put a key there."""
        self.known = {normalized(i) for i in known_ids}
        self.keepalive_s = keepalive_s
        self.script: asyncio.Queue[object] = asyncio.Queue()
        self.refusals: list[tuple[int, str]] = []
        self.requests: list[dict[str, list[str]]] = []
        """The query of every stream request, in order (refused ones too)."""
        self.prefix = prefix
        self.app = Starlette(routes=[Route(f"{prefix}/v2/updates/price/stream", self._stream)])
        self.url = ""

    def send(self, body: dict[str, Any]) -> None:
        self.script.put_nowait(body)

    def send_raw(self, data: str) -> None:
        self.script.put_nowait(data)

    def send_error(self, text: str) -> None:
        """An ``error`` event, as Hermes sends when it cannot read an update of its own."""
        self.script.put_nowait(_ErrorEvent(text))

    def drop(self) -> None:
        self.script.put_nowait(_DROP)

    def refuse_next(self, status: int, body: str = "Service Unavailable", times: int = 1) -> None:
        self.refusals += [(status, body)] * times

    async def _stream(self, request: Request) -> Response:
        query = request.query_params
        self.requests.append({key: query.getlist(key) for key in query})
        if self.refusals:
            status, body = self.refusals.pop(0)
            return PlainTextResponse(body, status_code=status)
        ids = [normalized(i) for i in query.getlist("ids[]")]
        missing = [i for i in ids if i not in self.known]
        if missing:
            return PlainTextResponse(f"Price ids not found: {', '.join(missing)}", status_code=404)
        return StreamingResponse(self._events(set(ids)), media_type="text/event-stream")

    async def _events(self, ids: set[str]) -> AsyncIterator[bytes]:
        while True:
            try:
                async with asyncio.timeout(self.keepalive_s):
                    step = await self.script.get()
            except TimeoutError:
                yield b":\n\n"
                continue
            if step is _DROP:
                raise DroppedError("the stand-in cuts this connection")
            if isinstance(step, _ErrorEvent):
                yield f"event:error\ndata:{step}\n\n".encode()
                continue
            if isinstance(step, dict):
                body = copy.deepcopy(step)
                body["parsed"] = [e for e in body["parsed"] if normalized(e["id"]) in ids]
                data = json.dumps(body, separators=(",", ":"))
            else:
                data = str(step)
            yield f"data:{data}\n\n".encode()


@contextlib.asynccontextmanager
async def serving(standin: HermesStandIn) -> AsyncIterator[HermesStandIn]:
    """``standin`` on a real uvicorn on a free port of 127.0.0.1, until the block ends."""
    port = free_port()
    config = uvicorn.Config(
        standin.app,
        host="127.0.0.1",
        port=port,
        lifespan="off",
        log_level="critical",  # the dropped connections are the point, not news
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        assert not task.done(), "the Hermes stand-in did not start"
        assert time.monotonic() < deadline, "the Hermes stand-in did not start in 10 s"
        await asyncio.sleep(0.02)
    standin.url = f"http://127.0.0.1:{port}{standin.prefix}"
    try:
        yield standin
    finally:
        server.should_exit = True
        await task
