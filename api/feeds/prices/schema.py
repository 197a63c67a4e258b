"""The oracle price feed: markets, latest prices, live price updates."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from decimal import Decimal
from typing import TYPE_CHECKING

import strawberry

from api.auth import Role
from api.feeds.prices.stream import price_stream
from api.feeds.prices.types import Price, price_event
from api.graphql.context import Info  # noqa: TC001
from api.graphql.errors import ClientError, market_or_error
from api.graphql.permissions import limit_mutations, require_role
from domain.perps_trades import MAX_AMOUNT
from domain.price_feed import publish_prices
from domain.prices import OraclePrice

if TYPE_CHECKING:
    from domain.markets import Market as MarketModel


PUBLIC_SUBSCRIPTIONS = ("priceUpdates",)
"""Subscriptions of this feed that anyone may read, anonymous callers included."""


@strawberry.type(description="A perpetual futures market.")
class Market:
    id: strawberry.ID
    base: str = strawberry.field(description="The asset traded, e.g. BTC.")
    quote: str = strawberry.field(description="The currency prices are quoted in, e.g. USD.")
    tick_size: Decimal = strawberry.field(description="The smallest price increment.")
    step_size: Decimal = strawberry.field(description="The smallest size increment.")
    min_order_size: Decimal
    max_leverage: Decimal
    maintenance_margin_rate: Decimal = strawberry.field(
        description="Maintenance margin as a fraction of notional (0.03 is 3%)."
    )
    liquidation_fee_rate: Decimal = strawberry.field(
        description="Liquidator reward as a fraction of the liquidated notional."
    )
    max_position_size: Decimal = strawberry.field(
        description="The most one user may hold on one side, in base units (POSITION_LIMIT)."
    )
    max_open_interest: Decimal = strawberry.field(
        description="The most all users together may hold on one side, in base units "
        "(OPEN_INTEREST_LIMIT)."
    )

    @classmethod
    def from_model(cls, market: MarketModel) -> Market:
        return cls(
            id=strawberry.ID(market.id),
            base=market.base,
            quote=market.quote,
            tick_size=market.tick_size,
            step_size=market.step_size,
            min_order_size=market.min_order_size,
            max_leverage=market.max_leverage,
            maintenance_margin_rate=market.maintenance_margin_rate,
            liquidation_fee_rate=market.liquidation_fee_rate,
            max_position_size=market.max_position_size,
            max_open_interest=market.max_open_interest,
        )


@strawberry.type
class PriceQuery:
    @strawberry.field(description="Every market this server quotes.")
    def markets(self, info: Info) -> list[Market]:
        return [Market.from_model(m) for m in info.context.services.markets]

    @strawberry.field(description="One market; an unknown id is an error that names it.")
    def market(self, info: Info, id: strawberry.ID) -> Market:
        return Market.from_model(market_or_error(info.context.services.markets, id))

    @strawberry.field(description="The latest stored oracle price; null before the first one.")
    async def price(self, info: Info, market: str) -> Price | None:
        services = info.context.services
        market_or_error(services.markets, market)
        event = price_event(await services.prices.latest(market))
        return None if event is None else Price.from_event(event)


@strawberry.type
class PriceMutation:
    @strawberry.mutation(
        description="For the service role: publish an oracle price, as an oracle adapter does. "
        "It is stored as the market's latest and reaches every priceUpdates subscriber."
    )
    async def publish_price(
        self, info: Info, market: str, price: Decimal, confidence: Decimal = Decimal(0)
    ) -> Price:
        principal = limit_mutations(info)
        require_role(principal, Role.SERVICE, what="publishPrice")
        services = info.context.services
        market_or_error(services.markets, market)
        if not price.is_finite() or price <= 0 or price >= MAX_AMOUNT:
            raise ClientError(
                f"price must be a positive number below {MAX_AMOUNT:f}", code="INVALID_PRICE"
            )
        if not confidence.is_finite() or not 0 <= confidence < price:
            raise ClientError(
                "confidence must be at least 0 and below the price", code="INVALID_PRICE"
            )
        oracle = OraclePrice(market, price, confidence, services.clock.now())
        (event,) = await publish_prices(
            [oracle], publisher=services.publisher, repository=services.prices
        )
        return Price.from_event(event)


@strawberry.type
class PriceSubscription:
    @strawberry.subscription(
        description="The market's latest price at once, then every new one (about PRICE_FEED_HZ "
        "a second). Conflated: a client that reads slowly gets the newest price, not a backlog."
    )
    async def price_updates(self, info: Info, market: str) -> AsyncIterator[Price]:
        services = info.context.services
        market_or_error(services.markets, market)
        return price_stream(services, market)
