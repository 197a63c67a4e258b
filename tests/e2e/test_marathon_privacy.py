"""A private marathon's accounts are seen through no other marathon, and its id is found by no
error: over real sockets, as the attacker of issue 16 tried it (docs/marathons.md, "Who sees
what")."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from tests.conftest import isolated_server
from tests.e2e.support import (
    ACCOUNT,
    ADD,
    CREATE,
    LEADERBOARD,
    add,
    call,
    create,
    error_code,
    ingest,
    marathon_input,
    snapshot,
)
from tests.support import GraphQLWS, ServerProcess, loop_watch, token

if TYPE_CHECKING:
    from collections.abc import Iterator

SETTINGS = {
    "SIMULATED_FEEDS": "true",  # the bystander's prices
    "PRICE_FEED_HZ": "10",
    "LEADERBOARD_MAX_HZ": "20",
    "LEADERBOARD_SNAPSHOT_INTERVAL_S": "0.3",
}
ROW = (
    "rank login profit profitPercentage initialBalance equity balance credit margin freeMargin "
    "marginLevel openPositions { ticket symbol volume openPrice profit } "
    "pendingOrders { ticket symbol price } updatedAt"
)
BOARD_READS = (
    "query($m: ID!, $at: DateTime!) { "
    "marathon(id: $m) { id accounts } "
    "leaderboardPage(marathonId: $m, limit: 1000) { accounts rows { " + ROW + " } } "
    "leaderboardAt(marathonId: $m, at: $at) { accounts rows { login equity balance } } }"
)
ACCOUNT_ROW = "query($m: ID!, $l: Long!) { accountRow(marathonId: $m, login: $l) { " + ROW + " } }"
CAROLS_LOGIN = 7_700_001
"""Dave's account, enrolled by Carol in her private marathon."""
SECRET_FIGURES = ("77777.77", "7777.77", "78888.88", "8888.88", "61234.5", "5007700002")
"""What its snapshots hold (equity, floating profit, balance, ticket): none may reach Bob."""


@pytest.fixture(scope="module")
def privacy_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with isolated_server(
        database_url, SETTINGS, tmp_path_factory.mktemp("privacy") / "server.log"
    ) as process:
        yield process


def leaked(text: str) -> list[str]:
    return [figure for figure in SECRET_FIGURES if figure in text]


async def drain(client: GraphQLWS, quiet_s: float = 0.6) -> list[dict[str, Any]]:
    """Every message until none came for ``quiet_s``."""
    received = []
    with contextlib.suppress(TimeoutError):
        while True:
            received.append(await client.receive(timeout=quiet_s))
    return received


async def test_a_login_held_by_a_private_marathon_is_not_shown_through_another(
    privacy_server: ServerProcess,
) -> None:
    server, login = privacy_server, CAROLS_LOGIN
    carols = await create(server, "Carol's", "carol", public=False)
    await add(server, carols, login, "dave", "carol")
    assert await ingest(server, snapshot(login, "61234.5", "77777.77", "7777.77", at=10))
    bobs = await create(server, "Bob's", "bob", public=True)

    async with (
        loop_watch(server) as worst,
        GraphQLWS.connect(server.ws_url, token=token("bob")) as bob,
        GraphQLWS.connect(server.ws_url) as anonymous,
        GraphQLWS.connect(server.ws_url, token=token("carol")) as carol,
    ):
        for client in (bob, anonymous):
            await client.subscribe("board", LEADERBOARD, {"m": bobs, "top": 100})
            await client.subscribe("row", ACCOUNT, {"m": bobs, "l": login})
        await carol.subscribe("board", LEADERBOARD, {"m": carols, "top": 100})
        await carol.next_data("board", "marathonLeaderboard")

        # Bob may not enrol Dave's login, whoever he names as its owner.
        for participant in ("bob", "dave"):
            refused = await call(
                server,
                ADD,
                {"i": {"marathonId": bobs, "login": login, "participant": participant}},
                token("bob"),
            )
            assert refused["data"] is None
            [error] = refused["errors"]
            assert error["extensions"] == {"code": "ENROLLED_ELSEWHERE", "login": login}
            assert "enrolled in another marathon" in error["message"]
            assert carols not in str(refused)  # which marathon holds it is not said

        # A newer snapshot moves Carol's board, and nothing of it reaches Bob's.
        assert await ingest(server, snapshot(login, "61234.5", "78888.88", "8888.88", at=11))
        while True:
            moved = await carol.next_data("board", "marathonLeaderboard")
            if moved["rows"] and moved["rows"][0]["equity"] == "78888.88":
                break
        await asyncio.sleep(0.7)  # two stored leaderboards of Bob's marathon (every 0.3 s)
        for client in (bob, anonymous):
            messages = await drain(client)
            board = [m for m in messages if m.get("id") == "board"]
            assert [m["payload"]["data"]["marathonLeaderboard"] for m in board] == [
                {"accounts": 0, "rows": []}
            ]
            [row] = [m for m in messages if m.get("id") == "row"]
            assert row["type"] == "error"
            assert row["payload"][0]["extensions"]["code"] == "UNKNOWN_ACCOUNT"
            assert leaked(orjson.dumps(messages).decode()) == []

        # Nothing was stored: no query on Bob's marathon knows the login, for Bob or anyone.
        at = datetime.now(UTC).isoformat()
        for caller in (token("bob"), None):
            row_read = await call(server, ACCOUNT_ROW, {"m": bobs, "l": login}, caller)
            assert row_read["data"] == {"accountRow": None}
            assert error_code(row_read) == "UNKNOWN_ACCOUNT"
            assert leaked(orjson.dumps(row_read).decode()) == []
            reads = await call(server, BOARD_READS, {"m": bobs, "at": at}, caller)
            assert "errors" not in reads, reads
            assert reads["data"]["marathon"] == {"id": bobs, "accounts": 0}
            assert reads["data"]["leaderboardPage"] == {"accounts": 0, "rows": []}
            assert reads["data"]["leaderboardAt"] == {"accounts": 0, "rows": []}
            assert leaked(orjson.dumps(reads).decode()) == []

        # An admin may enrol it (the platform answers for it); then Bob's board shows it.
        admitted = await call(
            server,
            ADD,
            {"i": {"marathonId": bobs, "login": login, "participant": "dave"}},
            token("root", "admin"),
        )
        assert admitted == {"data": {"addParticipant": True}}, admitted
        shown = await bob.next_data("board", "marathonLeaderboard")
        assert [(r["login"], r["equity"]) for r in shown["rows"]] == [(login, "78888.88")]
    assert worst["healthz_s"] < 1.0, worst


async def test_who_may_enrol_a_login_held_elsewhere(privacy_server: ServerProcess) -> None:
    """Its owner, the organiser of every marathon that holds it, or an admin; nobody else."""
    server, login = privacy_server, 7_700_101
    first = await create(server, "First", "carol", public=False)
    await add(server, first, login, "dave", "carol")

    async def enrol(marathon: str, organiser: str, role: str = "user") -> dict[str, Any]:
        variables = {"i": {"marathonId": marathon, "login": login, "participant": "dave"}}
        return await call(server, ADD, variables, token(organiser, role))

    # Carol holds it alone: she may show it in her next marathon too, and re-register it.
    second = await create(server, "Second", "carol", public=True)
    assert await enrol(second, "carol") == {"data": {"addParticipant": True}}
    assert await enrol(first, "carol") == {"data": {"addParticipant": True}}
    # Dave, its owner, may enrol it in a marathon he organises.
    daves = await create(server, "Dave's", "dave", public=True)
    assert await enrol(daves, "dave") == {"data": {"addParticipant": True}}
    # Now Dave's marathon holds it too: Carol no longer organises every holder.
    third = await create(server, "Third", "carol", public=True)
    assert error_code(await enrol(third, "carol")) == "ENROLLED_ELSEWHERE"
    eves = await create(server, "Eve's", "eve", public=True)
    assert error_code(await enrol(eves, "eve")) == "ENROLLED_ELSEWHERE"
    # Released everywhere, it is free again.
    for marathon, organiser in ((first, "carol"), (second, "carol"), (daves, "dave")):
        removed = await call(
            server,
            "mutation($m: ID!, $l: Long!) { removeParticipant(marathonId: $m, login: $l) }",
            {"m": marathon, "l": login},
            token(organiser),
        )
        assert removed == {"data": {"removeParticipant": True}}, removed
    assert await enrol(eves, "eve") == {"data": {"addParticipant": True}}


async def test_two_organisers_racing_for_a_free_login_do_not_both_get_it(
    privacy_server: ServerProcess,
) -> None:
    server, login = privacy_server, 7_700_201
    races = [
        (await create(server, f"Race {n}", f"racer-{n}", public=True), f"racer-{n}")
        for n in range(6)
    ]
    answers = await asyncio.gather(
        *(
            call(
                server,
                ADD,
                {"i": {"marathonId": m, "login": login, "participant": o}},
                token(o),
            )
            for m, o in races
        )
    )
    won = [a for a in answers if a == {"data": {"addParticipant": True}}]
    assert len(won) == 1, answers
    assert sorted(error_code(a) for a in answers if a not in won) == ["ENROLLED_ELSEWHERE"] * 5


def normalised(body: Any, marathon_id: str) -> str:
    """The whole answer, with the id asked for written as <id>."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode().replace(marathon_id, "<id>")


PROBES = {
    "marathon": "query($m: ID!) { marathon(id: $m) { id } }",
    "leaderboardPage": "query($m: ID!) { leaderboardPage(marathonId: $m) { accounts } }",
    "accountRow": "query($m: ID!) { accountRow(marathonId: $m, login: 1) { rank } }",
    "leaderboardAt": 'query($m: ID!) { leaderboardAt(marathonId: $m, at: "2030-01-01T00:00:00Z")'
    " { accounts } }",
    "addParticipant": "mutation($m: ID!) { addParticipant(input: "
    '{marathonId: $m, login: 1, participant: "x"}) }',
    "removeParticipant": "mutation($m: ID!) { removeParticipant(marathonId: $m, login: 1) }",
    "createMarathon": CREATE,
}


async def answers_for(server: ServerProcess, marathon_id: str, bearer: str | None) -> list[str]:
    """Every way to ask about ``marathon_id``, over HTTP and WebSocket, each answer normalised."""
    answers = []
    for name, query in PROBES.items():
        variables: dict[str, Any] = {"m": marathon_id}
        if name == "createMarathon":
            variables = {"i": {**marathon_input("Probe", True), "id": marathon_id}}
        answers.append(normalised(await call(server, query, variables, bearer), marathon_id))
    async with GraphQLWS.connect(server.ws_url, token=bearer) as client:
        await client.subscribe("board", LEADERBOARD, {"m": marathon_id})
        answers.append(normalised(await client.receive(), marathon_id))
        await client.subscribe("row", ACCOUNT, {"m": marathon_id, "l": 1})
        answers.append(normalised(await client.receive(), marathon_id))
    return answers


async def test_private_ids_answer_as_missing_ones(privacy_server: ServerProcess) -> None:
    server = privacy_server
    private = await create(server, "Hidden", "olga", public=False)
    await add(server, private, 7_700_301, "alice", "olga")
    missing = "m-" + "0" * 20  # the same length, so the two answers align to the character
    async with loop_watch(server) as worst:
        for bearer in (None, token("mallory")):
            of_private = await answers_for(server, private, bearer)
            of_missing = await answers_for(server, missing, bearer)
            assert of_private == of_missing
            assert "UNKNOWN_MARATHON" in of_private[0]
            assert all("private" not in answer for answer in of_private)
    assert worst["healthz_s"] < 1.0, worst
    # Nothing was made by the probes: the id is still olga's, and the missing one still missing.
    seen = await call(server, PROBES["marathon"], {"m": private}, token("olga"))
    assert seen == {"data": {"marathon": {"id": private}}}
    assert error_code(await call(server, PROBES["marathon"], {"m": missing})) == "UNKNOWN_MARATHON"
