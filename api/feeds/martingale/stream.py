"""The martingale feed's subscription streams: a wallet's strategies' progress, the admins'
summary of every strategy, and the mining rounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING, TypeVar

from api.feeds.martingale.types import (
    MartingaleProgress,
    MartingaleSummary,
    MartingaleUpdate,
    Round,
    RoundEvent,
    progress_of_update,
)
from api.graphql.errors import StreamEndedError
from api.graphql.resume import resume, stamped
from api.streaming.hub import HubError
from domain.topics import martingale_topic, rounds_topic

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain.events import Event


T = TypeVar("T")


async def progress_stream(services: Services, wallet: str) -> AsyncIterator[MartingaleUpdate]:
    """The wallet's active strategies at once, then whenever a round turns or a strategy
    changes, and at least every MARTINGALE_REFRESH_S even when nothing happened."""

    async def current() -> MartingaleUpdate:
        owned = await services.martingale_store.strategies(wallet, active_only=True)
        return MartingaleUpdate(
            wallet_address=wallet,
            strategies=[MartingaleProgress.of(o.strategy) for o in owned],
            at=services.clock.now(),
        )

    def update(event: Event) -> MartingaleUpdate:
        return MartingaleUpdate(
            wallet_address=wallet,
            strategies=progress_of_update(event.payload),
            at=event.published_at,
        )

    async for item in _refreshed(services, martingale_topic(wallet), current, update):
        yield item


async def summary_stream(services: Services) -> AsyncIterator[MartingaleSummary]:
    """Every strategy by status at once, then as each round is settled, and at least every
    MARTINGALE_REFRESH_S (which also shows strategies started or stopped meanwhile)."""

    async def current() -> MartingaleSummary:
        return MartingaleSummary.of(await services.martingale_store.summary(), services.clock.now())

    def update(event: Event) -> MartingaleSummary:
        return MartingaleSummary.from_payload(event.payload, event.published_at)

    async for item in _refreshed(services, martingale_topic(), current, update):
        yield item


async def _refreshed(
    services: Services,
    topic: str,
    current: Callable[[], Awaitable[T]],
    update: Callable[[Event], T],
) -> AsyncIterator[T]:
    """``current()`` at once, then ``update(event)`` for each event of ``topic``, and
    ``current()`` again after MARTINGALE_REFRESH_S without one."""
    refresh = services.settings.martingale_refresh_s
    try:
        async with services.hub.subscribe(topic) as subscription:
            yield await current()
            while True:
                try:
                    event = await asyncio.wait_for(anext(subscription), refresh)
                except TimeoutError:
                    yield await current()
                    continue
                yield update(event)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


async def rounds_stream(
    services: Services, after: list[Cursor] | None = None
) -> AsyncIterator[RoundEvent]:
    """The current round at once, then each round event. Resumed (``after``): the round events
    since the cursor instead of the current round."""
    streams = [rounds_topic()]
    try:
        async with services.hub.subscribe(streams[0]) as subscription:
            resumption = await resume(
                services.history,
                services.hub,
                streams,
                after,
                services.martingale_store.latest_round,
            )
            position = resumption.position
            current = resumption.snapshot
            for item in resumption.opening(lambda event: [Round.from_payload(event.payload)]):
                yield item
            if current is not None:
                yield stamped(Round.of(current), position)
            async for event in subscription:
                if position.advance(event):
                    yield stamped(Round.from_payload(event.payload), position)
    except HubError as exc:
        raise StreamEndedError(exc) from exc
