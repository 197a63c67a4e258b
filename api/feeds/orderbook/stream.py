"""``orderBook(market:, depth:)``: the best ``depth`` levels of a market's book, then the deltas
that keep a client's copy equal to them (``domain/book_makers.py`` says what is published)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from api.feeds.orderbook.types import OrderBookDelta, OrderBookSnapshot, Trade
from api.graphql.errors import ClientError, StreamEndedError
from api.graphql.resume import StreamReset, resume, stamped
from api.streaming.hub import HubError, note_merge
from domain.order_book import (
    BOOK_SNAPSHOT,
    DELTA_EVENT,
    LEVEL_CHANGE,
    SNAPSHOT_EVENT,
    BookDelta,
    BookSnapshot,
    Conflator,
    DepthView,
    PublicTrade,
    SequenceGapError,
)
from domain.topics import book_state_topic, book_topic, trades_topic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain.events import Event


BOOK_QUEUE = 4096
"""Book changes a subscription holds before it is ended as lagging: more than other streams'
(SUBSCRIBER_QUEUE_SIZE), as the stream merges whatever waits into one delta when it reads."""


def book_of(event: Event, sequence: int) -> BookSnapshot:
    """The whole book an OrderBookSnapshot event carries, as of the book topic's ``sequence``."""
    stored = BOOK_SNAPSHOT.decode(event.payload)
    return BookSnapshot(stored.market, sequence, stored.bids, stored.asks)


def _delta(event: Event) -> BookDelta:
    changes = tuple(LEVEL_CHANGE.decode(c) for c in event.payload["changes"])
    return BookDelta(event.payload["market"], event.sequence - 1, event.sequence, changes)


async def order_book_stream(
    services: Services, market: str, depth: int, after: list[Cursor] | None = None
) -> AsyncIterator[OrderBookSnapshot | OrderBookDelta | StreamReset]:
    """The snapshot, then a delta whenever the best ``depth`` levels change. Resumed with
    ``after``, the snapshot comes all the same (a ``StreamReset`` before it when the cursor is
    not this stream's): a cursor does not say which ``depth`` the client held, and a view of
    another depth would not apply to it."""
    topic = book_topic(market)
    note_merge(merge_deltas)
    try:
        async with services.hub.subscribe(topic, BOOK_QUEUE) as subscription:
            resumption = await resume(
                services.history,
                services.hub,
                [topic],
                after,
                lambda: services.history.latest(book_state_topic(market)),
                always_snapshot=True,
            )
            position = resumption.position
            for item in resumption.opening(lambda event: ()):
                yield item
            view: DepthView | None = None
            state = resumption.snapshot
            if state is not None:
                view = DepthView(depth, book_of(state, position.sequence(topic)))
                yield stamped(OrderBookSnapshot.of(view.snapshot(), state.published_at), position)
            async for first in subscription:
                # Whatever else is already waiting is taken with it: a reader that fell behind
                # (a shared execution serving many sockets, a busy moment) gets the levels that
                # changed meanwhile once, each at its newest size, in one delta.
                waiting = [first]
                while (event := subscription.queue.take()) is not None:
                    waiting.append(event)
                pending: Conflator | None = None
                newest = first.published_at
                for event in waiting:
                    if not position.advance(event):
                        continue
                    if event.type == SNAPSHOT_EVENT:
                        # The book was rebuilt (its publisher started afresh): start over.
                        view, pending = DepthView(depth, book_of(event, event.sequence)), None
                        yield stamped(
                            OrderBookSnapshot.of(view.snapshot(), event.published_at), position
                        )
                    elif event.type == DELTA_EVENT and view is not None:
                        try:
                            shown = view.apply(_delta(event))
                        except SequenceGapError as exc:
                            raise ClientError(
                                f"the order book stream of {market} missed a change ({exc}); "
                                "resubscribe",
                                code="STREAM_GAP",
                            ) from exc
                        if shown is not None:
                            pending = pending or Conflator(shown.previous)
                            pending.push(shown)
                            newest = event.published_at
                merged = None if pending is None else pending.flush()
                if merged is not None:
                    yield stamped(OrderBookDelta.of(merged, newest), position)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


def merge_deltas(older: bytes, newer: bytes) -> bytes | None:
    """Two ``next`` messages of an ``orderBook`` subscription that wait on one socket, as one:
    the per-socket conflation of a client that reads slower than the book changes, inside a
    shared execution (:meth:`api.streaming.connection.Connection.write`). The merged delta goes
    from the older's ``previous`` to the newer's ``sequence`` (its ``at`` and ``cursor`` too),
    each level at its newest size. None, so the newer waits behind the older, unless both are
    deltas with ``previous``, ``sequence`` and ``changes { side price size }`` selected, the newer
    following the older: a snapshot (a rebuilt book, a reset) is never merged."""
    first, second = orjson.loads(older), orjson.loads(newer)
    before, after = _delta_in(first), _delta_in(second)
    if before is None or after is None or after["previous"] != before["sequence"]:
        return None
    levels = {(change["side"], change["price"]): change for change in before["changes"]}
    for change in after["changes"]:
        levels[change["side"], change["price"]] = change
    after["previous"] = before["previous"]
    after["changes"] = list(levels.values())
    return orjson.dumps(second)


def _delta_in(message: Any) -> dict[str, Any] | None:
    """The delta a ``next`` message carries, if it carries one whose levels can be merged."""
    if not isinstance(message, dict) or message.get("type") != "next":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict) or payload.keys() != {"data"}:
        return None
    data = payload["data"]
    if not isinstance(data, dict) or len(data) != 1:
        return None
    [delta] = data.values()
    if not isinstance(delta, dict):
        return None
    changes = delta.get("changes")
    if not (
        isinstance(delta.get("previous"), int)
        and isinstance(delta.get("sequence"), int)
        and isinstance(changes, list)
        and all(isinstance(c, dict) and {"side", "price", "size"} <= c.keys() for c in changes)
    ):
        return None
    return delta


async def trades_stream(
    services: Services, market: str, after: list[Cursor] | None = None
) -> AsyncIterator[Trade | StreamReset]:
    """Every trade on the market's tape from now on; resumed with ``after``, the trades missed
    since first."""
    topic = trades_topic(market)
    try:
        async with services.hub.subscribe(topic) as subscription:
            resumption = await resume(services.history, services.hub, [topic], after, _nothing)
            position = resumption.position
            for item in resumption.opening(
                lambda event: [Trade.of(PublicTrade.from_payload(event.payload))]
            ):
                yield item
            async for event in subscription:
                if position.advance(event):
                    yield stamped(Trade.of(PublicTrade.from_payload(event.payload)), position)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


async def _nothing() -> None:
    """The tape has no state to start from: a subscriber gets the trades from now on."""
