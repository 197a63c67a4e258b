"""The portfolio dashboard's GraphQL types that its root fields and its stream both show: the
dashboard's events, and the portfolio valued at the latest prices (``PortfolioValuer``)."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import strawberry

from api.feeds.portfolio.desk import asset_of
from api.graphql.resume import Resumable, StreamReset
from domain import portfolio as model

if TYPE_CHECKING:
    from api.runtime.services import Services
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


class PortfolioValuer:
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
