"""What a price tick costs a positions stream, without changing what it shows.

The stream re-values a position from what its revision worked out once (``PositionValuer``); a
property test holds every field of what it shows, digit for digit, to the definitions as
``Position.build`` applied them before (``domain.perps.mark_to_market`` as it was written, the
liquidation price on the tick, six-place ratios). The streams read prices decoded once for all
of them, and follow only the markets their user holds: checked against a real hub.
"""

from __future__ import annotations

import asyncio
from dataclasses import fields
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.feeds.perps.stream import positions_stream
from api.feeds.perps.types import Position, PositionValuer
from api.graphql.streams import OncePerEvent
from api.storage.history import Cursor, Start
from api.streaming.broadcast import Broadcast
from api.streaming.envelope import encode_event
from api.streaming.hub import Hub
from domain import perps
from domain.events import Event
from domain.markets import Market, MarketCatalog
from domain.perps_engine import (
    POSITION_CLOSED,
    POSITION_OPENED,
    PositionChange,
    TradeFill,
    position_announcement,
)
from domain.perps_margin import new_account
from domain.perps_trades import FillKind
from domain.prices import PRICE_UPDATE, OraclePrice
from domain.topics import positions_topic, price_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

D = Decimal


def market(id: str = "BTC-PERP", tick: str = "0.1", mmr: str = "0.03") -> Market:
    return Market(id, id[:3], "USD", D(tick), D("0.001"), D("0.001"), D(20), D(mmr), D("0.015"))


# --- every field, digit for digit ------------------------------------------------------------


def shown_before(position: perps.Position, market: Market, mark: Decimal | None) -> dict[str, Any]:
    """What ``Position.build`` showed before a tick was shared: every field, from the
    definitions as ``mark_to_market`` applied them (same operations, same order)."""
    mmr = market.maintenance_margin_rate
    places = D("0.000001")
    shown: dict[str, Any] = {
        "id": position.id,
        "owner": position.owner,
        "market": position.market,
        "side": position.side.value,
        "size": position.size,
        "entry_price": position.entry_price,
        "collateral": position.collateral,
        "leverage": None if position.leverage is None else position.leverage.quantize(D("0.01")),
        "realized_pnl": position.realized_pnl,
        "opened_at": position.opened_at,
        "revision": position.revision,
        "mark_price": mark,
    }
    liquidation = perps.liquidation_price(position, mmr)
    if liquidation is None:
        shown["liquidation_price"] = None
    else:
        rounding = ROUND_CEILING if position.side is perps.Side.LONG else ROUND_FLOOR
        steps = (liquidation / market.tick_size).to_integral_value(rounding)
        shown["liquidation_price"] = steps * market.tick_size
    if mark is None:
        valued = ("notional", "unrealized_pnl", "equity", "maintenance_margin", "health_factor")
        return shown | dict.fromkeys((*valued, "margin_ratio"))
    notional = position.size * mark
    upnl = position.signed_size * (mark - position.entry_price)
    equity = position.collateral + upnl
    requirement = notional * mmr
    health = equity / requirement if requirement > 0 else None
    ratio = requirement / equity if equity > 0 else None
    return shown | {
        "notional": notional,
        "unrealized_pnl": upnl,
        "equity": equity,
        "maintenance_margin": requirement,
        "health_factor": None if health is None else health.quantize(places),
        "margin_ratio": None if ratio is None else ratio.quantize(places),
    }


def digits(value: Any) -> Any:
    """A value as it is shown: ``Decimal('1.0')`` and ``Decimal('1')`` differ."""
    if isinstance(value, Decimal):
        return ("decimal", str(value))
    return getattr(value, "value", value)  # an enum by its value


def shown(view: Position) -> dict[str, Any]:
    return {f.name: digits(getattr(view, f.name)) for f in fields(view)}


def amounts(low: int, high: int) -> st.SearchStrategy[Decimal]:
    """Positive decimals from ``10**low`` to ``10**high`` with varied digits and exponents."""
    return st.builds(
        lambda digits, exponent: D(digits).scaleb(exponent),
        st.integers(1, 10**9),
        st.integers(low - 9, high - 9),
    ).filter(lambda d: D(10) ** low <= d <= D(10) ** high)


markets = st.builds(
    market,
    st.just("BTC-PERP"),
    st.sampled_from(["0.1", "0.01", "0.001", "1", "0.5", "0.00001"]),
    st.sampled_from(["0.005", "0.025", "0.03", "0.05", "0.1", "0.0001", "0.3333"]),
)


@st.composite
def positions(draw: st.DrawFn) -> perps.Position:
    size = draw(amounts(-8, 7))
    entry = draw(amounts(-6, 7))
    leverage = draw(st.one_of(st.none(), amounts(0, 2)))  # None: no collateral
    collateral = D(0) if leverage is None else size * entry / leverage
    return perps.Position(
        id=draw(st.sampled_from(["p1", "pos_0123456789abcdef"])),
        owner="alice",
        market="BTC-PERP",
        side=draw(st.sampled_from(perps.Side)),
        size=size,
        entry_price=entry,
        collateral=draw(st.sampled_from([collateral, collateral.quantize(D("0.000001"))])),
        opened_at=draw(st.one_of(st.none(), st.just(datetime(2026, 12, 6, tzinfo=UTC)))),
        realized_pnl=draw(st.sampled_from([D(0), D("-12.345678"), D("1e6")])),
        revision=draw(st.integers(0, 2**40)),
    )


@st.composite
def marks(draw: st.DrawFn, position: perps.Position, market: Market) -> Decimal | None:
    """No mark, any mark, or one at, beside or near the liquidation price (health about 1)."""
    liquidation = perps.liquidation_price(position, market.maintenance_margin_rate)
    near = [] if liquidation is None else [liquidation, liquidation + market.tick_size]
    near += [v for v in near if v - 2 * market.tick_size > 0]
    choice = draw(
        st.one_of(
            st.none(),
            amounts(-6, 8),
            st.sampled_from([position.entry_price, *near]),
            st.just(position.entry_price * D("1.19")),
        )
    )
    if choice is not None and draw(st.booleans()):
        choice = choice.quantize(market.tick_size) if choice >= market.tick_size else choice
    return choice


@given(st.data())
def test_a_position_shows_the_same_digits_at_every_mark(data: st.DataObject) -> None:
    position = data.draw(positions())
    btc = data.draw(markets)
    valuer = PositionValuer(position, btc)
    for _ in range(data.draw(st.integers(1, 4))):  # one valuer re-valued tick after tick
        mark = data.draw(marks(position, btc))
        expected = {k: digits(v) for k, v in shown_before(position, btc, mark).items()}
        assert shown(valuer.at(mark)) == expected
        assert shown(Position.build(position, MarketCatalog([btc]), mark)) == expected
        if mark is not None:
            # The domain's valuation agrees: the engine's health is the stream's.
            valuation = perps.mark_to_market(position, mark, btc)
            assert digits(valuation.notional) == expected["notional"]
            assert digits(valuation.equity) == expected["equity"]


def test_an_equal_mark_with_other_digits_is_shown_with_its_own() -> None:
    position = perps.Position("p1", "alice", "BTC-PERP", perps.Side.LONG, D(1), D(100), D(10))
    valuer = PositionValuer(position, market())
    first = valuer.at(D("105"))
    assert valuer.at(first.mark_price) is first  # the same mark: nothing is built again
    again = valuer.at(D("105.0"))
    assert str(again.mark_price) == "105.0"
    assert str(again.notional) == "105.0"


# --- one decode per price event --------------------------------------------------------------


def price_event(market_id: str, sequence: int, price: str) -> Event:
    now = datetime.now(UTC)
    payload = OraclePrice(market_id, D(price), D("0.05"), now).to_payload()
    return Event(price_topic(market_id), sequence, now, PRICE_UPDATE, payload)


def test_a_price_event_is_decoded_once_for_all_its_readers() -> None:
    decoded = OncePerEvent(lambda e: OraclePrice.from_payload(e.payload), 2)
    event = price_event("BTC-PERP", 1, "100.5")
    first = decoded(event)
    assert first == OraclePrice.from_payload(event.payload)
    assert decoded(event) is first
    twin = Event(event.topic, 1, event.published_at, event.type, dict(event.payload))
    # An equal event, but another object: decoded anew.
    assert decoded(twin) == first
    assert decoded(twin) is not first
    for sequence in range(2, 6):
        decoded(price_event("BTC-PERP", sequence, "101"))
    assert len(decoded._kept) == 2  # bounded: the newest events only
    assert decoded(event) == first


# --- only the markets held wake a stream -----------------------------------------------------

MARKETS = MarketCatalog(
    [market("BTC-PERP"), market("ETH-PERP", "0.01"), market("SOL-PERP", "0.001", "0.05")]
)
EPOCH = "0"


class FakeServices:
    """The hub is real (in-memory broadcast); the stores are dictionaries."""

    def __init__(self, hub: Hub, held: list[perps.Position]) -> None:
        self.hub = hub
        self.markets = MARKETS
        self.clock = SimpleNamespace(now=lambda: datetime.now(UTC))
        self.history = self
        self.book = self
        self.prices = self
        self.held = held
        self.stored: dict[str, Decimal] = {}

    async def start(
        self,
        topics: Sequence[str],
        after: Sequence[Cursor] | None,
        snapshot: Callable[[], Awaitable[Any]],
        *,
        always_snapshot: bool = False,
        current: Sequence[Cursor] | None = None,
    ) -> Start[Any]:
        return Start([Cursor(EPOCH, 0) for _ in topics], snapshot=await snapshot())

    async def open_positions(self, user: str) -> list[perps.Position]:
        return list(self.held)

    async def margin_account(self, user: str) -> Any:
        return new_account(user, D(10_000))

    async def latest(self, market_id: str) -> tuple[OraclePrice, int] | None:
        price = self.stored.get(market_id)
        return None if price is None else (OraclePrice(market_id, price, D(1), STORED_AT), 1)

    async def latest_of(self, markets: Sequence[str]) -> dict[str, OraclePrice]:
        return {
            m: OraclePrice(m, self.stored[m], D(1), STORED_AT) for m in markets if m in self.stored
        }


STORED_AT = datetime(2026, 1, 1, tzinfo=UTC)
"""When FakeServices' stored prices were published."""


def _now() -> datetime:
    return datetime.now(UTC)


def alice_position(id: str, market_id: str, revision: int = 1) -> perps.Position:
    return perps.Position(
        id, "alice", market_id, perps.Side.LONG, D(2), D(100), D(20), _now(), revision=revision
    )


def position_event(type: str, position: perps.Position, sequence: int) -> Event:
    fill = TradeFill(FillKind.OPEN, D(2), D(100), D("0.1"), D("-0.1"), _now())
    announcement = position_announcement(type, PositionChange(position, fill, returned=D(0)))
    return Event(announcement.topic, sequence, _now(), announcement.type, announcement.payload)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    broadcast = Broadcast("memory://")
    await broadcast.connect()
    hub = Hub(broadcast, queue_size=16)
    yield hub
    await hub.close()
    await broadcast.disconnect()


async def next_event(stream: AsyncIterator[Any]) -> Any:
    return await asyncio.wait_for(anext(stream), 5)


async def test_a_stream_follows_the_prices_of_the_markets_its_user_holds(hub: Hub) -> None:
    services = FakeServices(hub, [alice_position("btc", "BTC-PERP")])
    services.stored = {"BTC-PERP": D(100), "SOL-PERP": D("150.5")}
    stream = positions_stream(services, "alice")  # type: ignore[arg-type]

    def followed() -> set[str]:
        return {t for t, n in hub.topics.items() if n and t.startswith("price:")}

    first = await next_event(stream)
    assert [p.mark_price for p in first.positions] == [D(100)]
    assert first.priced_at == STORED_AT
    assert followed() == {price_topic("BTC-PERP")}

    async def publish(event: Event) -> None:
        await hub.broadcast.publish(event.topic, encode_event(event))

    # ETH is not held: its tick reaches no queue of the stream; BTC's does.
    await publish(price_event("ETH-PERP", 2, "3000"))
    btc_tick = price_event("BTC-PERP", 2, "101")
    await publish(btc_tick)
    moved = await next_event(stream)
    assert [p.mark_price for p in moved.positions] == [D(101)]
    assert moved.priced_at == btc_tick.published_at

    # A position in a new market is marked at once, at the latest stored price, and its
    # market's ticks follow.
    await publish(position_event(POSITION_OPENED, alice_position("sol", "SOL-PERP"), 1))
    opened = await next_event(stream)
    assert opened.position.mark_price == D("150.5")
    update = await next_event(stream)
    assert {p.market: p.mark_price for p in update.positions} == {
        "BTC-PERP": D(101),
        "SOL-PERP": D("150.5"),
    }
    assert update.priced_at == btc_tick.published_at  # the newer of BTC's tick and SOL's stored
    assert followed() == {price_topic("BTC-PERP"), price_topic("SOL-PERP")}
    sol_tick = price_event("SOL-PERP", 2, "151")
    await publish(sol_tick)
    ticked = await next_event(stream)
    assert {p.market: p.mark_price for p in ticked.positions}["SOL-PERP"] == D(151)
    assert ticked.priced_at == sol_tick.published_at

    # Closed: BTC's ticks are no longer followed.
    closed = alice_position("btc", "BTC-PERP", revision=2)
    await publish(position_event(POSITION_CLOSED, closed, 2))
    assert (await next_event(stream)).position.id == "btc"
    left = await next_event(stream)
    assert [p.market for p in left.positions] == ["SOL-PERP"]
    assert left.priced_at == sol_tick.published_at
    assert followed() == {price_topic("SOL-PERP")}
    await stream.aclose()  # type: ignore[attr-defined]
    assert followed() == set()


async def test_events_waiting_when_the_markets_change_are_not_lost(hub: Hub) -> None:
    """Events queued behind the one that changes the markets followed (a tick, another position
    event) still arrive, in order, once."""
    services = FakeServices(hub, [alice_position("btc", "BTC-PERP")])
    services.stored = {"BTC-PERP": D(100), "ETH-PERP": D(3000)}
    stream = positions_stream(services, "alice")  # type: ignore[arg-type]
    await next_event(stream)
    eth = alice_position("eth", "ETH-PERP")
    [positions_queue] = hub._feeds[positions_topic("alice")].queues
    [btc_queue] = hub._feeds[price_topic("BTC-PERP")].queues
    positions_queue.put(position_event(POSITION_OPENED, eth, 1))
    btc_queue.put(price_event("BTC-PERP", 2, "99"))
    positions_queue.put(position_event(POSITION_CLOSED, alice_position("eth", "ETH-PERP", 2), 2))
    seen = [await next_event(stream) for _ in range(5)]
    assert [type(e).__name__ for e in seen] == [
        "PositionOpened",
        "PositionsUpdate",
        "PositionsUpdate",  # the tick
        "PositionClosed",
        "PositionsUpdate",
    ]
    assert seen[0].position.mark_price == D(3000)
    assert [(p.market, p.mark_price) for p in seen[2].positions] == [
        ("BTC-PERP", D(99)),
        ("ETH-PERP", D(3000)),
    ]
    assert [p.id for p in seen[4].positions] == ["btc"]
    assert hub.topics.get(price_topic("ETH-PERP"), 0) == 0
    assert hub.queued_events == 0
    await stream.aclose()  # type: ignore[attr-defined]


async def test_positions_without_a_price_are_priced_at_no_time(hub: Hub) -> None:
    services = FakeServices(hub, [alice_position("btc", "BTC-PERP")])
    stream = positions_stream(services, "alice")  # type: ignore[arg-type]
    first = await next_event(stream)
    assert [p.mark_price for p in first.positions] == [None]
    assert first.priced_at is None
    tick = price_event("BTC-PERP", 1, "100")
    await hub.broadcast.publish(tick.topic, encode_event(tick))
    assert (await next_event(stream)).priced_at == tick.published_at
    await stream.aclose()  # type: ignore[attr-defined]
