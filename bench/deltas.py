"""``python -m bench.deltas``: issue 21's benchmark of bytes on the wire per subscriber over
``--seconds`` (default 60): whole results against deltas (docs/protocols.md, "Deltas"), without
and with permessage-deflate ("Compression"), for three feeds on one server run.

One server, with the simulated feeds (``SIMULATED_FEEDS``, prices at ``PRICE_FEED_HZ=20``, the
order book makers at their default ``BOOK_QUOTE_HZ``), ``WS_PER_MESSAGE_DEFLATE=1`` (a socket that
does not offer the extension is served uncompressed all the same) and ``LEADERBOARD_MAX_HZ``
``--leaderboard-hz`` (default 100, the most it takes: every change the marathons make is sent,
the demo marathon at its full speed). The feeds:

- ``marathonLeaderboard(top: 100)`` of the demo marathon (40 accounts, five of them moving every
  second) and of a marathon of ``--accounts`` accounts that this script drives, ``--changes``
  snapshots a second in batches of five (``ingestAccountSnapshots``, as a collector sends them),
  each with two selections: with ``rank`` and without;
- ``positions(user:)`` of one trader holding ``--positions`` positions over BTC-, ETH- and
  SOL-PERP (``bench/trader.py``), re-valued on every tick;
- ``orderBook(market: "BTC-PERP", depth: 50)``, natively a snapshot then level deltas.

Each operation has four subscribers, each a graphql-transport-ws socket of its own, all
subscribed at once and counted over the same seconds (from when every one has its first
result): whole results, deltas (``extensions: {"delta": true}``), whole results compressed,
deltas compressed. The order book has no subscription that re-sends the whole book: its two
subscribers take the native deltas, without and with compression, rebuild the book, and the
whole-book column is computed (``bench/wire.py``, :class:`bench.wire.BookSubscriber`).

Counted per subscriber: the bytes read from its TCP socket (frame headers included, compressed
as they came), the ``next`` messages and their text. Checked: every result a delta subscriber
rebuilt (patches applied with python-json-patch) is one a whole-result subscriber of the same
operation got; the rebuilt book's deltas follow one another (``previous``) and the book equals
the ``orderBook`` query's at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from api.auth import Role, mint
from bench.cli import machine, project_version
from bench.positions import SUBSCRIPTION as POSITIONS
from bench.positions import Tokens, graphql
from bench.processes import BenchError, Server, free_port, own_database
from bench.report import text_table
from bench.trader import open_positions
from bench.wire import BookSubscriber, ResultSubscriber, Subscriber, Window

SECRET = "bench-deltas-secret-0123456789abcdef"
TOP = 100
ROW = "login profit profitPercentage equity balance margin freeMargin openPositionsCount"
LEADERBOARD = (
    "subscription($m: ID!, $top: Int!) { marathonLeaderboard(marathonId: $m, top: $top) { "
    "accounts rows { %s } } }"
)
SELECTIONS = {"with rank": "rank " + ROW, "without rank": ROW}
"""A row's ``rank`` is its index plus one: when a row moves up k places, the k rows it passes
each change rank, one ``replace`` each, where the move alone says as much to a client that
takes the rank from the index."""
CREATE = "mutation($i: CreateMarathonInput!) { createMarathon(input: $i) { id } }"
ADD = "mutation($i: AddParticipantInput!) { addParticipant(input: $i) }"
INGEST = (
    "mutation($s: [AccountSnapshotInput!]!) { ingestAccountSnapshots(snapshots: $s) { stored } }"
)
TRADER = "bench-trader"
BOOK_MARKET = "BTC-PERP"
DEPTH = 50
BOOK = (
    "subscription($m: String!, $d: Int!) { orderBook(market: $m, depth: $d) { "
    "... on OrderBookSnapshot { sequence at bids { price size } asks { price size } } "
    "... on OrderBookDelta { previous sequence at changes { side price size } } } }"
)
BOOK_QUERY = (
    "query($m: String!, $d: Int!) { orderBook(market: $m, depth: $d) { "
    "sequence bids { price size } asks { price size } } }"
)
PRICE_FEED_HZ = 20
DELTAS_TARGET = 5.0
COMPRESSED_TARGET = 8.0
"""Issue 21: whole results over deltas at least 5x, over deltas compressed at least 8x."""
UNMATCHED_MAX = 0.02
"""The share of a delta subscriber's rebuilt results that may be missing from the whole-result
subscribers': a server that falls behind conflates a whole-result socket's waiting result (a
latest-value feed), so a result may reach a delta subscriber and not them."""
CONFIGURATIONS = ("whole", "deltas", "whole, deflate", "deltas, deflate")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.deltas",
        description="Bytes on the wire per subscriber of a leaderboard, a trader's positions and "
        "an order book: whole results against deltas, without and with compression. See "
        "bench/README.md.",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="measured (default 60)")
    parser.add_argument(
        "--accounts", type=int, default=150, help="accounts of the driven marathon (default 150)"
    )
    parser.add_argument(
        "--changes", type=float, default=10.0, help="account snapshots a second (default 10)"
    )
    parser.add_argument(
        "--positions", type=int, default=10, help="the trader's positions (default 10)"
    )
    parser.add_argument(
        "--leaderboard-hz",
        type=float,
        default=100.0,
        help="the server's LEADERBOARD_MAX_HZ (default 100: nothing conflated)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.accounts < 1 or args.changes <= 0 or args.positions < 1:
        parser.error("--seconds, --accounts, --changes and --positions must be positive")
    if not 0 < args.leaderboard_hz <= 100:
        parser.error("--leaderboard-hz must be above 0 and at most 100")
    return args


class Driver:
    """A marathon of ``accounts`` accounts and its collector, sending ``changes`` snapshots a
    second in batches of a few."""

    def __init__(self, http: httpx.AsyncClient, accounts: int, seed: int) -> None:
        self.http = http
        self.rng = random.Random(seed)
        self.logins = [7_000_001 + n for n in range(accounts)]
        self.equity = {login: Decimal(10_000) for login in self.logins}
        self.at = datetime.now(UTC)
        self.organiser = mint(SECRET, sub="bench-organiser", role=Role.USER, ttl=timedelta(hours=1))
        self.collector = mint(
            SECRET, sub="bench-collector", role=Role.SERVICE, ttl=timedelta(hours=1)
        )

    async def call(self, query: str, variables: dict[str, Any], bearer: str) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"authorization": f"Bearer {bearer}"},
        )
        body: dict[str, Any] = response.json()
        if "errors" in body:
            raise BenchError(f"{query.split('(')[0]}: {body['errors']}")
        return body

    async def create(self) -> str:
        now = datetime.now(UTC)
        marathon = {
            "name": "bench-deltas",
            "startsAt": (now - timedelta(days=1)).isoformat(),
            "endsAt": (now + timedelta(days=1)).isoformat(),
            "public": True,
        }
        body = await self.call(CREATE, {"i": marathon}, self.organiser)
        marathon_id: str = body["data"]["createMarathon"]["id"]
        await asyncio.sleep(1.0)  # the new marathon reaches the server's boards
        for n, login in enumerate(self.logins):
            participant = {"marathonId": marathon_id, "login": login, "participant": f"b-{n}"}
            await self.call(ADD, {"i": participant}, self.organiser)
        await self.send(self.logins)
        return marathon_id

    async def send(self, logins: list[int]) -> None:
        self.at += timedelta(seconds=1)
        snapshots = [
            {
                "login": login,
                "balance": "10000",
                "equity": str(self.equity[login]),
                "profit": str(self.equity[login] - 10_000),
                "margin": "100",
                "freeMargin": str(self.equity[login] - 100),
                "serverTime": self.at.isoformat(),
            }
            for login in logins
        ]
        await self.call(INGEST, {"s": snapshots}, self.collector)

    async def run(self, changes_per_s: float) -> None:
        batch = 5
        while True:
            logins = self.rng.sample(self.logins, batch)
            for login in logins:
                self.equity[login] += Decimal(self.rng.randrange(-300, 301))
            await self.send(logins)
            await asyncio.sleep(batch / changes_per_s)


@dataclass
class ResultFeed:
    """One operation and its four subscribers (:data:`CONFIGURATIONS`)."""

    name: str
    query: str
    variables: dict[str, Any]
    subscribers: dict[str, ResultSubscriber]

    @classmethod
    def of(
        cls,
        window: Window,
        name: str,
        query: str,
        variables: dict[str, Any],
        init: dict[str, Any] | None = None,
    ) -> ResultFeed:
        subscribers = {
            configuration: ResultSubscriber(
                window,
                compressed="deflate" in configuration,
                delta=configuration.startswith("deltas"),
                init=init or {},
            )
            for configuration in CONFIGURATIONS
        }
        return cls(name, query, variables, subscribers)

    def stop_deltas(self) -> None:
        for subscriber in self.subscribers.values():
            subscriber.stopped = subscriber.stopped or subscriber.delta

    def row(self) -> dict[str, Any]:
        """The feed's figures; a BenchError when a delta subscriber rebuilt results that no
        whole-result subscriber got (more than UNMATCHED_MAX of them, or none at all)."""
        seen = set().union(*(s.seen for s in self.subscribers.values() if not s.delta))
        plain = self.subscribers["deltas"]
        unmatched = {}
        for configuration, subscriber in self.subscribers.items():
            if not subscriber.delta:
                continue
            rebuilt = subscriber.rebuilt
            missing = sum(1 for result in rebuilt if result not in seen)
            if not rebuilt or missing > UNMATCHED_MAX * len(rebuilt):
                raise BenchError(
                    f"{self.name}, {configuration}: {missing} of the {len(rebuilt)} results "
                    "rebuilt from patches are none a whole-result subscriber got"
                )
            unmatched[configuration] = missing
        return {
            "feed": self.name,
            "computed_whole": False,
            **_figures({c: s for c, s in self.subscribers.items()}),
            "patches": {c: s.patches for c, s in self.subscribers.items() if s.delta},
            "operations": {
                kind: {"count": count, "bytes": plain.operation_bytes[kind]}
                for kind, count in plain.operations.most_common()
            },
            "unmatched": unmatched,
        }


@dataclass
class BookFeed:
    """``orderBook``'s two subscribers of native deltas, and the computed whole book."""

    name: str
    subscribers: dict[str, BookSubscriber] = field(default_factory=dict)

    variables = {"m": BOOK_MARKET, "d": DEPTH}

    @classmethod
    def of(cls, window: Window) -> BookFeed:
        return cls(
            f'orderBook(market: "{BOOK_MARKET}", depth: {DEPTH})',
            {
                "deltas": BookSubscriber(window, compressed=False, depth=DEPTH),
                "deltas, deflate": BookSubscriber(window, compressed=True, depth=DEPTH),
            },
        )

    def check(self, snapshot: dict[str, Any]) -> None:
        """Each rebuilt book, at the query's ``snapshot`` sequence, is the snapshot's."""
        for configuration, subscriber in self.subscribers.items():
            at = snapshot["sequence"]
            if subscriber.sequence is None or subscriber.sequence < at:
                raise BenchError(
                    f"the book subscriber ({configuration}) is at {subscriber.sequence}, behind "
                    f"the query's {at}"
                )
            held = [seq for seq in subscriber.history if seq <= at]
            if not held:
                raise BenchError(f"the book subscriber ({configuration}) kept no book up to {at}")
            book = json.loads(subscriber.history[max(held)])["payload"]["data"]["orderBook"]
            for side in ("bids", "asks"):
                if _levels(book[side]) != _levels(snapshot[side]):
                    raise BenchError(
                        f"the book rebuilt by the subscriber ({configuration}) at {max(held)} "
                        f"differs from the query's at {at} ({side})"
                    )

    def row(self) -> dict[str, Any]:
        plain = self.subscribers["deltas"]
        figures = _figures(dict(self.subscribers))
        changes = plain.snapshots + plain.changes
        figures["messages"]["whole"] = figures["messages"]["whole, deflate"] = changes
        figures["wire"]["whole"] = plain.whole_wire
        figures["wire"]["whole, deflate"] = plain.whole_deflated
        figures["text"]["whole"] = figures["text"]["whole, deflate"] = plain.whole_text
        return {
            "feed": self.name,
            "computed_whole": True,
            **figures,
            "book": {
                c: {
                    "snapshots": s.snapshots,
                    "deltas": s.changes,
                    "larger_than_whole": s.larger,
                    "smaller_of_the_two_wire": s.smaller_wire,
                    "smaller_of_the_two_deflated": s.smaller_deflated,
                    "deltas_computed_wire": s.sent_wire,
                    "deltas_computed_deflated": s.sent_deflated,
                    "sequence": s.sequence,
                }
                for c, s in self.subscribers.items()
            },
        }


def _levels(levels: list[dict[str, Any]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(level["price"]), Decimal(level["size"])) for level in levels]


def _figures(subscribers: dict[str, Any]) -> dict[str, Any]:
    meters = {c: s.meter for c, s in subscribers.items()}
    return {
        "messages": {c: m.messages for c, m in meters.items()},
        "wire": {c: m.wire for c, m in meters.items()},
        "text": {c: m.text for c, m in meters.items()},
    }


def ratios(row: dict[str, Any]) -> dict[str, float | None]:
    wire = row["wire"]

    def over(a: str, b: str) -> float | None:
        return round(wire[a] / wire[b], 2) if wire.get(b) else None

    return {
        "whole/deltas": over("whole", "deltas"),
        "whole/deltas_deflate": over("whole", "deltas, deflate"),
        "whole/whole_deflate": over("whole", "whole, deflate"),
    }


async def _while_running(tasks: list[asyncio.Task[None]], work: Any, limit_s: float) -> None:
    """Await ``work`` while every task in ``tasks`` keeps running; a task that ends (a subscriber
    refused, a socket closed) ends the run with its error."""
    job = asyncio.ensure_future(work)
    done, _ = await asyncio.wait([job, *tasks], timeout=limit_s, return_when="FIRST_COMPLETED")
    if job in done:
        job.result()
        return
    job.cancel()
    for task in done:
        task.result()
        raise BenchError("a subscriber's socket closed during the run")
    raise BenchError(f"not done after {limit_s:g} s")


async def measure(url: str, http_url: str, args: argparse.Namespace) -> dict[str, Any]:
    window = Window()
    tokens = Tokens.signed(SECRET)
    async with httpx.AsyncClient(base_url=http_url, timeout=30) as http:
        driver = Driver(http, args.accounts, args.seed)
        driven = await driver.create()
        stored = await open_positions(http, "/graphql", tokens, TRADER, args.positions)
        if stored != args.positions:
            raise BenchError(f"{stored} of the trader's {args.positions} positions stored")
        trader = mint(SECRET, sub=TRADER, role=Role.USER, ttl=timedelta(hours=1))
        marathons = {
            "demo (40 accounts)": "demo",
            f"driven ({args.accounts} accounts, {args.changes:g} changes/s)": driven,
        }
        feeds = [
            ResultFeed.of(
                window,
                f"leaderboard {name}, {selection}",
                LEADERBOARD % fields,
                {"m": marathon, "top": TOP},
            )
            for name, marathon in marathons.items()
            for selection, fields in SELECTIONS.items()
        ]
        feeds.append(
            ResultFeed.of(
                window,
                f"positions ({args.positions}, {PRICE_FEED_HZ} ticks/s)",
                POSITIONS,
                {"u": TRADER},
                {"authorization": f"Bearer {trader}"},
            )
        )
        book = BookFeed.of(window)
        follows: list[tuple[Subscriber, str, dict[str, Any]]] = [
            (subscriber, feed.query, feed.variables)
            for feed in feeds
            for subscriber in feed.subscribers.values()
        ]
        follows += [(s, BOOK, book.variables) for s in book.subscribers.values()]
        tasks = [asyncio.create_task(s.follow(url, query, v)) for s, query, v in follows]
        tasks.append(asyncio.create_task(driver.run(args.changes)))
        try:
            started = asyncio.gather(*(s.started.wait() for s, _, _ in follows))
            await _while_running(tasks, started, 60)
            load = os.getloadavg()
            window.open = True
            await _while_running(tasks, asyncio.sleep(args.seconds), args.seconds + 10)
            window.open = False
            for feed in feeds:
                feed.stop_deltas()
            data = await graphql(http, "/graphql", tokens.admin, BOOK_QUERY, book.variables)
            # The whole-result subscribers get the results the delta subscribers got last, and
            # the book subscribers reach the query's sequence.
            await _while_running(tasks, asyncio.sleep(1.5), 10)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
    book.check(data["orderBook"])
    rows = [feed.row() for feed in feeds] + [book.row()]
    for row in rows:
        row["ratios"] = ratios(row)
    return {
        "rows": rows,
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def tables(rows: list[dict[str, Any]], seconds: float) -> str:
    def mark(row: dict[str, Any], configuration: str) -> str:
        return "*" if row["computed_whole"] and configuration.startswith("whole") else ""

    header = (
        "feed",
        "msgs",
        *(f"{c} B" for c in CONFIGURATIONS),
        "whole/deltas",
        "whole/(deltas, deflate)",
    )
    body = []
    verdicts = []
    for row in rows:
        r = row["ratios"]
        body.append(
            [
                row["feed"],
                f"{row['messages']['whole']:,}",
                *(f"{row['wire'][c]:,}{mark(row, c)}" for c in CONFIGURATIONS),
                _ratio(r["whole/deltas"], DELTAS_TARGET),
                _ratio(r["whole/deltas_deflate"], COMPRESSED_TARGET),
            ]
        )
        for key, target in (
            ("whole/deltas", DELTAS_TARGET),
            ("whole/deltas_deflate", COMPRESSED_TARGET),
        ):
            met = r[key] is not None and r[key] >= target
            verdicts.append(
                f"{'met   ' if met else 'missed'}  {row['feed']}: {key} {r[key]}x "
                f"(target >= {target:g}x)"
            )
    for row in rows:
        operations = row.get("operations", {})
        total = sum(o["bytes"] for o in operations.values())
        heaviest = sorted(operations.items(), key=lambda item: -item[1]["bytes"])[:4]
        if heaviest:
            verdicts.append(
                f"        {row['feed']}, patches' bytes by operation: "
                + "; ".join(
                    f"{kind} {o['count']:,}x {o['bytes']:,} B ({o['bytes'] / total:.0%})"
                    for kind, o in heaviest
                )
            )
        for configuration, book in row.get("book", {}).items():
            verdicts.append(
                f"        {row['feed']} ({configuration}): {book['larger_than_whole']} of "
                f"{book['deltas']} deltas larger than the whole book at that change, "
                f"{book['snapshots']} snapshots; each the smaller of the two (computed): "
                f"{book['smaller_of_the_two_wire']:,} B, compressed "
                f"{book['smaller_of_the_two_deflated']:,} B"
            )
    per_message_header = (
        "feed",
        *(f"{c} B/msg" for c in CONFIGURATIONS),
        "text B/msg whole",
        "text B/msg deltas",
    )
    per_message = [
        [
            row["feed"],
            *(
                f"{row['wire'][c] / row['messages'][c]:,.0f}{mark(row, c)}"
                if row["messages"][c]
                else "-"
                for c in CONFIGURATIONS
            ),
            *(
                f"{row['text'][c] / row['messages'][c]:,.0f}{mark(row, c)}"
                if row["messages"][c]
                else "-"
                for c in ("whole", "deltas")
            ),
        ]
        for row in rows
    ]
    return "\n".join(
        [
            f"Bytes on the wire per subscriber over {seconds:g} s (frame headers included, "
            "after compression):",
            text_table(header, body),
            "",
            "Bytes per message:",
            text_table(per_message_header, per_message),
            "",
            "* computed: the whole book re-sent at each change the delta subscriber applied, "
            "encoded as the server encodes (and compresses) a shared result; no subscription "
            "sends it.",
            "",
            *verdicts,
        ]
    )


def _ratio(value: float | None, target: float) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x {'met' if value >= target else 'missed'}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-deltas-"))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        database_url, data_dir = stack.enter_context(
            own_database(os.environ.get("DATABASE_URL"), workdir, "deltas")
        )
        port = free_port()
        settings = {
            "SIMULATED_FEEDS": "true",
            "PRICE_FEED_HZ": str(PRICE_FEED_HZ),
            "LEADERBOARD_MAX_HZ": f"{args.leaderboard_hz:g}",
            "WS_PER_MESSAGE_DEFLATE": "1",
        }
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "DATABASE_URL"))},
            **settings,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATA_DIR": str(data_dir or workdir / "data"),
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "warning",
            "MUTATION_BURST": "1000000",
            "MUTATION_RATE_PER_S": "1000000",
        }
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        argv_ = [sys.executable, "-m", "api.cli", "serve"]
        server = Server("tradestream", argv_, env, workdir, workdir / "server.log", port, "/readyz")
        server.start(timeout=60)
        stack.callback(server.stop)
        measured = asyncio.run(measure(server.url, f"http://127.0.0.1:{port}", args))
    print(tables(measured["rows"], args.seconds))
    print(
        f"\nserver settings: {', '.join(f'{k}={v}' for k, v in settings.items())}; "
        f"load average before {measured['load_before']}, after {measured['load_after']}"
    )
    print(
        json.dumps(
            {
                "command": " ".join(["python -m bench.deltas", *(argv or sys.argv[1:])]),
                "seconds": args.seconds,
                "took_s": round(time.monotonic() - started, 1),
                "settings": settings,
                "machine": machine("not used"),
                "load_before": measured["load_before"],
                "load_after": measured["load_after"],
                "project": project_version(),
                "rows": measured["rows"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
