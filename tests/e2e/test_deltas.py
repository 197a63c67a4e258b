"""Deltas over real sockets (docs/protocols.md, "Deltas"): for the list-shaped feeds (a
marathon's leaderboard, a trader's positions, the liquidation candidates, a wallet's strategies
and the admins' summary by status, a paper account's dashboard), clients that asked for deltas
rebuild from whole results and patches exactly the results a client that did not ask receives, at
every step of a run of changes; that client's frames carry nothing new; and a bad request is
refused alone, the connection's other subscriptions and other clients going on. (dashboardUpdates'
holdings are covered without a server, in tests/api/graphql/test_deltas.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

import jsonpatch
import orjson
import pytest

from tests.conftest import isolated_server
from tests.e2e.support import (
    ENGINE,
    LEADERBOARD,
    MODIFY,
    PLACE,
    SETTINGS,
    add,
    call,
    create,
    error_code,
    ingest,
    open_position,
    set_price,
    snapshot,
)
from tests.support import GraphQLWS, ServerProcess, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

POSITIONS = (
    "subscription { positions { __typename "
    "... on PositionsUpdate { user positions { id market size markPrice unrealizedPnl "
    "healthFactor } } "
    "... on PositionOpened { position { id size } } "
    "... on PositionModified { position { id size } reason } "
    "... on LiquidationWarning { position { id } healthFactor } } }"
)
CANDIDATES = (
    "subscription($n: Int!) { liquidations(limit: $n) { candidates { positionId market size "
    "healthFactor potentialReward } } }"
)
STRATEGIES = (
    "subscription { martingaleProgress { walletAddress strategies { strategyId currentRound "
    "totalRounds progressPercentage currentAmountSol totalDeployedSol profitLossSol status "
    "winRatePercentage riskLevel } } }"
)
SUMMARY = (
    "subscription { martingaleSummary { lastSettledRound statuses { status "
    "strategies totalDeployedSol profitLossSol } } }"
)
START = "mutation($i: StartStrategyInput!) { startStrategy(input: $i) { strategyId } }"
LIVE = (
    "subscription { liveDashboard { __typename "
    "... on BalanceUpdate { balance { walletBalance unrealizedPnl realizedPnl netBalance } } "
    "... on PaperPositionsUpdate { positions { symbol side size entryPrice markPrice "
    "unrealizedPnl } } "
    "... on OrdersUpdate { changed { id status filled } fills { orderId price fee } "
    "openOrders { id type price } } } }"
)
QUIET_S = 1.0
"""How long no frame may come before a run's clients are taken to have everything."""


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Marathons, perpetuals and the paper exchange, moved only by the tests; martingale rounds
    every 0.4 s; a whole result every 100 results, and liquidation candidates left on the list
    (not liquidated) while the test runs."""
    env = {
        **SETTINGS,
        **ENGINE,
        "LIQUIDATION_DELAY_S": "3600",
        "MUTATION_BURST": "200",
        "DELTA_FULL_EVERY": "100",
        "SIMULATION_SEED": "7",
        "MARTINGALE_ROUND_PERIOD_S": "0.4",
        "MARTINGALE_WIN_PROBABILITY": "0.5",
        "MARTINGALE_REWARD_MULTIPLIER": "2",
    }
    with isolated_server(
        database_url, env, tmp_path_factory.mktemp("deltas") / "server.log"
    ) as process:
        yield process


class Follower:
    """One subscription's frames, read as they come, and the results they stand for: as sent
    to a client that did not ask for deltas, or rebuilt from a delta client's whole results and
    patches (checking each patch's number follows the last)."""

    def __init__(self, client: GraphQLWS, id: str, delta: object) -> None:
        self.client = client
        self.id = id
        self.delta = delta
        self.frames: list[bytes] = []
        self.results: list[dict[str, Any]] = []
        self.patches: dict[int, list[Any]] = {}
        self.seq = 0
        self.last_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def subscribe(self, query: str, variables: dict[str, Any]) -> None:
        payload: dict[str, Any] = {"query": query, "variables": variables}
        if self.delta is not None:
            payload["extensions"] = {"delta": self.delta}
        await self.client.send({"id": self.id, "type": "subscribe", "payload": payload})
        self._task = asyncio.create_task(self._read())

    async def first(self) -> None:
        """Until the first result; what the reader failed on (an ``error`` message), if it did."""
        assert self._task is not None
        await until(lambda: bool(self.results) or self._task.done())  # type: ignore[union-attr]
        if self._task.done():
            self._task.result()

    async def _read(self) -> None:
        while True:
            raw = await self.client.ws.recv()
            frame = raw.encode() if isinstance(raw, str) else raw
            self.frames.append(frame)
            self.last_at = time.monotonic()
            message = orjson.loads(frame)
            assert message["id"] == self.id, message
            assert message["type"] == "next", message
            self.results.append(self._take(message["payload"]))

    def _take(self, payload: dict[str, Any]) -> dict[str, Any]:
        if self.delta is None:
            return payload
        delta = payload.pop("extensions")["delta"]
        if "patch" in delta:
            assert delta["seq"] == self.seq + 1, (self.seq, delta)
            self.patches[delta["seq"]] = delta["patch"]
            result: dict[str, Any] = jsonpatch.apply_patch(self.results[-1], delta["patch"])
        else:
            result = payload
        self.seq = delta["seq"]
        return result

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def followers(
    server: ServerProcess, bearer: str | None, query: str, variables: dict[str, Any]
) -> AsyncIterator[tuple[Follower, Follower, Follower]]:
    """The same subscription (one shared execution) for a client that did not ask for deltas,
    one that did and one that wants a whole result every 3, each on a socket of its own; yielded
    once each has its first result."""
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(GraphQLWS.connect(server.ws_url, token=bearer))
            for _ in range(3)
        ]
        trio = (
            Follower(clients[0], "plain", None),
            Follower(clients[1], "delta", True),
            Follower(clients[2], "often", {"fullEvery": 3}),
        )
        for follower in trio:
            await follower.subscribe(query, variables)
            await follower.first()
        try:
            yield trio
        finally:
            for follower in trio:
                await follower.stop()


async def until(done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def settled(trio: tuple[Follower, Follower, Follower]) -> None:
    """Until no frame came for QUIET_S and every client has as many results."""

    def quiet() -> bool:
        now = time.monotonic()
        return all(now - f.last_at > QUIET_S for f in trio) and (
            len({len(f.results) for f in trio}) == 1
        )

    await until(quiet, timeout=30.0)


def check(trio: tuple[Follower, Follower, Follower], least_patches: int) -> None:
    """The three clients' results are the same (from where each joined, for a feed that does not
    pause), the plain client's frames carry nothing new, and patches were sent once."""
    plain, delta, often = trio
    # The client that did not ask gets what it got before deltas: {"data": ...} alone, as the
    # server encodes it, in a frame that differs from the others' only by its id.
    for frame, result in zip(plain.frames, plain.results, strict=True):
        assert list(result) == ["data"]
        assert frame == b'{"id":"plain","type":"next","payload":' + orjson.dumps(result) + b"}"
    for follower in (delta, often):
        assert _aligned(plain.results, follower.results), "patches rebuild every result"
    assert len(delta.patches) >= least_patches, len(delta.patches)
    assert len(often.patches) <= 2 * (len(often.results) - len(often.patches))
    # One patch per result, the same bytes for every member that had the result before it.
    for seq in delta.patches.keys() & often.patches.keys():
        assert orjson.dumps(delta.patches[seq]) == orjson.dumps(often.patches[seq])
    if least_patches:  # else whole results, each some 35 bytes longer for its number
        common = min(len(plain.frames), len(delta.frames))
        assert sum(map(len, delta.frames[:common])) < sum(map(len, plain.frames[:common]))


def _aligned(plain: list[dict[str, Any]], rebuilt: list[dict[str, Any]]) -> bool:
    """Whether ``rebuilt`` is ``plain`` from where its client joined (the result it started with
    is one the plain client had), as far as both go: at least 3 results."""
    for start, result in enumerate(plain):
        if result == rebuilt[0]:
            length = min(len(plain) - start, len(rebuilt))
            if length >= min(3, len(rebuilt)) and plain[start : start + length] == rebuilt[:length]:
                return True
    return False


async def test_a_leaderboard_rebuilt_from_patches_is_the_leaderboard(
    server: ServerProcess,
) -> None:
    organiser = f"org-{uuid.uuid4().hex[:8]}"
    marathon = await create(server, "Deltas", organiser, public=True)
    base = random.randrange(10_000, 90_000) * 100
    logins = [base + n for n in range(8)]
    for n, login in enumerate(logins):
        await add(server, marathon, login, f"trader-{uuid.uuid4().hex[:8]}-{n}", organiser)
        assert await ingest(server, snapshot(login, "10000", "10000"))
    rng = random.Random(21)
    async with followers(server, None, LEADERBOARD, {"m": marathon, "top": 6}) as trio:
        for at in range(1, 25):
            login = rng.choice(logins)
            equity = str(10_000 + rng.randrange(-900, 900))
            assert await ingest(server, snapshot(login, "10000", equity, "5", at=at))
            await asyncio.sleep(rng.choice([0.0, 0.06]))
        await settled(trio)
        check(trio, least_patches=5)


async def test_positions_and_candidates_rebuilt_from_patches_are_the_same(
    server: ServerProcess,
) -> None:
    user = f"delta-{uuid.uuid4().hex[:8]}"
    other = f"delta-{uuid.uuid4().hex[:8]}"
    await set_price(server, "BTC-PERP", "50000")
    await set_price(server, "ETH-PERP", "3000")
    async with (
        followers(server, token(user), POSITIONS, {}) as positions,
        followers(server, None, CANDIDATES, {"n": 10}) as candidates,
    ):
        ids = [
            (await open_position(server, user, "BTC-PERP", "LONG", "1", "10"))["id"],
            (await open_position(server, user, "ETH-PERP", "SHORT", "2", "5"))["id"],
            (await open_position(server, other, "BTC-PERP", "LONG", "0.5", "9"))["id"],
            (await open_position(server, other, "ETH-PERP", "SHORT", "1", "8"))["id"],
        ]
        rng = random.Random(6902)
        for _ in range(24):
            # Around each position's liquidation price (BTC longs at about 46,392 and 45,819, ETH
            # shorts at about 3,495 and 3,286): positions enter and leave the candidates (never
            # liquidated here), which reorder as their health moves.
            if rng.random() < 0.6:
                await set_price(server, "BTC-PERP", str(rng.randrange(45_500, 48_000)))
            else:
                await set_price(server, "ETH-PERP", str(rng.randrange(3_100, 3_700)))
            if rng.random() < 0.2:
                body = await call(
                    server, MODIFY, {"i": {"positionId": ids[0], "sizeDelta": "0.1"}}, token(user)
                )
                # Refused while it is liquidatable, and then nothing changes: either will do.
                assert "errors" not in body or error_code(body) == "WOULD_BE_LIQUIDATABLE", body
            await asyncio.sleep(rng.choice([0.0, 0.15]))
        await settled(positions)
        await settled(candidates)
        check(positions, least_patches=5)
        check(candidates, least_patches=3)


async def test_strategies_and_their_summary_rebuilt_from_patches_are_the_same(
    server: ServerProcess,
) -> None:
    wallet = f"wallet-{uuid.uuid4().hex[:8]}"
    async with (
        followers(server, token(wallet), STRATEGIES, {}) as strategies,
        followers(server, token("root", "admin"), SUMMARY, {}) as summary,
    ):
        for rounds, multiplier in ((6, "2"), (9, "1.5"), (12, "2")):
            config = {"baseAmountSol": "1", "multiplier": multiplier, "totalRounds": rounds}
            started = await call(
                server, START, {"i": {**config, "stopLossSol": "100"}}, token(wallet)
            )
            assert "errors" not in started, started
            await asyncio.sleep(0.3)
        # Rounds turn every 0.4 s: each one moves every active strategy and the summary.
        await until(lambda: min(len(f.results) for f in (*strategies, *summary)) >= 12, 30)
        await asyncio.sleep(0.5)
        # Each round moves most fields of every row: some results go whole, being no larger.
        check(strategies, least_patches=1)
        check(summary, least_patches=1)


async def test_a_paper_account_rebuilt_from_patches_is_the_account(server: ServerProcess) -> None:
    trader = f"paper-{uuid.uuid4().hex[:8]}"
    for market, price in (("ETH-PERP", "3000"), ("BTC-PERP", "50000")):
        await set_price(server, market, price)
    rng = random.Random(2026)
    async with followers(server, token(trader), LIVE, {}) as live:
        for step in range(16):
            choice = rng.random()
            if choice < 0.4:
                market = rng.choice(["ETH-PERP", "BTC-PERP"])
                base = 3000 if market == "ETH-PERP" else 50000
                await set_price(server, market, str(base + rng.randrange(-50, 50)))
            else:
                order = {
                    "symbol": rng.choice(["ETH-PERP", "BTC-PERP"]),
                    "side": rng.choice(["BUY", "SELL"]),
                    "type": "MARKET" if choice < 0.7 else "LIMIT",
                    "quantity": str(rng.choice(["0.1", "0.2", "0.5"])),
                    "clientOrderId": f"{trader}-{step}",
                }
                if order["type"] == "LIMIT":
                    order["price"] = "1000"  # far from the market: it stays open
                placed = await call(server, PLACE, {"i": order}, token(trader))
                assert "errors" not in placed, placed
            await asyncio.sleep(rng.choice([0.0, 0.1]))
        await settled(live)
        # A stream of events of several types, each against the one before: mostly whole (a
        # patch between a balance and a list of positions is no smaller); still rebuilt exactly.
        check(live, least_patches=0)


async def test_a_bad_request_is_refused_and_the_others_go_on(server: ServerProcess) -> None:
    await set_price(server, "SOL-PERP", "150")
    query = 'subscription { priceUpdates(market: "SOL-PERP") { price } }'
    async with (
        GraphQLWS.connect(server.ws_url) as client,
        GraphQLWS.connect(server.ws_url) as bystander,
    ):
        delta = {"query": query, "extensions": {"delta": True}}
        await client.send({"id": "ok", "type": "subscribe", "payload": delta})
        await bystander.subscribe("b", query)
        first = (await client.receive())["payload"]["extensions"]["delta"]["seq"]
        await bystander.next_data("b", "priceUpdates")
        for bad in ({"fullEvery": 0}, "yes", {"every": 3}):
            payload = {"query": query, "extensions": {"delta": bad}}
            await client.send({"id": "bad", "type": "subscribe", "payload": payload})
            refused = await client.receive()
            assert refused["id"] == "bad", refused
            assert refused["type"] == "error", refused
            [error] = refused["payload"]
            assert error["extensions"] == {"code": "INVALID_DELTA"}
            assert "extensions.delta" in error["message"]
        await set_price(server, "SOL-PERP", "151")
        moved = await client.receive()
        assert moved["id"] == "ok"
        price = (await bystander.next_data("b", "priceUpdates"))["price"]
        # Whole, numbered next: a patch of this one field would be larger than the result.
        assert moved["payload"] == {
            "data": {"priceUpdates": {"price": price}},
            "extensions": {"delta": {"seq": first + 1}},
        }
