"""The bytes-on-the-wire benchmark's whole path, briefly: a real server with compression on, its
demo marathon and one the benchmark drives, a trader's positions, the order book; four
subscribers per operation counted on their sockets, the rebuilt results and book checked."""

from __future__ import annotations

import json

import pytest

from bench import deltas


def test_a_short_run_counts_the_wire_bytes_of_each_configuration(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert deltas.main(["--seconds", "5", "--accounts", "30"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out.splitlines()[-1])
    rows = {row["feed"]: row for row in report["rows"]}
    assert len(rows) == 6, list(rows)  # two marathons with and without rank, positions, book
    assert "Bytes on the wire per subscriber over 5 s" in out
    for name, row in rows.items():
        for configuration in deltas.CONFIGURATIONS:
            assert row["messages"][configuration] >= 2, (name, configuration, row)
        # Large results: compressed, fewer bytes reach the socket than without.
        assert row["wire"]["whole, deflate"] < row["wire"]["whole"], row
        assert row["wire"]["deltas, deflate"] < row["wire"]["deltas"], row
        # Uncompressed, the socket carries each message's text and its frame header.
        assert row["wire"]["deltas"] > row["text"]["deltas"], row
    for name, row in rows.items():
        if row["computed_whole"]:
            continue
        assert row["wire"]["whole"] > row["text"]["whole"], row
        for configuration, patches in row["patches"].items():
            assert patches >= 1, (name, configuration, row)
            # The bench fails when more are missing; the rest equal a whole-result subscriber's.
            assert row["unmatched"][configuration] <= 0.02 * row["messages"][configuration]
    book = rows['orderBook(market: "BTC-PERP", depth: 50)']
    assert book["computed_whole"]
    for figures in book["book"].values():
        assert figures["deltas"] >= 2, book
    # The whole book's bytes are computed as the deltas' are; computed, the deltas' bytes are
    # what their sockets measured (within the window's edges).
    plain, compressed = book["book"]["deltas"], book["book"]["deltas, deflate"]
    assert plain["deltas_computed_wire"] == pytest.approx(book["wire"]["deltas"], rel=0.05)
    assert compressed["deltas_computed_deflated"] == pytest.approx(
        book["wire"]["deltas, deflate"], rel=0.05
    )
    without_rank = [row for name, row in rows.items() if name.endswith("without rank")]
    assert len(without_rank) == 2
    for row in without_rank:
        assert row["wire"]["deltas"] < row["wire"]["whole"], row


def test_the_arguments_are_checked() -> None:
    assert deltas.parse_args([]).seconds == 60.0
    for bad in (
        ["--seconds", "0"],
        ["--accounts", "0"],
        ["--changes", "-1"],
        ["--positions", "0"],
        ["--leaderboard-hz", "101"],
    ):
        with pytest.raises(SystemExit):
            deltas.parse_args(bad)
