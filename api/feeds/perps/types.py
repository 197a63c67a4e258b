"""The perpetuals feed's GraphQL types that its root fields and its streams both show:
positions (valued by ``PositionValuer``), fills, the margin account, the positions stream's
events, liquidation candidates, market stats and funding settlements."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry

from api.graphql.enums import PositionSide
from api.graphql.resume import Resumable, StreamReset
from domain import perps
from domain import perps_engine as engine
from domain import perps_margin as margin

if TYPE_CHECKING:
    from api.runtime.services import Services
    from domain.events import Event
    from domain.markets import Market, MarketCatalog
    from domain.prices import OraclePrice


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
    def of(cls, fill: engine.TradeFill) -> Fill:
        """A fill as a positions event carries it, its kind shown as its text."""
        return cls(
            kind=fill.kind.value,
            size=fill.size,
            price=fill.price,
            fee=fill.fee,
            realized_pnl=fill.realized_pnl,
            at=fill.at,
        )


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
        return PositionValuer(position, markets.get(position.market)).at(mark)


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
    def of(cls, c: engine.Candidate, markets: MarketCatalog) -> LiquidationCandidate:
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
                LiquidationCandidate.of(c, markets) for c in _read_candidates(event.payload, limit)
            ],
            updated_at=event.published_at,
            sequence=event.sequence,
        )


_read_candidates = engine.LIQUIDATIONS.part("candidates")
"""The first candidates of a liquidations event (a subscriber shows ``limit`` of them; the event
has every candidate)."""


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


class PositionValuer:
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
            "side": position.side,
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


async def latest_prices(services: Services) -> dict[str, OraclePrice]:
    return await services.prices.latest_of([market.id for market in services.markets])
