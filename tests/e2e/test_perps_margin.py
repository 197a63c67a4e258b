"""Perps positions are paid for from the owner's margin account (issue 16, finding 5): the
attacker who opened a 50,000 BTC long with no balance, the limits that bound a rich one, the
money a funded user's trades move, liquidation, concurrent opens, and the demo user."""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from tests.conftest import isolated_database, isolated_server
from tests.e2e.support import (
    ENGINE,
    POSITION,
    call,
    error_code,
    messages_until,
    of,
    open_position,
    set_price,
)
from tests.support import GraphQLWS, ServerProcess, loop_watch, token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

D = Decimal

SERVER = {**ENGINE, "MUTATION_BURST": "100", "MUTATION_RATE_PER_S": "50"}
ACCOUNT = "query($u: String) { perpsMarginAccount(user: $u) { owner balance deposited revision } }"
OPEN = "mutation($i: OpenPositionInput!) { openPosition(input: $i) { " + POSITION + " } }"
MODIFY = "mutation($i: ModifyPositionInput!) { modifyPosition(input: $i) { id size } }"
CLOSE = "mutation($id: ID!) { closePosition(positionId: $id) { returned } }"
INGEST = "mutation($i: PositionChangeInput!) { ingestPositionChange(input: $i) { stored } }"
STREAM = (
    "subscription { positions { __typename "
    "... on PositionsUpdate { positions { id collateral } account { balance revision } } "
    "... on PositionOpened { position { id collateral } fill { fee } } "
    "... on PositionClosed { returned } "
    "... on PositionLiquidated { liquidationReward returned } } }"
)


@pytest.fixture(scope="module")
def margin_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Every account starts with the default 10,000; only the tests publish prices."""
    with isolated_server(
        database_url, SERVER, tmp_path_factory.mktemp("margin") / "server.log"
    ) as process:
        yield process


@pytest.fixture(scope="module")
def rich_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Every account starts with a billion: what stops a position here is the limits."""
    with isolated_server(
        database_url,
        {**SERVER, "PERPS_INITIAL_BALANCE": "1000000000"},
        tmp_path_factory.mktemp("rich") / "server.log",
    ) as process:
        yield process


@contextlib.asynccontextmanager
async def watched(server: ServerProcess) -> AsyncIterator[dict[str, float]]:
    """loop_watch's bystander (a BTC price subscriber and a /healthz poller), with an oracle
    that republishes BTC at 50,000 every 0.1 s so the subscriber has prices to receive."""

    async def tick() -> None:
        while True:
            await call(
                server,
                'mutation { publishPrice(market: "BTC-PERP", price: "50000") { sequence } }',
                bearer=token("ticker", "service"),
            )
            await asyncio.sleep(0.1)

    await set_price(server, "BTC-PERP", "50000")
    ticker = asyncio.create_task(tick())
    try:
        async with loop_watch(server) as worst:
            yield worst
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    assert worst["healthz_s"] < 1.0, worst


async def account(server: ServerProcess, user: str) -> dict[str, Any]:
    body = await call(server, ACCOUNT, {}, token(user))
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["perpsMarginAccount"]
    return found


async def attempt(
    server: ServerProcess, user: str, market: str, side: str, size: str, lev: str
) -> dict[str, Any]:
    order = {"market": market, "side": side, "size": size, "leverage": lev}
    return await call(server, OPEN, {"i": order}, token(user))


async def stored(server: ServerProcess, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(server.env["DATABASE_URL"])
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def assert_money_conserved(server: ServerProcess) -> None:
    """For every account: free balance + collateral of open positions = deposited + realized
    PnL of every position it funded (docs/perps.md, Margin)."""
    rows = await stored(
        server,
        """SELECT a.owner, a.balance, a.deposited,
                  coalesce(sum(p.collateral) FILTER (WHERE p.status = 'open'), 0) AS held,
                  coalesce(sum(p.realized_pnl), 0) AS realized
           FROM perp_margin_accounts a
           LEFT JOIN perp_positions p ON p.owner = a.owner AND p.source = 'desk'
           GROUP BY a.owner, a.balance, a.deposited""",
    )
    assert rows
    for row in rows:
        assert row["balance"] >= 0, dict(row)
        assert row["balance"] + row["held"] == row["deposited"] + row["realized"], dict(row)


async def test_an_attacker_without_margin_opens_nothing(margin_server: ServerProcess) -> None:
    server = margin_server
    async with watched(server):
        # The finding: a 50,000 BTC long at 20x, at 50,000.
        assert await account(server, "eve") == {
            "owner": "eve",
            "balance": "10000",
            "deposited": "10000",
            "revision": 0,
        }
        body = await attempt(server, "eve", "BTC-PERP", "LONG", "50000", "20")
        assert error_code(body) == "INSUFFICIENT_MARGIN"
        [error] = body["errors"]
        assert error["message"] == (  # 125,000,000 of collateral, a 1,250,000 fee
            "this needs 126250000.000000 USD of free margin (collateral and fee); "
            "your perps margin account has 10000"
        )

        # Spend the balance (3.9 BTC at 20x: 9,750 collateral + 97.5 fee), then try again.
        await open_position(server, "mallory", "BTC-PERP", "LONG", "3.9", "20")
        assert D((await account(server, "mallory"))["balance"]) == D("152.5")
        again = await attempt(server, "mallory", "BTC-PERP", "LONG", "1", "20")
        assert error_code(again) == "INSUFFICIENT_MARGIN"
        huge = await attempt(server, "mallory", "BTC-PERP", "LONG", "50000", "20")
        assert error_code(huge) == "INSUFFICIENT_MARGIN"
        [held] = (await call(server, "{ positions { id } }", {}, token("mallory")))["data"][
            "positions"
        ]
        more = await call(
            server,
            MODIFY,
            {"i": {"positionId": held["id"], "sizeDelta": "0", "collateralDelta": "200"}},
            token("mallory"),
        )
        assert error_code(more) == "INSUFFICIENT_MARGIN"

    # Nothing stored for eve: no account, no position, no fill, no event.
    for table in ("perp_margin_accounts", "perp_positions", "perp_fills"):
        assert not await stored(server, f"SELECT 1 FROM {table} WHERE owner = 'eve'")
    assert not await stored(server, "SELECT 1 FROM topic_sequences WHERE topic LIKE '%eve%'")
    # mallory: the one position and its fill, the account moved once.
    assert len(await stored(server, "SELECT 1 FROM perp_fills WHERE owner = 'mallory'")) == 1
    assert (await account(server, "mallory"))["revision"] == 1
    await assert_money_conserved(server)


async def test_with_no_balance_nobody_opens_even_the_smallest_position(
    database_url: str, tmp_path: Path
) -> None:
    """PERPS_INITIAL_BALANCE=0: the finding's "no balance anywhere", literally."""
    async with isolated_database(database_url) as url:
        server = ServerProcess(
            {"DATABASE_URL": url, **SERVER, "PERPS_INITIAL_BALANCE": "0"},
            tmp_path / "server.log",
        ).start()
        try:
            async with watched(server):
                assert await account(server, "eve") == {
                    "owner": "eve",
                    "balance": "0",
                    "deposited": "0",
                    "revision": 0,
                }
                for size in ("50000", "0.0001"):
                    body = await attempt(server, "eve", "BTC-PERP", "LONG", size, "20")
                    assert error_code(body) == "INSUFFICIENT_MARGIN"
                positions = await call(server, "{ positions { id } }", {}, token("eve"))
                assert positions["data"]["positions"] == []
            for table in ("perp_margin_accounts", "perp_positions", "perp_fills"):
                assert not await stored(server, f"SELECT 1 FROM {table}")
        finally:
            server.stop()


async def test_huge_positions_with_enough_balance_meet_the_limits(
    rich_server: ServerProcess,
) -> None:
    """BTC-PERP: 20 BTC per user and side, 200 BTC of open interest per side."""
    server = rich_server
    async with watched(server):
        body = await attempt(server, "whale", "BTC-PERP", "LONG", "50000", "20")
        assert error_code(body) == "POSITION_LIMIT"
        long = await open_position(server, "whale", "BTC-PERP", "LONG", "20", "20")
        assert error_code(await attempt(server, "whale", "BTC-PERP", "LONG", "0.0001", "20")) == (
            "POSITION_LIMIT"
        )
        grow = await call(
            server,
            MODIFY,
            {"i": {"positionId": long["id"], "sizeDelta": "0.0001", "collateralDelta": "0"}},
            token("whale"),
        )
        assert error_code(grow) == "POSITION_LIMIT"
        await open_position(server, "whale", "BTC-PERP", "SHORT", "20", "20")  # the other side
        reduce = await call(  # reducing is never refused by a limit
            server,
            MODIFY,
            {"i": {"positionId": long["id"], "sizeDelta": "-1", "collateralDelta": "0"}},
            token("whale"),
        )
        assert reduce["data"]["modifyPosition"]["size"] == "19", reduce

        # 181 BTC of long open interest left: of twelve 20 BTC opens at once, nine fit.
        opens = await asyncio.gather(
            *(attempt(server, f"fish{n}", "BTC-PERP", "LONG", "20", "20") for n in range(12))
        )
        codes = sorted(error_code(b) if "errors" in b else "OK" for b in opens)
        assert codes == ["OK"] * 9 + ["OPEN_INTEREST_LIMIT"] * 3, opens
        await open_position(server, "minnow", "BTC-PERP", "LONG", "1", "20")  # exactly 200
        last = await attempt(server, "minnow", "BTC-PERP", "LONG", "0.0001", "20")
        assert error_code(last) == "OPEN_INTEREST_LIMIT"
        assert "open interest may not pass 200" in last["errors"][0]["message"]

    [oi] = await stored(
        server,
        "SELECT sum(size) AS long FROM perp_positions "
        "WHERE market = 'BTC-PERP' AND side = 'long' AND status = 'open'",
    )
    assert oi["long"] == 200
    refused = [f"fish{n}" for n, b in enumerate(opens) if "errors" in b]
    for owner in refused:  # a refused first trade leaves no account behind
        assert not await stored(
            server, "SELECT 1 FROM perp_margin_accounts WHERE owner = $1", owner
        )
    await assert_money_conserved(server)


async def test_the_balance_follows_a_funded_users_trades(margin_server: ServerProcess) -> None:
    server = margin_server
    await set_price(server, "ETH-PERP", "3000")
    async with watched(server), GraphQLWS.connect(server.ws_url, token=token("frank")) as frank:
        await frank.subscribe("p", STREAM)
        first = await frank.next_data("p", "positions")
        assert first["account"] == {"balance": "10000", "revision": 0}

        # 2 ETH at 3,000 with 10x: 600 of collateral and a 3 fee leave the account.
        opened = await open_position(server, "frank", "ETH-PERP", "LONG", "2", "10")
        assert D(opened["collateral"]) == 600
        got = await messages_until(frank, lambda m: len(of(m, "p", "positions")) >= 2)
        update = of(got, "p", "positions")[-1]
        assert update["__typename"] == "PositionsUpdate"
        assert D(update["account"]["balance"]) == D(9397)
        assert D((await account(server, "frank"))["balance"]) == D(9397)

        # Up 100: closing returns 600 + 200 - 3.1.
        await set_price(server, "ETH-PERP", "3100")
        closed = await call(server, CLOSE, {"id": opened["id"]}, token("frank"))
        assert D(closed["data"]["closePosition"]["returned"]) == D("796.9")
        got = await messages_until(
            frank,
            lambda m: any(
                u.get("account", {}).get("revision") == 2 for u in of(m, "p", "positions")
            ),
        )
        final = [u for u in of(got, "p", "positions") if "account" in u][-1]
        assert final == {
            "__typename": "PositionsUpdate",
            "positions": [],
            "account": {"balance": "10193.900000", "revision": 2},
        }
    assert await account(server, "frank") == {
        "owner": "frank",
        "balance": "10193.900000",
        "deposited": "10000",
        "revision": 2,
    }
    await assert_money_conserved(server)


async def test_a_liquidation_pays_back_what_the_rules_leave(margin_server: ServerProcess) -> None:
    server = margin_server
    await set_price(server, "SOL-PERP", "150")
    async with watched(server), GraphQLWS.connect(server.ws_url, token=token("gina")) as gina:
        # 10 SOL at 150 with 10x: 150 of collateral, a 0.75 fee.
        await open_position(server, "gina", "SOL-PERP", "LONG", "10", "10")
        assert D((await account(server, "gina"))["balance"]) == D("9849.25")
        await gina.subscribe("p", STREAM)
        await gina.next_data("p", "positions")
        # At 138: equity 150 - 120 = 30, maintenance 5% of 1,380 = 69, health 0.43. The
        # liquidator earns 1.5% of 1,380 = 20.7; the owner gets 30 - 20.7 = 9.3 back.
        await set_price(server, "SOL-PERP", "138")
        got = await messages_until(
            gina,
            lambda m: any(u["__typename"] == "PositionLiquidated" for u in of(m, "p", "positions")),
        )
        [liquidated] = [
            u for u in of(got, "p", "positions") if u["__typename"] == "PositionLiquidated"
        ]
        assert D(liquidated["liquidationReward"]) == D("20.7")
        assert D(liquidated["returned"]) == D("9.3")
        update = await gina.next_data("p", "positions")
        assert update["positions"] == []
        assert D(update["account"]["balance"]) == D("9858.55")
    assert D((await account(server, "gina"))["balance"]) == D("9858.55")
    await assert_money_conserved(server)


async def test_concurrent_opens_never_spend_more_than_the_balance(
    margin_server: ServerProcess,
) -> None:
    """Eight first trades at once by a user who never traded: 0.4 BTC at 10x takes 2,010 each,
    so four fit in 10,000. The account is made once, and the rest are refused cleanly."""
    server = margin_server
    async with watched(server):
        opens = await asyncio.gather(
            *(attempt(server, "hal", "BTC-PERP", "LONG", "0.4", "10") for _ in range(8))
        )
    codes = sorted(error_code(b) if "errors" in b else "OK" for b in opens)
    assert codes == ["INSUFFICIENT_MARGIN"] * 4 + ["OK"] * 4, opens
    assert await account(server, "hal") == {
        "owner": "hal",
        "balance": "1960.000000",
        "deposited": "10000",
        "revision": 4,
    }
    held = await stored(server, "SELECT 1 FROM perp_positions WHERE owner = 'hal'")
    assert len(held) == 4
    await assert_money_conserved(server)


async def test_the_desk_and_the_indexer_keep_to_their_own_positions(
    margin_server: ServerProcess,
) -> None:
    """An on-chain position's money is not in the margin account: the desk cannot close it
    (that would pay its collateral into the account), and an indexer cannot rewrite a desk one."""
    server = margin_server
    change = {
        "externalId": "0xabc:1",
        "kind": "OPENED",
        "positionId": "0xpos-ivy",
        "owner": "ivy",
        "market": "ETH-PERP",
        "side": "LONG",
        "size": "100",
        "entryPrice": "3000",
        "collateral": "30000",
        "fillSize": "100",
        "fillPrice": "3000",
        "fee": "0",
        "at": "2026-11-21T10:40:00Z",
    }
    indexer = token("indexer", "service")
    assert (await call(server, INGEST, {"i": change}, indexer))["data"]["ingestPositionChange"][
        "stored"
    ]
    await set_price(server, "ETH-PERP", "3000")
    closed = await call(server, CLOSE, {"id": "0xpos-ivy"}, token("ivy"))
    assert error_code(closed) == "POSITION_NOT_FOUND"
    assert not await stored(server, "SELECT 1 FROM perp_margin_accounts WHERE owner = 'ivy'")

    desk = await open_position(server, "ivy", "ETH-PERP", "LONG", "1", "5")
    rewrite = {**change, "externalId": "0xabc:2", "kind": "CLOSED", "positionId": desk["id"]}
    refused = await call(server, INGEST, {"i": rewrite}, indexer)
    assert error_code(refused) == "BAD_REQUEST"
    assert "opened on this server's desk" in refused["errors"][0]["message"]
    [row] = await stored(server, "SELECT status FROM perp_positions WHERE id = $1", desk["id"])
    assert row["status"] == "open"
    await assert_money_conserved(server)


async def test_the_demo_user_is_funded_and_holds_a_position_per_market(
    database_url: str, tmp_path: Path
) -> None:
    """make run's demo (simulated feeds on, alone on its database): its positions are paid for
    from its account, which the simulator funds."""
    async with isolated_database(database_url) as url:
        server = ServerProcess(
            {"DATABASE_URL": url, "PRICE_FEED_HZ": "10"}, tmp_path / "server.log"
        ).start()
        try:
            demo = token("demo")
            deadline = time.monotonic() + 30
            while True:
                body = await call(server, "{ positions { market collateral } }", {}, demo)
                markets = sorted({p["market"] for p in body["data"]["positions"]})
                if markets == ["BTC-PERP", "ETH-PERP", "SOL-PERP"]:
                    break
                assert time.monotonic() < deadline, body
                await asyncio.sleep(0.2)
            funded = await account(server, "demo")
            assert D(funded["deposited"]) >= 10000
            assert 0 <= D(funded["balance"]) < D(funded["deposited"])
            assert funded["revision"] >= 3
            await assert_money_conserved(server)
        finally:
            server.stop()
