"""The perpetuals feed: positions with PnL and health, liquidations, market stats and funding;
the mutations that trade against the simulated market and ingest an indexer's events."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from api.auth import Role
from api.feeds.perps.desk import IngestedChange, IngestKind
from api.graphql.context import Info  # noqa: TC001
from api.graphql.enums import PositionSide
from api.graphql.errors import ClientError, StreamEndedError, market_or_error
from api.graphql.permissions import (
    limit_mutations,
    require_owner,
    require_role,
    require_signed_in,
)
from api.graphql.resume import (
    AFTER_DESCRIPTION,
    Resumable,
    StreamPosition,
    StreamReset,
    parse_after,
    stamped,
)
from api.graphql.streams import StreamWithPrices, decoded_price
from api.streaming.hub import HubError
from domain import perps
from domain import perps_engine as engine
from domain import perps_margin as margin
from domain.perps_engine import (
    POSITION_CLOSED,
    POSITION_LIQUIDATED,
    POSITION_OPENED,
    POSITION_WARNING,
)
from domain.perps_trades import MAX_AMOUNT, TradeError
from domain.topics import (
    funding_topic,
    liquidations_topic,
    market_stats_topic,
    positions_topic,
)

if TYPE_CHECKING:
    from api.auth import Principal
    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain.events import Event
    from domain.markets import Market, MarketCatalog
    from domain.perps_trades import Trade
    from domain.prices import OraclePrice


PUBLIC_SUBSCRIPTIONS = ("liquidations", "marketStats")
"""Subscriptions of this feed that anyone may read, anonymous callers included."""

MAX_CANDIDATES = 500


class TradeGraphQLError(ClientError):
    """A trade or ingest the desk refused; ``extensions.code`` says why (INVALID_SIZE, ...)."""

    def __init__(self, error: TradeError) -> None:
        super().__init__(str(error), code=error.code)


@strawberry.type(description="A trade that changed a position.")
class Fill:
    kind: str = strawberry.field(
        description="open, increase, reduce, close, liquidation or collateral."
    )
    size: Decimal
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal = strawberry.field(description="What this fill settled, fee included.")
    at: datetime

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Fill:
        return _read_fill(payload)


_read_fill = engine.TRADE_FILL.reader(Fill, as_is=("kind",))
"""A fill as a positions event carries it, its kind shown as its text."""


@strawberry.type(
    description="An isolated-margin perpetual position, marked to its market's latest oracle "
    "price. Valuation fields are null while the market has no price."
)
class Position:
    id: strawberry.ID
    owner: str
    market: str
    side: PositionSide
    size: Decimal = strawberry.field(description="Base units, always positive.")
    entry_price: Decimal
    collateral: Decimal
    leverage: Decimal | None = strawberry.field(
        description="Entry notional over collateral, to two decimal places."
    )
    realized_pnl: Decimal = strawberry.field(description="Fees, funding and reductions settled.")
    opened_at: datetime | None
    revision: int = strawberry.field(description="Bumped by every change to the position.")
    mark_price: Decimal | None
    notional: Decimal | None
    unrealized_pnl: Decimal | None
    equity: Decimal | None = strawberry.field(description="Collateral plus unrealized PnL.")
    maintenance_margin: Decimal | None = strawberry.field(
        description="Notional times the market's maintenance margin rate."
    )
    health_factor: Decimal | None = strawberry.field(
        description="Equity over maintenance margin: below 1.2 a warning, below 1 liquidatable."
    )
    margin_ratio: Decimal | None = strawberry.field(
        description="Maintenance margin over equity (1 / healthFactor), as Binance shows it."
    )
    liquidation_price: Decimal | None = strawberry.field(
        description="The mark price at which healthFactor reaches 1."
    )

    @classmethod
    def build(
        cls, position: perps.Position, markets: MarketCatalog, mark: Decimal | None
    ) -> Position:
        return _Valuer(position, markets.get(position.market)).at(mark)


@strawberry.type(
    description="A user's perps margin account: the free collateral positions are opened with."
)
class PerpsMarginAccount:
    owner: str
    balance: Decimal = strawberry.field(
        description="Free collateral (USD): what opening or growing a position may take."
    )
    deposited: Decimal = strawberry.field(
        description="Every amount ever put in: the initial balance, and top-ups."
    )
    revision: int = strawberry.field(description="Bumped by every movement; 0 before the first.")

    @classmethod
    def build(cls, account: margin.MarginAccount) -> PerpsMarginAccount:
        return cls(
            owner=account.owner,
            balance=account.balance,
            deposited=account.deposited,
            revision=account.revision,
        )


@strawberry.type(description="Every open position of a user, valued at the latest prices.")
class PositionsUpdate(Resumable):
    user: str
    positions: list[Position]
    account: PerpsMarginAccount = strawberry.field(
        description="The user's perps margin account as the positions leave it."
    )
    at: datetime = strawberry.field(description="When this update was made.")
    priced_at: datetime | None = strawberry.field(
        description="When the newest of the prices the positions are valued at was published "
        "(its Price.publishedAt): how fresh the valuation is. Null while none of their markets "
        "has a price."
    )


@strawberry.type
class PositionOpened(Resumable):
    position: Position
    fill: Fill
    at: datetime


@strawberry.type(description="Size or collateral changed: a trade, or a funding payment.")
class PositionModified(Resumable):
    position: Position
    fill: Fill | None
    reason: str = strawberry.field(description="trade or funding.")
    at: datetime


@strawberry.type
class PositionClosed(Resumable):
    position: Position = strawberry.field(description="The position as it was closed.")
    fill: Fill
    returned: Decimal = strawberry.field(description="Collateral plus PnL paid back.")
    at: datetime


@strawberry.type
class PositionLiquidated(Resumable):
    position: Position = strawberry.field(description="The position as it was liquidated.")
    fill: Fill
    liquidation_reward: Decimal = strawberry.field(description="What the liquidator earned.")
    returned: Decimal = strawberry.field(description="What was left for the owner.")
    at: datetime


@strawberry.type(
    description="The position's health fell below 1.2: sent once per crossing, not every tick."
)
class LiquidationWarning(Resumable):
    position: Position
    health_factor: Decimal
    mark_price: Decimal
    at: datetime


PositionEvent = Annotated[
    PositionsUpdate
    | PositionOpened
    | PositionModified
    | PositionClosed
    | PositionLiquidated
    | LiquidationWarning
    | StreamReset,
    strawberry.union(
        "PositionEvent",
        description="What the positions stream sends: the positions, and what happened to them.",
    ),
]


@strawberry.type(description="A liquidatable position. It carries no owner: only its id.")
class LiquidationCandidate:
    position_id: strawberry.ID
    market: str
    side: PositionSide
    size: Decimal
    mark_price: Decimal
    notional: Decimal
    health_factor: Decimal
    liquidation_price: Decimal | None
    potential_reward: Decimal = strawberry.field(
        description="The market's liquidation fee times the notional."
    )

    @classmethod
    def from_payload(cls, p: dict[str, Any], markets: MarketCatalog) -> LiquidationCandidate:
        c = engine.CANDIDATE.decode(p)
        return cls(
            position_id=strawberry.ID(c.position_id),
            market=c.market,
            side=c.side,
            size=c.size,
            mark_price=c.mark_price,
            notional=c.notional,
            health_factor=c.health_factor.quantize(RATIO_PLACES),
            liquidation_price=_to_tick(
                c.liquidation_price, markets.get(c.market).tick_size, c.side
            ),
            potential_reward=c.potential_reward,
        )


@strawberry.type(description="Liquidation candidates, the largest potential reward first.")
class LiquidationCandidates:
    candidates: list[LiquidationCandidate]
    updated_at: datetime | None
    sequence: int

    @classmethod
    def from_event(
        cls, event: Event | None, limit: int, markets: MarketCatalog
    ) -> LiquidationCandidates:
        if event is None:
            return cls(candidates=[], updated_at=None, sequence=0)
        return cls(
            candidates=[
                LiquidationCandidate.from_payload(c, markets)
                for c in event.payload["candidates"][:limit]
            ],
            updated_at=event.published_at,
            sequence=event.sequence,
        )


@strawberry.type(description="A market's open interest, volume, prices and funding.")
class MarketStats(Resumable):
    market: str
    index_price: Decimal | None = strawberry.field(description="The oracle price.")
    mark_price: Decimal | None = strawberry.field(
        description="The index moved by the open-interest skew: index x (1 + skew / skewScale)."
    )
    open_interest_long: Decimal = strawberry.field(description="Base units held long.")
    open_interest_short: Decimal = strawberry.field(description="Base units held short.")
    volume_24h: Decimal = strawberry.field(
        name="volume24h", description="Notional traded in the last 24 hours."
    )
    funding_rate: Decimal | None = strawberry.field(
        description="The last settled rate per interval; positive: longs pay shorts."
    )
    last_funding_at: datetime | None
    next_funding_at: datetime
    updated_at: datetime
    sequence: int

    @classmethod
    def from_event(cls, event: Event) -> MarketStats:
        s = engine.MARKET_STATS.decode(event.payload)
        return cls(
            market=s.market,
            index_price=s.index_price,
            mark_price=s.mark_price,
            open_interest_long=s.open_interest_long,
            open_interest_short=s.open_interest_short,
            volume_24h=s.volume_24h,
            funding_rate=s.funding_rate,
            last_funding_at=s.last_funding_at,
            next_funding_at=s.next_funding_at,
            updated_at=event.published_at,
            sequence=event.sequence,
        )


@strawberry.type(description="Funding was settled for an interval.")
class FundingRateChanged(Resumable):
    market: str
    rate: Decimal
    mark_price: Decimal
    index_price: Decimal
    settled_at: datetime
    next_funding_at: datetime
    positions_charged: int

    @classmethod
    def from_event(cls, event: Event) -> FundingRateChanged:
        f = engine.FUNDING.decode(event.payload)
        return cls(
            market=f.market,
            rate=f.rate,
            mark_price=f.mark_price,
            index_price=f.index_price,
            settled_at=f.settled_at,
            next_funding_at=f.next_funding_at,
            positions_charged=f.positions_charged,
        )


MarketStatsEvent = Annotated[
    MarketStats | FundingRateChanged | StreamReset, strawberry.union("MarketStatsEvent")
]


@strawberry.input
class OpenPositionInput:
    market: str
    side: PositionSide
    size: Decimal = strawberry.field(description="Base units; a multiple of the market's step.")
    leverage: Decimal = strawberry.field(description="1 up to the market's maxLeverage.")


@strawberry.input
class ModifyPositionInput:
    position_id: strawberry.ID
    size_delta: Decimal = strawberry.field(
        default=Decimal(0), description="Positive grows the position, negative reduces it."
    )
    collateral_delta: Decimal = strawberry.field(
        default=Decimal(0), description="Positive adds collateral, negative withdraws it."
    )


@strawberry.enum
class PositionChangeKind(enum.Enum):
    OPENED = "opened"
    MODIFIED = "modified"
    CLOSED = "closed"
    LIQUIDATED = "liquidated"


@strawberry.input(
    description="A position change an indexer read on chain: the position after it, and the fill."
)
class PositionChangeInput:
    external_id: str = strawberry.field(
        description="Unique per on-chain event (transaction hash and log index): a replay is "
        "ignored."
    )
    kind: PositionChangeKind
    position_id: strawberry.ID
    owner: str
    market: str
    side: PositionSide
    size: Decimal
    entry_price: Decimal
    collateral: Decimal
    fill_size: Decimal
    fill_price: Decimal
    at: datetime
    fee: Decimal = Decimal(0)
    realized_pnl: Decimal = Decimal(0)
    liquidation_reward: Decimal = Decimal(0)


@strawberry.type
class ClosedPosition:
    position: Position
    fill: Fill
    returned: Decimal


@strawberry.type
class IngestResult:
    position: Position
    stored: bool = strawberry.field(description="False when this externalId was already stored.")


CENTS = Decimal("0.01")
"""Leverage is shown to two decimal places."""
RATIO_PLACES = Decimal("0.000001")
"""Health factors and margin ratios are shown to six decimal places (computed exactly)."""


def _ratio(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(RATIO_PLACES)


def _to_tick(price: Decimal | None, tick: Decimal, side: perps.Side) -> Decimal | None:
    """A liquidation price on the market's tick, rounded against the trader as venues do: up for
    a long (it is reached sooner), down for a short."""
    if price is None:
        return None
    rounding = ROUND_CEILING if side is perps.Side.LONG else ROUND_FLOOR
    return (price / tick).to_integral_value(rounding) * tick


class _Valuer:
    """A position ready to be shown at any mark. What :class:`Position` shows that depends on the
    position (one revision of it) and its market alone is built once: the positions stream keeps
    one per position it holds and re-values it on every tick of its market, so a tick costs the
    arithmetic the mark enters (:class:`domain.perps.Exposure`) and one :class:`Position`. The last
    one is kept for its mark: a position whose market did not move costs nothing."""

    __slots__ = ("_exposure", "_fixed", "_last", "_last_mark", "market", "position")

    def __init__(self, position: perps.Position, market: Market) -> None:
        self.position = position
        self.market = position.market
        self._exposure = perps.Exposure(position, market.maintenance_margin_rate)
        leverage = position.leverage
        self._fixed: dict[str, Any] = {
            "id": strawberry.ID(position.id),
            "owner": position.owner,
            "market": position.market,
            "side": PositionSide(position.side.value),
            "size": position.size,
            "entry_price": position.entry_price,
            "collateral": position.collateral,
            "leverage": None if leverage is None else leverage.quantize(CENTS),
            "realized_pnl": position.realized_pnl,
            "opened_at": position.opened_at,
            "revision": position.revision,
            "liquidation_price": _to_tick(
                self._exposure.liquidation_price, market.tick_size, position.side
            ),
        }
        self._last_mark: Decimal | None = None
        self._last: Position | None = None

    def at(self, mark: Decimal | None) -> Position:
        # The same mark object, not an equal one: 100.0 and 100 are shown differently.
        if self._last is not None and mark is self._last_mark:
            return self._last
        if mark is None:
            view = Position(
                **self._fixed,
                mark_price=None,
                notional=None,
                unrealized_pnl=None,
                equity=None,
                maintenance_margin=None,
                health_factor=None,
                margin_ratio=None,
            )
        else:
            marked = self._exposure.mark(mark)
            view = Position(
                **self._fixed,
                mark_price=mark,
                notional=marked.notional,
                unrealized_pnl=marked.unrealized_pnl,
                equity=marked.equity,
                maintenance_margin=marked.maintenance_requirement,
                health_factor=_ratio(marked.health),
                margin_ratio=_ratio(marked.margin_ratio),
            )
        self._last_mark, self._last = mark, view
        return view


def _user_or_caller(principal: Principal, user: str | None) -> str:
    require_signed_in(principal, "positions")
    owner = user if user is not None else principal.sub
    assert owner is not None
    require_owner(principal, owner, "positions")
    try:
        positions_topic(owner)
    except ValueError:
        raise ClientError(f"{owner!r} is not a valid user id") from None
    return owner


async def _marks(services: Services) -> dict[str, Decimal]:
    return {market: price.price for market, price in (await _latest_prices(services)).items()}


async def _latest_prices(services: Services) -> dict[str, OraclePrice]:
    return await services.prices.latest_of([market.id for market in services.markets])


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_CANDIDATES:
        raise ClientError(f"limit must be between 1 and {MAX_CANDIDATES}")


def _present_position_event(
    event: Event, markets: MarketCatalog, marks: dict[str, Decimal]
) -> PositionEvent:
    p = event.payload
    position = perps.Position.from_payload(p["position"])
    at = event.published_at
    if event.type == POSITION_WARNING:
        mark = Decimal(p["markPrice"])
        return LiquidationWarning(
            position=Position.build(position, markets, mark),
            health_factor=Decimal(p["healthFactor"]).quantize(RATIO_PLACES),
            mark_price=mark,
            at=at,
        )
    view = Position.build(position, markets, marks.get(position.market))
    fill = Fill.from_payload(p["fill"]) if "fill" in p else None
    if event.type == POSITION_OPENED and fill is not None:
        return PositionOpened(position=view, fill=fill, at=at)
    if event.type == POSITION_CLOSED and fill is not None:
        return PositionClosed(position=view, fill=fill, returned=Decimal(p["returned"]), at=at)
    if event.type == POSITION_LIQUIDATED and fill is not None:
        return PositionLiquidated(
            position=Position.build(position, markets, fill.price),
            fill=fill,
            liquidation_reward=Decimal(p["reward"]),
            returned=Decimal(p["returned"]),
            at=at,
        )
    return PositionModified(position=view, fill=fill, reason=p.get("reason", "trade"), at=at)


async def positions_stream(
    services: Services, user: str, after: list[Cursor] | None = None
) -> AsyncIterator[PositionEvent]:
    """The user's positions at once, then each event and the positions after it, and the
    positions again whenever a market they hold moves. Resumed (``after``): the events since the
    cursor, then the positions.

    Position events carry the position's revision: one the snapshot already covered is dropped,
    so nothing shows twice and nothing older follows something newer.

    Every trader's stream re-values their positions on every tick, so a tick does per stream only
    what differs between streams (``docs/perps.md``, "What a tick costs"): the price is decoded
    once for all of them (:data:`api.graphql.streams.decoded_price`), each position is re-valued
    from what its revision already worked out (:class:`_Valuer`), and only the prices of the
    markets the user holds are followed.
    """
    markets = services.markets
    topic = positions_topic(user)
    try:
        async with StreamWithPrices(services.hub, [topic]) as feed:
            start = await services.history.start(
                [topic], after, lambda: services.book.open_positions(user), always_snapshot=True
            )
            assert start.snapshot is not None
            held = {p.id: _Valuer(p, markets.get(p.market)) for p in start.snapshot}
            await feed.follow({v.market for v in held.values()})
            # Read after the snapshot: a trade in between is in both, and its event carries
            # the account with its revision, so the newest wins either way.
            account = await services.book.margin_account(user)
            account_view = PerpsMarginAccount.build(account)
            latest = await _latest_prices(services)
            marks = {market: price.price for market, price in latest.items()}
            # When each mark was published: an update's pricedAt.
            published = {market: price.published_at for market, price in latest.items()}
            position = StreamPosition([topic], start.origin)

            def update() -> PositionsUpdate:
                times = [published[v.market] for v in held.values() if v.market in published]
                return PositionsUpdate(
                    user=user,
                    positions=[v.at(marks.get(v.market)) for v in held.values()],
                    account=account_view,
                    at=services.clock.now(),
                    priced_at=max(times) if times else None,
                    cursor=position.text,
                )

            def note_account(event: Event) -> None:
                nonlocal account, account_view
                moved = event.payload.get("account")
                if moved is not None and moved["revision"] > account.revision:
                    account = margin.MarginAccount.from_payload(moved)
                    account_view = PerpsMarginAccount.build(account)

            async def follow_held() -> None:
                """Follow the markets held now; a market not followed until now may have moved
                meanwhile, so its mark is read again."""
                for market in await feed.follow({v.market for v in held.values()}):
                    stored = await services.prices.latest(market)
                    if stored is not None and marks.get(market) != stored[0].price:
                        marks[market] = stored[0].price
                        published[market] = stored[0].published_at

            for event in start.replay:
                position.advance(event)
                note_account(event)
                yield stamped(_present_position_event(event, markets, marks), position)
            if start.not_recovered is not None:
                yield position.reset(start.not_recovered)
            yield update()
            pending: Event | None = None
            while True:
                event = pending if pending is not None else await feed.next()
                pending = None
                if event.topic != topic:
                    # Prices that arrived together (every market ticks at once) make one
                    # update, not one per market.
                    moved = False
                    tick: Event | None = event
                    while tick is not None and tick.topic != topic:
                        price = decoded_price(tick)
                        if marks.get(price.market) != price.price:
                            marks[price.market] = price.price
                            published[price.market] = price.published_at
                            moved = moved or price.market in feed.markets
                        tick = feed.poll()
                    pending = tick
                    if moved:
                        yield update()
                    continue
                if not position.advance(event):
                    continue  # the start covered it
                note_account(event)
                changed = perps.Position.from_payload(event.payload["position"])
                current = held.get(changed.id)
                if event.type == POSITION_WARNING:
                    if current is not None:
                        yield stamped(_present_position_event(event, markets, marks), position)
                    continue
                if event.type in (POSITION_CLOSED, POSITION_LIQUIDATED):
                    if current is None:
                        continue  # already gone in the snapshot
                    del held[changed.id]
                elif current is not None and current.position.revision >= changed.revision:
                    continue  # the snapshot already showed it
                else:
                    held[changed.id] = _Valuer(changed, markets.get(changed.market))
                await follow_held()
                yield stamped(_present_position_event(event, markets, marks), position)
                yield update()
    except HubError as exc:
        raise StreamEndedError(exc) from exc


async def market_stats_stream(
    services: Services, market: str, after: list[Cursor] | None = None
) -> AsyncIterator[MarketStatsEvent]:
    """The stats at once (after the funding settlements since ``after`` when resumed), then every
    change and every settlement."""
    stats_topic = market_stats_topic(market)
    streams = [funding_topic(market)]
    try:
        async with services.hub.merge([stats_topic, *streams]) as merged:
            start = await services.history.start(
                streams, after, lambda: services.latest.latest(stats_topic), always_snapshot=True
            )
            position = StreamPosition(streams, start.origin)
            for event in start.replay:
                position.advance(event)
                yield stamped(FundingRateChanged.from_event(event), position)
            if start.not_recovered is not None:
                yield position.reset(start.not_recovered)
            last = 0
            current = start.snapshot
            if current is not None:
                last = current.sequence
                yield stamped(MarketStats.from_event(current), position)
            async for event in merged:
                if event.topic != stats_topic:
                    if position.advance(event):
                        yield stamped(FundingRateChanged.from_event(event), position)
                elif event.sequence > last:
                    last = event.sequence
                    yield stamped(MarketStats.from_event(event), position)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


async def candidates_stream(services: Services, limit: int) -> AsyncIterator[LiquidationCandidates]:
    topic = liquidations_topic()

    async def snapshot() -> Event | None:
        return await services.latest.latest(topic)

    try:
        async for event in services.hub.live(topic, snapshot):
            yield LiquidationCandidates.from_event(event, limit, services.markets)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


def _trade_result(services: Services, trade: Trade, mark: Decimal) -> Position:
    return Position.build(trade.position, services.markets, mark)


@strawberry.type
class PerpsQuery:
    @strawberry.field(
        description="A user's open positions (the caller's when user is omitted): for that user "
        "and admins only."
    )
    async def positions(self, info: Info, user: str | None = None) -> list[Position]:
        services = info.context.services
        owner = _user_or_caller(info.context.principal, user)
        marks = await _marks(services)
        return [
            Position.build(p, services.markets, marks.get(p.market))
            for p in await services.book.open_positions(owner)
        ]

    @strawberry.field(
        description="A user's perps margin account (the caller's when user is omitted): for "
        "that user and admins only. A user who never traded has the initial balance."
    )
    async def perps_margin_account(self, info: Info, user: str | None = None) -> PerpsMarginAccount:
        owner = _user_or_caller(info.context.principal, user)
        return PerpsMarginAccount.build(await info.context.services.book.margin_account(owner))

    @strawberry.field(description="The current liquidation candidates, largest reward first.")
    async def liquidation_candidates(self, info: Info, limit: int = 50) -> LiquidationCandidates:
        _check_limit(limit)
        services = info.context.services
        return LiquidationCandidates.from_event(
            await services.latest.latest(liquidations_topic()), limit, services.markets
        )

    @strawberry.field(description="A market's stats; null before the engine's first pass.")
    async def market_stats(self, info: Info, market: str) -> MarketStats | None:
        services = info.context.services
        market_or_error(services.markets, market)
        event = await services.latest.latest(market_stats_topic(market))
        return None if event is None else MarketStats.from_event(event)


@strawberry.type
class PerpsSubscription:
    @strawberry.subscription(
        description="A user's positions (the caller's when user is omitted) at once, then the "
        "positions again whenever a price or a position changes, with each opened, modified, "
        "closed and liquidated event and each liquidation warning before the positions it "
        "leaves. For that user and admins only."
    )
    async def positions(
        self,
        info: Info,
        user: str | None = None,
        after: Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)] = None,
    ) -> AsyncIterator[PositionEvent]:
        owner = _user_or_caller(info.context.principal, user)
        return positions_stream(info.context.services, owner, parse_after(after, 1))

    @strawberry.subscription(
        description="The liquidation candidates at once, then again whenever they change "
        "(prices move, positions cross health 1, the engine liquidates one). Public."
    )
    async def liquidations(
        self, info: Info, limit: int = 50
    ) -> AsyncIterator[LiquidationCandidates]:
        _check_limit(limit)
        return candidates_stream(info.context.services, limit)

    @strawberry.subscription(
        description="The market's stats at once, then on every change, with a "
        "FundingRateChanged at each funding settlement. Public."
    )
    async def market_stats(
        self,
        info: Info,
        market: str,
        after: Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)] = None,
    ) -> AsyncIterator[MarketStatsEvent]:
        market_or_error(info.context.services.markets, market)
        return market_stats_stream(info.context.services, market, parse_after(after, 1))


@strawberry.type
class PerpsMutation:
    @strawberry.mutation(
        description="Open a position for the signed-in user at the market's oracle price, with "
        "size x price / leverage as collateral and the market's taker fee, both taken from the "
        "user's perps margin account (INSUFFICIENT_MARGIN, POSITION_LIMIT, OPEN_INTEREST_LIMIT)."
    )
    async def open_position(self, info: Info, input: OpenPositionInput) -> Position:
        principal = limit_mutations(info)
        require_role(principal, Role.USER, Role.ADMIN, what="openPosition")
        services = info.context.services
        market_or_error(services.markets, input.market)
        assert principal.sub is not None
        try:
            trade = await services.desk.open(
                principal.sub,
                input.market,
                perps.Side(input.side.value),
                input.size,
                input.leverage,
            )
        except TradeError as exc:
            raise TradeGraphQLError(exc) from None
        return _trade_result(services, trade, trade.fill.price)

    @strawberry.mutation(
        description="Grow, reduce, add collateral to or withdraw collateral from one of the "
        "signed-in user's positions, at the oracle price."
    )
    async def modify_position(self, info: Info, input: ModifyPositionInput) -> Position:
        principal = limit_mutations(info)
        require_role(principal, Role.USER, Role.ADMIN, what="modifyPosition")
        services = info.context.services
        assert principal.sub is not None
        try:
            trade = await services.desk.modify(
                principal.sub, str(input.position_id), input.size_delta, input.collateral_delta
            )
        except TradeError as exc:
            raise TradeGraphQLError(exc) from None
        return _trade_result(services, trade, trade.fill.price)

    @strawberry.mutation(
        description="Close one of the signed-in user's positions in full; what it returns goes "
        "to the user's perps margin account."
    )
    async def close_position(self, info: Info, position_id: strawberry.ID) -> ClosedPosition:
        principal = limit_mutations(info)
        require_role(principal, Role.USER, Role.ADMIN, what="closePosition")
        services = info.context.services
        assert principal.sub is not None
        try:
            trade = await services.desk.close(principal.sub, str(position_id))
        except TradeError as exc:
            raise TradeGraphQLError(exc) from None
        return ClosedPosition(
            position=_trade_result(services, trade, trade.fill.price),
            fill=Fill(
                kind=trade.fill.kind.value,
                size=trade.fill.size,
                price=trade.fill.price,
                fee=trade.fill.fee,
                realized_pnl=trade.fill.realized_pnl,
                at=trade.fill.at,
            ),
            returned=trade.returned,
        )

    @strawberry.mutation(
        description="For the service role: store a position change an indexer saw on chain and "
        "announce it to the owner's positions stream. Idempotent by externalId."
    )
    async def ingest_position_change(self, info: Info, input: PositionChangeInput) -> IngestResult:
        principal = limit_mutations(info)
        require_role(principal, Role.SERVICE, what="ingestPositionChange")
        services = info.context.services
        market_or_error(services.markets, input.market)
        try:
            change = IngestedChange(
                external_id=input.external_id,
                kind=IngestKind(input.kind.value),
                position_id=str(input.position_id),
                owner=input.owner,
                market=input.market,
                side=perps.Side(input.side.value),
                size=input.size,
                entry_price=input.entry_price,
                collateral=input.collateral,
                fill_size=input.fill_size,
                fill_price=input.fill_price,
                at=input.at,
                fee=input.fee,
                realized_pnl=input.realized_pnl,
                reward=input.liquidation_reward,
            )
            _check_ingest(change)
            position, stored = await services.desk.ingest(change)
        except ValueError as exc:
            raise ClientError(f"invalid position change: {exc}") from None
        return IngestResult(
            position=Position.build(position, services.markets, input.fill_price), stored=stored
        )


def _check_ingest(change: IngestedChange) -> None:
    if not change.external_id or len(change.external_id) > 200:
        raise ValueError("externalId must be 1 to 200 characters")
    if change.at.tzinfo is None:
        raise ValueError("at must carry a time zone")
    for name in ("size", "entry_price", "fill_price"):
        value: Decimal = getattr(change, name)
        if not value.is_finite() or value <= 0 or value >= MAX_AMOUNT:
            raise ValueError(f"{name} must be positive and below {MAX_AMOUNT:f}")
    for name in ("collateral", "fill_size", "fee", "reward"):
        value = getattr(change, name)
        if not value.is_finite() or value < 0 or value >= MAX_AMOUNT:
            raise ValueError(f"{name} must be at least 0 and below {MAX_AMOUNT:f}")
    if not change.realized_pnl.is_finite() or abs(change.realized_pnl) >= MAX_AMOUNT:
        raise ValueError(f"realizedPnl must be a finite number below {MAX_AMOUNT:f} in size")
    positions_topic(change.owner)  # a valid user id
