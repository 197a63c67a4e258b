"""Glue between the hub and subscription resolvers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, Self, TypeVar

from api.graphql.errors import StreamEndedError
from api.streaming.hub import HubError
from domain.prices import ORACLE_PRICE, OraclePrice
from domain.topics import price_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Set
    from types import TracebackType

    from api.streaming.hub import Hub
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


class StreamWithPrices:
    """A subscription's stream topics and the price topics of the markets it holds something in,
    read as one merged hub subscription (enter it before reading any snapshot).

    Every market ticks on its own, and each tick steps every reader of its topic: a subscriber
    merged with every market's prices pays that step for markets it holds nothing in (12 to 17 us
    for a positions stream, 60 to 90 us for a live dashboard, ``bench/positions_tick.py``).

    :meth:`follow` changes the markets: a subscription over the new set is entered before the old
    one is left, and what the old one still holds is read first. A stream event can then arrive
    twice (the reader drops the second by its sequence, as any event its start covered); a price
    can arrive twice, which changes nothing.
    """

    def __init__(self, hub: Hub, streams: list[str]) -> None:
        self._hub = hub
        self._streams = streams
        self._merged = hub.merge(streams)
        self._backlog: list[Event] = []
        """What the subscription left by :meth:`follow` still held, to be read first."""
        self.markets: frozenset[str] = frozenset()
        """The markets whose prices are followed."""

    async def __aenter__(self) -> Self:
        await self._merged.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._merged.__aexit__(exc_type, exc, tb)

    async def follow(self, markets: Set[str]) -> frozenset[str]:
        """Follow the prices of exactly ``markets`` from now on. Returns the markets that were not
        followed before: their last known prices may be stale."""
        if markets == self.markets:
            return frozenset()
        fresh = self._hub.merge(self._streams + [price_topic(m) for m in sorted(markets)])
        await fresh.__aenter__()
        old, self._merged = self._merged, fresh
        try:
            while (event := old.poll()) is not None:
                self._backlog.append(event)
        finally:
            await old.__aexit__(None, None, None)
        added = frozenset(markets) - self.markets
        self.markets = frozenset(markets)
        return added

    def poll(self) -> Event | None:
        """The next event if one is already waiting, without waiting for one."""
        return self._backlog.pop(0) if self._backlog else self._merged.poll()

    async def next(self) -> Event:
        return self._backlog.pop(0) if self._backlog else await anext(self._merged)


class OncePerEvent(Generic[T]):
    """``function(event)`` computed once for every subscriber of an event.

    The hub hands every subscriber of a topic the same :class:`Event` object, so the first
    stream to read a tick computes it and the others find it here by identity. The newest
    :data:`KEPT_EVENTS` events are kept (with their events, so an identity is never reused while
    kept): a subscriber a few ticks behind still finds its tick, and memory stays bounded. The
    function is pure, and what it makes is only read.
    """

    def __init__(self, function: Callable[[Event], T], size: int = 0) -> None:
        self._function = function
        self._size = size or KEPT_EVENTS
        self._kept: dict[int, tuple[Event, T]] = {}

    def __call__(self, event: Event) -> T:
        kept = self._kept.get(id(event))
        if kept is not None and kept[0] is event:
            return kept[1]
        value = self._function(event)
        self._kept[id(event)] = (event, value)
        if len(self._kept) > self._size:
            del self._kept[next(iter(self._kept))]
        return value


KEPT_EVENTS = 64
"""Events whose result is kept (a few per market: readers may be a tick or two behind)."""


def _decode_price(event: Event) -> OraclePrice:
    return ORACLE_PRICE.decode(event.payload)


decoded_price = OncePerEvent(_decode_price)
"""The :class:`OraclePrice` of a price event, decoded once for all its readers."""
