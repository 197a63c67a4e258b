"""renewSession and the expiry notice through the real transports: a socket outlives its first
token without a gap, a renewal for someone else changes nothing, a downgraded role loses exactly
the subscriptions it may no longer see."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import FEED_HZ, isolated_server
from tests.e2e.support import call, error_code, open_position
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, contiguous, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

RENEW = (
    "mutation($t: String!) { renewSession(token: $t) "
    "{ subject role expiresAt renewed endedSubscriptions } }"
)
POSITIONS = (
    "subscription($u: String) { positions(user: $u) { __typename "
    "... on PositionOpened { position { id owner } } } }"
)


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server alone on its database: its simulated prices flow whatever other tests' servers
    do (the suite's shared server may not lead the price feed), and these tests count them."""
    with isolated_server(
        database_url,
        {"PRICE_FEED_HZ": FEED_HZ},
        tmp_path_factory.mktemp("renewal") / "server.log",
    ) as process:
        yield process


class Inbox:
    """Every message of a socket, read as it comes, by operation id (pings under ``ping``)."""

    def __init__(self, client: GraphQLWS) -> None:
        self.client = client
        self.by_id: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.arrived: defaultdict[str, list[float]] = defaultdict(list)
        self.changed = asyncio.Event()

    async def read(self) -> None:
        while True:
            message = await self.client.receive(timeout=30)
            key = message.get("id") or message["type"]
            self.by_id[key].append(message)
            self.arrived[key].append(time.monotonic())
            self.changed.set()

    async def until(self, key: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while len(self.by_id[key]) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.by_id[key]

    def sequences(self, id: str) -> list[int]:
        return [
            m["payload"]["data"]["priceUpdates"]["sequence"]
            for m in self.by_id[id]
            if m["type"] == "next"
        ]


@contextlib.asynccontextmanager
async def reading(client: GraphQLWS) -> AsyncIterator[Inbox]:
    inbox = Inbox(client)
    task = asyncio.create_task(inbox.read())
    try:
        yield inbox
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def close_of(client: GraphQLWS) -> tuple[int | None, str | None]:
    return client.ws.close_code, client.ws.close_reason


async def renew(client: GraphQLWS, inbox: Inbox, id: str, new_token: str) -> dict[str, Any]:
    await client.send(
        {"id": id, "type": "subscribe", "payload": {"query": RENEW, "variables": {"t": new_token}}}
    )
    first = (await inbox.until(id))[0]
    assert first["type"] == "next", first
    payload: dict[str, Any] = first["payload"]
    return payload


async def test_a_subscription_outlives_its_first_token_across_three_renewals_without_a_gap(
    server: ServerProcess,
) -> None:
    started = time.monotonic()
    async with (
        GraphQLWS.connect(server.ws_url, token=token("erin", ttl_s=2)) as client,
        reading(client) as inbox,
    ):
        await client.subscribe("p", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await inbox.until("p")
        for n in range(3):
            await asyncio.sleep(max(started + 1 + n - time.monotonic(), 0))
            payload = await renew(client, inbox, f"r{n}", token("erin", ttl_s=2))
            renewed = payload["data"]["renewSession"]
            assert renewed["subject"] == "erin"
            assert renewed["role"] == "user"
            assert renewed["renewed"] is True
            assert renewed["endedSubscriptions"] == 0
            assert renewed["expiresAt"] is not None
        # Past the first token's expiry (2 s) by well over a second: still open, still served.
        await asyncio.sleep(max(started + 3.8 - time.monotonic(), 0))
        assert client.ws.close_code is None
        sequences = inbox.sequences("p")
        assert len(sequences) >= 25  # ~10 a second
        assert contiguous(sequences), sequences
        assert "p" not in {m.get("id") for m in inbox.by_id["complete"]}
        # The last token governs the close: it comes when that one expires, not before.
        async with asyncio.timeout(6):
            await client.ws.wait_closed()
        assert close_of(client) == (4403, "Forbidden: token expired")
        assert time.monotonic() - started > 4


async def test_a_renewal_for_another_subject_is_refused_and_changes_nothing(
    server: ServerProcess,
) -> None:
    async with (
        GraphQLWS.connect(server.ws_url, token=token("frank", ttl_s=2)) as client,
        reading(client) as inbox,
    ):
        await client.subscribe("p", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await inbox.until("p")
        started = time.monotonic()
        payload = await renew(client, inbox, "r", token("mallory", "admin", ttl_s=600))
        assert payload["data"] is None
        assert error_code(payload) == "FORBIDDEN"
        assert "another subject" in payload["errors"][0]["message"]
        forged = await renew(client, inbox, "f", token("frank", ttl_s=600, secret="x" * 32))
        assert error_code(forged) == "UNAUTHENTICATED"
        garbage = await renew(client, inbox, "g", "not.a.jwt")
        assert error_code(garbage) == "UNAUTHENTICATED"
        assert "not.a.jwt" not in str(garbage)
        # The first token still governs: the socket closes at its expiry, served until then.
        async with asyncio.timeout(5):
            await client.ws.wait_closed()
        assert close_of(client)[0] == 4403
        assert time.monotonic() - started < 3
        assert contiguous(inbox.sequences("p"))


@pytest.mark.parametrize(
    "padding",
    [0, 17_000],
    ids=["shared-execution", "own-execution"],  # past 16 KB a document is not shared
)
async def test_a_downgraded_role_loses_exactly_the_subscriptions_it_may_no_longer_see(
    server: ServerProcess, padding: int
) -> None:
    async with (
        GraphQLWS.connect(server.ws_url, token=token("grace", "admin")) as client,
        reading(client) as inbox,
    ):
        others = POSITIONS + " " * padding
        await client.subscribe("others", others, {"u": "heidi"})  # an admin's only
        await client.subscribe("own", POSITIONS, {})  # the caller's own: any role
        await client.subscribe("p", PRICE_SUBSCRIPTION, {"m": "ETH-PERP"})  # public
        for id in ("others", "own", "p"):
            await inbox.until(id)
        payload = await renew(client, inbox, "r", token("grace", "user"))
        assert payload["data"]["renewSession"]["role"] == "user"
        assert payload["data"]["renewSession"]["endedSubscriptions"] == 1
        ended = await inbox.until("others", 3)
        error, complete = ended[-2:]
        assert error["type"] == "next"
        assert error["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert "heidi" in error["payload"]["errors"][0]["message"]
        assert complete == {"id": "others", "type": "complete"}
        # The others go on: the public stream keeps coming, and the own stream sees a change.
        seen = len(inbox.sequences("p"))
        opened = await open_position(server, "grace", "ETH-PERP", "LONG", "0.1", "2")
        async with asyncio.timeout(10):
            while not any(
                m["type"] == "next"
                and m["payload"]["data"]["positions"].get("position", {}).get("id") == opened["id"]
                for m in inbox.by_id["own"]
            ):
                inbox.changed.clear()
                await inbox.changed.wait()
        await inbox.until("p", seen + 2)  # two more prices: still served after the renewal
        assert contiguous(inbox.sequences("p"))
        assert all(m["type"] == "next" for m in inbox.by_id["own"])
        assert len(inbox.by_id["others"]) == 3  # nothing after its complete


async def test_the_expiry_notice_is_a_ping_that_says_how_long_is_left(
    server: ServerProcess,
) -> None:
    # TOKEN_RENEW_NOTICE_S is 60 by default: a token of 61.5 s gets its notice ~1.5 s in.
    async with (
        GraphQLWS.connect(server.ws_url, token=token("ivan", ttl_s=61.5)) as client,
        reading(client) as inbox,
    ):
        connected = time.monotonic()
        [ping] = await inbox.until("ping", timeout=5)
        after = inbox.arrived["ping"][0] - connected
        assert 0.3 < after < 3, after
        assert 58 <= ping["payload"]["tokenExpiresInS"] <= 61
        assert ping["payload"]["tokenExpiresAt"].startswith("20")
        # A renewal restarts the clock: the next notice is the new token's.
        renewed = await renew(client, inbox, "r", token("ivan", ttl_s=61.5))
        assert renewed["data"]["renewSession"]["renewed"] is True
        pings = await inbox.until("ping", 2, timeout=5)
        assert 58 <= pings[1]["payload"]["tokenExpiresInS"] <= 61


async def test_over_http_renew_session_validates_and_reports_without_renewing(
    server: ServerProcess,
) -> None:
    fresh = token("judy", ttl_s=300)
    body = await call(server, RENEW, {"t": fresh}, bearer=token("judy"))
    session = body["data"]["renewSession"]
    assert session["subject"] == "judy"
    assert session["renewed"] is False
    assert session["endedSubscriptions"] == 0
    other = await call(server, RENEW, {"t": token("mallory")}, bearer=token("judy"))
    assert error_code(other) == "FORBIDDEN"
    async with httpx.AsyncClient(timeout=10) as http:
        anonymous = await http.post(server.url, json={"query": RENEW, "variables": {"t": fresh}})
    assert error_code(anonymous.json()) == "UNAUTHENTICATED"
