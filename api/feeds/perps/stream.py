"""The perpetuals feed's subscription streams: a user's positions, a market's stats and funding,
the liquidation candidates."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING

from api.feeds.perps.types import (
    RATIO_PLACES,
    Fill,
    FundingRateChanged,
    LiquidationCandidates,
    LiquidationWarning,
    MarketStats,
    MarketStatsEvent,
    PerpsMarginAccount,
    Position,
    PositionClosed,
    PositionEvent,
    PositionLiquidated,
    PositionModified,
    PositionOpened,
    PositionsUpdate,
    PositionValuer,
    latest_prices,
)
from api.graphql.errors import StreamEndedError
from api.graphql.resume import resume, stamped
from api.graphql.streams import StreamWithPrices, decoded_price
from api.streaming.hub import HubError
from domain.perps_engine import (
    POSITION_CHANGE,
    POSITION_CLOSED,
    POSITION_LIQUIDATED,
    POSITION_OPENED,
    POSITION_WARNING,
)
from domain.topics import funding_topic, liquidations_topic, market_stats_topic, positions_topic

if TYPE_CHECKING:
    from decimal import Decimal

    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain.events import Event
    from domain.markets import MarketCatalog
    from domain.perps_engine import PositionChange


def _present_position_event(
    event: Event, change: PositionChange, markets: MarketCatalog, marks: dict[str, Decimal]
) -> PositionEvent:
    position = change.position
    at = event.published_at
    if event.type == POSITION_WARNING:
        mark, health = change.mark_price, change.health_factor
        assert mark is not None, "a warning has its mark"
        assert health is not None, "a warning has its health factor"
        return LiquidationWarning(
            position=Position.build(position, markets, mark),
            health_factor=health.quantize(RATIO_PLACES),
            mark_price=mark,
            at=at,
        )
    view = Position.build(position, markets, marks.get(position.market))
    fill = None if change.fill is None else Fill.of(change.fill)
    returned = change.returned
    if event.type == POSITION_OPENED and fill is not None:
        return PositionOpened(position=view, fill=fill, at=at)
    if event.type == POSITION_CLOSED and fill is not None and returned is not None:
        return PositionClosed(position=view, fill=fill, returned=returned, at=at)
    if (
        event.type == POSITION_LIQUIDATED
        and fill is not None
        and returned is not None
        and change.reward is not None
    ):
        return PositionLiquidated(
            position=Position.build(position, markets, fill.price),
            fill=fill,
            liquidation_reward=change.reward,
            returned=returned,
            at=at,
        )
    reason = "trade" if change.reason is None else change.reason
    return PositionModified(position=view, fill=fill, reason=reason, at=at)


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
    from what its revision already worked out (:class:`PositionValuer`), and only the prices of the
    markets the user holds are followed.
    """
    markets = services.markets
    topic = positions_topic(user)
    try:
        async with StreamWithPrices(services.hub, [topic]) as feed:
            resumption = await resume(
                services.history,
                services.hub,
                [topic],
                after,
                lambda: services.book.open_positions(user),
                always_snapshot=True,
            )
            assert resumption.snapshot is not None
            held = {p.id: PositionValuer(p, markets.get(p.market)) for p in resumption.snapshot}
            await feed.follow({v.market for v in held.values()})
            # Read after the snapshot: a trade in between is in both, and its event carries
            # the account with its revision, so the newest wins either way.
            account = await services.book.margin_account(user)
            account_view = PerpsMarginAccount.build(account)
            latest = await latest_prices(services)
            marks = {market: price.price for market, price in latest.items()}
            # When each mark was published: an update's pricedAt.
            published = {market: price.published_at for market, price in latest.items()}
            position = resumption.position

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

            def note_account(change: PositionChange) -> None:
                nonlocal account, account_view
                moved = change.account
                if moved is not None and moved.revision > account.revision:
                    account = moved
                    account_view = PerpsMarginAccount.build(account)

            async def follow_held() -> None:
                """Follow the markets held now; a market not followed until now may have moved
                meanwhile, so its mark is read again."""
                for market in await feed.follow({v.market for v in held.values()}):
                    stored = await services.prices.latest(market)
                    if stored is not None and marks.get(market) != stored[0].price:
                        marks[market] = stored[0].price
                        published[market] = stored[0].published_at

            def replayed(event: Event) -> list[PositionEvent]:
                change = POSITION_CHANGE.decode(event.payload)
                note_account(change)
                return [_present_position_event(event, change, markets, marks)]

            for item in resumption.opening(replayed):
                yield item
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
                change = POSITION_CHANGE.decode(event.payload)
                note_account(change)
                changed = change.position
                current = held.get(changed.id)
                if event.type == POSITION_WARNING:
                    if current is not None:
                        presented = _present_position_event(event, change, markets, marks)
                        yield stamped(presented, position)
                    continue
                if event.type in (POSITION_CLOSED, POSITION_LIQUIDATED):
                    if current is None:
                        continue  # already gone in the snapshot
                    del held[changed.id]
                elif current is not None and current.position.revision >= changed.revision:
                    continue  # the snapshot already showed it
                else:
                    held[changed.id] = PositionValuer(changed, markets.get(changed.market))
                await follow_held()
                presented = _present_position_event(event, change, markets, marks)
                yield stamped(presented, position)
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
            resumption = await resume(
                services.history,
                services.hub,
                streams,
                after,
                lambda: services.latest.latest(stats_topic),
                always_snapshot=True,
            )
            position = resumption.position
            current = resumption.snapshot
            last = 0 if current is None else current.sequence
            for item in resumption.opening(lambda event: [FundingRateChanged.from_event(event)]):
                yield item
            if current is not None:
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
