"""The perpetuals engine driven pass by pass against in-memory fakes and a manual clock.

The main position: alice, long 1 BTC at 50,000 with 5,000 collateral (10x). Maintenance margin is
3%, so its liquidation price is 45,000 / 0.97 = 46,391.75 and it enters the warning band (health
< 1.2) below 45,000 / 0.964 = 46,680.50.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pytest

from domain.events import DeliveryPolicy, Event
from domain.markets import MarketCatalog
from domain.perps import Position, Side
from domain.perps_engine import (
    FUNDING_SETTLED,
    LIQUIDATIONS_UPDATED,
    MARKET_STATS_UPDATED,
    POSITION_LIQUIDATED,
    POSITION_MODIFIED,
    POSITION_WARNING,
    EngineSettings,
    PerpsEngine,
    PositionChanges,
)
from domain.prices import OraclePrice
from domain.topics import policy_of
from tests.domain.factories import make_market
from tests.domain.fakes import (
    START,
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
BTC = make_market("BTC-PERP", "0.1")
ETH = make_market("ETH-PERP", "0.01")


# --- fakes --------------------------------------------------------------------------------------


class FakeBook:
    """Open positions by id; liquidated ones move to ``liquidated``."""

    def __init__(self, clock: ManualClock, sequences: Sequences, positions: list[Position]) -> None:
        self.clock = clock
        self.sequences = sequences
        self.positions = {p.id: p for p in positions}
        self.liquidated: dict[str, Position] = {}
        self.volumes: dict[str, Decimal] = {}
        self.volume_queries: list[datetime] = []
        self.settlements: list[tuple[str, Decimal, Decimal, Decimal, datetime]] = []
        self.before_liquidate: Callable[[Trade], None] | None = None

    async def open_positions(self) -> list[Position]:
        return list(self.positions.values())

    async def position_changes(self, cursor: int | None) -> PositionChanges:
        """Everything, every time: the engine must tell what changed itself."""
        return PositionChanges(list(self.positions.values()), list(self.liquidated), None)

    async def oldest_fill_since(self, since: datetime) -> datetime | None:
        return None  # the volumes set by a test never leave the window

    async def liquidate_all(
        self, liquidations: Sequence[tuple[Trade, Announcement]]
    ) -> list[Event | None]:
        return [await self.liquidate(trade, announce) for trade, announce in liquidations]

    async def liquidate(self, trade: Trade, announce: Announcement) -> Event | None:
        if self.before_liquidate is not None:
            self.before_liquidate(trade)
        stored = self.positions.get(trade.position.id)
        if stored is None or stored.revision != trade.position.revision - 1:
            return None
        del self.positions[stored.id]
        self.liquidated[stored.id] = trade.position
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
        self.settlements.append((market, rate, mark, index, at))
        events = []
        for position in [p for p in self.positions.values() if p.market == market]:
            paid = payment(position)
            after = replace(
                position,
                collateral=position.collateral - paid,
                realized_pnl=position.realized_pnl - paid,
                revision=position.revision + 1,
            )
            self.positions[after.id] = after
            events.append(self._number(announce(after)))
        return events

    async def volumes_since(self, since: datetime) -> dict[str, Decimal]:
        self.volume_queries.append(since)
        return dict(self.volumes)

    async def last_funding(self) -> dict[str, tuple[Decimal, datetime]]:
        return {}

    def bump_revision(self, position_id: str) -> None:
        """Another writer changes the position (a small deposit) between read and liquidation."""
        p = self.positions[position_id]
        self.positions[position_id] = replace(
            p, collateral=p.collateral + 1, revision=p.revision + 1
        )

    def _number(self, announce: Announcement) -> Event:
        topic = announce.topic
        sequence = self.sequences.next(topic)
        return Event(topic, sequence, self.clock.now(), announce.type, announce.payload)


@dataclass
class Rig:
    engine: PerpsEngine
    book: FakeBook
    prices: FakePrices
    publisher: RecordingPublisher
    clock: ManualClock

    def set_price(self, price: str, market: str = "BTC-PERP", age_s: float = 0) -> None:
        published_at = self.clock.now() - timedelta(seconds=age_s)
        self.prices.stored[market] = (OraclePrice(market, D(price), D("1"), published_at), 1)

    async def pass_at(self, price: str, market: str = "BTC-PERP") -> None:
        self.set_price(price, market)
        await self.engine.evaluate()

    def warnings(self, owner: str = "alice") -> list[Event]:
        return self.publisher.on(f"positions:{owner}", POSITION_WARNING)

    def liquidations(self, owner: str = "alice") -> list[Event]:
        return self.publisher.on(f"positions:{owner}", POSITION_LIQUIDATED)

    def candidates(self) -> list[dict[str, Any]]:
        """The newest published liquidation candidates."""
        event = self.publisher.on("liquidations", LIQUIDATIONS_UPDATED)[-1]
        candidates: list[dict[str, Any]] = event.payload["candidates"]
        return candidates

    def stats(self, market: str = "BTC-PERP") -> dict[str, Any]:
        return self.publisher.on(f"market-stats:{market}", MARKET_STATS_UPDATED)[-1].payload


def position(
    id: str = "p1",
    owner: str = "alice",
    side: Side = Side.LONG,
    size: str = "1",
    entry: str = "50000",
    collateral: str = "5000",
    market: str = "BTC-PERP",
) -> Position:
    return Position(id, owner, market, side, D(size), D(entry), D(collateral), revision=1)


def make_rig(
    *positions: Position,
    settings: EngineSettings | None = None,
    markets: tuple[Market, ...] = (BTC,),
) -> Rig:
    clock = ManualClock()
    sequences = Sequences()
    book = FakeBook(clock, sequences, list(positions) or [position()])
    prices = FakePrices()
    publisher = RecordingPublisher(clock, sequences)
    engine = PerpsEngine(
        MarketCatalog(list(markets)),
        book=book,
        prices=prices,
        publisher=publisher,
        clock=clock,
        settings=settings or EngineSettings(liquidation_delay_s=1.0, price_max_age_s=30.0),
    )
    return Rig(engine, book, prices, publisher, clock)


# --- warnings -----------------------------------------------------------------------------------


async def test_no_warning_above_the_band() -> None:
    rig = make_rig()
    await rig.pass_at("48000")  # health 3,000 / 1,440 = 2.08
    assert rig.warnings() == []


async def test_warning_when_health_falls_below_the_band() -> None:
    rig = make_rig()
    await rig.pass_at("48000")
    await rig.pass_at("46600")  # health 1,600 / 1,398 = 1.1445
    (warning,) = rig.warnings()
    assert warning.topic == "positions:alice"
    assert D(warning.payload["healthFactor"]).quantize(D("0.0001")) == D("1.1445")
    assert warning.payload["markPrice"] == "46600"
    assert warning.payload["position"]["id"] == "p1"


async def test_no_second_warning_while_still_in_the_band() -> None:
    rig = make_rig()
    await rig.pass_at("46600")
    await rig.pass_at("46500")  # health 1,500 / 1,395 = 1.075
    assert len(rig.warnings()) == 1


async def test_warning_rearms_after_recovering_above_the_band() -> None:
    rig = make_rig()
    await rig.pass_at("46600")
    await rig.pass_at("49000")
    assert len(rig.warnings()) == 1
    await rig.pass_at("46600")
    assert len(rig.warnings()) == 2


# --- liquidation candidates and liquidation ----------------------------------------------------


async def test_candidate_is_published_with_reward_and_without_owner() -> None:
    rig = make_rig()
    await rig.pass_at("46000")  # health 1,000 / 1,380 = 0.72
    (candidate,) = rig.candidates()
    assert candidate["positionId"] == "p1"
    assert D(candidate["potentialReward"]) == D("690")  # 1.5% of 46,000
    assert D(candidate["notional"]) == D("46000")
    assert D(candidate["healthFactor"]) < 1
    assert "owner" not in candidate
    assert "alice" not in repr(candidate)


async def test_candidate_is_not_liquidated_before_the_delay() -> None:
    rig = make_rig()
    await rig.pass_at("46000")
    rig.clock.advance(0.5)
    await rig.pass_at("46000")
    rig.clock.advance(0.4)
    await rig.pass_at("46000")
    assert rig.liquidations() == []
    assert "p1" in rig.book.positions
    assert [c["positionId"] for c in rig.candidates()] == ["p1"]


async def test_candidate_is_liquidated_on_the_first_pass_after_the_delay() -> None:
    rig = make_rig()
    await rig.pass_at("46000")
    rig.clock.advance(0.5)
    await rig.pass_at("46000")
    rig.clock.advance(0.6)
    await rig.pass_at("46000")

    (liquidated,) = rig.liquidations()
    assert liquidated.topic == "positions:alice"
    assert D(liquidated.payload["reward"]) == D("690")
    assert D(liquidated.payload["returned"]) == D("310")  # equity 1,000 - reward 690
    assert liquidated.payload["fill"]["kind"] == "liquidation"
    assert rig.candidates() == []
    assert "p1" not in rig.book.positions
    assert rig.book.liquidated["p1"].revision == 2
    assert rig.stats()["openInterestLong"] == "0"


async def test_liquidated_position_is_not_liquidated_again() -> None:
    rig = make_rig()
    await rig.pass_at("46000")
    rig.clock.advance(2)
    await rig.pass_at("46000")
    rig.clock.advance(2)
    await rig.pass_at("45000")
    assert len(rig.liquidations()) == 1


async def test_a_warning_of_a_pass_that_failed_is_sent_by_the_next_pass() -> None:
    """A pass's warnings are numbered at its end, with its latest values: when its liquidation
    fails (the database went away), the warning it had found is not lost but sent by the next
    pass, once, even though the price did not move again."""
    rig = make_rig(position(), position("p2", owner="bob", collateral="7000"))
    await rig.pass_at("46000")  # alice's p1 a candidate; bob's p2 healthy (3,000 / 1,380)
    rig.clock.advance(1.5)

    def database_gone(trade: Trade) -> None:
        raise ConnectionError("the database went away")

    rig.book.before_liquidate = database_gone
    with pytest.raises(ConnectionError):
        await rig.pass_at("44500")  # p2: 1,500 / 1,335 = 1.12, in the band; p1 is due
    assert rig.warnings("bob") == []
    rig.book.before_liquidate = None
    await rig.engine.evaluate()  # the same price
    (warning,) = rig.warnings("bob")
    assert warning.payload["position"]["id"] == "p2"
    assert len(rig.liquidations()) == 1
    await rig.engine.evaluate()
    assert len(rig.warnings("bob")) == 1


async def test_liquidation_refused_by_the_book_is_retried_on_a_later_pass() -> None:
    rig = make_rig()
    await rig.pass_at("46000")
    rig.clock.advance(1.5)

    def concurrent_change(trade: Trade) -> None:
        rig.book.bump_revision(trade.position.id)
        rig.book.before_liquidate = None

    rig.book.before_liquidate = concurrent_change
    await rig.pass_at("46000")
    assert rig.liquidations() == []
    assert "p1" in rig.book.positions
    assert [c["positionId"] for c in rig.candidates()] == ["p1"]

    rig.clock.advance(0.5)
    await rig.pass_at("46000")
    (liquidated,) = rig.liquidations()
    assert liquidated.payload["position"]["revision"] == 3  # read at 2 after the change
    assert rig.candidates() == []


async def test_candidate_that_recovered_gets_a_fresh_delay_when_it_falls_again() -> None:
    rig = make_rig()
    await rig.pass_at("46000")  # candidate since t=0
    rig.clock.advance(0.5)
    await rig.pass_at("48000")  # recovered: health 2.08
    rig.clock.advance(5)
    await rig.pass_at("46000")  # a candidate again: should wait another second
    assert rig.liquidations() == []


# --- stale prices -------------------------------------------------------------------------------


async def test_stale_price_triggers_no_warning_and_no_candidate() -> None:
    rig = make_rig()
    rig.set_price("40000", age_s=31)  # max age 30 s; at 40,000 the position is under water
    await rig.engine.evaluate()
    rig.clock.advance(5)
    await rig.engine.evaluate()
    assert rig.warnings() == []
    assert rig.candidates() == []
    assert rig.liquidations() == []
    assert rig.stats()["indexPrice"] is None


async def test_price_exactly_at_max_age_is_still_fresh() -> None:
    rig = make_rig()
    rig.set_price("46600", age_s=30)
    await rig.engine.evaluate()
    assert len(rig.warnings()) == 1


# --- latest-value topics ------------------------------------------------------------------------


async def test_latest_value_topics_are_republished_only_when_they_change() -> None:
    rig = make_rig()
    await rig.pass_at("48000")
    await rig.pass_at("48000")
    assert len(rig.publisher.on("market-stats:BTC-PERP", MARKET_STATS_UPDATED)) == 1
    assert len(rig.publisher.on("liquidations", LIQUIDATIONS_UPDATED)) == 1
    await rig.pass_at("48100")
    assert len(rig.publisher.on("market-stats:BTC-PERP", MARKET_STATS_UPDATED)) == 2
    assert len(rig.publisher.on("liquidations", LIQUIDATIONS_UPDATED)) == 1


async def test_every_latest_value_event_published_is_saved() -> None:
    rig = make_rig()
    for price in ("48000", "48000", "46000", "49000"):
        await rig.pass_at(price)
    published = [
        e for e in rig.publisher.events if policy_of(e.topic) is DeliveryPolicy.LATEST_VALUE
    ]
    assert rig.publisher.kept == published
    newest = rig.publisher.on("market-stats:BTC-PERP")[-1]
    assert rig.publisher.latest["market-stats:BTC-PERP"] == newest
    assert newest.payload["indexPrice"] == "49000"


# --- market stats -------------------------------------------------------------------------------


async def test_market_stats_by_hand() -> None:
    rig = make_rig(
        position("a", "alice", Side.LONG, size="2", collateral="10000"),
        position("b", "bob", Side.SHORT, size="0.5", collateral="2500"),
        position(
            "c", "carol", Side.LONG, size="1", entry="3000", collateral="300", market="ETH-PERP"
        ),
        markets=(BTC, ETH),
    )
    rig.book.volumes = {"BTC-PERP": D("123456.5")}
    await rig.pass_at("50000")

    btc = rig.stats("BTC-PERP")
    assert btc["indexPrice"] == "50000"
    assert D(btc["markPrice"]) == D("50000.075")  # 50,000 * (1 + 1.5 / 1,000,000)
    assert (btc["openInterestLong"], btc["openInterestShort"]) == ("2", "0.5")
    assert btc["volume24h"] == "123456.5"
    assert btc["fundingRate"] is None
    assert btc["nextFundingAt"] == (START + timedelta(hours=1)).isoformat()

    eth = rig.stats("ETH-PERP")
    assert (eth["indexPrice"], eth["markPrice"]) == (None, None)  # no ETH price
    assert (D(eth["openInterestLong"]), D(eth["openInterestShort"])) == (D("1"), D("0"))
    assert D(eth["volume24h"]) == 0
    assert rig.book.volume_queries == [START - timedelta(hours=24)]


# --- funding ------------------------------------------------------------------------------------

FAST_FUNDING = EngineSettings(funding_interval_s=10.0, price_max_age_s=30.0)


async def test_funding_settles_after_the_interval_and_longs_pay() -> None:
    rig = make_rig(
        position("a", "alice", Side.LONG, size="2", collateral="10000"),
        position("b", "bob", Side.SHORT, size="1", collateral="5000"),
        settings=FAST_FUNDING,
    )
    # Skew 1 BTC long: mark 50,000.05, premium 0.000001; rate = premium + clamp(0.0001 - premium).
    await rig.pass_at("50000")
    assert rig.publisher.on("funding:BTC-PERP") == []
    rig.clock.advance(10)
    await rig.pass_at("50000")

    (settled,) = rig.publisher.on("funding:BTC-PERP", FUNDING_SETTLED)
    assert D(settled.payload["rate"]) == D("0.0001")
    assert D(settled.payload["markPrice"]) == D("50000.05")
    assert settled.payload["positionsCharged"] == 2
    assert settled.payload["nextFundingAt"] == (START + timedelta(seconds=20)).isoformat()

    # alice pays 2 * 50,000.05 * 0.0001 = 10.00001; bob receives 5.000005.
    assert rig.book.positions["a"].collateral == D("9989.99999")
    assert rig.book.positions["b"].collateral == D("5005.000005")
    (modified,) = rig.publisher.on("positions:alice", POSITION_MODIFIED)
    assert modified.payload["reason"] == "funding"
    assert D(modified.payload["position"]["collateral"]) == D("9989.99999")
    assert D(rig.stats()["fundingRate"]) == D("0.0001")


async def test_no_funding_without_a_fresh_price_during_the_interval() -> None:
    rig = make_rig(settings=FAST_FUNDING)
    await rig.engine.evaluate()  # no price at all
    rig.clock.advance(11)
    await rig.engine.evaluate()
    assert rig.publisher.on("funding:BTC-PERP") == []
    assert rig.publisher.on("positions:alice", POSITION_MODIFIED) == []
    assert rig.book.settlements == []
    assert rig.book.positions["p1"].collateral == D("5000")
    # Postponed, not skipped: the settlement waits for the first pass with a fresh price.
    assert rig.stats()["nextFundingAt"] == (START + timedelta(seconds=10)).isoformat()
