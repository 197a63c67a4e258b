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
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from domain.events import Unnumbered
from domain.order_book import (
    DELTA_EVENT,
    LEVEL_CHANGE,
    SNAPSHOT_EVENT,
    MarketMaker,
    OrderBook,
)
from domain.topics import book_state_topic, book_topic

if TYPE_CHECKING:
    from decimal import Decimal

    from domain.markets import MarketCatalog
    from domain.order_book import BookDelta
    from domain.ports import Clock, PriceRepository, Publisher

logger = logging.getLogger(__name__)

MAKER = "maker"
"""The source name of the simulated maker's ladder in every book."""


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
        self._quoted: dict[str, Decimal] = {}
        self._announced: set[str] = set()
        self.rebuild()

    async def step(self) -> int:
        """Re-quote every market whose price moved; the number of events published."""
        ids = [m.id for m in self.markets]
        latest = await self.prices.latest_of(ids)
        due: list[Unnumbered] = []
        for market_id in ids:
            price = latest.get(market_id)
            if price is None or self._quoted.get(market_id) == price.price:
                continue
            book = self.books[market_id]
            delta = book.set_quotes(MAKER, *self.makers[market_id].quote(price.price))
            self._quoted[market_id] = price.price
            state = book.snapshot().to_payload()
            if market_id not in self._announced:
                # A new book: clients rebuild theirs from it.
                due.append(Unnumbered(book_topic(market_id), SNAPSHOT_EVENT, state))
            elif delta is not None:
                due.append(Unnumbered(book_topic(market_id), DELTA_EVENT, delta_payload(delta)))
            else:
                continue
            due.append(Unnumbered(book_state_topic(market_id), SNAPSHOT_EVENT, state))
        if not due:
            return 0
        events = await self.publisher.prepare_all(due, keep_latest=True)
        for event in events:
            self._announced.add(event.payload["market"])
            await self.publisher.send(event)
        return len(events)

    async def run(self) -> None:
        """Quote every ``interval_s`` until cancelled; a failed step is logged, not fatal (its
        markets are quoted again from scratch: their books are announced anew)."""
        while True:
            try:
                await self.step()
            except Exception:
                logger.exception("order book makers' step failed; rebuilding their books")
                self.rebuild()
            await self.clock.sleep(self.interval_s)

    def rebuild(self) -> None:
        """Start every book afresh, to be announced whole by the next step: after a failed
        step, a book may hold quotes its subscribers never saw."""
        self.books = {m.id: OrderBook(m) for m in self.markets}
        self._quoted.clear()
        self._announced.clear()
