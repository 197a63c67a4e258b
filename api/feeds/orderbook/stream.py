"""``orderBook(market:, depth:)``: the best ``depth`` levels of a market's book, then the deltas
that keep a client's copy equal to them (``domain/book_makers.py`` says what is published)."""

from __future__ import annotations

from decimal import Decimal
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
    note_merge(merge_messages)
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
                if merged is None or view is None:
                    continue
                if len(merged.changes) > view.shown:
                    # The book moved further than its depth (every level left, new ones came):
                    # the levels themselves say as much in fewer bytes.
                    yield stamped(OrderBookSnapshot.of(view.snapshot(), newest), position)
                else:
                    yield stamped(OrderBookDelta.of(merged, newest), position)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


def merge_messages(older: bytes, newer: bytes) -> bytes | None:
    """Two ``next`` messages of an ``orderBook`` subscription that wait on one socket, as one:
    the per-socket conflation of a client that reads slower than the book changes, inside a
    shared execution (:meth:`api.streaming.connection.Connection.write`).

    - a snapshot supersedes whatever waited before it: it is the newer one, whole;
    - a delta following a waiting delta joins it: from the older's ``previous`` to the newer's
      ``sequence`` (its ``at`` and ``cursor`` too), each level at its newest size;
    - a delta following a waiting snapshot is applied to it: the snapshot as of the newer's
      ``sequence``, its levels in their order (the view's deltas say which levels enter and
      leave its depth, so it keeps its depth).

    None, so the newer waits behind the older, for anything else: a reset, errors, a delta that
    does not follow, or a selection without what merging needs (``sequence``; a delta's
    ``previous`` and ``changes { side price size }``; a snapshot's ``bids``/``asks { price
    size }``)."""
    first, second = orjson.loads(older), orjson.loads(newer)
    before, after = _book_in(first), _book_in(second)
    if before is None or after is None:
        return None
    if "changes" not in after:
        return newer
    if after["previous"] != before["sequence"]:
        return None
    if "changes" in before:
        levels = {(change["side"], change["price"]): change for change in before["changes"]}
        for change in after["changes"]:
            levels[change["side"], change["price"]] = change
        after["previous"] = before["previous"]
        after["changes"] = list(levels.values())
        return orjson.dumps(second)
    for change in after["changes"]:
        _apply(before, change)
    for key in ("sequence", "at", "cursor"):
        if key in before and key in after:
            before[key] = after[key]
    return orjson.dumps(first)


def _apply(snapshot: dict[str, Any], change: dict[str, Any]) -> None:
    """One level change, applied to a snapshot's levels (bids highest first, asks lowest)."""
    bids = change["side"] == "BID"
    levels: list[dict[str, Any]] = snapshot["bids" if bids else "asks"]
    price, size = Decimal(change["price"]), Decimal(change["size"])
    at = 0
    while at < len(levels):
        held = Decimal(levels[at]["price"])
        if held == price:
            if size:
                levels[at]["size"] = change["size"]
            else:
                del levels[at]
            return
        if (held < price) if bids else (held > price):
            break
        at += 1
    if size:
        levels.insert(at, {"price": change["price"], "size": change["size"]})


def _book_in(message: Any) -> dict[str, Any] | None:
    """The snapshot or delta a ``next`` message carries, if it carries one that can be merged."""
    if not isinstance(message, dict) or message.get("type") != "next":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict) or payload.keys() != {"data"}:
        return None
    data = payload["data"]
    if not isinstance(data, dict) or len(data) != 1:
        return None
    [book] = data.values()
    if not isinstance(book, dict) or not isinstance(book.get("sequence"), int):
        return None
    if "changes" in book:
        changes = book["changes"]
        mergeable = (
            isinstance(book.get("previous"), int)
            and isinstance(changes, list)
            and all(_has(change, "side", "price", "size") for change in changes)
        )
    else:
        sides = [book.get("bids"), book.get("asks")]
        mergeable = all(
            isinstance(levels, list) and all(_has(level, "price", "size") for level in levels)
            for levels in sides
        )
    return book if mergeable else None


def _has(item: Any, *keys: str) -> bool:
    return (
        isinstance(item, dict)
        and all(isinstance(item.get(key), str) for key in keys)
        and ("side" not in keys or item["side"] in ("BID", "ASK"))
    )


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
