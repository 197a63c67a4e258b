"""PostgreSQL adapter of the martingale feed: mining rounds, strategies and the rounds each
played. A round's settlement updates every strategy active in it in one transaction, which also
numbers the events announcing it; the events are delivered after the commit.

A settlement is a fixed number of statements whatever the number of strategies: two read the
active strategies' rows (their counters, not their round histories: settling needs no more),
one updates them all from arrays (``UPDATE ... FROM unnest``), one inserts every round played,
one sums the admins' summary, one numbers every event (:func:`number_events`). Each wallet whose
strategies played gets one event on its own topic; the admins get the summary, never every
strategy in one message.

Events:
    rounds               round.opened, round.settled   {round}
    martingale:<wallet>  martingale.progress           {wallet, strategies: [progress]}
    martingale           martingale.summary            {statuses, lastSettledRound}  (admins)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.storage.history import number_event, number_events
from domain.events import Unnumbered
from domain.martingale import (
    PROGRESS_UPDATE,
    STRATEGY_PROGRESS,
    ExitReason,
    PlayedRound,
    ProgressUpdate,
    Strategy,
    StrategyConfig,
    StrategyStatus,
    progress,
)
from domain.martingale_summary import SUMMARY, StatusTotals, Summary
from domain.mining_rounds import ROUND, MiningRound, RoundResult, RoundState, settle_round
from domain.topics import martingale_topic, rounds_topic

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from datetime import datetime

    import asyncpg

    from api.storage.database import Connection
    from domain.events import Event
    from domain.ports import Clock


ROUND_OPENED = "round.opened"
ROUND_SETTLED = "round.settled"
PROGRESS = "martingale.progress"
SUMMARY_EVENT = "martingale.summary"
PROGRESS_SLICE = 100
"""Wallets' progress events made between two looks at the event loop."""


class RoundError(ValueError):
    """A settlement the round refuses; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StrategyNotFoundError(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class OwnedStrategy:
    strategy: Strategy
    owner: str
    first_round: int


def round_payload(r: MiningRound) -> dict[str, Any]:
    return ROUND.encode(RoundState.of(r))


def progress_payload(strategy: Strategy) -> dict[str, Any]:
    return STRATEGY_PROGRESS.encode(progress(strategy))


def progress_event_payload(wallet: str | None, strategies: list[Strategy]) -> dict[str, Any]:
    """A progress event's payload: a wallet's strategies (``wallet`` None: everyone's, which the
    codec still reads and writes but nothing publishes any more)."""
    return PROGRESS_UPDATE.encode(ProgressUpdate(tuple(progress(s) for s in strategies), wallet))


def _round(row: asyncpg.Record) -> MiningRound:
    result = (
        None
        if row["won"] is None
        else RoundResult(row["number"], row["won"], row["reward_multiplier"])
    )
    return MiningRound(row["number"], row["starts_at"], row["ends_at"], result, row["settled_at"])


def _strategy(row: asyncpg.Record, rounds: Iterable[asyncpg.Record] | None = None) -> OwnedStrategy:
    """The strategy a row describes: with ``rounds``, the rounds it played (its whole history);
    without, its counters only."""
    config = StrategyConfig(
        wallet_address=row["wallet_address"],
        base_amount=row["base_amount"],
        multiplier=row["multiplier"],
        total_rounds=row["total_rounds"],
        stop_loss=row["stop_loss"],
        take_profit=row["take_profit"],
        budget=row["budget"],
    )
    strategy = Strategy(
        id=row["id"],
        config=config,
        status=StrategyStatus(row["status"]),
        exit_reason=None if row["exit_reason"] is None else ExitReason(row["exit_reason"]),
        last_round=row["last_round"],
        rounds=()
        if rounds is None
        else tuple(
            PlayedRound(r["round_number"], r["amount"], r["won"], r["reward"]) for r in rounds
        ),
        earlier_rounds=row["rounds_played"] if rounds is None else 0,
        losing_streak=row["losing_streak"],
        wins=row["wins"],
        total_deployed=row["total_deployed"],
        total_rewards=row["total_rewards"],
        total_loss=row["total_loss"],
    )
    return OwnedStrategy(strategy, row["owner"], row["first_round"])


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection meanwhile: a settlement makes a few hundred thousand objects
    (every strategy twice, its progress), all alive until it ends, and the collections their
    allocations set off went through all of them again and again: a quarter of its CPU time at
    100,000 strategies. What other tasks leave meanwhile is collected afterwards."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


async def _progress_of_wallets(
    wallets: set[str], strategies: Iterable[Strategy]
) -> list[Unnumbered]:
    """Each wallet's progress event: its strategies among ``strategies``, the active ones in id
    order, then those that ended. Made :data:`PROGRESS_SLICE` wallets at a time, with the event
    loop let in between: a statement a settlement sent meanwhile is written to PostgreSQL and
    runs there while these are computed."""
    shown: dict[str, list[Strategy]] = {wallet: [] for wallet in wallets}
    for strategy in sorted(strategies, key=lambda s: (s.status is not StrategyStatus.ACTIVE, s.id)):
        listed = shown.get(strategy.config.wallet_address)
        if listed is not None:
            listed.append(strategy)
    events = []
    for n, (wallet, listed) in enumerate(sorted(shown.items()), 1):
        payload = progress_event_payload(wallet, listed)
        events.append(Unnumbered(martingale_topic(wallet), PROGRESS, payload))
        if n % PROGRESS_SLICE == 0:
            await asyncio.sleep(0)
    return events


class PgMartingaleStore:
    def __init__(self, pool: asyncpg.Pool, clock: Clock) -> None:
        self.pool = pool
        self.clock = clock

    # Rounds ----------------------------------------------------------------------------------

    async def latest_round(self) -> MiningRound | None:
        row = await self.pool.fetchrow("SELECT * FROM mining_rounds ORDER BY number DESC LIMIT 1")
        return None if row is None else _round(row)

    async def rounds(self, limit: int, before: int | None = None) -> list[MiningRound]:
        rows = await self.pool.fetch(
            """SELECT * FROM mining_rounds WHERE $2::bigint IS NULL OR number < $2
               ORDER BY number DESC LIMIT $1""",
            limit,
            before,
        )
        return [_round(r) for r in rows]

    async def open_round(self, number: int, starts_at: datetime, ends_at: datetime) -> list[Event]:
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """INSERT INTO mining_rounds (number, starts_at, ends_at) VALUES ($1, $2, $3)
                   ON CONFLICT (number) DO NOTHING""",
                number,
                starts_at,
                ends_at,
            )
            if status != "INSERT 0 1":
                return []  # another process opened it
            opened = MiningRound(number, starts_at, ends_at)
            return [await self._number(conn, rounds_topic(), ROUND_OPENED, round_payload(opened))]

    async def settle(self, result: RoundResult, at: datetime) -> list[Event]:
        """Settle round ``result.round_number`` and every strategy active in it, once."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM mining_rounds WHERE number = $1 FOR UPDATE", result.round_number
            )
            if row is None:
                raise RoundError("UNKNOWN_ROUND", f"there is no round {result.round_number}")
            if row["settled_at"] is not None:
                raise RoundError(
                    "ROUND_ALREADY_SETTLED", f"round {result.round_number} is already settled"
                )
            if row["ends_at"] > at:
                raise RoundError(
                    "ROUND_NOT_ENDED", f"round {result.round_number} ends at {row['ends_at']}"
                )
            with _collector_paused():
                # The rows go as soon as they are read: the strategies are all that is kept.
                playing = [
                    _strategy(r).strategy
                    for r in await conn.fetch(
                        """SELECT * FROM martingale_strategies
                           WHERE status = 'active' AND first_round <= $1 ORDER BY id FOR UPDATE""",
                        result.round_number,
                    )
                ]
                # A wallet's event shows all its active strategies: those that play this round
                # (settled or not), and those that start with a later round.
                waiting = [
                    _strategy(r).strategy
                    for r in await conn.fetch(
                        """SELECT * FROM martingale_strategies
                           WHERE status = 'active' AND first_round > $1""",
                        result.round_number,
                    )
                ]
                changed = settle_round(playing, result)
                after = {after.id: after for _, after in changed}
                shown = [after.get(s.id, s) for s in playing] + waiting
                # The progress events are computed while PostgreSQL stores the settlement.
                saving = asyncio.ensure_future(self._save_settled(conn, changed, at))
                try:
                    wallet_events = await _progress_of_wallets(
                        {s.config.wallet_address for s in after.values()}, shown
                    )
                finally:
                    await saving
            await conn.execute(
                """UPDATE mining_rounds SET settled_at = $2, won = $3, reward_multiplier = $4
                   WHERE number = $1""",
                result.round_number,
                at,
                result.won,
                result.reward_multiplier,
            )
            settled = MiningRound(row["number"], row["starts_at"], row["ends_at"], result, at)
            summary = await self._summary(conn)
            return await number_events(
                conn,
                self.clock,
                [
                    Unnumbered(rounds_topic(), ROUND_SETTLED, round_payload(settled)),
                    *wallet_events,
                    Unnumbered(martingale_topic(), SUMMARY_EVENT, SUMMARY.encode(summary)),
                ],
            )

    # Strategies --------------------------------------------------------------------------------

    async def create(self, strategy: Strategy, owner: str) -> list[Event]:
        config = strategy.config
        now = self.clock.now()
        async with self.pool.acquire() as conn, conn.transaction():
            latest = await conn.fetchval("SELECT max(number) FROM mining_rounds")
            await conn.execute(
                """INSERT INTO martingale_strategies
                       (id, owner, wallet_address, base_amount, multiplier, total_rounds,
                        stop_loss, take_profit, budget, status, first_round, created_at,
                        updated_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', $10, $11, $11)""",
                strategy.id,
                owner,
                config.wallet_address,
                config.base_amount,
                config.multiplier,
                config.total_rounds,
                config.stop_loss,
                config.take_profit,
                config.budget,
                (latest or 0) + 1,
                now,
            )
            return await self._progress_events(conn, config.wallet_address)

    async def change(
        self, strategy_id: str, owner: str | None, change: Callable[[Strategy], Strategy]
    ) -> tuple[Strategy, list[Event]]:
        """Apply ``change`` to the stored strategy (``owner``'s, or anyone's for None)."""
        async with self.pool.acquire() as conn, conn.transaction():
            loaded = await self._load(conn, "id = $1 FOR UPDATE", strategy_id)
            found = loaded[0] if loaded else None
            if found is None or (owner is not None and found.owner != owner):
                raise StrategyNotFoundError(strategy_id)
            after = change(found.strategy)
            await self._save(conn, found.strategy, after, self.clock.now())
            ended = None if after.status is StrategyStatus.ACTIVE else after
            events = await self._progress_events(conn, after.config.wallet_address, ended)
            return after, events

    async def strategy(self, strategy_id: str) -> OwnedStrategy | None:
        async with self.pool.acquire() as conn:
            loaded = await self._load(conn, "id = $1", strategy_id)
            return loaded[0] if loaded else None

    async def strategies(self, wallet: str, *, active_only: bool) -> list[OwnedStrategy]:
        """A wallet's strategies, the oldest first: their counters, not their rounds (what their
        progress shows; ``strategy()`` has the rounds)."""
        rows = await self.pool.fetch(
            """SELECT * FROM martingale_strategies
               WHERE wallet_address = $1 AND (NOT $2 OR status = 'active')
               ORDER BY created_at, id""",
            wallet,
            active_only,
        )
        return [_strategy(r) for r in rows]

    async def page(
        self, wallet: str | None, *, active_only: bool, first: int, after: str | None
    ) -> tuple[list[OwnedStrategy], bool]:
        """Up to ``first`` strategies (of ``wallet``, or of everyone) in id order, after the one
        with id ``after``; and whether more follow. Their counters only, not their rounds."""
        rows = await self.pool.fetch(
            """SELECT * FROM martingale_strategies
               WHERE ($1::text IS NULL OR wallet_address = $1)
                 AND (NOT $2 OR status = 'active')
                 AND ($3::text IS NULL OR id > $3)
               ORDER BY id LIMIT $4""",
            wallet,
            active_only,
            after,
            first + 1,
        )
        return [_strategy(r) for r in rows[:first]], len(rows) > first

    async def summary(self) -> Summary:
        async with self.pool.acquire() as conn:
            return await self._summary(conn)

    # Internals ---------------------------------------------------------------------------------

    async def _load(self, conn: Connection, where: str, *args: object) -> list[OwnedStrategy]:
        rows = await conn.fetch(f"SELECT * FROM martingale_strategies WHERE {where}", *args)
        if not rows:
            return []
        played = await conn.fetch(
            """SELECT * FROM martingale_rounds WHERE strategy_id = ANY($1::text[])
               ORDER BY strategy_id, round_number""",
            [r["id"] for r in rows],
        )
        # Two statements, two snapshots (outside a transaction, or in one at READ COMMITTED): a
        # settlement may commit between them. Its rounds are past the strategy row's last_round:
        # leaving them out keeps the strategy as the first statement saw it, whole.
        by_strategy: dict[str, list[asyncpg.Record]] = {}
        last_round = {row["id"]: row["last_round"] for row in rows}
        for r in played:
            last = last_round[r["strategy_id"]]
            if last is not None and r["round_number"] <= last:
                by_strategy.setdefault(r["strategy_id"], []).append(r)
        return [_strategy(row, by_strategy.get(row["id"], [])) for row in rows]

    async def _save(
        self, conn: Connection, before: Strategy, after: Strategy, at: datetime
    ) -> None:
        config = after.config
        await conn.execute(
            """UPDATE martingale_strategies
               SET status = $2, exit_reason = $3, last_round = $4, losing_streak = $5,
                   wins = $6, total_deployed = $7, total_rewards = $8, total_loss = $9,
                   total_rounds = $10, stop_loss = $11, take_profit = $12, budget = $13,
                   updated_at = $14, rounds_played = $15
               WHERE id = $1""",
            after.id,
            after.status.value,
            None if after.exit_reason is None else after.exit_reason.value,
            after.last_round,
            after.losing_streak,
            after.wins,
            after.total_deployed,
            after.total_rewards,
            after.total_loss,
            config.total_rounds,
            config.stop_loss,
            config.take_profit,
            config.budget,
            at,
            after.rounds_played,
        )
        for played in after.rounds[len(before.rounds) :]:
            await conn.execute(
                """INSERT INTO martingale_rounds (strategy_id, round_number, amount, won, reward)
                   VALUES ($1, $2, $3, $4, $5)""",
                after.id,
                played.round_number,
                played.amount,
                played.won,
                played.reward,
            )

    async def _save_settled(
        self, conn: Connection, changed: list[tuple[Strategy, Strategy]], at: datetime
    ) -> None:
        """:meth:`_save` for the strategies a round settled, in two statements: one updates
        their counters, one inserts the rounds they played."""
        if not changed:
            return
        saved = [after for _, after in changed]
        # Amounts go as text and are cast by PostgreSQL: exact either way, and asyncpg's
        # encoding of Decimals into numeric[] took longer than the UPDATE itself.
        await conn.execute(
            """UPDATE martingale_strategies AS s
               SET status = u.status, exit_reason = u.exit_reason, last_round = u.last_round,
                   losing_streak = u.losing_streak, wins = u.wins,
                   total_deployed = u.total_deployed::numeric,
                   total_rewards = u.total_rewards::numeric,
                   total_loss = u.total_loss::numeric, rounds_played = u.rounds_played,
                   updated_at = $11
               FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::int[],
                           $6::int[], $7::text[], $8::text[], $9::text[], $10::int[])
                    AS u (id, status, exit_reason, last_round, losing_streak, wins,
                          total_deployed, total_rewards, total_loss, rounds_played)
               WHERE s.id = u.id""",
            [s.id for s in saved],
            [s.status.value for s in saved],
            [None if s.exit_reason is None else s.exit_reason.value for s in saved],
            [s.last_round for s in saved],
            [s.losing_streak for s in saved],
            [s.wins for s in saved],
            [str(s.total_deployed) for s in saved],
            [str(s.total_rewards) for s in saved],
            [str(s.total_loss) for s in saved],
            [s.rounds_played for s in saved],
            at,
        )
        played = [
            (after.id, r) for before, after in changed for r in after.rounds[len(before.rounds) :]
        ]
        await conn.execute(
            """INSERT INTO martingale_rounds (strategy_id, round_number, amount, won, reward)
               SELECT id, round_number, amount::numeric, won, reward::numeric
               FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bool[], $5::text[])
                    AS u (id, round_number, amount, won, reward)""",
            [strategy_id for strategy_id, _ in played],
            [r.round_number for _, r in played],
            [str(r.amount) for _, r in played],
            [r.won for _, r in played],
            [str(r.reward) for _, r in played],
        )

    async def _progress_events(
        self, conn: Connection, wallet: str, ended: Strategy | None = None
    ) -> list[Event]:
        """The progress event of ``wallet``: its active strategies, and ``ended`` if one just
        ended."""
        rows = await conn.fetch(
            """SELECT * FROM martingale_strategies
               WHERE wallet_address = $1 AND status = 'active'""",
            wallet,
        )
        shown = [_strategy(r).strategy for r in rows]
        if ended is not None:
            shown.append(ended)
        return await number_events(conn, self.clock, await _progress_of_wallets({wallet}, shown))

    async def _summary(self, conn: Connection) -> Summary:
        rows = await conn.fetch(
            """SELECT settled.number AS last_settled_round, t.*
               FROM (SELECT max(number) AS number FROM mining_rounds
                     WHERE settled_at IS NOT NULL) AS settled
               LEFT JOIN LATERAL (
                   SELECT status, count(*) AS strategies, sum(total_deployed) AS deployed,
                          sum(total_rewards) AS rewards, sum(total_loss) AS loss
                   FROM martingale_strategies GROUP BY status) AS t ON true"""
        )
        totals = {
            StrategyStatus(r["status"]): StatusTotals(
                StrategyStatus(r["status"]), r["strategies"], r["deployed"], r["rewards"], r["loss"]
            )
            for r in rows
            if r["status"] is not None
        }
        return Summary.of(totals, rows[0]["last_settled_round"])

    async def _number(
        self, conn: Connection, topic: str, type: str, payload: dict[str, Any]
    ) -> Event:
        return await number_event(conn, self.clock, topic, type, payload)
