"""The ingest benchmark's whole path at a tiny size: its own embedded PostgreSQL, a real server
consuming a real RabbitMQ, the publisher process, the leaderboard subscriber, the restart of the
database halfway and the lost/duplicated checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson
import pytest

from api.feeds.marathons.messages import parse_snapshot
from bench import ingest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.e2e


def test_a_snapshots_equity_grows_with_its_server_time() -> None:
    early = parse_snapshot(ingest.snapshot_body(7, datetime(2026, 5, 1, 0, 0, 0, 1, tzinfo=UTC)))
    late = parse_snapshot(ingest.snapshot_body(7, datetime(2026, 5, 1, 0, 0, 0, 2, tzinfo=UTC)))
    assert early.equity < late.equity
    assert early.server_time < late.server_time
    assert orjson.loads(ingest.snapshot_body(7, early.server_time))["login"] == 7


async def test_the_benchmark_runs_and_loses_nothing(
    rabbitmq_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RABBITMQ_URL", rabbitmq_url)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    size = ["--accounts", "40", "--seconds", "2", "--in-flight", "4", "--publishers", "2"]
    args = ingest.parse_args([*size, "--workdir", str(tmp_path)])
    phases = await ingest.run(args)
    assert [p.name for p in phases] == ["steady", "restart", "backlog"]
    for phase in phases:
        assert phase.published > 0
        assert phase.acked == phase.published
        assert (phase.lost, phase.duplicated) == (0, 0)
        assert phase.rate > 0
        assert bool(phase.latencies_ms) == (phase.name != "backlog")
    assert phases[1].restart_s is not None
    text = ingest.report(phases, args)
    assert "stored+acked+reflected/s" in text
    assert ">= 20,000" in text


def test_the_options_are_checked() -> None:
    with pytest.raises(SystemExit):
        ingest.parse_args(["--accounts", "10", "--in-flight", "6", "--publishers", "2"])
    args = ingest.parse_args(["--quick", "--phase", "backlog", "--phase", "steady"])
    assert (args.accounts, args.seconds, args.phase) == (1_000, 5.0, ["steady", "backlog"])
