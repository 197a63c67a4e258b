"""The clients in examples/, run as their users run them, against a real server: Apollo Client over
graphql-ws and over HTTP multipart, urql, graphql-ws and Python's gql. Each must print real events
of a public feed (prices, sequences increasing) and of the token's own positions, resume after the
cursor it printed, and exit non-zero with the reason when its token is refused. The JavaScript
examples' types are generated from schema.graphql and type-checked (``npm run check``), so a
schema change that breaks them fails here; docs/clients.md shows these very files.

The JavaScript examples need Node 20+ and npm. Without them these tests are skipped, unless
TRADESTREAM_REQUIRE_EXAMPLES=1 (``.ci/run`` sets it), which makes that a failure."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.conftest import isolated_server
from tests.support import GraphQLWS, ServerProcess, node_packages, token, unavailable

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "examples" / "js"
PYTHON_EXAMPLE = ROOT / "examples" / "python" / "client.py"
JS_EXAMPLES = ("apollo-ws", "apollo-multipart", "urql-ws", "graphql-ws")
EXAMPLES = (*JS_EXAMPLES, "python")
DOC = ROOT / "docs" / "clients.md"

MARKET = "ETH-PERP"
EVENTS = 3
RUN_TIMEOUT_S = 60.0
"""What a run may take in all; the examples give up on their own after TRADESTREAM_TIMEOUT_S."""

OPEN = "mutation($i: OpenPositionInput!) { openPosition(input: $i) { id size } }"
MODIFY = "mutation($i: ModifyPositionInput!) { modifyPosition(input: $i) { id size } }"
PRICE = "query($m: String!) { price(market: $m) { sequence } }"


@pytest.fixture(scope="module")
def js_examples() -> Path:
    """examples/js with its packages installed (``npm ci`` if node_modules does not match the
    lock file) and its types generated; the path of its tsx."""
    node = node_packages(JS_DIR)
    codegen = subprocess.run(
        [node, "codegen.mjs"], cwd=JS_DIR, capture_output=True, text=True, timeout=60
    )
    assert codegen.returncode == 0, codegen.stderr
    return JS_DIR / "node_modules" / ".bin" / "tsx"


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server alone on its database, simulated prices at 10 a second."""
    with isolated_server(
        database_url,
        # A short expiry notice: a renewal test's 5 s token gets its notice 2 s in; the other
        # tests' tokens (10 minutes) none while they run.
        {"PRICE_FEED_HZ": "10", "MUTATION_BURST": "100", "TOKEN_RENEW_NOTICE_S": "3"},
        tmp_path_factory.mktemp("examples") / "server.log",
    ) as process:
        yield process


def command(request: pytest.FixtureRequest, example: str) -> list[str]:
    if example == "python":
        if importlib.util.find_spec("gql") is None:
            unavailable("gql is not installed: pip install -e '.[dev]'")
        return [sys.executable, str(PYTHON_EXAMPLE)]
    tsx: Path = request.getfixturevalue("js_examples")
    return [str(tsx), str(JS_DIR / "src" / f"{example}.ts")]


class Run:
    """One run of an example: its exit code, the JSON lines it printed, and its stderr."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.returncode = done.returncode
        self.stderr = done.stderr
        self.lines = [json.loads(line) for line in done.stdout.splitlines()]

    def feed(self, name: str) -> list[dict[str, Any]]:
        return [line["event"] for line in self.lines if line["feed"] == name]

    @property
    def resume_cursor(self) -> str:
        found = re.search(r"TRADESTREAM_AFTER=(\S+)", self.stderr)
        assert found, self.stderr
        return found.group(1)


def run(argv: list[str], server: ServerProcess, bearer: str, **settings: str) -> tuple[Run, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADESTREAM_")}
    env |= {
        "TRADESTREAM_URL": server.url,
        "TRADESTREAM_TOKEN": bearer,
        "TRADESTREAM_MARKET": MARKET,
        "TRADESTREAM_EVENTS": str(EVENTS),
        "TRADESTREAM_TIMEOUT_S": "30",
        **settings,
    }
    started = time.monotonic()
    cwd = JS_DIR if argv[-1].endswith(".ts") else PYTHON_EXAMPLE.parent
    done = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    return Run(done), time.monotonic() - started


def call(
    server: ServerProcess, query: str, variables: Mapping[str, Any], bearer: str | None = None
) -> dict[str, Any]:
    headers = {} if bearer is None else {"authorization": f"Bearer {bearer}"}
    response = httpx.post(
        server.url, json={"query": query, "variables": variables}, headers=headers, timeout=10
    )
    body: dict[str, Any] = response.json()
    assert response.status_code == 200, body
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def open_position(server: ServerProcess, user: str) -> dict[str, Any]:
    """A position for ``user`` in MARKET, once the simulated feed has priced it."""
    deadline = time.monotonic() + 10
    while call(server, PRICE, {"m": MARKET})["price"] is None:
        assert time.monotonic() < deadline, f"no {MARKET} price after 10 s"
        time.sleep(0.1)
    order = {"market": MARKET, "side": "LONG", "size": "0.5", "leverage": "2"}
    position: dict[str, Any] = call(server, OPEN, {"i": order}, token(user))["openPosition"]
    return position


def sequence(cursor: str) -> int:
    return int(cursor.split(".")[0])


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_example_prints_prices_and_the_tokens_positions_then_resumes_after_its_cursor(
    request: pytest.FixtureRequest, server: ServerProcess, example: str
) -> None:
    argv = command(request, example)
    user = f"{example}-reader"
    position = open_position(server, user)

    first, _ = run(argv, server, token(user))
    assert first.returncode == 0, first.stderr

    prices = first.feed("priceUpdates")
    assert len(prices) == EVENTS, first.lines
    assert {p["market"] for p in prices} == {MARKET}
    sequences = [p["sequence"] for p in prices]
    assert sequences == sorted(set(sequences)), sequences  # real, live: increasing
    assert all(float(p["price"]) > 0 for p in prices), prices

    positions = first.feed("positions")
    assert len(positions) == EVENTS, first.lines
    assert len(first.lines) == 2 * EVENTS  # nothing else on stdout
    for event in positions:  # the token's user's, and no one else's
        assert event["__typename"] == "PositionsUpdate", event
        assert event["user"] == user
        assert [(p["id"], p["owner"], p["size"]) for p in event["positions"]] == [
            (position["id"], user, "0.5")
        ]
    # Prices move, so the marks do; the cursor stays at the position's last event until another.
    assert len({e["positions"][0]["markPrice"] for e in positions}) > 1, positions
    assert {e["cursor"] for e in positions} == {first.resume_cursor}

    # Away from the feed, the position grows; resuming after the cursor replays that first.
    call(server, MODIFY, {"i": {"positionId": position["id"], "sizeDelta": "0.25"}}, token(user))
    resumed, _ = run(argv, server, token(user), TRADESTREAM_AFTER=first.resume_cursor)
    assert resumed.returncode == 0, resumed.stderr
    replayed, current, *_ = resumed.feed("positions")
    assert replayed["__typename"] == "PositionModified", replayed
    replayed["position"].pop("__typename", None)  # Apollo Client adds it to every selection
    assert replayed["position"] == {"id": position["id"], "owner": user, "size": "0.75"}
    assert sequence(replayed["cursor"]) == sequence(first.resume_cursor) + 1
    assert current["__typename"] == "PositionsUpdate", current
    assert current["cursor"] == replayed["cursor"] == resumed.resume_cursor
    assert [(p["id"], p["size"]) for p in current["positions"]] == [(position["id"], "0.75")]


WEBSOCKET_EXAMPLES = ("apollo-ws", "urql-ws", "graphql-ws", "python")
"""The examples on a WebSocket: a session to renew (HTTP multipart keeps the token it opened
with)."""


@pytest.mark.parametrize("example", WEBSOCKET_EXAMPLES)
def test_the_example_renews_its_session_in_band_and_outlives_its_first_token(
    request: pytest.FixtureRequest, server: ServerProcess, example: str, tmp_path: Path
) -> None:
    """Started with a 5 s token and TRADESTREAM_TOKEN_FILE holding a fresh one for the same
    user, the example answers the server's expiry notice with renewSession on the same socket,
    and reads on past the first token's expiry with no reconnect: one unbroken price stream.
    Without the renewal the socket would close with 4403 at 5 s, which the examples exit on."""
    argv = command(request, example)
    user = f"{example}-renewer"
    open_position(server, user)
    fresh = tmp_path / "token"
    fresh.write_text(token(user) + "\n")
    renewing, took = run(
        argv,
        server,
        token(user, ttl_s=5),
        TRADESTREAM_TOKEN_FILE=str(fresh),
        TRADESTREAM_EVENTS="80",  # at 10 prices a second: 8 s, past the first token's 5
    )
    assert renewing.returncode == 0, renewing.stderr
    assert took > 6, took
    assert "session renewed until " in renewing.stderr, renewing.stderr
    sequences = [p["sequence"] for p in renewing.feed("priceUpdates")]
    assert len(sequences) == 80
    assert sequences == list(range(sequences[0], sequences[0] + 80)), sequences  # no gap


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_example_exits_non_zero_with_the_reason_when_its_token_is_refused(
    request: pytest.FixtureRequest, server: ServerProcess, example: str
) -> None:
    argv = command(request, example)
    forged = token("mallory", secret="not-the-servers-secret-but-32-bytes-long")
    refused, took = run(argv, server, forged, TRADESTREAM_TIMEOUT_S="60")
    assert refused.returncode == 1, refused.stderr
    assert refused.lines == []
    assert "Signature verification failed" in refused.stderr, refused.stderr
    assert took < 20, f"{took:.1f} s: retried instead of stopping"


@pytest.mark.parametrize("example", ["graphql-ws", "python"])
def test_the_example_exits_non_zero_when_the_events_do_not_come_in_time(
    request: pytest.FixtureRequest, server: ServerProcess, example: str
) -> None:
    argv = command(request, example)
    late, took = run(
        argv, server, token("patient"), TRADESTREAM_EVENTS="100000", TRADESTREAM_TIMEOUT_S="1.5"
    )
    assert late.returncode == 1, late.stderr
    assert "fewer than 100000 events of each feed in 1.5 s" in late.stderr, late.stderr
    assert late.feed("priceUpdates"), "it printed what came before giving up"
    assert took < 15


LEADERBOARD = (
    "subscription($m: ID!, $top: Int!) { marathonLeaderboard(marathonId: $m, top: $top) { "
    "accounts rows { rank login profit profitPercentage equity balance openPositionsCount } } }"
)


def test_the_deltas_example_hands_apollo_whole_leaderboards_rebuilt_from_patches(
    request: pytest.FixtureRequest, server: ServerProcess
) -> None:
    """deltas-apollo.ts (Apollo Client on src/deltas.ts) prints the simulated demo marathon's
    top 100 as Apollo Client hands it over, while a client that did not ask for deltas follows
    the same leaderboard: every leaderboard the example rebuilt from patches is one that client
    received whole."""
    argv = command(request, "deltas-apollo")
    received: list[Any] = []
    following, stop = threading.Event(), threading.Event()
    reader = threading.Thread(
        target=asyncio.run, args=(_follow(server, received, following, stop),)
    )
    reader.start()
    try:
        assert following.wait(10), "the plain client did not get the leaderboard"
        done, _ = run(argv, server, token("delta-reader"), TRADESTREAM_EVENTS="8")
    finally:
        stop.set()
        reader.join(10)
    assert done.returncode == 0, done.stderr
    boards = [_untyped(board) for board in done.feed("marathonLeaderboard")]
    assert len(boards) == 8, done.lines
    assert len({json.dumps(b) for b in boards}) > 1, "the demo marathon moves"
    [counted] = done.feed("deltas")
    assert counted["patch"] >= 1, counted
    assert counted["whole"] >= 1, counted
    # The first is the state the example's subscription started from; every later one was a
    # result of the leaderboard's events, which the plain client received too.
    for board in boards[1:]:
        assert board in received, board
    assert "subscribed again" not in done.stderr


def test_the_deltas_module_subscribes_again_when_a_patch_was_missed(js_examples: Path) -> None:
    """No server skips a patch, so tests/e2e/js/deltas_missed.mts scripts a graphql-ws client
    for src/deltas.ts: a gap in the numbers resubscribes and hands on the new first result."""
    script = Path(__file__).parent / "js" / "deltas_missed.mts"
    done = subprocess.run(
        [str(js_examples), str(script)], cwd=JS_DIR, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "ok\n"


async def _follow(
    server: ServerProcess, received: list[Any], following: threading.Event, stop: threading.Event
) -> None:
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("plain", LEADERBOARD, {"m": "demo", "top": 100})
        while not stop.is_set():
            try:
                message = await client.receive(timeout=0.2)
            except TimeoutError:
                continue
            assert "extensions" not in message["payload"], message
            received.append(message["payload"]["data"]["marathonLeaderboard"])
            following.set()


def _untyped(value: Any) -> Any:
    """``value`` without the ``__typename`` Apollo Client adds to every selection."""
    if isinstance(value, dict):
        return {k: _untyped(v) for k, v in value.items() if k != "__typename"}
    if isinstance(value, list):
        return [_untyped(v) for v in value]
    return value


def test_npm_run_check_generates_the_types_and_type_checks_the_examples(
    js_examples: Path,
) -> None:
    npm = shutil.which("npm")
    assert npm is not None
    check = subprocess.run(
        [npm, "run", "check"], cwd=JS_DIR, capture_output=True, text=True, timeout=120
    )
    assert check.returncode == 0, check.stdout + check.stderr
    generated = (JS_DIR / "src" / "generated" / "graphql.ts").read_text()
    assert "export const PositionsDocument" in generated


def broken_schema(schema: str, change: str) -> str:
    if change == "a field the examples select is renamed":
        end_of_price = '\n}\n\n"""A benchmark'
        broken = schema.replace("sequence: Int!" + end_of_price, "seq: Int!" + end_of_price)
    else:  # the cursor changes type: still valid documents, but not what the code expects
        broken = schema.replace("  cursor: String\n", "  cursor: Int\n")
    assert broken != schema, f"the schema no longer has what {change!r} changes"
    return broken


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            "a field the examples select is renamed",
            'Cannot query field "sequence" on type "Price"',
        ),
        (
            "the cursor changes type",
            "Argument of type 'number | null' is not assignable to parameter of type "
            "'string | null'",
        ),
    ],
)
def test_a_schema_change_that_breaks_the_examples_fails_the_check(
    js_examples: Path, tmp_path: Path, change: str, error: str
) -> None:
    # A copy of examples/js (sharing node_modules) whose ../../schema.graphql is the changed one.
    copy = tmp_path / "examples" / "js"
    shutil.copytree(JS_DIR, copy, ignore=shutil.ignore_patterns("node_modules", "generated"))
    (copy / "node_modules").symlink_to(JS_DIR / "node_modules")
    schema = (ROOT / "schema.graphql").read_text()
    (tmp_path / "schema.graphql").write_text(broken_schema(schema, change))
    npm = shutil.which("npm")
    assert npm is not None
    check = subprocess.run(
        [npm, "run", "check"], cwd=copy, capture_output=True, text=True, timeout=120
    )
    assert check.returncode != 0, check.stdout
    assert error in check.stdout + check.stderr, check.stdout + check.stderr


SHOWN = re.compile(r"<!-- file: (?P<path>\S+) -->\n```\w*\n(?P<code>.*?)```\n", re.DOTALL)


def test_the_docs_show_the_files_ci_runs() -> None:
    shown = {m["path"]: m["code"] for m in SHOWN.finditer(DOC.read_text())}
    sources = [
        *(JS_DIR / "src").glob("*.ts"),
        JS_DIR / "src" / "operations.graphql",
        JS_DIR / "codegen.mjs",
        PYTHON_EXAMPLE,
    ]
    expected = {str(p.relative_to(ROOT)) for p in sources}
    assert set(shown) == expected, "docs/clients.md shows each example file once, by its path"
    for path, code in shown.items():
        assert code == (ROOT / path).read_text(), (
            f"docs/clients.md shows an old {path}: python -m tests.e2e.test_examples updates it"
        )


def show_the_files_in_the_docs() -> None:
    """Replace each file's code block in docs/clients.md with the file as it is."""

    def current(match: re.Match[str]) -> str:
        start, end = (i - match.start() for i in match.span("code"))
        shown = match.group(0)
        return shown[:start] + (ROOT / match["path"]).read_text() + shown[end:]

    DOC.write_text(SHOWN.sub(current, DOC.read_text()))


if __name__ == "__main__":
    show_the_files_in_the_docs()
