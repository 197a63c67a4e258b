"""The martingale feed's subscription streams: strategies' progress, and the mining rounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING

from api.feeds.martingale.types import (
    MartingaleProgress,
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
    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain.events import Event


async def progress_stream(
    services: Services, wallet: str | None
) -> AsyncIterator[MartingaleUpdate]:
    """The wallet's (or every) active strategies at once, then whenever a round turns or a
    strategy changes, and at least every MARTINGALE_REFRESH_S even when nothing happened."""
    refresh = services.settings.martingale_refresh_s
    topic = martingale_topic(wallet)
    try:
        async with services.hub.subscribe(topic) as subscription:
            yield await _current(services, wallet)
            while True:
                try:
                    event = await asyncio.wait_for(anext(subscription), refresh)
                except TimeoutError:
                    yield await _current(services, wallet)
                    continue
                yield _update(event, wallet)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


async def _current(services: Services, wallet: str | None) -> MartingaleUpdate:
    owned = await services.martingale_store.strategies(wallet, active_only=True)
    return MartingaleUpdate(
        wallet_address=wallet,
        strategies=[MartingaleProgress.of(o.strategy) for o in owned],
        at=services.clock.now(),
    )


def _update(event: Event, wallet: str | None) -> MartingaleUpdate:
    return MartingaleUpdate(
        wallet_address=wallet,
        strategies=progress_of_update(event.payload),
        at=event.published_at,
    )


async def rounds_stream(
    services: Services, after: list[Cursor] | None = None
) -> AsyncIterator[RoundEvent]:
    """The current round at once, then each round event. Resumed (``after``): the round events
    since the cursor instead of the current round."""
    streams = [rounds_topic()]
    try:
        async with services.hub.subscribe(streams[0]) as subscription:
            resumption = await resume(
                services.history, streams, after, services.martingale_store.latest_round
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
