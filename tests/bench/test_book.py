"""The ``book`` scenario end to end at its quick size: a real server whose makers re-quote
BTC-PERP's book, 300 Node subscribers on orderBook(depth: 50), the offered rate read from the
book's own sequence, and the verdict against the issue's targets."""

from __future__ import annotations

from pathlib import Path

from bench.report import target_verdicts
from bench.scenarios import SCENARIOS, TRADESTREAM, Config, measure

PROJECT = Path(__file__).resolve().parents[2]


def test_the_quick_book_run_delivers_the_book_changes_to_every_subscriber(
    quick_config: Config,
) -> None:
    config = quick_config
    result = measure(SCENARIOS["book"], TRADESTREAM, config)
    assert result.error is None, result.error
    assert (result.failed_conns, result.sub_errors) == (0, 0)
    assert result.receiving_conns == 300
    assert result.book_changes_per_s is not None
    assert result.book_changes_per_s > 5  # the makers re-quote as the price moves
    assert result.offered_msgs_per_s is not None
    assert abs(result.offered_msgs_per_s - 300 * result.book_changes_per_s) <= 300 * 0.05
    assert result.msgs_per_s is not None
    assert result.msgs_per_s > 0.5 * result.offered_msgs_per_s
    assert result.p99_ms is not None
    (verdict,) = target_verdicts("book", [result])
    assert "delivered" in verdict
    assert "p99" in verdict
