"""Marathon leaderboards over real sockets: organisers create marathons and add accounts,
collectors push snapshots, participants watch ranks move; private marathons stay private."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aio_pika
import httpx
import pytest

from tests.conftest import isolated_database, isolated_server
from tests.e2e.support import (
    ACCOUNT,
    ADD,
    COLLECTOR,
    CREATE,
    INGEST,
    LEADERBOARD,
    NOW,
    SETTINGS,
    add,
    call,
    create,
    create_marathon,
    error_code,
    ingest,
    marathon_input,
    messages_until,
    snapshot,
    wire,
)
from tests.support import GraphQLWS, ServerProcess, delete_ingest_queues, token

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def marathon_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    with isolated_server(
        database_url, SETTINGS, tmp_path_factory.mktemp("marathon") / "server.log"
    ) as process:
        yield process


async def test_ranks_move_as_snapshots_arrive(marathon_server: ServerProcess) -> None:
    marathon = await create_marathon(marathon_server, "Spring", "olga", public=False)
    spring = marathon.pop("id")
    assert re.fullmatch(r"m-[0-9a-f]{20}", spring), spring
    assert marathon == {"name": "Spring", "public": False, "organiser": "olga", "running": True}
    await add(marathon_server, spring, 1001, "alice", "olga")
    await add(marathon_server, spring, 1002, "bob", "olga")
    # alice: started with 10,000 (balance 10,000, nothing open), now 10,500: +5%.
    assert await ingest(marathon_server, snapshot(1001, "10000", "10000"))
    assert await ingest(marathon_server, snapshot(1001, "10000", "10500", "500", at=1))
    # bob: started with 20,000, now 20,600: +3%.
    assert await ingest(marathon_server, snapshot(1002, "20000", "20000"))
    assert await ingest(marathon_server, snapshot(1002, "20000", "20600", "600", at=1))

    async with GraphQLWS.connect(marathon_server.ws_url, token=token("alice")) as alice:
        await alice.subscribe("board", LEADERBOARD, {"m": spring, "top": 10})
        await alice.subscribe("me", ACCOUNT, {"m": spring, "l": 1001})
        first = await messages_until(alice, lambda ms: len(ms) >= 2)
        by_id = {m["id"]: m["payload"]["data"] for m in first}
        board = by_id["board"]["marathonLeaderboard"]
        assert board["accounts"] == 2
        assert [(r["rank"], r["login"], r["profitPercentage"]) for r in board["rows"]] == [
            (1, 1001, "5.0000"),
            (2, 1002, "3.0000"),
        ]
        assert board["rows"][0]["openPositionsCount"] == 1
        me = by_id["me"]["accountUpdates"]["row"]
        assert (me["rank"], me["profit"]) == (1, "500")

        # bob jumps to +10%: he leads, alice is second, on both subscriptions.
        assert await ingest(marathon_server, snapshot(1002, "20000", "22000", "2000", at=2))
        moved = await messages_until(alice, lambda ms: {m["id"] for m in ms} >= {"board", "me"})
        latest = {m["id"]: m["payload"]["data"] for m in moved}
        rows = latest["board"]["marathonLeaderboard"]["rows"]
        assert [(r["rank"], r["login"]) for r in rows] == [(1, 1002), (2, 1001)]
        assert latest["me"]["accountUpdates"]["row"]["rank"] == 2

        # A replayed (not newer) snapshot is not stored and moves nothing.
        assert not await ingest(marathon_server, snapshot(1002, "20000", "22000", "2000", at=2))
        with pytest.raises(TimeoutError):
            await alice.receive(timeout=0.5)

    page = await call(
        marathon_server,
        "query($m: ID!) { leaderboardPage(marathonId: $m, offset: 1, limit: 5) "
        "{ accounts rows { rank login } } }",
        {"m": spring},
        bearer=token("bob"),
    )
    assert page["data"]["leaderboardPage"] == {"accounts": 2, "rows": [{"rank": 2, "login": 1001}]}
    await asyncio.sleep(1.2)  # a stored leaderboard (every 0.5 s here)
    stored = await call(
        marathon_server,
        "query($m: ID!, $at: DateTime!) { leaderboardAt(marathonId: $m, at: $at) { accounts "
        "rows { rank login profitPercentage } } }",
        {"m": spring, "at": datetime.now(UTC).isoformat()},
        token("olga"),
    )
    assert stored["data"]["leaderboardAt"]["rows"] == [
        {"rank": 1, "login": 1002, "profitPercentage": "10.0000"},
        {"rank": 2, "login": 1001, "profitPercentage": "5.0000"},
    ]


async def test_private_marathons_are_for_participants_organisers_and_admins(
    marathon_server: ServerProcess,
) -> None:
    secret = await create(marathon_server, "Secret", "olga", public=False)
    public = await create(marathon_server, "Open", "olga", public=True)
    await add(marathon_server, secret, 2001, "alice", "olga")
    await ingest(marathon_server, snapshot(2001, "1000", "1100", at=5))

    query = "query($m: ID!) { marathon(id: $m) { id } }"
    # Refused exactly as an id that does not exist (test_private_ids_answer_as_missing_ones).
    for caller in (token("mallory"), None):
        refused = await call(marathon_server, query, {"m": secret}, caller)
        assert error_code(refused) == "UNKNOWN_MARATHON"
    for user, role in (("alice", "user"), ("olga", "user"), ("root", "admin")):
        seen = await call(marathon_server, query, {"m": secret}, token(user, role))
        assert seen == {"data": {"marathon": {"id": secret}}}, user
    listed = await call(marathon_server, "{ marathons { id } }")
    ids = {m["id"] for m in listed["data"]["marathons"]}
    assert public in ids
    assert secret not in ids

    async with GraphQLWS.connect(marathon_server.ws_url, token=token("mallory")) as mallory:
        await mallory.subscribe("board", LEADERBOARD, {"m": secret})
        await mallory.subscribe("row", ACCOUNT, {"m": secret, "l": 2001})
        await mallory.subscribe("public", LEADERBOARD, {"m": public})
        messages = await messages_until(mallory, lambda ms: len(ms) >= 3)
    by_id = {m["id"]: m for m in messages}
    for refused_id in ("board", "row"):
        assert by_id[refused_id]["type"] == "error"
        assert by_id[refused_id]["payload"][0]["extensions"]["code"] == "UNKNOWN_MARATHON"
    assert by_id["public"]["type"] == "next"
    assert "2001" not in str(messages)

    hidden = await call(
        marathon_server,
        ADD,
        {"i": {"marathonId": secret, "login": 2002, "participant": "mallory"}},
        token("mallory"),
    )
    assert error_code(hidden) == "UNKNOWN_MARATHON"
    # alice takes part, so she sees the marathon; she may not change it.
    not_organiser = await call(
        marathon_server,
        ADD,
        {"i": {"marathonId": secret, "login": 2002, "participant": "alice"}},
        token("alice"),
    )
    assert error_code(not_organiser) == "FORBIDDEN"
    not_collector = await call(
        marathon_server, INGEST, {"i": snapshot(2001, "1", "1")}, token("alice")
    )
    assert error_code(not_collector) == "FORBIDDEN"


async def test_bad_marathon_input_is_refused(marathon_server: ServerProcess) -> None:
    olga = token("olga")
    backwards = await call(
        marathon_server,
        CREATE,
        {
            "i": {
                "name": "x",
                "startsAt": NOW.isoformat(),
                "endsAt": (NOW - timedelta(days=1)).isoformat(),
            }
        },
        olga,
    )
    assert error_code(backwards) == "BAD_REQUEST"
    # Only admins choose ids (they see every marathon, so "exists" tells them nothing).
    chosen = await call(
        marathon_server, CREATE, {"i": {**marathon_input("x", True), "id": "dup"}}, olga
    )
    assert error_code(chosen) == "BAD_REQUEST"
    assert "only admins choose" in chosen["errors"][0]["message"]
    root = token("root", "admin")
    dup = {"i": {**marathon_input("x", True), "id": "dup"}}
    made = await call(marathon_server, CREATE, dup, root)
    assert made["data"]["createMarathon"]["id"] == "dup", made
    again = await call(marathon_server, CREATE, dup, root)
    assert error_code(again) == "MARATHON_EXISTS"
    unknown = await call(marathon_server, '{ marathon(id: "nope") { id } }')
    assert error_code(unknown) == "UNKNOWN_MARATHON"
    negative = await call(
        marathon_server, INGEST, {"i": {**snapshot(3001, "5", "10"), "margin": "-1"}}, COLLECTOR
    )
    assert error_code(negative) == "BAD_REQUEST"
    assert "margin" in negative["errors"][0]["message"]
    too_big = await call(
        marathon_server, INGEST, {"i": {**snapshot(3001, "5", "10"), "login": 2**60}}, COLLECTOR
    )
    assert "Long" in too_big["errors"][0]["message"]
    naive = await call(
        marathon_server,
        INGEST,
        {"i": {**snapshot(3001, "5", "10"), "serverTime": "2026-01-01T00:00:00"}},
        COLLECTOR,
    )
    assert error_code(naive) == "BAD_REQUEST"
    async with GraphQLWS.connect(marathon_server.ws_url) as client:
        await client.subscribe("top", LEADERBOARD, {"m": "dup", "top": 0})
        refused = await client.receive()
        assert refused["type"] == "error"
        assert "top must be between 1 and 100" in refused["payload"][0]["message"]


INGEST_LIST = (
    "mutation($s: [AccountSnapshotInput!]!) { ingestAccountSnapshots(snapshots: $s) "
    "{ stored ignored } }"
)


async def test_a_list_of_snapshots_is_stored_in_one_call(marathon_server: ServerProcess) -> None:
    marathon = await create(marathon_server, "Batch", "olga", public=True)
    for login in (4001, 4002, 4003):
        await add(marathon_server, marathon, login, f"user-{login}", "olga")
    snapshots = [
        snapshot(4001, "10000", "10000"),
        snapshot(4002, "10000", "10000"),
        snapshot(4001, "10000", "10300", "300", at=2),  # newer: this one is kept
        snapshot(4001, "10000", "10100", "100", at=1),  # older than the one before
        snapshot(4002, "10000", "10000"),  # the same again
        snapshot(4003, "10000", "10200", "200", at=1),
    ]
    async with GraphQLWS.connect(marathon_server.ws_url) as watcher:
        await watcher.subscribe("board", LEADERBOARD, {"m": marathon, "top": 10})
        await messages_until(watcher, lambda ms: len(ms) >= 1)  # the empty board
        body = await call(marathon_server, INGEST_LIST, {"s": snapshots}, COLLECTOR)
        assert body == {"data": {"ingestAccountSnapshots": {"stored": 3, "ignored": 3}}}, body
        moved = await messages_until(
            watcher,
            lambda ms: (
                bool(ms) and ms[-1]["payload"]["data"]["marathonLeaderboard"]["accounts"] == 3
            ),
        )
        rows = moved[-1]["payload"]["data"]["marathonLeaderboard"]["rows"]
        # 4001's initial balance comes from its first snapshot (10,000), not its newest; 4003's
        # only snapshot has 200 floating: 9,800, so 10,200 is +4.08%
        assert [(r["rank"], r["login"], r["profitPercentage"]) for r in rows] == [
            (1, 4003, "4.0816"),
            (2, 4001, "3.0000"),
            (3, 4002, "0.0000"),
        ]
        # sent again (a collector's retry): nothing stored, nothing moves
        again = await call(marathon_server, INGEST_LIST, {"s": snapshots}, COLLECTOR)
        assert again == {"data": {"ingestAccountSnapshots": {"stored": 0, "ignored": 6}}}
        with pytest.raises(TimeoutError):
            await watcher.receive(timeout=0.5)

    empty = await call(marathon_server, INGEST_LIST, {"s": []}, COLLECTOR)
    assert empty == {"data": {"ingestAccountSnapshots": {"stored": 0, "ignored": 0}}}


async def test_a_bad_list_of_snapshots_stores_nothing(marathon_server: ServerProcess) -> None:
    marathon = await create(marathon_server, "Bad batch", "olga", public=True)
    await add(marathon_server, marathon, 4101, "user-4101", "olga")
    good = snapshot(4101, "10000", "10500", "500")
    bad = {**snapshot(4101, "10000", "10000", at=5), "margin": "-1"}
    invalid = await call(marathon_server, INGEST_LIST, {"s": [good, good, bad]}, COLLECTOR)
    assert error_code(invalid) == "BAD_REQUEST"
    message = invalid["errors"][0]["message"]
    assert message.startswith("invalid snapshot at index 2 (login 4101): "), message
    assert "margin" in message
    assert invalid["errors"][0]["extensions"]["index"] == 2

    too_long = await call(marathon_server, INGEST_LIST, {"s": [good] * 501}, COLLECTOR)
    assert error_code(too_long) == "BAD_REQUEST"
    assert too_long["errors"][0]["message"] == (
        "at most 500 snapshots in one call (got 501): send the others in another call"
    )
    anonymous = await call(marathon_server, INGEST_LIST, {"s": [good]})
    assert error_code(anonymous) == "UNAUTHENTICATED"
    user = await call(marathon_server, INGEST_LIST, {"s": [good]}, token("olga"))
    assert error_code(user) == "FORBIDDEN"

    page = await call(
        marathon_server,
        "query($m: ID!) { leaderboardPage(marathonId: $m, offset: 0, limit: 5) { accounts } }",
        {"m": marathon},
    )
    assert page["data"]["leaderboardPage"] == {"accounts": 0}  # none of them was stored
    assert await ingest(marathon_server, good)  # so it is new still


async def test_leaderboards_survive_a_restart(database_url: str, tmp_path: Path) -> None:
    async with isolated_database(database_url) as url:
        env = {"DATABASE_URL": url, **SETTINGS}
        first = ServerProcess(env, tmp_path / "first.log").start()
        try:
            kept = await create(first, "Kept", "olga", public=True)
            await add(first, kept, 4001, "alice", "olga")
            await add(first, kept, 4002, "bob", "olga")
            # Derived initial balances: the first snapshot after registration fixes them.
            await ingest(first, snapshot(4001, "5000", "5000"))
            await ingest(first, snapshot(4002, "8000", "8000"))
            await ingest(first, snapshot(4001, "5000", "5250", "250", at=1))
            await ingest(first, snapshot(4002, "8000", "9600", "1600", at=1))
            query = (
                "query($m: ID!) { leaderboardPage(marathonId: $m) "
                "{ rows { rank login profitPercentage } } }"
            )
            before = await call(first, query, {"m": kept})
        finally:
            first.stop()
        second = ServerProcess(env, tmp_path / "second.log").start()
        try:
            after = await call(second, query, {"m": kept})
        finally:
            second.stop()
    assert before == after
    assert after["data"]["leaderboardPage"]["rows"] == [
        {"rank": 1, "login": 4002, "profitPercentage": "20.0000"},
        {"rank": 2, "login": 4001, "profitPercentage": "5.0000"},
    ]


async def test_snapshots_from_rabbitmq_move_the_leaderboard(
    database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    queue = f"socket_data_test_{uuid.uuid4().hex[:8]}"
    async with isolated_database(database_url) as url:
        env = {
            "DATABASE_URL": url,
            **SETTINGS,
            "RABBITMQ_URL": rabbitmq_url,
            "RABBITMQ_QUEUE": queue,
        }
        broker = await aio_pika.connect(rabbitmq_url)
        try:
            channel = await broker.channel()

            async def send(body: bytes) -> None:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue,
                )

            first = ServerProcess(env, tmp_path / "first.log").start()
            try:
                mq = await create(first, "MQ", "olga", public=True)
                await add(first, mq, 5001, "alice", "olga")
                await add(first, mq, 5002, "bob", "olga")
                async with GraphQLWS.connect(first.ws_url) as client:
                    await client.subscribe("board", LEADERBOARD, {"m": mq})
                    await client.subscribe("bob", ACCOUNT, {"m": mq, "l": 5002})
                    await messages_until(client, lambda ms: len(ms) >= 2)  # empty, no row
                    await send(wire(5001, "1000", "1000", at=0))
                    await send(wire(5002, "1000", "1000", at=0))
                    await send(wire(5001, "1000", "1200", at=1, profit="200"))  # +20%
                    await send(wire(5002, "1000", "1100", at=1, profit="100"))  # +10%

                    def ranked(expected: list[int]) -> Any:
                        def done(messages: list[dict[str, Any]]) -> bool:
                            boards = [
                                m["payload"]["data"]["marathonLeaderboard"]
                                for m in messages
                                if m["id"] == "board"
                            ]
                            return (
                                bool(boards)
                                and [r["login"] for r in boards[-1]["rows"]] == expected
                            )

                        return done

                    await messages_until(client, ranked([5001, 5002]))
                    # A malformed message is dead-lettered; the good one behind it still arrives.
                    await send(b'{"login": "not a number"}')
                    await send(wire(5002, "1000", "1500", at=2, profit="500"))  # +50%: bob leads

                    def bob_leads(messages: list[dict[str, Any]]) -> bool:
                        return ranked([5002, 5001])(messages) and any(
                            m["id"] == "bob"
                            and m["payload"]["data"]["accountUpdates"]["row"]["rank"] == 1
                            for m in messages
                        )

                    await messages_until(client, bob_leads)
                dead = await channel.declare_queue(f"{queue}.dead", passive=True)
                assert dead.declaration_result.message_count == 1
                async with httpx.AsyncClient(timeout=5) as http:
                    stats = (await http.get(first.base_url + "/stats")).json()
                    ready = (await http.get(first.base_url + "/readyz")).json()
                assert stats["rabbitmq"]["deadLettered"] == 1, stats["rabbitmq"]
                assert ready["checks"]["rabbitmq"] == "ok"
            finally:
                first.stop()
            # What was acknowledged was stored: a new server shows the same leaderboard.
            await send(wire(5001, "1000", "1300", at=3, profit="300"))  # waits in the queue
            second = ServerProcess(env, tmp_path / "second.log").start()
            try:
                query = (
                    "query($m: ID!) { leaderboardPage(marathonId: $m) "
                    "{ rows { login profitPercentage } } }"
                )

                async def settled() -> dict[str, Any]:
                    for _ in range(50):
                        body = await call(second, query, {"m": mq})
                        rows = body["data"]["leaderboardPage"]["rows"]
                        if rows and rows[-1]["profitPercentage"] == "30.0000":
                            return body
                        await asyncio.sleep(0.1)
                    raise AssertionError(f"the queued snapshot never arrived: {body}")

                body = await settled()
                assert body["data"]["leaderboardPage"]["rows"] == [
                    {"login": 5002, "profitPercentage": "50.0000"},
                    {"login": 5001, "profitPercentage": "30.0000"},
                ]
            finally:
                second.stop()
        finally:
            with contextlib.suppress(Exception):
                await delete_ingest_queues(broker, queue)
            await broker.close()


async def test_a_public_leaderboard_is_one_execution_for_everyone(
    marathon_server: ServerProcess,
) -> None:
    shared = await create(marathon_server, "Shared", "olga", public=True)
    closed = await create(marathon_server, "Closed", "olga", public=False)
    await add(marathon_server, closed, 6001, "alice", "olga")
    await add(marathon_server, closed, 6002, "bob", "olga")
    async with httpx.AsyncClient(timeout=5) as http:

        async def groups() -> int:
            count: int = (await http.get(marathon_server.base_url + "/stats")).json()["groups"]
            return count

        before = await groups()
        async with (
            GraphQLWS.connect(marathon_server.ws_url, token=token("alice")) as alice,
            GraphQLWS.connect(marathon_server.ws_url, token=token("bob")) as bob,
            GraphQLWS.connect(marathon_server.ws_url) as anonymous,
        ):
            for client in (alice, bob, anonymous):
                await client.subscribe("s", LEADERBOARD, {"m": shared})
                await client.next_data("s", "marathonLeaderboard")
            assert await groups() == before + 1  # three callers, one execution
            for client in (alice, bob):
                await client.subscribe("c", LEADERBOARD, {"m": closed})
                await client.next_data("c", "marathonLeaderboard")
            assert await groups() == before + 3  # a private one: one per caller
