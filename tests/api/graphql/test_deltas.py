"""Deltas through a shared execution, without a server: a group's members that asked for deltas
(:class:`api.graphql.fanout.DeltaSink`) rebuild, from whole results and patches, exactly the
results the members that did not ask get, which are the bytes they got before deltas existed."""

from __future__ import annotations

import asyncio
import copy
import random
import re
from typing import TYPE_CHECKING, Any

import jsonpatch
import orjson
import pytest
from graphql import GraphQLError
from strawberry.types import ExecutionResult

from api.graphql.deltas import CODE, DeltaRequestError, requested, whole
from api.graphql.fanout import DeltaSink, Groups, RawSink
from api.streaming.connection import Connection

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, MutableMapping


class Socket:
    """A WebSocket's ASGI ``send``: every text frame, in order; held while ``open`` is clear (a
    client that reads slowly, whose latest-value frames the connection conflates)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.open = asyncio.Event()
        self.open.set()
        self.arrived = asyncio.Event()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        await self.open.wait()
        self.texts.append(message["text"])
        self.arrived.set()

    def connection(self) -> Connection:
        return Connection(self.send, max_pending_bytes=1 << 20)


class DeltaClient:
    """What a client that asked for deltas keeps: the last result, rebuilt from whole results
    and patches, checking each patch's number follows the last."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.seq = 0
        self.wholes = 0
        self.patches = 0

    def take(self, text: str) -> dict[str, Any]:
        payload = orjson.loads(text)["payload"]
        delta = payload.pop("extensions")["delta"]
        if "patch" in delta:
            assert self.result is not None
            assert delta["seq"] == self.seq + 1, "a patch for a result this client has"
            self.result = jsonpatch.apply_patch(self.result, delta["patch"])
            self.patches += 1
        else:
            self.result = payload
            self.wholes += 1
        self.seq = delta["seq"]
        assert self.result is not None
        return copy.deepcopy(self.result)


# The list-shaped feeds' results, as the schema shapes them, moved at random.


def _leaderboard(rng: random.Random, logins: list[int]) -> dict[str, Any]:
    rows = [
        {
            "rank": rank,
            "login": login,
            "profit": str(rng.randint(-50, 50)),
            "openPositions": [{"symbol": s, "volume": "0.1"} for s in rng.sample("ABC", 2)],
        }
        for rank, login in enumerate(rng.sample(logins, rng.randint(0, len(logins))), 1)
    ]
    return {"marathonLeaderboard": {"accounts": len(rows), "rows": rows}}


def _positions(rng: random.Random, ids: list[int]) -> dict[str, Any]:
    positions = [
        {"id": f"p-{i}", "size": str(rng.randint(1, 3)), "healthFactor": rng.choice([None, "1.2"])}
        for i in rng.sample(ids, rng.randint(0, len(ids)))
    ]
    return {"positions": {"__typename": "PositionsUpdate", "positions": positions}}


def _candidates(rng: random.Random, ids: list[int]) -> dict[str, Any]:
    rows = [
        {"positionId": f"p-{i}", "potentialReward": str(rng.randint(0, 9))}
        for i in sorted(rng.sample(ids, rng.randint(0, len(ids))), key=lambda _: rng.random())
    ]
    return {"liquidations": {"candidates": rows}}


def _strategies(rng: random.Random, ids: list[int]) -> dict[str, Any]:
    strategies = [
        {"strategyId": i, "currentRound": rng.randint(1, 4), "status": "ACTIVE"}
        for i in rng.sample(ids, rng.randint(0, len(ids)))
    ]
    statuses = [{"status": s, "count": rng.randint(0, 3)} for s in ("ACTIVE", "COMPLETED")]
    return {"martingaleProgress": {"strategies": strategies, "statuses": statuses}}


def _account(rng: random.Random, ids: list[int]) -> dict[str, Any]:
    symbols = rng.sample(["BTC", "ETH", "SOL", "ARB"], rng.randint(0, 4))
    return {
        "liveDashboard": {
            "positions": [{"symbol": s, "size": str(rng.randint(1, 5))} for s in symbols],
            "openOrders": [
                {"id": i, "status": "OPEN", "filled": str(rng.randint(0, 2))}
                for i in rng.sample(ids, rng.randint(0, len(ids)))
            ],
            "holdings": [{"asset": a, "price": str(rng.randint(1, 9))} for a in symbols],
        }
    }


FEEDS: dict[str, Callable[[random.Random, list[int]], dict[str, Any]]] = {
    "marathonLeaderboard": _leaderboard,
    "positions": _positions,
    "liquidations": _candidates,
    "martingaleProgress": _strategies,
    "liveDashboard": _account,
}


def _results(feed: str, seed: int, count: int) -> list[ExecutionResult]:
    rng = random.Random(seed)
    ids = list(range(1, 13))
    data = FEEDS[feed](rng, ids)
    results = [ExecutionResult(data=data, errors=None)]
    for _ in range(count - 1):
        if rng.random() < 0.4:  # a small change: one field of one row, or one row moving
            data = copy.deepcopy(data)
            _nudge(rng, data)
        elif rng.random() < 0.08:
            results.append(ExecutionResult(data=None, errors=[GraphQLError("upstream down")]))
            continue
        else:
            data = FEEDS[feed](rng, ids)
        results.append(ExecutionResult(data=data, errors=None))
    return results


def _nudge(rng: random.Random, value: Any) -> None:
    lists = []

    def walk(node: Any) -> None:
        if isinstance(node, list) and node:
            lists.append(node)
        for child in (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        ):
            walk(child)

    walk(value)
    if not lists:
        return
    rows = rng.choice(lists)
    row = rows.pop(rng.randrange(len(rows)))
    if isinstance(row, dict):
        field = rng.choice([k for k in row if isinstance(row[k], str)] or [None])
        if field is not None:
            row[field] = row[field] + "1"
    rows.insert(rng.randrange(len(rows) + 1), row)


class Source:
    """The group's execution: the results the test hands it, one by one."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ExecutionResult] = asyncio.Queue()

    async def open(self) -> AsyncGenerator[Any, None]:
        return self._stream()

    async def _stream(self) -> AsyncGenerator[Any, None]:
        while True:
            yield await self.queue.get()


async def _settle(sockets: list[Socket], counts: list[int]) -> None:
    """Until every socket has sent ``counts`` frames."""
    async with asyncio.timeout(2):
        while any(len(s.texts) < n for s, n in zip(sockets, counts, strict=True)):
            for socket in sockets:
                socket.arrived.clear()
            waits = [asyncio.ensure_future(s.arrived.wait()) for s in sockets]
            _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for wait in pending:
                wait.cancel()


def _plain_frame(id: str, result: ExecutionResult) -> str:
    """The ``next`` frame a subscriber that did not ask for deltas got before deltas existed."""
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [e.formatted for e in result.errors]
    return f'{{"id":"{id}","type":"next","payload":{orjson.dumps(body).decode()}}}'


@pytest.mark.parametrize("feed", sorted(FEEDS))
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_patches_rebuild_every_result_of_a_list_feed(feed: str, seed: int) -> None:
    groups = Groups(queue_size=8)
    source = Source()
    plain, delta, often, late = Socket(), Socket(), Socket(), Socket()
    members = [
        groups.join("k", source.open, RawSink(plain.connection(), "1", lambda: None)),
        groups.join("k", source.open, DeltaSink(delta.connection(), "1", lambda: None, 100)),
        groups.join("k", source.open, DeltaSink(often.connection(), "7", lambda: None, 3)),
    ]
    clients = {id(delta): DeltaClient(), id(often): DeltaClient(), id(late): DeltaClient()}
    results = _results(feed, seed, 60)
    sockets = [plain, delta, often]
    for step, result in enumerate(results):
        if step == 20:
            members.append(
                groups.join("k", source.open, DeltaSink(late.connection(), "9", lambda: None, 100))
            )
            sockets.append(late)
            await _settle(sockets, [step] * 3 + [1])
            assert clients[id(late)].take(late.texts[0])["data"] == results[19].data
        source.queue.put_nowait(result)
        await _settle(sockets, [step + 1] * 3 + ([step - 18] if step >= 20 else []))
        assert plain.texts[step] == _plain_frame("1", result), "unchanged without deltas"
        expected = orjson.loads(orjson.dumps({"data": result.data}))
        for socket in sockets[1:]:
            got = clients[id(socket)].take(socket.texts[-1])
            if result.errors:
                assert got["errors"][0]["message"] == "upstream down"
                assert "patch" not in socket.texts[-1]
            else:
                assert got == expected, (feed, step)
    assert clients[id(delta)].patches >= 5, "small changes go as patches"
    assert clients[id(often)].patches <= 2 * clients[id(often)].wholes
    for member in members:
        member.leave()


async def test_a_slow_reader_gets_a_whole_result_for_the_ones_it_missed() -> None:
    groups = Groups(queue_size=8)
    source = Source()
    slow = Socket()
    member = groups.join("k", source.open, DeltaSink(slow.connection(), "1", lambda: None, 100))
    client = DeltaClient()
    rows = [{"login": n, "profit": "0"} for n in range(20)]
    source.queue.put_nowait(ExecutionResult(data={"rows": rows}, errors=None))
    await _settle([slow], [1])
    client.take(slow.texts[0])
    slow.open.clear()  # the client stops reading: frames wait, the newest replacing the others
    for n in range(1, 6):
        rows = copy.deepcopy(rows)
        rows[n]["profit"] = str(n)
        source.queue.put_nowait(ExecutionResult(data={"rows": rows}, errors=None))
        await asyncio.sleep(0.01)
    slow.open.set()
    await _settle([slow], [3])
    await asyncio.sleep(0.05)
    # The frame already on its way when the client stopped, then the newest, whole: those
    # between were replaced while they waited, and a patch would not apply to what it has.
    assert len(slow.texts) == 3
    for text in slow.texts[1:]:
        got = client.take(text)  # checks each patch's number
    assert got == {"data": {"rows": rows}}
    assert "patch" not in slow.texts[-1], "what it missed comes whole"
    member.leave()


async def test_a_group_without_delta_members_keeps_no_previous_result() -> None:
    groups = Groups(queue_size=8)
    source = Source()
    socket = Socket()
    member = groups.join("k", source.open, RawSink(socket.connection(), "1", lambda: None))
    source.queue.put_nowait(ExecutionResult(data={"rows": [{"id": 1}]}, errors=None))
    await _settle([socket], [1])
    (group,) = groups._live
    assert (group.deltas, group.previous) == (0, None)
    member.leave()


def test_a_whole_result_is_numbered_in_its_extensions() -> None:
    assert (
        whole(b'{"data":{"a":1}}', None, 7) == b'{"data":{"a":1},"extensions":{"delta":{"seq":7}}}'
    )
    assert orjson.loads(whole(b'{"data":null,"extensions":{"x":1}}', {"x": 1}, 2)) == {
        "data": None,
        "extensions": {"x": 1, "delta": {"seq": 2}},
    }


@pytest.mark.parametrize(
    ("extensions", "full_every"),
    [
        (None, None),
        ({}, None),
        ({"delta": None}, None),
        ({"delta": False}, None),
        ({"other": 1}, None),
        ({"delta": True}, 100),
        ({"delta": {}}, 100),
        ({"delta": {"fullEvery": 10}}, 10),
        ({"delta": {"fullEvery": 1000}}, 100),
    ],
)
def test_the_requests_a_subscribe_may_make(extensions: object, full_every: int | None) -> None:
    assert requested(extensions, 100) == full_every


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (1, "must be true, false, null or an object"),
        ("yes", "must be true, false, null or an object"),
        ([], "must be true, false, null or an object"),
        ({"fullevery": 3}, "unknown field(s) fullevery"),
        ({"fullEvery": 0}, "fullEvery must be an integer of at least 1"),
        ({"fullEvery": 2.5}, "fullEvery must be an integer of at least 1"),
        ({"fullEvery": True}, "fullEvery must be an integer of at least 1"),
    ],
)
def test_a_bad_request_is_refused_with_its_reason(value: object, reason: str) -> None:
    with pytest.raises(DeltaRequestError, match=re.escape(reason)) as refused:
        requested({"delta": value}, 100)
    assert refused.value.error().extensions == {"code": CODE}
