"""Domain workers run inside the server process, started and stopped by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING

from api.feeds.marathons.messages import parse_snapshot
from api.feeds.marathons.store import MarathonExistsError
from api.feeds.orderbook.orders import follow_book_orders
from api.sources.runner import SourceRunner
from domain.book_makers import BookMakers
from domain.marathon_simulator import MarathonSimulator
from domain.marathons import STORED_ROW, SYSTEM
from domain.martingale import StrategyConfig
from domain.mining_rounds import SimulatedOutcomes
from domain.perps_engine import EngineSettings, PerpsEngine
from domain.perps_simulator import DEMO_USER, PerpsSimulator
from domain.price_feed import PriceFeed
from domain.round_clock import RoundClock

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from api.runtime.services import Services
    from domain.marathon_simulator import AccountState
    from domain.marathons import Marathon

logger = logging.getLogger(__name__)


class Workers:
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def names(self) -> list[str]:
        """The workers running now."""
        return sorted(t.get_name() for t in self._tasks if not t.done())

    def start(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_exit)
        self._tasks.append(task)

    async def stop(self) -> None:
        """Cancel every worker and wait for it. One that had already failed was reported when
        it did (:func:`_report_exit`); its error is not raised again here, where it would stop
        the caller (the leader election, the lifespan's shutdown) instead."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()


def _report_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("worker %s stopped", task.get_name(), exc_info=exc)


def start_process_workers(services: Services, workers: Workers) -> None:
    """The workers every process runs: its own leaderboards, and (competing with the other
    processes for messages) the RabbitMQ consumer."""
    workers.start("marathon-boards", services.boards.run())
    if services.settings.gc_collect_interval_s > 0:
        workers.start("gc", collect_garbage(services.settings.gc_collect_interval_s))
    if services.consumer is not None:
        workers.start("rabbitmq-ingest", services.consumer.run())
        logger.info(
            "consuming account snapshots from RabbitMQ queue %r", services.settings.rabbitmq_queue
        )


async def collect_garbage(interval_s: float) -> None:
    """A full collection every ``interval_s``.

    The server collects young objects rarely and the oldest generation almost never (api/cli.py),
    for the sake of reconnect storms; anything an ended connection leaves in a reference cycle
    would then stay for good. The soak (``python -m bench.soak``) measured what that costs: a few
    MB a minute under churn, after every cycle we found was broken. One full collection a minute
    takes that back (RSS flat in the soak), for a pause that grows with the heap: 40-80 ms with
    1000 connections open, measured (logged at debug). At one a minute that delays about 0.1% of
    messages, which leaves p99 alone.
    """
    while True:
        await asyncio.sleep(interval_s)
        started = time.perf_counter()
        found = gc.collect()
        logger.debug(
            "full collection: %d unreachable objects in %.1f ms",
            found,
            (time.perf_counter() - started) * 1000,
        )


async def start_cluster_workers(services: Services, workers: Workers) -> None:
    """The workers that write shared state: run by the cluster's leader only
    (:mod:`api.runtime.leader`)."""
    settings = services.settings
    engine = PerpsEngine(
        services.markets,
        book=services.book,
        prices=services.prices,
        publisher=services.publisher,
        clock=services.clock,
        settings=EngineSettings(
            interval_s=settings.perps_engine_interval_s,
            liquidation_delay_s=settings.liquidation_delay_s,
            price_max_age_s=settings.price_max_age_s,
            funding_interval_s=settings.funding_interval_s,
        ),
    )
    workers.start("perps-engine", engine.run())
    workers.start("leaderboard-snapshots", store_leaderboards(services))
    outcomes = (
        SimulatedOutcomes(
            seed=settings.simulation_seed,
            win_probability=settings.martingale_win_probability,
            reward_multiplier=settings.martingale_reward_multiplier,
        )
        if settings.martingale_outcomes == "simulated"
        else None
    )
    round_clock = RoundClock(
        services.martingale_desk,
        clock=services.clock,
        period_s=settings.martingale_round_period_s,
        outcomes=outcomes,
    )
    workers.start("round-clock", round_clock.run())
    workers.start("history-pruner", services.history.run_pruner(settings.history_prune_interval_s))
    workers.start("paper-exchange", services.exchange.follow_prices(services.hub))
    workers.start("portfolio", services.portfolio.follow_prices(services.hub))
    if services.price_sources:
        runner = SourceRunner(
            services.price_sources,
            publisher=services.publisher,
            prices=services.prices,
            clock=services.clock,
            backoff_max_s=settings.price_source_backoff_max_s,
        )
        workers.start("price-sources", runner.run())
        logger.info(
            "external price sources: %s",
            ", ".join(f"{s.name} ({', '.join(sorted(s.markets))})" for s in services.price_sources),
        )
    if settings.simulated_feeds:
        await start_simulated_feeds(services, workers)


async def store_leaderboards(services: Services) -> None:
    """Store the top of every running marathon's leaderboard every
    LEADERBOARD_SNAPSHOT_INTERVAL_S, for ``leaderboardAt``."""
    settings = services.settings
    boards = services.boards
    await boards.ready.wait()
    while True:
        await services.clock.sleep(settings.leaderboard_snapshot_interval_s)
        now = services.clock.now()
        for marathon in list(boards.marathons.values()):
            board = boards.boards.get(marathon.id)
            if board is None or not marathon.is_running(now):
                continue
            rows = [STORED_ROW.encode(r) for r in board.top(settings.leaderboard_snapshot_rows)]
            try:
                await services.marathon_store.save_leaderboard(marathon.id, now, len(board), rows)
            except Exception:
                logger.exception("could not store the leaderboard of %s", marathon.id)


async def start_simulated_feeds(services: Services, workers: Workers) -> None:
    settings = services.settings
    external = {market for source in services.price_sources for market in source.markets}
    walked = [market for market in services.markets if market.id not in external]
    feed = await PriceFeed.resume(
        walked,
        publisher=services.publisher,
        prices=services.prices,
        clock=services.clock,
        hz=settings.price_feed_hz,
        seed=settings.simulation_seed,
    )
    workers.start("price-feed", feed.run())
    logger.info("simulated price feed: %d markets at %g Hz", len(walked), settings.price_feed_hz)
    traders = PerpsSimulator(
        services.markets,
        desk=services.desk,
        positions=services.book,
        funding=services.book,
        prices=services.prices,
        clock=services.clock,
        seed=settings.simulation_seed,
    )
    workers.start("perps-simulator", traders.run())
    makers = BookMakers(
        services.markets,
        prices=services.prices,
        publisher=services.publisher,
        clock=services.clock,
        interval_s=1 / settings.book_quote_hz,
        seed=settings.simulation_seed,
    )
    workers.start("order-book-makers", makers.run())
    workers.start("order-book-orders", follow_book_orders(services, makers))
    marathon = MarathonSimulator(
        ingest_message=lambda body: _ingest_message(services, body),
        clock=services.clock,
        seed=settings.simulation_seed,
    )
    workers.start("marathon-simulator", marathon.run(lambda m, p: _ensure_demo(services, m, p)))
    workers.start("martingale-demo", _ensure_demo_strategies(services))


async def _ingest_message(services: Services, body: bytes) -> None:
    """What the RabbitMQ consumer does with a message, minus RabbitMQ."""
    await services.marathon_desk.ingest(parse_snapshot(body))


async def _ensure_demo(
    services: Services, marathon: Marathon, participants: dict[int, str]
) -> dict[int, AccountState]:
    boards = services.boards
    await boards.ready.wait()
    if marathon.id not in boards.marathons:
        with contextlib.suppress(MarathonExistsError):  # another process made it first
            await services.marathon_desk.create(marathon)
    members = boards.members.get(marathon.id, {})
    for login, participant in participants.items():
        if login not in members:
            await services.marathon_desk.add_participant(
                marathon.id, login, participant, None, SYSTEM
            )
    return {
        login: (snapshot.balance, snapshot.profit, len(snapshot.open_positions))
        for login, snapshot in boards.snapshots.items()
        if login in participants
    }


DEMO_STRATEGIES = (
    # base SOL, multiplier, rounds
    (Decimal("0.01"), Decimal(2), 100),
    (Decimal("0.05"), Decimal("1.5"), 60),
    (Decimal("0.002"), Decimal(3), 200),
)


async def _ensure_demo_strategies(services: Services) -> None:
    """The demo wallet keeps a few active strategies: one is restarted when one ends."""
    desk = services.martingale_desk
    while True:
        try:
            active = await services.martingale_store.strategies(DEMO_USER, active_only=True)
            for base, multiplier, rounds in DEMO_STRATEGIES[len(active) :]:
                config = StrategyConfig(
                    wallet_address=DEMO_USER,
                    base_amount=base,
                    multiplier=multiplier,
                    total_rounds=rounds,
                    stop_loss=base * 200,
                )
                await desk.start(DEMO_USER, config)
        except Exception:
            logger.exception("could not keep the demo strategies going")
        await services.clock.sleep(services.settings.martingale_round_period_s)
