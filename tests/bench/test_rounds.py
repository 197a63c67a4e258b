"""The rounds benchmark's whole path at a tiny size: bulk-created strategies, a real server, real
subscribers, one settled round, and the checks that every owner's event was published."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from bench import rounds

if TYPE_CHECKING:
    from pathlib import Path


async def test_a_tiny_round_is_settled_stored_and_delivered_to_every_owner(
    isolated_database_url: str, tmp_path: Path
) -> None:
    size = rounds.Size(strategies=120, wallets=30, subscribers=7)
    result = await rounds.measure(isolated_database_url, size, tmp_path)
    assert result.updates == 7
    assert result.stored == result.rounds_stored == 120
    assert result.wallet_topics == 30
    assert result.published == 31  # every wallet's event and the admins' summary
    assert result.settle_s > 0
    assert rounds.report(result)


def test_the_sizes_are_checked_and_quick_is_smaller() -> None:
    assert rounds.parse_args([]).size == rounds.FULL
    assert rounds.parse_args([]).broadcast == "memory://"
    assert rounds.parse_args(["--quick"]).size == rounds.QUICK
    chosen = rounds.parse_args(["--strategies", "50", "--wallets", "10", "--subscribers", "2"])
    assert chosen.size == rounds.Size(50, 10, 2)
    for bad in (["--subscribers", "0"], ["--quick", "--wallets", "20000"], ["--wallets", "-1"]):
        with pytest.raises(SystemExit):
            rounds.parse_args(bad)


def test_strategies_spread_over_the_wallets_as_the_bulk_insert_spreads_them() -> None:
    size = rounds.Size(strategies=10, wallets=4, subscribers=1)
    assert [rounds.strategies_of(size, k) for k in range(4)] == [3, 3, 2, 2]
