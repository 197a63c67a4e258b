"""The deltas benchmark's whole path, briefly: a real server, its demo marathon and one the
benchmark drives, a subscriber each way per selection, the last results compared."""

from __future__ import annotations

import json

import pytest

from bench import deltas


def test_a_short_run_counts_fewer_bytes_with_deltas(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert deltas.main(["--seconds", "3", "--accounts", "30"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert len(report["rows"]) == 4  # two marathons, with and without rank
    for row in report["rows"]:
        assert row["results"] >= 2, row
        assert row["patches"] >= 1, row
        assert row["delta_bytes"] < row["whole_bytes"], row


def test_the_arguments_are_checked() -> None:
    assert deltas.parse_args([]).seconds == 20.0
    for bad in (["--seconds", "0"], ["--accounts", "0"], ["--changes", "-1"]):
        with pytest.raises(SystemExit):
            deltas.parse_args(bad)
