"""The portfolio dashboard: one stream of what happens to a user's money (prices, trades, trims,
price alerts, portfolio value, conversions), price alerts ("benchmarks"), trim rules, spot
holdings and conversions."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import strawberry

from api.auth import Role
from api.feeds.portfolio.desk import BLOCKCHAINS, CASH, asset_of
from api.graphql.context import Info  # noqa: TC001
from api.graphql.errors import ClientError, StreamEndedError, market_or_error
from api.graphql.permissions import limit_mutations, require_role
from api.graphql.resume import (
    AFTER_DESCRIPTION,
    Resumable,
    StreamPosition,
    StreamReset,
    parse_after,
    stamped,
)
from api.streaming.hub import HubError
from domain import paper_exchange as paper
from domain import portfolio as model
from domain.prices import OraclePrice
from domain.topics import TopicKind, dashboard_topic, kind_of, live_topic, price_topic

if TYPE_CHECKING:
    from api.auth import Principal
    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain.events import Event
    from domain.paper_exchange import PaperAccount

REFERENCE_REFRESH_S = 60.0


strawberry.enum(model.Direction, name="AlertDirection")
AlertDirection: TypeAlias = model.Direction


@strawberry.type
class PriceUpdate(Resumable):
    asset: str
    blockchain: str
    price: Decimal
    change24h: Decimal | None = strawberry.field(description="Percent against 24 h ago.")
    timestamp: datetime


@strawberry.type(description="A fill of the user's paper account.")
class TradeExecuted(Resumable):
    trade_id: strawberry.ID
    asset: str
    action: str = strawberry.field(
        description="BUY or SELL (a string, like BenchmarkTriggered.action, so that both can be "
        "selected in one union)."
    )
    amount: Decimal
    price: Decimal
    timestamp: datetime


@strawberry.type(description="A trim rule sold part of a position: a partial take-profit.")
class TrimExecuted(Resumable):
    trim_id: strawberry.ID
    asset: str
    amount_sold: Decimal
    price: Decimal
    profit_realized: Decimal
    reasoning: str
    timestamp: datetime

    @classmethod
    def of(cls, p: dict[str, Any]) -> TrimExecuted:
        return _read_trim(p)


@strawberry.type(description="A price alert was reached.")
class BenchmarkTriggered(Resumable):
    benchmark_id: strawberry.ID
    asset: str
    target_price: Decimal
    current_price: Decimal
    action: str
    direction: AlertDirection
    timestamp: datetime

    @classmethod
    def of(cls, p: dict[str, Any]) -> BenchmarkTriggered:
        return _read_benchmark(p)


@strawberry.type(
    description="The portfolio's value moved by at least PORTFOLIO_UPDATE_THRESHOLD_PERCENT."
)
class PortfolioUpdate(Resumable):
    total_value_usd: Decimal
    change24h: Decimal | None = strawberry.field(description="Percent against 24 h ago.")
    change24h_usd: Decimal | None = strawberry.field(name="change24hUsd")
    timestamp: datetime

    @classmethod
    def of(cls, p: dict[str, Any]) -> PortfolioUpdate:
        return _read_update(p)


@strawberry.type
class ConversionCompleted(Resumable):
    conversion_id: strawberry.ID
    from_asset: str
    to_asset: str
    from_amount: Decimal
    to_amount: Decimal
    fee_usd: Decimal
    timestamp: datetime

    @classmethod
    def of(cls, p: dict[str, Any]) -> ConversionCompleted:
        return _read_conversion(p)


_read_trim = model.TRIM_EXECUTED.reader(TrimExecuted, timestamp="at")
_read_benchmark = model.BENCHMARK_TRIGGERED.reader(BenchmarkTriggered, timestamp="at")
_read_update = model.PORTFOLIO_UPDATE.reader(
    PortfolioUpdate, change24h="change_24h", change24h_usd="change_24h_usd", timestamp="at"
)
_read_conversion = model.CONVERSION_COMPLETED.reader(ConversionCompleted, timestamp="at")
"""Each dashboard event's payload as the schema shows it, made in one step."""


DashboardUpdate = Annotated[
    PriceUpdate
    | TradeExecuted
    | TrimExecuted
    | BenchmarkTriggered
    | PortfolioUpdate
    | ConversionCompleted
    | StreamReset,
    strawberry.union("DashboardUpdate"),
]


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


def _owner(principal: Principal, what: str) -> str:
    require_role(principal, Role.USER, what=what)
    assert principal.sub is not None
    return principal.sub


class _Valuer:
    """A user's portfolio value from their holdings, paper account and the latest prices; its
    24 h change assumes today's holdings were held all day (price moves only)."""

    def __init__(self, services: Services, owner: str) -> None:
        self.services = services
        self.owner = owner
        self.holdings = model.Portfolio()
        self.account: PaperAccount | None = None
        self.prices: dict[str, Decimal] = {}
        self.reference: dict[str, Decimal] = {}
        self._reference_at = 0.0

    async def load(self) -> None:
        desk = self.services.portfolio
        self.holdings = await desk.portfolio(self.owner)
        self.account = await self.services.exchange.account(self.owner)
        self.prices = await desk.asset_prices()
        await self.refresh_reference(force=True)

    async def refresh_reference(self, force: bool = False) -> None:
        if force or time.monotonic() - self._reference_at > REFERENCE_REFRESH_S:
            self.reference = await self.services.portfolio.prices_24h_ago()
            self._reference_at = time.monotonic()

    def _at(self, prices: dict[str, Decimal]) -> Decimal | None:
        assert self.account is not None
        marks = {
            m.id: prices[asset_of(m.id)] for m in self.services.markets if asset_of(m.id) in prices
        }
        net = self.account.balance(marks).net_balance
        try:
            return model.Portfolio(self.holdings.holdings, perp_equity=net).value(prices)
        except model.PortfolioError:
            return None  # an asset held has no price yet

    def update(self) -> model.PortfolioUpdate | None:
        now_value = self._at(self.prices)
        if now_value is None:
            return None
        before = self._at({**self.prices, **self.reference})
        return model.PortfolioUpdate.of(now_value, before, self.services.clock.now())


def _marks(services: Services, prices: dict[str, Decimal]) -> dict[str, Decimal]:
    """Asset prices as the paper account's marks, by market."""
    return {m.id: prices[asset_of(m.id)] for m in services.markets if asset_of(m.id) in prices}


def _price_update(price: OraclePrice, reference: dict[str, Decimal]) -> PriceUpdate:
    asset = asset_of(price.market)
    change = model.PriceUpdate.of(
        asset,
        BLOCKCHAINS.get(asset, asset.lower()),
        price.price,
        reference.get(asset),
        price.published_at,
    )
    return PriceUpdate(
        asset=asset,
        blockchain=change.blockchain,
        price=price.price,
        change24h=change.change_24h,
        timestamp=price.published_at,
    )


async def dashboard_stream(
    services: Services, owner: str, after: list[Cursor] | None = None
) -> AsyncIterator[DashboardUpdate]:
    """The portfolio's value at once; then every price, trade, trim, alert and conversion, and
    the value again whenever it moved by at least the threshold since the last one sent.
    Resumed (``after``): the trades, trims, alerts and conversions since the cursor first."""
    streams = [dashboard_topic(owner), live_topic(owner)]
    topics = streams + [price_topic(m.id) for m in services.markets]
    gate = model.PortfolioUpdateGate(services.settings.portfolio_update_threshold_percent)
    valuer = _Valuer(services, owner)

    def value() -> PortfolioUpdate | None:
        update = valuer.update()
        if update is None or not gate.offer(update.total_value_usd):
            return None
        return stamped(PortfolioUpdate.of(update.to_payload()), position)

    def happened(event: Event) -> list[DashboardUpdate]:
        if kind_of(event.topic) is TopicKind.LIVE:
            return [stamped(_trade(fill), position) for fill in event.payload["fills"]]
        return [stamped(_dashboard_event(event), position)]

    try:
        async with services.hub.merge(topics) as merged:
            start = await services.history.start(streams, after, valuer.load, always_snapshot=True)
            position = StreamPosition(streams, start.origin)
            for event in start.replay:
                position.advance(event)
                for update in happened(event):
                    yield update
            if start.not_recovered is not None:
                yield position.reset(start.not_recovered)
            if (first := value()) is not None:
                yield first
            async for event in merged:
                kind = kind_of(event.topic)
                if kind is TopicKind.PRICE:
                    price = OraclePrice.from_payload(event.payload)
                    await valuer.refresh_reference()
                    valuer.prices[asset_of(price.market)] = price.price
                    yield stamped(_price_update(price, valuer.reference), position)
                elif not position.advance(event):
                    continue  # the start covered it
                else:
                    for update in happened(event):
                        yield update
                    if kind is TopicKind.LIVE:
                        valuer.account = await services.exchange.account(owner)
                    elif event.type == model.ConversionCompleted.event_type:
                        valuer.holdings = await services.portfolio.portfolio(owner)
                if (moved := value()) is not None:
                    yield moved
    except HubError as exc:
        raise StreamEndedError(exc) from exc


def _trade(payload: dict[str, Any]) -> TradeExecuted:
    fill = paper.FILL.decode(payload)
    return TradeExecuted(
        trade_id=strawberry.ID(fill.id),
        asset=fill.symbol,
        action=fill.side.value,
        amount=fill.quantity,
        price=fill.price,
        timestamp=fill.at,
    )


def _dashboard_event(event: Event) -> DashboardUpdate:
    p = event.payload
    if event.type == model.TrimExecuted.event_type:
        return TrimExecuted.of(p)
    if event.type == model.BenchmarkTriggered.event_type:
        return BenchmarkTriggered.of(p)
    return ConversionCompleted.of(p)


@strawberry.type
class PortfolioQuery:
    @strawberry.field(description="The signed-in user's portfolio: holdings and value.")
    async def portfolio(self, info: Info) -> Portfolio:
        services = info.context.services
        owner = _owner(info.context.principal, "portfolio")
        valuer = _Valuer(services, owner)
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
        owner = _owner(info.context.principal, "priceAlerts")
        return [
            _alert_type(alert, triggered_at)
            for alert, triggered_at in await info.context.services.portfolio.alerts(owner)
        ]

    @strawberry.field(description="The signed-in user's trim rules.")
    async def trim_rules(self, info: Info) -> list[TrimRuleType]:
        owner = _owner(info.context.principal, "trimRules")
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
        owner = _owner(info.context.principal, "dashboardUpdates")
        return dashboard_stream(info.context.services, owner, parse_after(after, 2))


@strawberry.type
class PortfolioMutation:
    @strawberry.mutation(description="Create a price alert; it fires once when crossed.")
    async def create_price_alert(self, info: Info, input: PriceAlertInput) -> PriceAlertType:
        owner = _owner(limit_mutations(info), "createPriceAlert")
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
        owner = _owner(limit_mutations(info), "deletePriceAlert")
        return await info.context.services.portfolio.delete_alert(owner, str(id))

    @strawberry.mutation(
        description="A rule that sells sellPercent of your long position in symbol whenever "
        "the price is gainPercent above its entry (and above the last trim)."
    )
    async def create_trim_rule(self, info: Info, input: TrimRuleInput) -> TrimRuleType:
        owner = _owner(limit_mutations(info), "createTrimRule")
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
        owner = _owner(limit_mutations(info), "deleteTrimRule")
        return await info.context.services.portfolio.delete_trim(owner, str(id))

    @strawberry.mutation(
        description=f"Convert between assets (BTC, ETH, SOL, {CASH}) at the current prices, less "
        "CONVERSION_FEE_RATE."
    )
    async def convert(
        self, info: Info, from_asset: str, to_asset: str, amount: Decimal
    ) -> ConversionCompleted:
        owner = _owner(limit_mutations(info), "convert")
        try:
            completed = await info.context.services.portfolio.convert(
                owner, from_asset, to_asset, amount
            )
        except model.PortfolioError as exc:
            raise PortfolioGraphQLError(exc) from None
        return ConversionCompleted.of(completed.to_payload())
