"""The portfolio dashboard's subscription stream: ``dashboardUpdates``."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING

import strawberry

from api.feeds.portfolio.desk import BLOCKCHAINS, asset_of
from api.feeds.portfolio.types import (
    BenchmarkTriggered,
    ConversionCompleted,
    DashboardUpdate,
    PortfolioUpdate,
    PortfolioValuer,
    PriceUpdate,
    TradeExecuted,
    TrimExecuted,
)
from api.graphql.errors import StreamEndedError
from api.graphql.resume import resume, stamped
from api.graphql.streams import decoded_price
from api.streaming.hub import HubError
from domain import paper_exchange as paper
from domain import portfolio as model
from domain.topics import TopicKind, dashboard_topic, kind_of, live_topic, price_topic

if TYPE_CHECKING:
    from decimal import Decimal

    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain.events import Event
    from domain.prices import OraclePrice


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
    valuer = PortfolioValuer(services, owner)

    def value() -> PortfolioUpdate | None:
        """The portfolio's value, if it moved enough to be sent."""
        update = valuer.update()
        if update is None or not gate.offer(update.total_value_usd):
            return None
        return PortfolioUpdate.of(update.to_payload())

    def happened(event: Event) -> list[DashboardUpdate]:
        if kind_of(event.topic) is TopicKind.LIVE:
            return [_trade(fill) for fill in _fills_of(event.payload)]
        return [_dashboard_event(event)]

    try:
        async with services.hub.merge(topics) as merged:
            resumption = await resume(
                services.history,
                services.hub,
                streams,
                after,
                valuer.load,
                always_snapshot=True,
            )
            position = resumption.position
            for item in resumption.opening(happened):
                yield item
            if (first := value()) is not None:
                yield stamped(first, position)
            async for event in merged:
                kind = kind_of(event.topic)
                if kind is TopicKind.PRICE:
                    price = decoded_price(event)
                    await valuer.refresh_reference()
                    valuer.prices[asset_of(price.market)] = price.price
                    yield stamped(_price_update(price, valuer.reference), position)
                elif not position.advance(event):
                    continue  # the start covered it
                else:
                    for update in happened(event):
                        yield stamped(update, position)
                    if kind is TopicKind.LIVE:
                        valuer.account = await services.exchange.account(owner)
                    elif event.type == model.ConversionCompleted.event_type:
                        valuer.holdings = await services.portfolio.portfolio(owner)
                if (moved := value()) is not None:
                    yield stamped(moved, position)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


_fills_of = paper.CHANGES.part("fills")
"""The fills of a paper account's account.changed event: the trades the dashboard shows."""


def _trade(fill: paper.Fill) -> TradeExecuted:
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
