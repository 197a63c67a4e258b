"""The engine benchmark's whole path at a tiny size: positions stored in bulk on a real
PostgreSQL, the indexed engine and the full-scan reference on copies of it, every tick compared."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench import engine

if TYPE_CHECKING:
    import pytest


async def test_a_tiny_run_warns_liquidates_and_matches_the_reference(database_url: str) -> None:
    lines: list[str] = []
    # Volatile enough that a few hundred positions warn and get liquidated within 2 s.
    outcome = await engine.run(
        database_url,
        positions_count=300,
        seconds=2,
        rate=20,
        reference_ticks=120,
        seed=3,
        say=lines.append,
        step_sd=0.01,
    )
    assert outcome.mismatches == []
    assert outcome.ticks == 120
    assert len(outcome.reference_ms) == 120
    assert outcome.warnings > 0
    assert outcome.liquidations > 0
    assert outcome.compared_events > outcome.ticks
    engine.report(outcome, 0.0, lines.append)
    assert any("identical" in line for line in lines)


def test_the_command_line_runs_it_with_its_options(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    argv = ["--positions", "200", "--seconds", "1", "--reference-ticks", "60"]
    assert engine.main([*argv, "--volatility", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "positions: 200; ticks: 60 (3 markets); volatility 0.01 a tick" in out
    assert "identical" in out
