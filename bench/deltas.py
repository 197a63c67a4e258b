"""``python -m bench.deltas``: bytes on the wire per subscriber of
``marathonLeaderboard(top: 100)``, whole results against deltas (docs/protocols.md, "Deltas").

One server (SIMULATED_FEEDS on: its demo marathon of 40 accounts moves every second) and a
marathon of ``--accounts`` accounts whose snapshots this script sends, ``--changes`` a second in
batches of a few accounts (``ingestAccountSnapshots``, as a collector sends them), moving their
equity by a little. For each marathon, two graphql-transport-ws subscribers of the same top 100
(one shared execution): one that did not ask for deltas, one that did. For ``--seconds`` every
frame each receives is counted (its bytes as sent, UTF-8). The delta subscriber applies each patch
(python-json-patch), and its last result must equal the other's. Quick and bounded: 20 s by
default; the issue's figure is over 60 s (``--seconds 60``).
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
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import orjson
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from api.auth import Role, mint
from bench.processes import BenchError, Server, free_port, own_database

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.deltas",
        description="Bytes per subscriber of marathonLeaderboard(top: 100), whole results "
        "against deltas. See bench/README.md.",
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="measured (default 20)")
    parser.add_argument(
        "--accounts", type=int, default=150, help="accounts of the driven marathon (default 150)"
    )
    parser.add_argument(
        "--changes", type=float, default=10.0, help="account snapshots a second (default 10)"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.accounts < 1 or args.changes <= 0:
        parser.error("--seconds, --accounts and --changes must be positive")
    return args


class Subscriber:
    """One subscription's frames: how many, their bytes, and the last result (rebuilt from
    patches for a delta subscriber)."""

    def __init__(self, delta: bool) -> None:
        self.delta = delta
        self.frames = 0
        self.bytes = 0
        self.patches = 0
        self.last: dict[str, Any] | None = None
        self.counting = False

    async def follow(self, url: str, marathon: str, query: str, started: asyncio.Event) -> None:
        async with connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")], compression=None
        ) as ws:
            await ws.send(orjson.dumps({"type": "connection_init", "payload": {}}).decode())
            await ws.recv()
            payload: dict[str, Any] = {"query": query, "variables": {"m": marathon, "top": TOP}}
            if self.delta:
                payload["extensions"] = {"delta": True}
            message = {"id": "1", "type": "subscribe", "payload": payload}
            await ws.send(orjson.dumps(message).decode())
            async for raw in ws:
                frame = raw.encode() if isinstance(raw, str) else raw
                self._take(orjson.loads(frame)["payload"])
                started.set()
                if self.counting:
                    self.frames += 1
                    self.bytes += len(frame)

    def _take(self, payload: dict[str, Any]) -> None:
        delta = payload.pop("extensions", {}).get("delta", {})
        if "patch" in delta:
            self.last = jsonpatch.apply_patch(self.last, delta["patch"])
            if self.counting:
                self.patches += 1
        else:
            self.last = payload


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


async def measure(url: str, http_url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    async with httpx.AsyncClient(base_url=http_url, timeout=30) as http:
        driver = Driver(http, args.accounts, args.seed)
        driven = await driver.create()
        marathons = {
            "demo (40 accounts, a tick a second)": "demo",
            f"driven ({args.accounts} accounts, {args.changes:g} changes/s)": driven,
        }
        feeds = {
            f"{name}, {selection}": (marathon, LEADERBOARD % fields)
            for name, marathon in marathons.items()
            for selection, fields in SELECTIONS.items()
        }
        pairs = {name: (Subscriber(False), Subscriber(True)) for name in feeds}
        started = [asyncio.Event() for _ in range(2 * len(feeds))]
        tasks = [
            asyncio.create_task(sub.follow(url, *feeds[name], started[2 * i + k]))
            for i, (name, pair) in enumerate(pairs.items())
            for k, sub in enumerate(pair)
        ]
        changing = asyncio.create_task(driver.run(args.changes))
        try:
            async with asyncio.timeout(30):
                await asyncio.gather(*(event.wait() for event in started))
            for pair in pairs.values():
                for sub in pair:
                    sub.counting = True
            await asyncio.sleep(args.seconds)
            for pair in pairs.values():
                for sub in pair:
                    sub.counting = False
            changing.cancel()
            await asyncio.sleep(1.0)  # the last results of the run arrive
        finally:
            for task in [*tasks, changing]:
                task.cancel()
            for task in [*tasks, changing]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for name, (whole, delta) in pairs.items():
            if delta.last != whole.last:
                raise BenchError(f"{name}: the delta subscriber's last result differs")
            rows.append(
                {
                    "leaderboard": name,
                    "results": whole.frames,
                    "whole_bytes": whole.bytes,
                    "delta_bytes": delta.bytes,
                    "patches": delta.patches,
                    "ratio": round(whole.bytes / delta.bytes, 2) if delta.bytes else None,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-deltas-"))
    with contextlib.ExitStack() as stack:
        database_url, data_dir = stack.enter_context(
            own_database(os.environ.get("DATABASE_URL"), workdir, "deltas")
        )
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("JWT_", "DATABASE_URL"))},
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "DATA_DIR": str(data_dir or workdir / "data"),
            "JWT_SECRET": SECRET,
            "LOG_LEVEL": "warning",
            "SIMULATED_FEEDS": "true",
            "MUTATION_BURST": "1000000",
            "MUTATION_RATE_PER_S": "1000000",
        }
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        argv_ = [sys.executable, "-m", "api.cli", "serve"]
        server = Server("tradestream", argv_, env, workdir, workdir / "server.log", port, "/readyz")
        server.start(timeout=60)
        stack.callback(server.stop)
        started = time.monotonic()
        rows = asyncio.run(measure(server.url, f"http://127.0.0.1:{port}", args))
    print(f"marathonLeaderboard(top: {TOP}), {args.seconds:g} s, one subscriber each way:")
    for row in rows:
        print(
            f"  {row['leaderboard']}: {row['results']} results, whole {row['whole_bytes']:,} B, "
            f"deltas {row['delta_bytes']:,} B ({row['patches']} patches): "
            f"{row['ratio']}x fewer bytes"
        )
    print(
        json.dumps(
            {"seconds": args.seconds, "took_s": round(time.monotonic() - started, 1), "rows": rows}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
