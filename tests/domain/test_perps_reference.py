"""The indexed engine against the reference that values every position on every pass.

Two worlds run the same random history side by side: opens, collateral and size changes, closes,
liquidations by another process, funding settlements, price ticks (random walks, jumps, prices set
exactly on a position's threshold, stale prices) and time passing. One world's engine is the
indexed :class:`PerpsEngine`, the other's the :class:`FullScanEngine`. After every pass the events
each published (warnings, liquidations, candidates, market stats, funding: topic, sequence, type
and payload) and what each book holds must be identical.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from domain.events import Event
from domain.markets import MarketCatalog
from domain.perps import Position, Side
from domain.perps_engine import (
    POSITION_LIQUIDATED,
    POSITION_WARNING,
    EngineSettings,
    PerpsEngine,
    PositionChanges,
)
from domain.perps_reference import FullScanEngine
from domain.perps_trades import up
from domain.prices import OraclePrice
from tests.domain.factories import make_market
from tests.domain.fakes import (
    FakePrices,
    ManualClock,
    RecordingPublisher,
    Sequences,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from domain.markets import Market
    from domain.perps_engine import Announcement
    from domain.perps_trades import Trade

D = Decimal
MARKETS = (
    make_market("BTC-PERP"),
    replace(make_market("ETH-PERP"), maintenance_margin_rate=D("0.05"), skew_scale=D(1000)),
    # h * mmr within 1e-6 of 1 for the warning level: every position here is volatile.
    replace(make_market("ODD-PERP"), maintenance_margin_rate=D(1) / D("1.2")),
)
START_PRICE = D(100)
SETTINGS = EngineSettings(liquidation_delay_s=1.0, price_max_age_s=5.0, funding_interval_s=7.0)


class Book:
    """Positions with a change log: ``position_changes`` returns what changed after the cursor,
    as the PostgreSQL book does (without its repeats)."""

    def __init__(self, clock: ManualClock, sequences: Sequences) -> None:
        self.clock = clock
        self.sequences = sequences
        self.positions: dict[str, Position] = {}
        self.ended: dict[str, Position] = {}
        self.changed_at: dict[str, int] = {}
        self.version = 0
        self.volumes: dict[str, Decimal] = {}
        self.fills: list[tuple[str, Decimal, datetime]] = []

    def write(
        self,
        position: Position,
        *,
        ended: bool = False,
        fill: Decimal | None = None,
        traded: bool = True,
    ) -> None:
        """Store ``position``, and if ``traded`` a fill of ``fill`` notional (by default one of
        its size at 100)."""
        self.version += 1
        self.changed_at[position.id] = self.version
        if ended:
            self.positions.pop(position.id, None)
            self.ended[position.id] = position
        else:
            self.positions[position.id] = position
        if traded:
            notional = position.size * D(100) if fill is None else fill
            self.fills.append((position.market, notional, self.clock.now()))

    async def open_positions(self) -> list[Position]:
        return [self.positions[i] for i in sorted(self.positions)]

    async def position_changes(self, cursor: int | None) -> PositionChanges:
        if cursor is None:
            return PositionChanges(await self.open_positions(), [], self.version)
        changed = sorted(i for i, v in self.changed_at.items() if v > cursor)
        return PositionChanges(
            [self.positions[i] for i in changed if i in self.positions],
            [i for i in changed if i in self.ended],
            self.version,
        )

    async def liquidate_all(
        self, liquidations: Sequence[tuple[Trade, Announcement]]
    ) -> list[Event | None]:
        return [await self.liquidate(trade, announce) for trade, announce in liquidations]

    async def liquidate(self, trade: Trade, announce: Announcement) -> Event | None:
        stored = self.positions.get(trade.position.id)
        if stored is None or stored.revision != trade.position.revision - 1:
            return None
        self.write(trade.position, ended=True, fill=trade.fill.notional)
        return self._number(announce)

    async def settle_funding(
        self,
        market: str,
        rate: Decimal,
        mark: Decimal,
        index: Decimal,
        at: datetime,
        payment: Callable[[Position], Decimal],
        announce: Callable[[Position], Announcement],
    ) -> list[Event]:
        events = []
        for position in [self.positions[i] for i in sorted(self.positions)]:
            if position.market != market:
                continue
            paid = min(payment(position), position.collateral)
            if paid == 0:
                continue
            after = replace(
                position,
                collateral=position.collateral - paid,
                realized_pnl=position.realized_pnl - paid,
                revision=position.revision + 1,
            )
            self.write(after, traded=False)
            events.append(self._number(announce(after)))
        return events

    async def volumes_since(self, since: datetime) -> dict[str, Decimal]:
        volumes: dict[str, Decimal] = {}
        for market, notional, at in self.fills:
            if at >= since:
                volumes[market] = volumes.get(market, D(0)) + notional
        return volumes

    async def oldest_fill_since(self, since: datetime) -> datetime | None:
        return min((at for _, _, at in self.fills if at >= since), default=None)

    async def last_funding(self) -> dict[str, tuple[Decimal, datetime]]:
        return {}

    def _number(self, announce: Announcement) -> Event:
        sequence = self.sequences.next(announce.topic)
        return Event(announce.topic, sequence, self.clock.now(), announce.type, announce.payload)


@dataclass
class World:
    engine: PerpsEngine
    book: Book
    prices: FakePrices
    publisher: RecordingPublisher
    clock: ManualClock


def world(engine_class: type[PerpsEngine]) -> World:
    clock = ManualClock()
    sequences = Sequences()
    book = Book(clock, sequences)
    prices = FakePrices()
    publisher = RecordingPublisher(clock, sequences)
    engine = engine_class(
        MarketCatalog(list(MARKETS)),
        book=book,
        prices=prices,
        publisher=publisher,
        clock=clock,
        settings=SETTINGS,
    )
    return World(engine, book, prices, publisher, clock)


class History:
    """Random operations, each applied to both worlds alike."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.prices = {m.id: START_PRICE for m in MARKETS}
        self.next_id = 0

    def step(self, worlds: tuple[World, World]) -> None:
        rng = self.rng
        op = rng.choices(
            ["open", "modify", "close", "ended", "tick", "threshold", "stale", "wait"],
            weights=[6, 3, 1, 1, 8, 2, 1, 2],
        )[0]
        book = worlds[0].book
        market = rng.choice(MARKETS)
        if op == "open" or (not book.positions and op != "tick"):
            position = self.new_position(market)
            for w in worlds:
                w.book.write(position)
        elif op in ("modify", "close", "ended"):
            held = book.positions[rng.choice(sorted(book.positions))]
            if op == "modify":
                changed = self.modified(held)
                for w in worlds:
                    w.book.write(changed)
            else:
                ended = replace(held, revision=held.revision + 1)
                for w in worlds:
                    w.book.write(ended, ended=True)
        elif op == "tick":
            move = D(str(round(rng.gauss(0, 0.01 if rng.random() < 0.9 else 0.06), 4)))
            price = (self.prices[market.id] * (1 + move)).quantize(D("0.0001"))
            price = min(max(price, D(60)), D(160))  # a walk that stays near the entries
            self.set_price(worlds, market.id, price)
        elif op == "threshold":
            held = book.positions[rng.choice(sorted(book.positions))]
            mmr = next(m for m in MARKETS if m.id == held.market).maintenance_margin_rate
            level = rng.choice((D("1.2"), D(1)))
            per_unit = held.collateral / held.size
            if held.side is Side.LONG:
                numerator, denominator = held.entry_price - per_unit, 1 - level * mmr
            else:
                numerator, denominator = held.entry_price + per_unit, 1 + level * mmr
            price = numerator / denominator if denominator and numerator else D(0)
            if D(1) < price < D(1000):
                self.set_price(worlds, held.market, price.quantize(D("0.000001")))
        elif op == "stale":
            for w in worlds:
                stored = w.prices.stored.get(market.id)
                if stored is not None:
                    old = replace(stored[0], published_at=w.clock.now() - timedelta(seconds=6))
                    w.prices.stored[market.id] = (old, stored[1])
        else:
            seconds = rng.choice((0.3, 0.7, 1.1, 3.0))
            for w in worlds:
                w.clock.advance(seconds)

    def set_price(self, worlds: tuple[World, World], market: str, price: Decimal) -> None:
        self.prices[market] = price
        for w in worlds:
            w.prices.stored[market] = (OraclePrice(market, price, D(1), w.clock.now()), 1)

    def new_position(self, market: Market) -> Position:
        rng = self.rng
        self.next_id += 1
        side = rng.choice((Side.LONG, Side.SHORT))
        size = D(rng.randint(1, 5000)) * market.step_size
        entry = (self.prices[market.id] * D(str(rng.uniform(0.9, 1.1)))).quantize(D("0.01"))
        leverage = D(rng.choice((1, 1, 2, 5, 10, 15, 20)))
        return Position(
            id=f"p{self.next_id:05d}",
            owner=f"u{rng.randint(1, 6)}",
            market=market.id,
            side=side,
            size=size,
            entry_price=entry,
            collateral=up(size * entry / leverage),
            revision=1,
        )

    def modified(self, held: Position) -> Position:
        rng = self.rng
        if rng.random() < 0.5:
            delta = up(held.collateral * D(str(rng.uniform(-0.5, 0.5))))
            collateral = max(held.collateral + delta, D(0))
            return replace(held, collateral=collateral, revision=held.revision + 1)
        size = held.size + D(rng.randint(-int(held.size * 1000) + 1, 2000)) / 1000
        return replace(held, size=size, revision=held.revision + 1)


def published(w: World) -> list[tuple[str, int, str, dict[str, Any]]]:
    return [(e.topic, e.sequence, e.type, e.payload) for e in w.publisher.events]


async def run_history(seed: int, steps: int) -> tuple[World, World]:
    indexed, reference = world(PerpsEngine), world(FullScanEngine)
    history = History(seed)
    for _ in range(steps):
        history.step((indexed, reference))
        await indexed.engine.evaluate()
        await reference.engine.evaluate()
        assert published(indexed) == published(reference)
        assert indexed.book.positions == reference.book.positions
    return indexed, reference


@settings(max_examples=25, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
@example(4738)  # a price that came back as 160.0000 after 160: its candidates valued again
async def test_the_indexed_engine_publishes_what_valuing_every_position_does(seed: int) -> None:
    await run_history(seed, 150)


async def test_a_long_history_warns_and_liquidates_as_the_reference_does() -> None:
    indexed, _ = await run_history(19, 1500)
    types = {e.type for e in indexed.publisher.events}
    # The history is long enough to exercise what is compared.
    assert {POSITION_WARNING, POSITION_LIQUIDATED, "funding.settled"} <= types
    assert indexed.engine.positions.positions()
