"""Martingale strategies over real sockets: rounds turn with a seeded outcome source, each
round's progress arrives with the numbers the domain predicts, a restart continues the strategy,
and a service settles rounds with real outcomes."""

from __future__ import annotations

import asyncio
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
    stop = await call(
        server,
        'mutation { stopStrategy(strategyId: "mg_nope") { status } }',
        bearer=token("wallet4"),
    )
    assert error_code(stop) == "UNKNOWN_STRATEGY"
