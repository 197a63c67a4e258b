"""The perpetuals feed over real sockets: positions through the warning and liquidation
thresholds, candidates, market stats and funding, the trading mutations and the indexer's ingest,
and who may see what."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import isolated_database, isolated_server
from tests.e2e.support import (
    ENGINE,
    MODIFY,
    OPEN,
    ORACLE,
    POSITION,
    PUBLISH_PRICE,
    call,
    change,
    error_code,
    messages_until,
    of,
    open_position,
    set_price,
)
from tests.support import (
    GraphQLWS,
    Samples,
    ServerProcess,
    parse_multipart,
    sample,
    scrape,
    token,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

D = Decimal

POSITIONS = (
    "subscription($u: String) { positions(user: $u) { __typename "
    "... on PositionsUpdate { user positions { ...P } } "
    "... on PositionOpened { position { ...P } fill { kind size price fee } } "
    "... on PositionModified { position { ...P } reason } "
    "... on PositionClosed { position { ...P } returned } "
    "... on PositionLiquidated { position { ...P } liquidationReward returned fill { price } } "
    "... on LiquidationWarning { position { id } healthFactor markPrice } "
    "} } fragment P on Position { " + POSITION + " }"
)
CANDIDATES = (
    "subscription { liquidations { sequence candidates { positionId market side size "
    "healthFactor potentialReward } } }"
)
CLOSE = "mutation($id: ID!) { closePosition(positionId: $id) { returned position { id } } }"
PLAN_EVENTS = "tradestream_subscription_plan_events_total"


@pytest.fixture(scope="module")
def perps_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server alone on its database, whose prices only the tests publish."""
    with isolated_server(
        database_url,
        {**ENGINE, "MUTATION_BURST": "40", "MUTATION_RATE_PER_S": "0.1"},
        tmp_path_factory.mktemp("perps") / "server.log",
    ) as process:
        yield process


async def test_a_position_goes_through_the_warning_and_liquidation_in_order(
    perps_server: ServerProcess,
) -> None:
    # 1 BTC long at 50,000 with 10x: collateral 5,000, maintenance 3% of notional.
    # Health 1.2 at (50,000 - 5,000) / (1 - 0.036) = 46,680.50; liquidation at 46,391.75.
    await set_price(perps_server, "BTC-PERP", "50000")
    async with GraphQLWS.connect(perps_server.ws_url, token=token("alice")) as alice:
        await alice.subscribe("p", POSITIONS)
        await alice.subscribe("l", CANDIDATES)
        first = await alice.next_data("p", "positions")
        assert first == {"__typename": "PositionsUpdate", "user": "alice", "positions": []}
        opened = await open_position(perps_server, "alice", "BTC-PERP", "LONG", "1", "10")
        assert D(opened["collateral"]) == D(5000)
        assert opened["liquidationPrice"] == "46391.8"  # 46,391.75..., up to the 0.1 tick

        def typenames(messages: list[dict[str, Any]]) -> list[str]:
            return [p["__typename"] for p in of(messages, "p", "positions")]

        def marked_at(price: str) -> Any:
            def done(messages: list[dict[str, Any]]) -> bool:
                return any(
                    u["__typename"] == "PositionsUpdate"
                    and u["positions"]
                    and D(u["positions"][0]["markPrice"]) == D(price)
                    for u in of(messages, "p", "positions")
                )

            return done

        def liquidated_and_cleared(messages: list[dict[str, Any]]) -> bool:
            if "PositionLiquidated" not in typenames(messages):
                return False
            lists = of(messages, "l", "liquidations")
            return (
                bool(lists)
                and lists[-1]["candidates"] == []
                and any(c["candidates"] for c in lists)
            )

        # Each step waits for what it must cause, so a slow machine changes no outcome.
        await set_price(perps_server, "BTC-PERP", "48000")
        messages = await messages_until(alice, marked_at("48000"))
        await set_price(perps_server, "BTC-PERP", "46600")
        messages += await messages_until(alice, lambda ms: "LiquidationWarning" in typenames(ms))
        await set_price(perps_server, "BTC-PERP", "46500")
        messages += await messages_until(alice, marked_at("46500"))
        await asyncio.sleep(0.5)  # engine passes at 46,500: still warned, so no new warning
        await set_price(perps_server, "BTC-PERP", "46000")
        messages += await messages_until(alice, liquidated_and_cleared)

    timeline = []
    for m in messages:
        data = m["payload"]["data"]
        if m["id"] == "p" and data["positions"]["__typename"] != "PositionsUpdate":
            timeline.append(data["positions"]["__typename"])
        elif m["id"] == "l":
            ids = [c["positionId"] for c in data["liquidations"]["candidates"]]
            timeline.append("candidate" if opened["id"] in ids else "no candidate")
    # Collapse repeats: the list is republished as the price moves.
    steps = [s for i, s in enumerate(timeline) if i == 0 or timeline[i - 1] != s]
    assert steps[steps.index("PositionOpened") :] == [
        "PositionOpened",
        "LiquidationWarning",
        "candidate",
        "PositionLiquidated",
        "no candidate",
    ], timeline
    assert timeline.count("LiquidationWarning") == 1  # once per crossing, not per tick

    events = of(messages, "p", "positions")
    [warning] = [e for e in events if e["__typename"] == "LiquidationWarning"]
    assert D(warning["markPrice"]) == D(46600)
    assert D(1) < D(warning["healthFactor"]) < D("1.2")
    [liquidated] = [e for e in events if e["__typename"] == "PositionLiquidated"]
    assert D(liquidated["fill"]["price"]) == D(46000)
    assert D(liquidated["liquidationReward"]) == D(46000) * D("0.015")
    [candidate] = {
        c["positionId"]: c for m in of(messages, "l", "liquidations") for c in m["candidates"]
    }.values()
    assert D(candidate["potentialReward"]) == D(46000) * D("0.015")
    assert "owner" not in candidate
    assert events[-1] == {"__typename": "PositionsUpdate", "user": "alice", "positions": []}

    still = await call(perps_server, "{ positions { id } }", bearer=token("alice"))
    assert still == {"data": {"positions": []}}


async def test_a_private_positions_stream_is_executed_by_its_compiled_plan(
    perps_server: ServerProcess,
) -> None:
    """The signed-in user's own positions, re-valued on a price tick, come from the plan
    (api/graphql/plans.py): /metrics counts every event as the plan's, none as graphql-core's."""

    def executed(samples: Samples, executor: str) -> float:
        return sample(samples, PLAN_EVENTS, field="positions", executor=executor)

    await set_price(perps_server, "ETH-PERP", "3000")
    await open_position(perps_server, "pam", "ETH-PERP", "SHORT", "2", "4")
    before = await asyncio.to_thread(scrape, perps_server)
    async with GraphQLWS.connect(perps_server.ws_url, token=token("pam")) as pam:
        await pam.subscribe("p", POSITIONS)
        first = await pam.next_data("p", "positions")
        assert first["user"] == "pam"
        assert D(first["positions"][0]["markPrice"]) == D(3000)
        await set_price(perps_server, "ETH-PERP", "2950")

        def marked(messages: list[dict[str, Any]]) -> bool:
            return any(
                u["positions"] and D(u["positions"][0]["markPrice"]) == D(2950)
                for u in of(messages, "p", "positions")
                if u["__typename"] == "PositionsUpdate"
            )

        update = of(await messages_until(pam, marked), "p", "positions")[-1]
        assert D(update["positions"][0]["unrealizedPnl"]) == D(100)  # 2 short, 50 lower
    after = await asyncio.to_thread(scrape, perps_server)
    assert executed(after, "plan") >= executed(before, "plan") + 2
    assert executed(after, "graphql_core") == executed(before, "graphql_core")


async def test_trading_mutations_update_the_stream_and_refuse_bad_input(
    perps_server: ServerProcess,
) -> None:
    await set_price(perps_server, "ETH-PERP", "3000")
    dave = token("dave")
    async with GraphQLWS.connect(perps_server.ws_url, token=dave) as client:
        await client.subscribe("p", POSITIONS)
        assert (await client.next_data("p", "positions"))["positions"] == []
        opened = await open_position(perps_server, "dave", "ETH-PERP", "SHORT", "2", "5")
        event = await client.next_data("p", "positions")
        assert event["__typename"] == "PositionOpened"
        assert event["fill"] == {"kind": "open", "size": "2", "price": "3000", "fee": "3.000000"}
        assert (await client.next_data("p", "positions"))["positions"][0]["id"] == opened["id"]

        grown = await call(
            perps_server, MODIFY, {"i": {"positionId": opened["id"], "sizeDelta": "1"}}, dave
        )
        assert D(grown["data"]["modifyPosition"]["size"]) == D(3)
        assert (await client.next_data("p", "positions"))["__typename"] == "PositionModified"
        await client.next_data("p", "positions")

        await set_price(perps_server, "ETH-PERP", "2900")  # a short gains as the price falls
        moved = await client.next_data("p", "positions")
        assert D(moved["positions"][0]["unrealizedPnl"]) == D(300)

        refusals: dict[str, tuple[str, dict[str, Any]]] = {
            "INVALID_SIZE": (
                OPEN,
                {"i": {"market": "ETH-PERP", "side": "LONG", "size": "0", "leverage": "2"}},
            ),
            "INVALID_LEVERAGE": (
                OPEN,
                {"i": {"market": "ETH-PERP", "side": "LONG", "size": "1", "leverage": "21"}},
            ),
            "UNKNOWN_MARKET": (
                OPEN,
                {"i": {"market": "DOGE-PERP", "side": "LONG", "size": "1", "leverage": "2"}},
            ),
            "POSITION_NOT_FOUND": (CLOSE, {"id": "pos_nope"}),
            "INVALID_LEVERAGE (withdrawal)": (
                MODIFY,
                {"i": {"positionId": opened["id"], "collateralDelta": "-1700"}},
            ),
            "NOTHING_TO_DO": (MODIFY, {"i": {"positionId": opened["id"]}}),
        }
        for refusal, (query, variables) in refusals.items():
            body = await call(perps_server, query, variables, dave)
            assert error_code(body) == refusal.split()[0], body
            assert body["data"] is None

        closed = await call(perps_server, CLOSE, {"id": opened["id"]}, dave)
        assert closed["data"]["closePosition"]["position"]["id"] == opened["id"]
        event = await client.next_data("p", "positions")
        assert event["__typename"] == "PositionClosed"
        assert (await client.next_data("p", "positions"))["positions"] == []
        # The refusals sent nothing to the stream: the close is the next thing it saw.
        again = await call(perps_server, CLOSE, {"id": opened["id"]}, dave)
        assert error_code(again) == "POSITION_NOT_FOUND"


async def test_who_may_trade_and_ingest(perps_server: ServerProcess) -> None:
    order = {"i": {"market": "ETH-PERP", "side": "LONG", "size": "1", "leverage": "2"}}
    anonymous = await call(perps_server, OPEN, order)
    assert error_code(anonymous) == "UNAUTHENTICATED"
    as_service = await call(perps_server, OPEN, order, ORACLE)
    assert error_code(as_service) == "FORBIDDEN"
    as_user = await call(perps_server, PUBLISH_PRICE, {"m": "ETH-PERP", "p": "1"}, token("eve"))
    assert error_code(as_user) == "FORBIDDEN"
    bad_price = await call(perps_server, PUBLISH_PRICE, {"m": "ETH-PERP", "p": "-1"}, ORACLE)
    assert error_code(bad_price) == "INVALID_PRICE"
    ingest = await call(
        perps_server, INGEST, {"i": change("tx-x", "opened", "pos_x", "eve")}, token("eve")
    )
    assert error_code(ingest) == "FORBIDDEN"
    assert (await call(perps_server, '{ positions(user: "eve") { id } }', bearer=token("eve")))[
        "data"
    ]["positions"] == []


async def test_mutations_are_rate_limited_per_caller(perps_server: ServerProcess) -> None:
    await set_price(perps_server, "ETH-PERP", "3000")
    codes = []
    for _ in range(45):  # MUTATION_BURST is 40
        body = await call(
            perps_server,
            MODIFY,
            {"i": {"positionId": "pos_none", "sizeDelta": "1"}},
            token("frank"),
        )
        codes.append(error_code(body))
    assert codes[:40] == ["POSITION_NOT_FOUND"] * 40
    assert set(codes[40:]) == {"RATE_LIMITED"}
    # Another caller's allowance is its own.
    other = await call(
        perps_server, MODIFY, {"i": {"positionId": "pos_none", "sizeDelta": "1"}}, token("grace")
    )
    assert error_code(other) == "POSITION_NOT_FOUND"


INGEST = (
    "mutation($i: PositionChangeInput!) { ingestPositionChange(input: $i) { stored "
    "position { id owner size revision } } }"
)


async def test_an_indexer_ingests_each_change_once(perps_server: ServerProcess) -> None:
    await set_price(perps_server, "SOL-PERP", "150")
    async with GraphQLWS.connect(perps_server.ws_url, token=token("heidi")) as client:
        await client.subscribe("p", POSITIONS)
        assert (await client.next_data("p", "positions"))["positions"] == []
        first = await call(
            perps_server, INGEST, {"i": change("0xab:1", "opened", "chain-1", "heidi")}, ORACLE
        )
        assert first["data"]["ingestPositionChange"]["stored"] is True
        assert (await client.next_data("p", "positions"))["__typename"] == "PositionOpened"
        await client.next_data("p", "positions")
        replay = await call(
            perps_server, INGEST, {"i": change("0xab:1", "opened", "chain-1", "heidi")}, ORACLE
        )
        assert replay["data"]["ingestPositionChange"]["stored"] is False
        bigger = await call(
            perps_server,
            INGEST,
            {"i": change("0xab:2", "modified", "chain-1", "heidi", size="12")},
            ORACLE,
        )
        assert bigger["data"]["ingestPositionChange"]["position"]["size"] == "12"
        # The replay announced nothing: the next event is the modification.
        event = await client.next_data("p", "positions")
        assert event["__typename"] == "PositionModified"
        assert event["position"]["size"] == "12"
        update = await client.next_data("p", "positions")
        assert [p["size"] for p in update["positions"]] == ["12"]

        invalid = await call(
            perps_server,
            INGEST,
            {"i": {**change("0xab:3", "opened", "c-2", "heidi"), "size": "-1"}},
            ORACLE,
        )
        assert error_code(invalid) == "BAD_REQUEST"
        assert "size must be positive" in invalid["errors"][0]["message"]

        async with GraphQLWS.connect(perps_server.ws_url, token=token("mallory")) as mallory:
            await mallory.subscribe("p", POSITIONS)
            assert (await mallory.next_data("p", "positions"))["positions"] == []
            # An indexer that names the wrong owner must not move heidi's position to mallory.
            stolen = await call(
                perps_server,
                INGEST,
                {"i": change("0xab:4", "modified", "chain-1", "mallory", size="1")},
                ORACLE,
            )
            assert error_code(stolen) == "BAD_REQUEST"
            assert "belongs to another owner" in stolen["errors"][0]["message"]
            with pytest.raises(TimeoutError):
                await mallory.receive(timeout=1.0)
        with pytest.raises(TimeoutError):
            await client.receive(timeout=0.2)
        mine = await call(perps_server, "{ positions { id size } }", bearer=token("heidi"))
        assert mine["data"]["positions"] == [{"id": "chain-1", "size": "12"}]


async def test_nobody_sees_another_users_positions_on_any_transport(
    perps_server: ServerProcess,
) -> None:
    await set_price(perps_server, "ETH-PERP", "3000")
    # The same document from two users: the fan-out must not share one execution between them.
    async with (
        GraphQLWS.connect(perps_server.ws_url, token=token("ivan")) as ivan,
        GraphQLWS.connect(perps_server.ws_url, token=token("judy")) as judy,
        GraphQLWS.connect(perps_server.ws_url) as anonymous,
        httpx.AsyncClient(timeout=10) as http,
    ):
        await ivan.subscribe("p", POSITIONS)
        await judy.subscribe("p", POSITIONS)
        await judy.subscribe("spy", POSITIONS, {"u": "ivan"})
        await anonymous.subscribe("spy", POSITIONS, {"u": "ivan"})
        assert (await ivan.next_data("p", "positions"))["user"] == "ivan"
        denied = await messages_until(judy, lambda ms: len(ms) >= 2)
        by_id = {m["id"]: m for m in denied}
        assert by_id["p"]["payload"]["data"]["positions"]["user"] == "judy"
        assert by_id["spy"]["type"] == "error"
        assert by_id["spy"]["payload"][0]["extensions"]["code"] == "FORBIDDEN"
        assert "'ivan'" in by_id["spy"]["payload"][0]["message"]
        anon = await anonymous.receive()
        assert anon["type"] == "error"
        assert anon["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"

        body = {"query": POSITIONS, "variables": {"u": "ivan"}}
        judy_header = {"authorization": f"Bearer {token('judy')}"}
        sse = await http.post(
            perps_server.url, json=body, headers={**judy_header, "accept": "text/event-stream"}
        )
        multipart = await http.post(
            perps_server.url,
            json=body,
            headers={**judy_header, "accept": "multipart/mixed;subscriptionSpec=1.0"},
        )
        query = await http.post(
            perps_server.url,
            json={"query": '{ positions(user: "ivan") { id } }'},
            headers=judy_header,
        )
        assert "FORBIDDEN" in sse.text
        assert "PositionsUpdate" not in sse.text
        [part] = [p for p in parse_multipart(multipart.text) if p]
        assert part["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
        assert query.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"

        ivans = await open_position(perps_server, "ivan", "ETH-PERP", "LONG", "1", "3")
        assert (await ivan.next_data("p", "positions"))["position"]["id"] == ivans["id"]
        judys = await open_position(perps_server, "judy", "ETH-PERP", "LONG", "1", "3")
        seen = await messages_until(judy, lambda ms: len(ms) >= 2)
        assert [m["payload"]["data"]["positions"]["__typename"] for m in seen] == [
            "PositionOpened",
            "PositionsUpdate",
        ]
        assert ivans["id"] not in str(seen)
        assert judys["id"] in str(seen)
        with pytest.raises(TimeoutError):  # nothing of ivan's, ever
            await judy.receive(timeout=1.0)

        admin = await call(
            perps_server, '{ positions(user: "ivan") { id } }', bearer=token("root", "admin")
        )
        assert admin["data"]["positions"] == [{"id": ivans["id"]}]


STATS = (
    "subscription($m: String!) { marketStats(market: $m) { __typename "
    "... on MarketStats { market openInterestLong openInterestShort volume24h indexPrice "
    "markPrice fundingRate } "
    "... on FundingRateChanged { market rate positionsCharged } } }"
)


async def test_market_stats_and_funding(database_url: str, tmp_path: Any) -> None:
    async with isolated_database(database_url) as url:
        server = ServerProcess(
            # kim's 2 BTC at 5x locks 20,000 of collateral: every account starts with 25,000.
            {"DATABASE_URL": url, **ENGINE, "FUNDING_INTERVAL_S": "1.5"}
            | {"PERPS_INITIAL_BALANCE": "25000"},
            tmp_path / "server.log",
        ).start()
        try:
            await set_price(server, "BTC-PERP", "50000")
            await open_position(server, "kim", "BTC-PERP", "LONG", "2", "5")
            await open_position(server, "lee", "BTC-PERP", "SHORT", "0.5", "5")
            async with GraphQLWS.connect(server.ws_url) as client:
                await client.subscribe("s", STATS, {"m": "BTC-PERP"})

                def funded(messages: list[dict[str, Any]]) -> bool:
                    return any(
                        s["__typename"] == "FundingRateChanged"
                        for s in of(messages, "s", "marketStats")
                    )

                messages = await messages_until(client, funded, timeout=20)
                stats = [s for s in of(messages, "s", "marketStats")]
                snapshot = [s for s in stats if s["__typename"] == "MarketStats"][-1]
                assert snapshot["openInterestLong"] == "2"
                assert snapshot["openInterestShort"] == "0.5"
                assert D(snapshot["volume24h"]) == D(125000)  # 2.5 BTC at 50,000
                # Skew 1.5 BTC long over BTC's skew scale of 10,000: mark 0.015% over index.
                assert D(snapshot["markPrice"]) == D(50000) * (1 + D("1.5") / 10000)
                [funding] = [s for s in stats if s["__typename"] == "FundingRateChanged"]
                # premium 0.00015; interest 0.0001 - 0.00015 clamped within ±0.0005
                assert D(funding["rate"]) == D("0.0001")
                assert funding["positionsCharged"] == 2
            kim = await call(
                server, "{ positions { collateral realizedPnl } }", bearer=token("kim")
            )
            [position] = kim["data"]["positions"]
            # 20,000 collateral, minus 2 x 50,007.5 x 0.0001 funding per settlement so far.
            assert D(position["collateral"]) < D(20000)
        finally:
            server.stop()


async def test_positions_survive_a_restart(database_url: str, tmp_path: Any) -> None:
    async with isolated_database(database_url) as url:
        env = {"DATABASE_URL": url, **ENGINE}
        first = ServerProcess(env, tmp_path / "first.log").start()
        try:
            await set_price(first, "ETH-PERP", "3000")
            opened = await open_position(first, "mia", "ETH-PERP", "LONG", "1.5", "4")
        finally:
            first.stop()
        second = ServerProcess(env, tmp_path / "second.log").start()
        try:
            body = await call(second, "{ positions { id size entryPrice } }", bearer=token("mia"))
            assert body["data"]["positions"] == [
                {"id": opened["id"], "size": "1.5", "entryPrice": "3000"}
            ]
            stats = await call(second, '{ marketStats(market: "ETH-PERP") { volume24h } }')
            assert D(stats["data"]["marketStats"]["volume24h"]) == D(4500)
        finally:
            second.stop()
