"""The simulated market makers' worker: one :class:`~domain.order_book.MarketMaker` per market
quoting into that market's :class:`~domain.order_book.OrderBook` around its oracle price, and the
book's changes published (``SIMULATED_FEEDS``; run by the cluster's leader).

Topics (``domain/topics.py``):

    book:<market>        OrderBookSnapshot   the whole book: the first event after a start (the
                                             book is rebuilt: what a client held before no
                                             longer applies)
                         OrderBookDelta      each change: the levels whose total moved (size 0:
                                             gone); the event's sequence is the book's
    book-state:<market>  OrderBookSnapshot   the whole book as of the newest change, numbered
                                             and stored with it (what a subscriber starts from)

Every ``interval_s`` the worker reads the markets' latest prices (one read) and re-quotes each
market whose price changed; a market's delta and its new state are numbered and stored together
(``Publisher.prepare_all(keep_latest=True)``), so a reader that finds the book topic where it was
around its read of the state has the state of exactly that sequence.

Users' resting limit orders. The paper exchange numbers, in the transaction that changes an
account, a ``book-order.rests`` or ``book-order.ends`` event on ``book-orders:<market>`` for each
LIMIT order the change touched (:func:`order_flow`); the worker takes them in
(:meth:`BookMakers.load_orders` once, from the stored accounts, then :meth:`BookMakers.on_order`
for each event after) and publishes the book's changes as it does the maker's. One lock orders
the book's changes and their numbering, so the topic's sequence is the book's.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal  # noqa: TC003  (a payload codec reads hints at runtime)
from typing import TYPE_CHECKING, Any

from domain.events import Unnumbered
from domain.order_book import (
    DELTA_EVENT,
    LEVEL_CHANGE,
    SNAPSHOT_EVENT,
    BookError,
    BookSide,
    MarketMaker,
    OrderBook,
)
from domain.paper_exchange import OrderType
from domain.payloads import PayloadCodec
from domain.topics import book_orders_topic, book_state_topic, book_topic

if TYPE_CHECKING:
    from collections.abc import Iterable

    from domain.markets import MarketCatalog
    from domain.order_book import BookDelta
    from domain.paper_exchange import Changes, Order
    from domain.ports import Clock, PriceRepository, Publisher

logger = logging.getLogger(__name__)

MAKER = "maker"
"""The source name of the simulated maker's ladder in every book."""


ORDER_RESTS = "book-order.rests"
ORDER_ENDS = "book-order.ends"


@dataclass(frozen=True, slots=True)
class RestingOrder:
    """A user's limit order as the book holds it: ``id`` is the owner's and the order's (order
    ids are only unique within an account); never published outside the leader's book."""

    id: str
    market: str
    side: BookSide
    price: Decimal
    size: Decimal

    @classmethod
    def of(cls, owner: str, order: Order) -> RestingOrder:
        assert order.price is not None  # a LIMIT order has one
        return cls(
            f"{owner}/{order.id}",
            order.symbol,
            BookSide.of(order.side),
            order.price,
            order.quantity - order.filled,
        )

    def to_payload(self) -> dict[str, Any]:
        return RESTING_ORDER.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RestingOrder:
        return RESTING_ORDER.decode(payload)


RESTING_ORDER = PayloadCodec(RestingOrder, decimals="fixed")


def order_flow(owner: str, changes: Changes) -> list[Unnumbered]:
    """The book's events of an account change: each LIMIT order it touched rests (open) or ends
    (filled, canceled)."""
    events = []
    for order in changes.orders:
        if order.type is not OrderType.LIMIT or order.price is None:
            continue
        resting = RestingOrder.of(owner, order)
        topic = book_orders_topic(order.symbol)
        if order.is_open:
            events.append(Unnumbered(topic, ORDER_RESTS, resting.to_payload()))
        else:
            events.append(Unnumbered(topic, ORDER_ENDS, {"id": resting.id, "market": order.symbol}))
    return events


def resting_orders(owner: str, orders: Iterable[Order]) -> list[RestingOrder]:
    """An account's open LIMIT orders as the book holds them."""
    return [
        RestingOrder.of(owner, o)
        for o in orders
        if o.type is OrderType.LIMIT and o.is_open and o.price is not None
    ]


def delta_payload(delta: BookDelta) -> dict[str, Any]:
    """An OrderBookDelta event's payload: the market and its changed levels (the sequence is the
    event's)."""
    return {"market": delta.market, "changes": [LEVEL_CHANGE.encode(c) for c in delta.changes]}


class BookMakers:
    def __init__(
        self,
        markets: MarketCatalog,
        *,
        prices: PriceRepository,
        publisher: Publisher,
        clock: Clock,
        interval_s: float = 0.1,
        levels: int = 50,
        seed: int | None = None,
    ) -> None:
        self.markets = markets
        self.prices = prices
        self.publisher = publisher
        self.clock = clock
        self.interval_s = interval_s
        self.books: dict[str, OrderBook] = {}
        self.makers = {
            m.id: MarketMaker(m, MAKER, levels=levels, seed=None if seed is None else seed + i)
            for i, m in enumerate(markets)
        }
        self.orders: dict[str, RestingOrder] = {}
        """The users' resting orders, by id: what a rebuilt book takes in again."""
        self._quoted: dict[str, Decimal] = {}
        self._announced: set[str] = set()
        self._lock = asyncio.Lock()
        self.rebuild()

    async def step(self) -> int:
        """Re-quote every market whose price moved; the number of events published."""
        async with self._lock:
            ids = [m.id for m in self.markets]
            latest = await self.prices.latest_of(ids)
            due: list[Unnumbered] = []
            for market_id in ids:
                price = latest.get(market_id)
                if price is None or self._quoted.get(market_id) == price.price:
                    continue
                delta = self.books[market_id].set_quotes(
                    MAKER, *self.makers[market_id].quote(price.price)
                )
                self._quoted[market_id] = price.price
                due += self._events(market_id, delta)
            return await self._send(due)

    async def load_orders(self, orders: Iterable[RestingOrder]) -> None:
        """The users' resting orders as stored, in place of any held (the worker's start, or its
        restart): the books are rebuilt with them and announced whole by the next step."""
        async with self._lock:
            self.orders = {o.id: o for o in orders if o.market in self.books}
            self.rebuild()

    async def on_order(self, type: str, payload: dict[str, Any]) -> int:
        """An order rests (``book-order.rests``) or ends (``book-order.ends``); the number of
        events published."""
        async with self._lock:
            due: list[Unnumbered] = []
            if type == ORDER_RESTS:
                order = RestingOrder.from_payload(payload)
                due += self._events(order.market, self._end(order.id))
                due += self._events(order.market, self._rest(order))
            elif type == ORDER_ENDS:
                due += self._events(payload["market"], self._end(payload["id"]))
            return await self._send(due)

    def _rest(self, order: RestingOrder) -> BookDelta | None:
        book = self.books.get(order.market)
        if book is None:
            return None
        try:
            delta = book.add_order(order.id, order.side, order.price, order.size)
        except BookError:
            logger.exception("the order book refused order %s", order.id)
            return None
        self.orders[order.id] = order
        return delta

    def _end(self, order_id: str) -> BookDelta | None:
        """The order leaves the book (None if it was not in it: filled at once, never rested)."""
        order = self.orders.pop(order_id, None)
        return None if order is None else self.books[order.market].remove_order(order_id)

    def _events(self, market_id: str, delta: BookDelta | None) -> list[Unnumbered]:
        """What publishes a change of ``market_id``'s book: the whole book the first time (and
        after a rebuild), else the delta; each with the whole book as the newest state. Nothing
        for a market without quotes yet (it is announced with its first)."""
        if market_id not in self._quoted:
            return []
        state = self.books[market_id].snapshot().to_payload()
        if market_id not in self._announced:
            self._announced.add(market_id)
            first = Unnumbered(book_topic(market_id), SNAPSHOT_EVENT, state)
        elif delta is not None:
            first = Unnumbered(book_topic(market_id), DELTA_EVENT, delta_payload(delta))
        else:
            return []
        return [first, Unnumbered(book_state_topic(market_id), SNAPSHOT_EVENT, state)]

    async def _send(self, due: list[Unnumbered]) -> int:
        """Number and store ``due`` together, then send them. A failure leaves books whose
        changes were not all published: they are rebuilt and announced whole again."""
        if not due:
            return 0
        try:
            events = await self.publisher.prepare_all(due, keep_latest=True)
        except BaseException:
            self.rebuild()
            raise
        for event in events:
            await self.publisher.send(event)
        return len(events)

    async def run(self) -> None:
        """Quote every ``interval_s`` until cancelled; a failed step is logged, not fatal (its
        books are rebuilt and announced whole by the next)."""
        while True:
            try:
                await self.step()
            except Exception:
                logger.exception("order book makers' step failed; their books are rebuilt")
            await self.clock.sleep(self.interval_s)

    def rebuild(self) -> None:
        """Start every book afresh, the users' resting orders in it, to be announced whole by
        the next step: after a failed publication, a book may hold changes its subscribers never
        saw."""
        self.books = {m.id: OrderBook(m) for m in self.markets}
        for order in self.orders.values():
            book = self.books.get(order.market)
            if book is not None:
                book.add_order(order.id, order.side, order.price, order.size)
        self._quoted.clear()
        self._announced.clear()
