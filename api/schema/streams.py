"""Glue between the hub and subscription resolvers."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from api.hub import HubError
from api.schema.errors import StreamEndedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from api.hub import Hub
    from domain.events import Event

T = TypeVar("T")


async def live(
    hub: Hub,
    topic: str,
    snapshot: Callable[[], Awaitable[Event | None]],
    present: Callable[[Event], T],
) -> AsyncIterator[T]:
    """The topic's current state, then every change, each shown through ``present``.

    A stream the hub ends (lagging subscriber, backend failure, shutdown) ends with a GraphQL error
    that says why, so the client knows to resubscribe.
    """
    try:
        async for event in hub.live(topic, snapshot):
            yield present(event)
    except HubError as exc:
        raise StreamEndedError(exc) from exc
