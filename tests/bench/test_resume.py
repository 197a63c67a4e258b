"""The resume-storm scenario end to end at its quick size (a real server, the Node load client,
500 clients away for 10 s), and the load client's check failing when a stream falls short."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from bench import positions, resume
from bench.processes import Client
from bench.report import target_verdicts
from bench.scenarios import SCENARIOS, TRADESTREAM, Config, measure
from tests.conftest import isolated_server
from tests.support import TEST_JWT_SECRET

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support import ServerProcess

PROJECT = Path(__file__).resolve().parents[2]


def test_the_quick_storm_resumes_every_client_without_losing_an_event(quick_config: Config) -> None:
    config = quick_config
    result = measure(SCENARIOS["resume-storm"], TRADESTREAM, config)
    assert result.error is None, result.error
    assert result.resume is not None
    dropped, resumed = result.resume["dropped"], result.resume["resumed"]
    users = resume.users(500)
    assert (dropped["subscribed"], dropped["without_cursor"], dropped["sub_errors"]) == (500, 0, 0)
    assert (resumed["resumed"], resumed["caught_up"], result.subscribers_ok) == (500, 500, 500)
    assert result.seconds is not None
    assert 0 < result.seconds < 60
    assert (result.failed_conns, result.sub_errors) == (0, 0)
    for what in ("lost", "behind", "duplicates", "backwards", "resets"):
        assert resumed[what] == 0, what
    # Events happened on every resumed topic while away: each user's increases at least, and
    # funding and rounds moved past the cursors the shared half dropped with.
    assert result.resume["increases_stored"] == users * resume.INCREASES
    assert resumed["replayed"] >= users * resume.INCREASES + 2 * (500 - users)
    assert resumed["replayed"] == resumed["expected_replayed"]
    newest = result.resume["newest"]
    shared = dict(pair.split("@") for pair in dropped["shared_pairs"])
    assert newest["marketStats"] > int(shared["marketStats"].split(".")[0])
    assert newest["rounds"] > int(shared["rounds"].split(".")[0])
    # Reads counted from the server's own counter: each user's stream is a pair of its own and
    # needs its own events read; the shared half adds a handful, not a few per client.
    pairs = result.resume["distinct_pairs"]
    assert users + 2 <= pairs <= users + 2 * len(dropped["shared_pairs"])
    assert result.resume["history_reads"]["events issued"] >= users
    assert pairs <= result.resume["reads_issued"] < 5 * pairs
    [verdict] = target_verdicts("resume-storm", [result])
    assert "caught up in" in verdict
    assert "history reads a pair" in verdict


@pytest.fixture(scope="module")
def storm_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {"MUTATION_RATE_PER_S": "1000", "MUTATION_BURST": "1000", **resume.SERVER_ENV}
    log = tmp_path_factory.mktemp("bench-resume") / "server.log"
    with isolated_server(database_url, env, log) as server:
        yield server


async def test_a_stream_short_of_its_newest_event_is_not_caught_up(
    storm_server: ServerProcess, node_workdir: Path
) -> None:
    """Told that user-1's stream stands 1,000 events further than it does, the client waits for
    them, in vain: three of four clients catch up, and user-1's stream is short by about 1,000
    (a funding settlement during the wait may add one)."""
    tokens = positions.Tokens.signed(TEST_JWT_SECRET)
    async with httpx.AsyncClient(timeout=30) as http:
        await positions.create_positions(
            http, storm_server.url, tokens, 2, publish_if_missing=False
        )
    env = {
        "MODE": "resume",
        "USERS": "2",
        "CATCH_UP_TIMEOUT_S": "3",
        "INIT": json.dumps({"authorization": f"Bearer {tokens.admin}"}),
    }
    client = Client(
        [shutil.which("node") or "node", "load_client.mjs", storm_server.ws_url, "4"],
        env,
        node_workdir,
        node_workdir / "logs" / "short.log",
        hold=True,
    )
    try:
        dropped = client.read_line(60)
        assert (dropped["subscribed"], dropped["distinct_pairs"]) == (4, 4)
        newest = await resume.newest(storm_server.env["DATABASE_URL"], 2)
        newest["positions"][1] += 1000
        client.send(newest)
        resumed = client.read_line(30)
    finally:
        client.close()
    assert (resumed["resumed"], resumed["caught_up"]) == (4, 3)
    assert 990 < resumed["behind"] <= 1000
    assert resumed["seconds_to_all_caught_up"] is None
    assert (resumed["lost"], resumed["duplicates"], resumed["resets"]) == (0, 0, 0)
