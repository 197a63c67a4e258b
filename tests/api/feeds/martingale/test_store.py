"""PgMartingaleStore against a real PostgreSQL."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import TYPE_CHECKING

import asyncpg
import pytest

from api.feeds.martingale.store import PgMartingaleStore
from api.runtime.clock import SystemClock
from api.storage.migrate import migrate
from domain.martingale import Strategy, StrategyConfig

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def pool(isolated_database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(isolated_database_url, min_size=1, max_size=2)
    await migrate(pool)
    yield pool
    await pool.close()


async def test_a_settlement_between_the_two_reads_does_not_tear_a_strategy(
    pool: asyncpg.Pool,
) -> None:
    """A strategy is read in two statements (its row, then its rounds): a round a settlement
    committed in between is past the row's last_round, and the strategy is read without it
    (it failed with "the last round must be the last round played", and the demo wallet's worker
    logged that error at every turn with fast rounds)."""
    store = PgMartingaleStore(pool, SystemClock())
    wallet = f"wallet-{uuid.uuid4().hex[:8]}"
    config = StrategyConfig(
        wallet_address=wallet, base_amount=Decimal("0.01"), multiplier=Decimal(2), total_rounds=10
    )
    strategy = Strategy(id=f"mg_{uuid.uuid4().hex[:16]}", config=config)
    await store.create(strategy, wallet)
    # What the second statement sees when a settlement of round 7 committed after the first.
    await pool.execute(
        """INSERT INTO martingale_rounds (strategy_id, round_number, amount, won, reward)
           VALUES ($1, 7, 0.01, true, 0.02)""",
        strategy.id,
    )
    [loaded] = await store.strategies(wallet, active_only=True)
    assert loaded.strategy.rounds == ()
    assert loaded.strategy.last_round is None
    found = await store.strategy(strategy.id)
    assert found is not None
    assert found.strategy == loaded.strategy
