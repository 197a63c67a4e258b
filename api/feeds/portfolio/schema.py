"""The portfolio dashboard: one stream of what happens to a user's money (prices, trades, trims,
price alerts, portfolio value, conversions), price alerts ("benchmarks"), trim rules, spot
holdings and conversions."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry

from api.feeds.portfolio.desk import CASH, asset_of
from api.feeds.portfolio.stream import dashboard_stream
from api.feeds.portfolio.types import (
    AlertDirection,
    ConversionCompleted,
    DashboardUpdate,
    PortfolioValuer,
)
from api.graphql.context import Info  # noqa: TC001
from api.graphql.errors import ClientError, market_or_error
from api.graphql.permissions import limit_mutations, signed_in_user
from api.graphql.resume import AFTER_DESCRIPTION, parse_after
from domain import portfolio as model


@strawberry.type(description="A spot holding (USD included), with average-cost accounting.")
class Holding:
    asset: str
    amount: Decimal
    average_cost: Decimal
    realized_pnl: Decimal
    price: Decimal | None
    value_usd: Decimal | None


@strawberry.type
class Portfolio:
    total_value_usd: Decimal = strawberry.field(
        description="Holdings at the latest prices plus the paper account's net balance."
    )
    change24h: Decimal | None
    change24h_usd: Decimal | None = strawberry.field(name="change24hUsd")
    holdings: list[Holding]
    paper_net_balance: Decimal


@strawberry.type(name="PriceAlert", description="A benchmark: fires when the price crosses it.")
class PriceAlertType:
    id: strawberry.ID
    asset: str
    target_price: Decimal
    direction: AlertDirection
    action: str
    once: bool
    armed: bool
    triggered_at: datetime | None


@strawberry.type(name="TrimRule", description="Take sellPercent of a long position at +gain%.")
class TrimRuleType:
    id: strawberry.ID
    symbol: str
    gain_percent: Decimal
    sell_percent: Decimal
    last_trim_price: Decimal | None


@strawberry.input
class PriceAlertInput:
    asset: str = strawberry.field(description="BTC, ETH or SOL.")
    target_price: Decimal
    direction: AlertDirection = strawberry.field(
        description="up: fires when the price rises to the target; down: when it falls to it."
    )
    action: str = "NOTIFY"
    once: bool = True


@strawberry.input
class TrimRuleInput:
    symbol: str
    gain_percent: Decimal
    sell_percent: Decimal


class PortfolioGraphQLError(ClientError):
    def __init__(self, error: model.PortfolioError) -> None:
        super().__init__(str(error), code=error.code)


@strawberry.type
class PortfolioQuery:
    @strawberry.field(description="The signed-in user's portfolio: holdings and value.")
    async def portfolio(self, info: Info) -> Portfolio:
        services = info.context.services
        owner = signed_in_user(info.context.principal, "portfolio")
        valuer = PortfolioValuer(services, owner)
        await valuer.load()
        update = valuer.update()
        assert valuer.account is not None
        marks = {
            m.id: valuer.prices[asset_of(m.id)]
            for m in services.markets
            if asset_of(m.id) in valuer.prices
        }
        return Portfolio(
            total_value_usd=Decimal(0) if update is None else update.total_value_usd,
            change24h=None if update is None else update.change_24h,
            change24h_usd=None if update is None else update.change_24h_usd,
            holdings=[
                Holding(
                    asset=h.asset,
                    amount=h.amount,
                    average_cost=h.average_cost,
                    realized_pnl=h.realized_pnl,
                    price=valuer.prices.get(h.asset),
                    value_usd=None
                    if valuer.prices.get(h.asset) is None
                    else h.amount * valuer.prices[h.asset],
                )
                for h in valuer.holdings.holdings
            ],
            paper_net_balance=valuer.account.balance(marks).net_balance,
        )

    @strawberry.field(description="The signed-in user's price alerts.")
    async def price_alerts(self, info: Info) -> list[PriceAlertType]:
        owner = signed_in_user(info.context.principal, "priceAlerts")
        return [
            _alert_type(alert, triggered_at)
            for alert, triggered_at in await info.context.services.portfolio.alerts(owner)
        ]

    @strawberry.field(description="The signed-in user's trim rules.")
    async def trim_rules(self, info: Info) -> list[TrimRuleType]:
        owner = signed_in_user(info.context.principal, "trimRules")
        return [
            TrimRuleType(
                id=strawberry.ID(r["id"]),
                symbol=r["symbol"],
                gain_percent=r["gain_percent"],
                sell_percent=r["sell_percent"],
                last_trim_price=r["last_trim_price"],
            )
            for r in await info.context.services.portfolio.trims(owner)
        ]


def _alert_type(alert: model.PriceAlert, triggered_at: datetime | None) -> PriceAlertType:
    return PriceAlertType(
        id=strawberry.ID(alert.id),
        asset=alert.asset,
        target_price=alert.target_price,
        direction=AlertDirection(alert.direction.value),
        action=alert.action,
        once=alert.once,
        armed=alert.armed,
        triggered_at=triggered_at,
    )


@strawberry.type
class PortfolioSubscription:
    @strawberry.subscription(
        description="The signed-in user's dashboard: the portfolio value at once, then every "
        "price, trade, trim, triggered alert and conversion, and the value again when it moves "
        "by at least PORTFOLIO_UPDATE_THRESHOLD_PERCENT."
    )
    async def dashboard_updates(
        self,
        info: Info,
        after: Annotated[str | None, strawberry.argument(description=AFTER_DESCRIPTION)] = None,
    ) -> AsyncIterator[DashboardUpdate]:
        owner = signed_in_user(info.context.principal, "dashboardUpdates")
        return dashboard_stream(info.context.services, owner, parse_after(after, 2))


@strawberry.type
class PortfolioMutation:
    @strawberry.mutation(description="Create a price alert; it fires once when crossed.")
    async def create_price_alert(self, info: Info, input: PriceAlertInput) -> PriceAlertType:
        owner = signed_in_user(limit_mutations(info), "createPriceAlert")
        try:
            alert = await info.context.services.portfolio.create_alert(
                owner,
                input.asset,
                input.target_price,
                model.Direction(input.direction.value),
                input.action,
                input.once,
            )
        except model.PortfolioError as exc:
            raise PortfolioGraphQLError(exc) from None
        return _alert_type(alert, None)

    @strawberry.mutation(description="Delete one of your price alerts; false if unknown.")
    async def delete_price_alert(self, info: Info, id: strawberry.ID) -> bool:
        owner = signed_in_user(limit_mutations(info), "deletePriceAlert")
        return await info.context.services.portfolio.delete_alert(owner, str(id))

    @strawberry.mutation(
        description="A rule that sells sellPercent of your long position in symbol whenever "
        "the price is gainPercent above its entry (and above the last trim)."
    )
    async def create_trim_rule(self, info: Info, input: TrimRuleInput) -> TrimRuleType:
        owner = signed_in_user(limit_mutations(info), "createTrimRule")
        services = info.context.services
        market_or_error(services.markets, input.symbol)
        try:
            rule_id, rule = await services.portfolio.create_trim(
                owner, input.symbol, input.gain_percent, input.sell_percent
            )
        except model.PortfolioError as exc:
            raise PortfolioGraphQLError(exc) from None
        return TrimRuleType(
            id=strawberry.ID(rule_id),
            symbol=input.symbol,
            gain_percent=rule.gain_percent,
            sell_percent=rule.sell_percent,
            last_trim_price=None,
        )

    @strawberry.mutation(description="Delete one of your trim rules; false if unknown.")
    async def delete_trim_rule(self, info: Info, id: strawberry.ID) -> bool:
        owner = signed_in_user(limit_mutations(info), "deleteTrimRule")
        return await info.context.services.portfolio.delete_trim(owner, str(id))

    @strawberry.mutation(
        description=f"Convert between assets (BTC, ETH, SOL, {CASH}) at the current prices, less "
        "CONVERSION_FEE_RATE."
    )
    async def convert(
        self, info: Info, from_asset: str, to_asset: str, amount: Decimal
    ) -> ConversionCompleted:
        owner = signed_in_user(limit_mutations(info), "convert")
        try:
            completed = await info.context.services.portfolio.convert(
                owner, from_asset, to_asset, amount
            )
        except model.PortfolioError as exc:
            raise PortfolioGraphQLError(exc) from None
        return ConversionCompleted.of(completed.to_payload())
