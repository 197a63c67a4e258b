"""Martingale strategies over real sockets: rounds turn with a seeded outcome source, each
round's progress arrives with the numbers the domain predicts, a restart continues the strategy,
and a service settles rounds with real outcomes."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from domain.martingale import Strategy, StrategyConfig, progress
from domain.mining_rounds import SimulatedOutcomes, settle_round
from tests.conftest import isolated_database
from tests.e2e.support import call, error_code, messages_until
from tests.support import GraphQLWS, ServerProcess, token

if TYPE_CHECKING:
    from pathlib import Path

SEED = 7
ROUND_S = "0.4"
CLOCK = {
    "SIMULATED_FEEDS": "false",
    "SIMULATION_SEED": str(SEED),
    "MARTINGALE_ROUND_PERIOD_S": ROUND_S,
    "MARTINGALE_WIN_PROBABILITY": "0.5",
    "MARTINGALE_REWARD_MULTIPLIER": "2",
}
PROGRESS = (
    "strategyId walletAddress currentRound totalRounds progressPercentage currentAmountSol "
    "totalDeployedSol totalRewardsSol totalLossSol profitLossSol status winRatePercentage "
    "riskLevel losingStreak lastRound"
)
WATCH = (
    "subscription($w: String) { martingaleProgress(wallet: $w) { walletAddress "
    "strategies { " + PROGRESS + " } } }"
)
START = "mutation($i: StartStrategyInput!) { startStrategy(input: $i) { " + PROGRESS + " } }"
CONFIG = {"baseAmountSol": "1", "multiplier": "2", "totalRounds": 6, "stopLossSol": "100"}


def expected(last_round: int, first_round: int) -> dict[str, Any]:
    """What the domain says the strategy shows after the rounds first_round..last_round."""
    outcomes = SimulatedOutcomes(seed=SEED, win_probability=0.5, reward_multiplier=Decimal(2))
    strategy = Strategy(
        id="x",
        config=StrategyConfig(
            wallet_address="w",
            base_amount=Decimal(1),
            multiplier=Decimal(2),
            total_rounds=6,
            stop_loss=Decimal(100),
        ),
    )
    for number in range(first_round, last_round + 1):
        for _, after in settle_round([strategy], outcomes.outcome(number)):
            strategy = after
    p = progress(strategy)
    return {
        "currentRound": p.current_round,
        "currentAmountSol": format(p.current_amount_sol, "f"),
        "totalDeployedSol": format(p.total_deployed_sol, "f"),
        "profitLossSol": format(p.profit_loss_sol, "f"),
        "status": p.status.value.upper(),
        "riskLevel": p.risk_level.name,
    }


def shown(p: dict[str, Any]) -> dict[str, Any]:
    return {
        k: p[k]
        for k in (
            "currentRound",
            "currentAmountSol",
            "totalDeployedSol",
            "profitLossSol",
            "status",
            "riskLevel",
        )
    }


async def test_each_round_arrives_with_the_numbers_the_domain_predicts(
    database_url: str, tmp_path: Path
) -> None:
    async with isolated_database(database_url) as url:
        env = {"DATABASE_URL": url, **CLOCK}
        first = ServerProcess(env, tmp_path / "first.log").start()
        try:
            async with GraphQLWS.connect(first.ws_url, token=token("wallet1")) as client:
                await client.subscribe("p", WATCH)
                assert (await client.next_data("p", "martingaleProgress"))["strategies"] == []
                started = await call(first, START, {"i": CONFIG}, token("wallet1"))
                assert "errors" not in started, started
                strategy_id = started["data"]["startStrategy"]["strategyId"]
                assert started["data"]["startStrategy"]["currentAmountSol"] == "1.000000000"

                seen: list[dict[str, Any]] = []

                def three_rounds(messages: list[dict[str, Any]]) -> bool:
                    for m in messages[len(seen) :]:
                        seen.extend(m["payload"]["data"]["martingaleProgress"]["strategies"])
                    return any(s["currentRound"] >= 3 for s in seen)

                await messages_until(client, three_rounds, timeout=20)
            detail = await call(
                first,
                "query($id: ID!) { strategy(id: $id) { rounds { roundNumber } } }",
                {"id": strategy_id},
                token("wallet1"),
            )
            first_round = detail["data"]["strategy"]["rounds"][0]["roundNumber"]
            # Every update shows exactly what the domain computes for the rounds played so far.
            for update in seen:
                if update["currentRound"] > 0:
                    last = update["lastRound"]
                    assert shown(update) == expected(last, first_round), update
        finally:
            first.stop()

        # Restart mid-strategy: it goes on from where it stood.
        second = ServerProcess(env, tmp_path / "second.log").start()
        try:
            async with GraphQLWS.connect(second.ws_url, token=token("wallet1")) as client:
                await client.subscribe("p", WATCH)

                def ended_or_two_more(messages: list[dict[str, Any]]) -> bool:
                    for m in messages:
                        for s in m["payload"]["data"]["martingaleProgress"]["strategies"]:
                            if s["status"] != "ACTIVE" or s["currentRound"] >= 5:
                                return True
                    return False

                resumed = await messages_until(client, ended_or_two_more, timeout=20)
            final = resumed[-1]["payload"]["data"]["martingaleProgress"]["strategies"][-1]
            assert shown(final) == expected(final["lastRound"], first_round)
            history = await call(
                second,
                "query($id: ID!) { strategy(id: $id) { rounds { roundNumber } } }",
                {"id": strategy_id},
                token("wallet1"),
            )
            numbers = [r["roundNumber"] for r in history["data"]["strategy"]["rounds"]]
            assert numbers == sorted(set(numbers))  # each round settled once
        finally:
            second.stop()


async def test_a_service_settles_rounds_with_their_real_outcome(
    database_url: str, tmp_path: Path
) -> None:
    async with isolated_database(database_url) as url:
        env = {
            "DATABASE_URL": url,
            **CLOCK,
            "MARTINGALE_OUTCOMES": "service",
            "MARTINGALE_REFRESH_S": "0.3",
        }
        server = ServerProcess(env, tmp_path / "server.log").start()
        try:
            started = await call(server, START, {"i": CONFIG}, token("wallet2"))
            assert "errors" not in started, started
            # Nothing settles here, yet the progress keeps coming (MARTINGALE_REFRESH_S).
            async with GraphQLWS.connect(server.ws_url, token=token("wallet2")) as client:
                await client.subscribe("p", WATCH)
                quiet = await messages_until(client, lambda ms: len(ms) >= 3, timeout=5)
            for message in quiet:
                [shown_now] = message["payload"]["data"]["martingaleProgress"]["strategies"]
                assert shown_now["currentRound"] == 0
            await asyncio.sleep(float(ROUND_S) * 3)  # the strategy's first round has ended
            rounds = await call(server, "{ rounds(limit: 10) { number endsAt settledAt } }")
            now = datetime.now(UTC)
            ended = [
                r for r in rounds["data"]["rounds"] if datetime.fromisoformat(r["endsAt"]) < now
            ]
            assert ended
            assert all(r["settledAt"] is None for r in ended)  # nobody settled them
            newest_ended = max(r["number"] for r in ended)
            open_round = max(r["number"] for r in rounds["data"]["rounds"])
            settle = (
                "mutation($i: SettleRoundInput!) { settleRound(input: $i) { number won "
                "rewardMultiplier settledAt } }"
            )
            service = token("ore-oracle", "service")
            body = await call(
                server,
                settle,
                {"i": {"roundNumber": newest_ended, "won": True, "rewardMultiplier": "2"}},
                service,
            )
            assert body["data"]["settleRound"]["won"] is True
            mine = await call(
                server, "{ strategies { currentRound profitLossSol } }", bearer=token("wallet2")
            )
            assert mine["data"]["strategies"] == [
                {"currentRound": 1, "profitLossSol": "1.000000000"}
            ]

            again = await call(
                server, settle, {"i": {"roundNumber": newest_ended, "won": False}}, service
            )
            assert error_code(again) == "ROUND_ALREADY_SETTLED"
            early = await call(
                server, settle, {"i": {"roundNumber": open_round + 5, "won": True}}, service
            )
            assert error_code(early) == "UNKNOWN_ROUND"
            as_user = await call(
                server,
                settle,
                {"i": {"roundNumber": newest_ended, "won": True}},
                token("wallet2"),
            )
            assert error_code(as_user) == "FORBIDDEN"
            # The replay changed nothing.
            same = await call(
                server, "{ strategies { currentRound profitLossSol } }", bearer=token("wallet2")
            )
            assert same == mine
        finally:
            server.stop()


SUMMARY = (
    "martingaleSummary { lastSettledRound statuses { status strategies totalDeployedSol "
    "totalRewardsSol totalLossSol profitLossSol } }"
)


async def test_admins_follow_every_strategy_as_a_summary_by_status(
    database_url: str, tmp_path: Path
) -> None:
    """The admin-wide stream is counts and totals by status, sent as a round is settled, not
    every strategy; the query answers the same."""
    async with isolated_database(database_url) as url:
        env = {"DATABASE_URL": url, **CLOCK, "MARTINGALE_OUTCOMES": "service"}
        server = ServerProcess(env, tmp_path / "server.log").start()
        admin = token("root", "admin")
        try:
            for wallet in ("sum-a", "sum-b", "sum-b"):
                started = await call(server, START, {"i": CONFIG}, token(wallet))
                assert "errors" not in started, started
            stopped = await call(server, START, {"i": CONFIG}, token("sum-c"))
            stop = "mutation($s: ID!) { stopStrategy(strategyId: $s) { status } }"
            strategy_id = stopped["data"]["startStrategy"]["strategyId"]
            assert "errors" not in await call(server, stop, {"s": strategy_id}, token("sum-c"))
            async with GraphQLWS.connect(server.ws_url, token=admin) as client:
                await client.subscribe("s", "subscription { " + SUMMARY + " }")
                first = await client.next_data("s", "martingaleSummary")
                assert first["lastSettledRound"] is None
                by_status = {t["status"]: t for t in first["statuses"]}
                assert list(by_status) == ["ACTIVE", "COMPLETED", "STOPPED", "STOPPED_OUT"]
                assert by_status["ACTIVE"]["strategies"] == 3
                assert by_status["STOPPED"]["strategies"] == 1
                assert by_status["COMPLETED"] == {
                    "status": "COMPLETED",
                    "strategies": 0,
                    "totalDeployedSol": "0",
                    "totalRewardsSol": "0",
                    "totalLossSol": "0",
                    "profitLossSol": "0",
                }
                await asyncio.sleep(float(ROUND_S) * 3)  # the strategies' first round has ended
                rounds = await call(server, "{ rounds(limit: 10) { number endsAt } }")
                now = datetime.now(UTC)
                ended = max(
                    r["number"]
                    for r in rounds["data"]["rounds"]
                    if datetime.fromisoformat(r["endsAt"]) < now
                )
                settle = "mutation($i: SettleRoundInput!) { settleRound(input: $i) { number } }"
                outcome = {"roundNumber": ended, "won": False}
                service = token("ore-oracle", "service")
                assert "errors" not in await call(server, settle, {"i": outcome}, service)
                settled = await client.next_data("s", "martingaleSummary")
            assert settled["lastSettledRound"] == ended
            active = {t["status"]: t for t in settled["statuses"]}["ACTIVE"]
            assert active == {
                "status": "ACTIVE",
                "strategies": 3,
                "totalDeployedSol": "3.000000000",
                "totalRewardsSol": "0",
                "totalLossSol": "3.000000000",
                "profitLossSol": "-3.000000000",
            }
            queried = await call(server, "{ " + SUMMARY + " }", bearer=admin)
            assert queried["data"]["martingaleSummary"] == settled
            as_user = await call(server, "{ " + SUMMARY + " }", bearer=token("sum-a"))
            assert error_code(as_user) == "FORBIDDEN"
            async with GraphQLWS.connect(server.ws_url, token=token("sum-a")) as client:
                await client.subscribe("s", "subscription { " + SUMMARY + " }")
                refused = await client.receive()
            assert refused["type"] == "error"
            assert refused["payload"][0]["extensions"]["code"] == "FORBIDDEN"
        finally:
            server.stop()


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"multiplier": "0.5"}, "INVALID_STRATEGY", "multiplier"),
        ({"baseAmountSol": "-1"}, "INVALID_STRATEGY", "baseAmountSol"),
        ({"totalRounds": 0}, "INVALID_STRATEGY", "totalRounds"),
        ({"baseAmountSol": "0.0000000001"}, "INVALID_STRATEGY", "baseAmountSol"),
        # Not a number at all: the Decimal scalar refuses it before the strategy is looked at.
        ({"stopLossSol": "NaN"}, "INVALID_DECIMAL", "stopLossSol"),
    ],
)
async def test_bad_strategies_are_refused_naming_the_field(
    server: ServerProcess, change: dict[str, Any], code: str, field: str
) -> None:
    body = await call(server, START, {"i": {**CONFIG, **change}}, token("wallet3"))
    assert error_code(body) == code
    if code == "INVALID_DECIMAL":
        assert body["errors"][0]["message"].startswith(
            f"Variable '$i' has invalid value at .{field}:"
        )
    else:
        assert body["errors"][0]["extensions"]["field"] == field
    mine = await call(server, "{ strategies { strategyId } }", bearer=token("wallet3"))
    assert mine["data"]["strategies"] == []


async def test_a_wallet_is_its_owners_alone(server: ServerProcess) -> None:
    other = await call(
        server, START, {"i": {**CONFIG, "walletAddress": "someone"}}, token("wallet4")
    )
    assert error_code(other) == "FORBIDDEN"
    async with GraphQLWS.connect(server.ws_url, token=token("wallet4")) as client:
        await client.subscribe("spy", WATCH, {"w": "wallet5"})
        refused = await client.receive()
    assert refused["type"] == "error"
    assert refused["payload"][0]["extensions"]["code"] == "FORBIDDEN"
    anonymous = await call(server, "{ strategies { strategyId } }")
    assert error_code(anonymous) == "UNAUTHENTICATED"
    admin = await call(
        server, '{ strategies(wallet: "wallet4") { strategyId } }', bearer=token("root", "admin")
    )
    assert admin == {"data": {"strategies": []}}
    # Every strategy at once is no longer a list nor a message: the summary and pages are.
    everyone = await call(server, "{ strategies { strategyId } }", bearer=token("root", "admin"))
    assert error_code(everyone) == "WALLET_REQUIRED"
    async with GraphQLWS.connect(server.ws_url, token=token("root", "admin")) as client:
        await client.subscribe("all", WATCH)
        refused = await client.receive()
    assert refused["type"] == "error"
    assert refused["payload"][0]["extensions"]["code"] == "WALLET_REQUIRED"
    stop = await call(
        server,
        'mutation { stopStrategy(strategyId: "mg_nope") { status } }',
        bearer=token("wallet4"),
    )
    assert error_code(stop) == "UNKNOWN_STRATEGY"


PAGE = (
    "query($f: Int!, $a: String, $w: String, $o: Boolean!) { strategyPage(first: $f, after: $a, "
    "wallet: $w, activeOnly: $o) { strategies { strategyId walletAddress status } endCursor "
    "hasNextPage } }"
)


async def pages(
    server: ServerProcess, bearer: str, first: int, **given: Any
) -> list[dict[str, Any]]:
    """Every page of strategyPage, following endCursor."""
    variables = {"f": first, "a": None, "w": None, "o": False, **given}
    found = []
    while True:
        body = await call(server, PAGE, variables, bearer)
        assert "errors" not in body, body
        page = body["data"]["strategyPage"]
        found.append(page)
        assert len(page["strategies"]) == first or not page["hasNextPage"]
        if not page["hasNextPage"]:
            return found
        variables["a"] = page["endCursor"]


async def test_strategies_come_a_page_at_a_time(server: ServerProcess) -> None:
    admin = token("root", "admin")
    wallet = f"pager-{uuid.uuid4().hex[:8]}"
    ids = []
    for _ in range(5):
        body = await call(server, START, {"i": {**CONFIG, "walletAddress": wallet}}, admin)
        ids.append(body["data"]["startStrategy"]["strategyId"])
    stop = "mutation($s: ID!) { stopStrategy(strategyId: $s) { status } }"
    assert "errors" not in await call(server, stop, {"s": ids[2]}, admin)

    mine = await pages(server, admin, 2, w=wallet)
    assert [len(p["strategies"]) for p in mine] == [2, 2, 1]
    assert [s["strategyId"] for p in mine for s in p["strategies"]] == sorted(ids)
    active = await pages(server, admin, 3, w=wallet, o=True)
    assert [s["strategyId"] for p in active for s in p["strategies"]] == sorted(set(ids) - {ids[2]})
    # Every strategy of every wallet, in id order, each once: these among them.
    everyone = [s["strategyId"] for p in await pages(server, admin, 500) for s in p["strategies"]]
    assert everyone == sorted(set(everyone))
    assert set(ids) <= set(everyone)
    # A user pages through its own wallet only.
    user = f"pager-user-{uuid.uuid4().hex[:8]}"  # the database outlives a run: a new wallet
    own = await call(server, START, {"i": CONFIG}, token(user))
    own_id = own["data"]["startStrategy"]["strategyId"]
    user_pages = await pages(server, token(user), 10)
    assert [s["strategyId"] for p in user_pages for s in p["strategies"]] == [own_id]
    spying = await call(server, PAGE, {"f": 10, "w": wallet, "o": False}, token(user))
    assert error_code(spying) == "FORBIDDEN"
    assert error_code(await call(server, PAGE, {"f": 10, "o": False})) == "UNAUTHENTICATED"
    service = token("ore-oracle", "service")
    assert error_code(await call(server, PAGE, {"f": 10, "o": False}, service)) == "FORBIDDEN"
    assert error_code(await call(server, "{ " + SUMMARY + " }")) == "UNAUTHENTICATED"
    assert error_code(await call(server, "{ " + SUMMARY + " }", bearer=service)) == "FORBIDDEN"
    empty = await call(server, PAGE, {"f": 10, "w": "pager-nobody", "o": False}, admin)
    assert empty["data"]["strategyPage"] == {
        "strategies": [],
        "endCursor": None,
        "hasNextPage": False,
    }


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"f": 0}, "INVALID_PAGE"),
        ({"f": -1}, "INVALID_PAGE"),
        ({"f": 501}, "INVALID_PAGE"),
        ({"f": 10, "a": "not a cursor"}, "INVALID_CURSOR"),
        ({"f": 10, "a": ""}, "INVALID_CURSOR"),
        ({"f": 10, "a": base64.urlsafe_b64encode(b"mg_0123").decode()}, "INVALID_CURSOR"),
        ({"f": 10, "a": base64.urlsafe_b64encode(b"strategy:").decode()}, "INVALID_CURSOR"),
        ({"f": 10, "a": base64.urlsafe_b64encode(b"\xff\xfe").decode()}, "INVALID_CURSOR"),
    ],
)
async def test_bad_pages_are_refused(
    server: ServerProcess, variables: dict[str, Any], code: str
) -> None:
    body = await call(server, PAGE, {"o": False, **variables}, token("root", "admin"))
    assert error_code(body) == code
    assert body["data"] is None


async def test_a_renewed_session_that_is_no_longer_an_admins_loses_the_summary(
    server: ServerProcess,
) -> None:
    """martingaleSummary is an admin's: a token renewed to the user role ends it, and leaves the
    caller's own wallet's progress running."""
    renew = "mutation($t: String!) { renewSession(token: $t) { role endedSubscriptions } }"
    async with GraphQLWS.connect(server.ws_url, token=token("renewer", "admin")) as client:
        await client.subscribe("s", "subscription { " + SUMMARY + " }")
        await client.subscribe("p", WATCH, {"w": "renewer"})
        firsts = await messages_until(client, lambda ms: {m.get("id") for m in ms} >= {"s", "p"})
        assert all(m["type"] == "next" for m in firsts), firsts
        await client.subscribe("r", renew, {"t": token("renewer", "user")})

        def renewed_and_ended(messages: list[dict[str, Any]]) -> bool:
            return {"type": "complete", "id": "s"} in messages and any(
                m.get("id") == "r" and m["type"] == "next" for m in messages
            )

        after = await messages_until(client, renewed_and_ended)
    [answer] = [m for m in after if m.get("id") == "r" and m["type"] == "next"]
    assert answer["payload"]["data"]["renewSession"] == {"role": "user", "endedSubscriptions": 1}
    [refused] = [m for m in after if m.get("id") == "s" and m["type"] == "next"]
    assert refused["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert not [m for m in after if m.get("id") == "p" and m["type"] != "next"]
