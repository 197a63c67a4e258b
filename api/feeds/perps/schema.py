"""The perpetuals feed: positions with PnL and health, liquidations, market stats and funding;
the mutations that trade against the simulated market and ingest an indexer's events."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import strawberry

from api.auth import Role
from api.feeds.perps.desk import IngestedChange, IngestKind
from api.feeds.perps.stream import candidates_stream, market_stats_stream, positions_stream
from api.feeds.perps.types import (
    Fill,
    LiquidationCandidates,
    MarketStats,
    MarketStatsEvent,
    PerpsMarginAccount,
    Position,
    PositionEvent,
    latest_prices,
)
from api.graphql.access import checked
from api.graphql.context import Info  # noqa: TC001
from api.graphql.enums import PositionSide
from api.graphql.errors import ClientError, market_or_error
from api.graphql.permissions import (
    limit_mutations,
    require_owner,
    require_role,
    require_signed_in,
)
from api.graphql.resume import AFTER_DESCRIPTION, parse_after
from domain.perps_trades import MAX_AMOUNT, TradeError
from domain.topics import liquidations_topic, market_stats_topic, positions_topic

if TYPE_CHECKING:
    from api.auth import Principal
    from api.runtime.services import Services
    from domain.perps_trades import Trade


PUBLIC_SUBSCRIPTIONS = ("liquidations", "marketStats")
"""Subscriptions of this feed that anyone may read, anonymous callers included."""


MAX_CANDIDATES = 500


class TradeGraphQLError(ClientError):
    """A trade or ingest the desk refused; ``extensions.code`` says why (INVALID_SIZE, ...)."""

    def __init__(self, error: TradeError) -> None:
        super().__init__(str(error), code=error.code)


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


def _user_or_caller(principal: Principal, user: str | None) -> str:
    return checked(principal, lambda p: _owner_of_positions(p, user))


def _owner_of_positions(principal: Principal, user: str | None) -> str:
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
    return {market: price.price for market, price in (await latest_prices(services)).items()}


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_CANDIDATES:
        raise ClientError(f"limit must be between 1 and {MAX_CANDIDATES}")


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
                input.side,
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
                side=input.side,
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
