"""The level-2 order book of a market, the deltas that keep a client's copy of it equal to it, and
the simulated market makers that quote into it.

Levels. Each side maps a price (on the market's tick) to the total size resting there (on its
step). Liquidity comes from *sources* that add up at a level and never see each other: a market
maker's ladder, replaced whole by :meth:`OrderBook.set_quotes`, and each user's resting limit
order (:meth:`OrderBook.add_order`, ``reduce_order``, ``remove_order``). The book does not match:
the paper exchange fills users' limit orders against the mark price, around which the makers
quote, so only one source's own quotes are refused when crossed. Prices are kept with the tick's
decimal places and sizes with the step's (``65000.10`` is stored and sent as ``65000.1`` on a
0.1 tick), so a level's price reads the same in every payload and keys it.

Deltas. Every mutation returns one :class:`BookDelta`, or None when no level changed:

    sequence  the book's sequence after it, one more than before (a new book starts at 0)
    previous  the sequence it applies to: here ``sequence - 1``
    changes   a :class:`LevelChange` (side, price, size) per level that changed, ``size`` its new
              total, 0 when the level is gone; bids first, best (highest) first, then asks,
              best (lowest) first

A client applies a delta when its ``previous`` is the sequence it has (its snapshot's, or the
last delta's it applied); otherwise it missed one and takes a new snapshot. A
:class:`DepthView` (the top ``depth`` levels) and a :class:`Conflator` (a slow client's pending
deltas merged per level) send fewer deltas than the book makes, so their ``previous`` may be more
than one below their ``sequence``: the chain, not the step, is what a client checks. A view's
subscriber therefore starts from the view's snapshot (:meth:`DepthView.snapshot`: the sequence
of the view's last delta), not the book's. A size 0 for a level the client does not have asks
for nothing (a conflated level that came and went).

Errors (:class:`BookError`, a ``TradeError``: ``code`` stable, the message says why):

    INVALID_PRICE    not finite, not positive, not below MAX_AMOUNT, or off the market's tick
    INVALID_SIZE     not finite, not positive, not below MAX_AMOUNT, or off the market's step;
                     a reduction of more than the order has
    CROSSED_QUOTES   a source's best bid at or above its own best ask
    DUPLICATE_ORDER  an order id that is already resting
    UNKNOWN_ORDER    an order id that is not resting
    SEQUENCE_GAP     (:class:`SequenceGapError`) a delta whose ``previous`` is not the sequence
                     of the copy it is applied to

Cost. Each side keeps its prices in a sorted list (``sortedcontainers``): a level that appears
or goes is O(log n), the top ``depth`` levels O(log n + depth); nothing is sorted but each
delta's own changes.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, NamedTuple

from sortedcontainers import SortedList  # type: ignore[import-untyped]

from domain.paper_exchange import OrderSide
from domain.payloads import PayloadCodec
from domain.perps_trades import MAX_AMOUNT, TradeError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

    from domain.markets import Market

SNAPSHOT_EVENT = "OrderBookSnapshot"
"""The event type of a published :class:`BookSnapshot`."""
DELTA_EVENT = "OrderBookDelta"
"""The event type of a published :class:`BookDelta`."""
TRADE_EVENT = "PublicTrade"
"""The event type of a published :class:`PublicTrade`."""

_ZERO = Decimal(0)


class BookError(TradeError):
    """Input the book refuses; ``code`` is stable (module docstring), the message says why."""


class SequenceGapError(BookError):
    """A delta that does not follow the sequence of the copy it is applied to: the copy missed
    something (or the delta is one it already has) and needs a new snapshot."""

    def __init__(self, expected: int, previous: int) -> None:
        super().__init__(
            "SEQUENCE_GAP", f"a delta that follows sequence {previous}, applied at {expected}"
        )
        self.expected = expected
        self.previous = previous


class BookSide(enum.Enum):
    BID = "BID"
    ASK = "ASK"

    @classmethod
    def of(cls, side: OrderSide) -> BookSide:
        """The side a resting order of ``side`` adds to: a BUY bids, a SELL asks."""
        return cls.BID if side is OrderSide.BUY else cls.ASK


@dataclass(frozen=True, slots=True)
class Level:
    price: Decimal
    size: Decimal


@dataclass(frozen=True, slots=True)
class LevelChange:
    side: BookSide
    price: Decimal
    size: Decimal
    """The level's new total size; 0: the level is gone."""


@dataclass(frozen=True, slots=True)
class BookDelta:
    market: str
    previous: int
    """The sequence this delta applies to."""
    sequence: int
    """The sequence of the book once it is applied."""
    changes: tuple[LevelChange, ...]

    def to_payload(self) -> dict[str, Any]:
        return BOOK_DELTA.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> BookDelta:
        return BOOK_DELTA.decode(payload)


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """The book's levels, best first on each side, as of ``sequence``."""

    market: str
    sequence: int
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]

    def to_payload(self) -> dict[str, Any]:
        return BOOK_SNAPSHOT.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> BookSnapshot:
        return BOOK_SNAPSHOT.decode(payload)


@dataclass(frozen=True, slots=True)
class PublicTrade:
    """One trade on the public tape: ``side`` is the taker's."""

    id: str
    market: str
    side: OrderSide
    price: Decimal
    size: Decimal
    at: datetime

    def to_payload(self) -> dict[str, Any]:
        return PUBLIC_TRADE.encode(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PublicTrade:
        return PUBLIC_TRADE.decode(payload)


LEVEL = PayloadCodec(Level, decimals="fixed")
LEVEL_CHANGE = PayloadCodec(LevelChange, decimals="fixed")
BOOK_DELTA = PayloadCodec(BookDelta, decimals="fixed")
BOOK_SNAPSHOT = PayloadCodec(BookSnapshot, decimals="fixed")
PUBLIC_TRADE = PayloadCodec(PublicTrade, decimals="fixed")


class Quotes(NamedTuple):
    """A source's ladder: price -> size on each side (``book.set_quotes(source, *quotes)``)."""

    bids: Mapping[Decimal, Decimal]
    asks: Mapping[Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class _Resting:
    side: BookSide
    price: Decimal
    size: Decimal


class _Ladder:
    """One side's levels: price -> total size, the prices kept sorted."""

    __slots__ = ("_bids", "prices", "sizes")

    def __init__(self, side: BookSide) -> None:
        self.sizes: dict[Decimal, Decimal] = {}
        self.prices = SortedList()
        self._bids = side is BookSide.BID

    def set(self, price: Decimal, size: Decimal) -> None:
        """Sets a level's total; 0 removes it."""
        if size:
            if price not in self.sizes:
                self.prices.add(price)
            self.sizes[price] = size
        elif self.sizes.pop(price, None) is not None:
            self.prices.remove(price)

    def top(self, depth: int | None = None) -> dict[Decimal, Decimal]:
        """The best ``depth`` levels (every level if None), best first."""
        count = len(self.prices)
        if self._bids:
            start = 0 if depth is None else max(0, count - depth)
            prices = self.prices.islice(start, count, reverse=True)
        else:
            prices = self.prices.islice(0, depth)
        sizes = self.sizes
        return {p: sizes[p] for p in prices}

    def edge(self, depth: int) -> Decimal | None:
        """The ``depth``-th best price, or None if the side has fewer levels."""
        count = len(self.prices)
        if count < depth:
            return None
        edge: Decimal = self.prices[count - depth] if self._bids else self.prices[depth - 1]
        return edge

    def reaches(self, price: Decimal, edge: Decimal) -> bool:
        """Whether ``price`` is at ``edge`` or better."""
        return price >= edge if self._bids else price <= edge


def _best_first(side: BookSide, changes: Iterable[LevelChange]) -> list[LevelChange]:
    """``changes`` of one side in the canonical order: best price first."""
    return sorted(changes, key=_price_of, reverse=side is BookSide.BID)


def _price_of(change: LevelChange) -> Decimal:
    return change.price


def _levels(top: Mapping[Decimal, Decimal]) -> tuple[Level, ...]:
    return tuple(Level(p, s) for p, s in top.items())


def _places(increment: Decimal) -> Decimal:
    """The quantum that keeps a multiple of ``increment`` with its decimal places."""
    return Decimal((0, (1,), min(int(increment.as_tuple().exponent), 0)))


_NO_QUOTES = Quotes({}, {})


class OrderBook:
    """The level-2 book of one market (module docstring)."""

    def __init__(self, market: Market, *, sequence: int = 0) -> None:
        self.market = market
        self.sequence = sequence
        self._ladders = {side: _Ladder(side) for side in BookSide}
        self._quotes: dict[str, Quotes] = {}
        self._orders: dict[str, _Resting] = {}
        self._tick = _places(market.tick_size)
        self._step = _places(market.step_size)

    # --- reading ----------------------------------------------------------------------------

    def snapshot(self, depth: int | None = None) -> BookSnapshot:
        """The best ``depth`` levels of each side (every level if None), with the sequence."""
        if depth is not None and depth < 1:
            raise ValueError("depth must be at least 1")
        bids = _levels(self._ladders[BookSide.BID].top(depth))
        asks = _levels(self._ladders[BookSide.ASK].top(depth))
        return BookSnapshot(self.market.id, self.sequence, bids, asks)

    def size_at(self, side: BookSide, price: Decimal) -> Decimal:
        """The total size at a level, 0 if there is none."""
        return self._ladders[side].sizes.get(price, _ZERO)

    def quotes(self, source: str) -> Quotes:
        """What ``source`` quotes now (nothing if it quotes nothing)."""
        return self._quotes.get(source, _NO_QUOTES)

    # --- market makers ----------------------------------------------------------------------

    def set_quotes(
        self, source: str, bids: Mapping[Decimal, Decimal], asks: Mapping[Decimal, Decimal]
    ) -> BookDelta | None:
        """Replaces ``source``'s whole ladder (two empty sides withdraw it); only the levels
        whose total moves are in the delta."""
        new = Quotes(self._checked(bids), self._checked(asks))
        if new.bids and new.asks and max(new.bids) >= min(new.asks):
            raise BookError(
                "CROSSED_QUOTES",
                f"{source}'s best bid {max(new.bids)} is not below its best ask {min(new.asks)}",
            )
        old = self._quotes.pop(source, _NO_QUOTES)
        if new.bids or new.asks:
            self._quotes[source] = new
        bid_changes = self._replace(BookSide.BID, old.bids, new.bids)
        ask_changes = self._replace(BookSide.ASK, old.asks, new.asks)
        return self._delta(bid_changes, ask_changes)

    def _checked(self, levels: Mapping[Decimal, Decimal]) -> dict[Decimal, Decimal]:
        # _price and _size inlined (a ladder is a hundred levels): they only say what is wrong.
        tick, step = self.market.tick_size, self.market.step_size
        checked = {}
        for price, size in levels.items():
            if not (price.is_finite() and _ZERO < price < MAX_AMOUNT) or price % tick:
                self._price(price)
            if not (size.is_finite() and _ZERO < size < MAX_AMOUNT) or size % step:
                self._size(size)
            checked[price.quantize(self._tick)] = size.quantize(self._step)
        return checked

    def _replace(
        self, side: BookSide, old: Mapping[Decimal, Decimal], new: Mapping[Decimal, Decimal]
    ) -> list[LevelChange]:
        ladder = self._ladders[side]
        changes = []
        for price, size in new.items():
            before = old.get(price)
            if before is None:
                changes.append(self._move(side, ladder, price, size))
            elif before != size:
                changes.append(self._move(side, ladder, price, size - before))
        for price, before in old.items():
            if price not in new:
                changes.append(self._move(side, ladder, price, -before))
        return changes

    # --- resting orders ---------------------------------------------------------------------

    def add_order(self, order_id: str, side: BookSide, price: Decimal, size: Decimal) -> BookDelta:
        """A user's limit order resting at ``price``."""
        if order_id in self._orders:
            raise BookError("DUPLICATE_ORDER", f"order {order_id!r} is already in the book")
        order = _Resting(side, self._price(price), self._size(size))
        self._orders[order_id] = order
        return self._order_moved(order, order.size)

    def reduce_order(self, order_id: str, size: Decimal) -> BookDelta:
        """Takes ``size`` off a resting order (a partial fill); all of it removes the order."""
        order = self._order(order_id)
        taken = self._size(size)
        if taken > order.size:
            raise BookError(
                "INVALID_SIZE", f"order {order_id!r} has {order.size} left, not {taken}"
            )
        if taken == order.size:
            del self._orders[order_id]
        else:
            self._orders[order_id] = _Resting(order.side, order.price, order.size - taken)
        return self._order_moved(order, -taken)

    def remove_order(self, order_id: str) -> BookDelta:
        """A resting order canceled or filled whole."""
        order = self._order(order_id)
        del self._orders[order_id]
        return self._order_moved(order, -order.size)

    def _order(self, order_id: str) -> _Resting:
        try:
            return self._orders[order_id]
        except KeyError:
            raise BookError("UNKNOWN_ORDER", f"order {order_id!r} is not in the book") from None

    def _order_moved(self, order: _Resting, by: Decimal) -> BookDelta:
        change = self._move(order.side, self._ladders[order.side], order.price, by)
        bid = order.side is BookSide.BID
        delta = self._delta([change] if bid else [], [] if bid else [change])
        assert delta is not None  # one change at least
        return delta

    # --- the levels -------------------------------------------------------------------------

    def _move(self, side: BookSide, ladder: _Ladder, price: Decimal, by: Decimal) -> LevelChange:
        total = ladder.sizes.get(price, _ZERO) + by
        ladder.set(price, total)
        return LevelChange(side, price, total if total else _ZERO)

    def _delta(self, bids: list[LevelChange], asks: list[LevelChange]) -> BookDelta | None:
        if not bids and not asks:
            return None
        self.sequence += 1
        changes = (*_best_first(BookSide.BID, bids), *_best_first(BookSide.ASK, asks))
        return BookDelta(self.market.id, self.sequence - 1, self.sequence, changes)

    def _price(self, price: Decimal) -> Decimal:
        if not price.is_finite() or price <= 0 or price >= MAX_AMOUNT:
            raise BookError(
                "INVALID_PRICE", f"a price must be positive and below {MAX_AMOUNT:f}, not {price}"
            )
        if price % self.market.tick_size:
            raise BookError(
                "INVALID_PRICE",
                f"price {price} is not a multiple of {self.market.id}'s tick "
                f"{self.market.tick_size}",
            )
        return price.quantize(self._tick)

    def _size(self, size: Decimal) -> Decimal:
        if not size.is_finite() or size <= 0 or size >= MAX_AMOUNT:
            raise BookError(
                "INVALID_SIZE", f"a size must be positive and below {MAX_AMOUNT:f}, not {size}"
            )
        if size % self.market.step_size:
            raise BookError(
                "INVALID_SIZE",
                f"size {size} is not a multiple of {self.market.id}'s step {self.market.step_size}",
            )
        return size.quantize(self._step)


class DepthView:
    """The top ``depth`` levels of each side of a book, and the deltas that keep a copy of them
    equal to them: what a subscriber of ``orderBook(depth: n)`` is sent.

    A view starts from the book's full snapshot (``book.snapshot()``) and follows every delta the
    book makes, in order (:meth:`apply`), into a copy of every level of its own, so it runs
    wherever the book's deltas reach. Each delta of the book becomes one of the view's: the
    changes within the top levels, a level that enters them (because one above it went) as an
    addition and one pushed out of them as a removal; or None when the top levels are as they
    were. A view's deltas keep the book's sequence numbers; each one's ``previous`` is the
    sequence of the view's delta before it (or of its snapshot), since the levels it shows did
    not change in between. Only a side with a change at or above its ``depth``-th level is
    looked at again, in O(depth).
    """

    def __init__(self, depth: int, book: BookSnapshot) -> None:
        if depth < 1:
            raise ValueError("depth must be at least 1")
        self.depth = depth
        self.market_id = book.market
        self.sequence = book.sequence
        """The sequence of the view's last delta, or of the snapshot it started from."""
        self.book_sequence = book.sequence
        """The sequence of the last of the book's deltas applied."""
        self._ladders = {side: _Ladder(side) for side in BookSide}
        for side, levels in ((BookSide.BID, book.bids), (BookSide.ASK, book.asks)):
            for level in levels:
                self._ladders[side].set(level.price, level.size)
        self._shown = {side: self._ladders[side].top(depth) for side in BookSide}

    @property
    def shown(self) -> int:
        """How many levels the view shows, both sides together."""
        return len(self._shown[BookSide.BID]) + len(self._shown[BookSide.ASK])

    def snapshot(self) -> BookSnapshot:
        """The top levels as the view's deltas have shown them, with the sequence of the last."""
        bids = _levels(self._shown[BookSide.BID])
        asks = _levels(self._shown[BookSide.ASK])
        return BookSnapshot(self.market_id, self.sequence, bids, asks)

    def apply(self, delta: BookDelta) -> BookDelta | None:
        """The view's delta for the book's next ``delta``; :class:`SequenceGapError` for a
        delta that is not the next."""
        if delta.previous != self.book_sequence:
            raise SequenceGapError(self.book_sequence, delta.previous)
        edges = {side: self._ladders[side].edge(self.depth) for side in BookSide}
        touched: set[BookSide] = set()
        for change in delta.changes:
            ladder = self._ladders[change.side]
            edge = edges[change.side]
            if edge is None or ladder.reaches(change.price, edge):
                touched.add(change.side)
            ladder.set(change.price, change.size)
        self.book_sequence = delta.sequence
        changes = [c for side in BookSide if side in touched for c in self._show(side)]
        if not changes:
            return None
        shown = BookDelta(self.market_id, self.sequence, delta.sequence, tuple(changes))
        self.sequence = delta.sequence
        return shown

    def _show(self, side: BookSide) -> list[LevelChange]:
        before = self._shown[side]
        after = self._shown[side] = self._ladders[side].top(self.depth)
        changes = [LevelChange(side, p, s) for p, s in after.items() if before.get(p) != s]
        changes.extend(LevelChange(side, p, _ZERO) for p in before if p not in after)
        return _best_first(side, changes)


class Conflator:
    """A slow subscriber's pending deltas, merged per level: for each (side, price) only the
    newest size is kept, and :meth:`flush` sends them as one delta from the sequence the
    subscriber has (``previous``) to the newest (``sequence``). What a subscriber misses in
    between are states it would have overwritten; a level that came and went while pending is
    sent as a removal, which a client without that level ignores.
    """

    def __init__(self, sequence: int) -> None:
        self.sequence = sequence
        """What the subscriber has: its snapshot's sequence, or the last flushed delta's."""
        self._newest = sequence
        self._market = ""
        self._pending: dict[tuple[BookSide, Decimal], Decimal] = {}

    def __len__(self) -> int:
        """How many levels are pending."""
        return len(self._pending)

    def push(self, delta: BookDelta) -> None:
        """Adds the next delta (:class:`SequenceGapError` if it is not the next)."""
        if delta.previous != self._newest:
            raise SequenceGapError(self._newest, delta.previous)
        pending = self._pending
        for change in delta.changes:
            pending[change.side, change.price] = change.size
        self._newest = delta.sequence
        self._market = delta.market

    def flush(self) -> BookDelta | None:
        """The pending deltas as one, or None if none is pending."""
        if self._newest == self.sequence:
            return None
        sides: dict[BookSide, list[LevelChange]] = {side: [] for side in BookSide}
        for (side, price), size in self._pending.items():
            sides[side].append(LevelChange(side, price, size))
        changes = tuple(c for side in BookSide for c in _best_first(side, sides[side]))
        merged = BookDelta(self._market, self.sequence, self._newest, changes)
        self.sequence = self._newest
        self._pending.clear()
        return merged


class MarketMaker:
    """A simulated market maker: a ladder of ``levels`` prices a side around an oracle price,
    ``spread_ticks`` from its best bid to its best ask and ``spacing_ticks`` between its levels,
    each level's size a whole number of steps from ``min_size_steps`` to ``max_size_steps``.

    Its best bid is the oracle price rounded to the tick, less half the spread (rounded down),
    its best ask the spread above that: never crossed. A level keeps its size while the ladder
    moves, so a new price changes only the levels that enter or leave the ladder and the few
    whose size is drawn again (each level, each quote, with the chance ``resize``): the book
    changes as a real one does, a little at a time. Bids stay above 0 (near 0 a ladder has fewer
    bid levels). Given a seed, its quotes are the same on every run.
    """

    def __init__(
        self,
        market: Market,
        source: str,
        *,
        levels: int = 50,
        spread_ticks: int = 10,
        spacing_ticks: int = 1,
        min_size_steps: int = 1,
        max_size_steps: int = 1_000,
        resize: float = 0.05,
        seed: int | None = None,
    ) -> None:
        if levels < 1 or spread_ticks < 1 or spacing_ticks < 1:
            raise ValueError("levels, spread and spacing must be at least 1")
        if not 1 <= min_size_steps <= max_size_steps:
            raise ValueError("sizes must be 1 <= min_size_steps <= max_size_steps")
        if not 0 <= resize <= 1:
            raise ValueError("resize is a chance, from 0 to 1")
        self.market = market
        self.source = source
        self.levels = levels
        self.spread_ticks = spread_ticks
        self.spacing_ticks = spacing_ticks
        self.min_size_steps = min_size_steps
        self.max_size_steps = max_size_steps
        self.resize = resize
        self.random = random.Random(seed)
        self._quoted: dict[tuple[BookSide, int], tuple[Decimal, Decimal]] = {}
        """The price and size of each level quoted last, by side and price in ticks."""
        self._tick = _places(market.tick_size)
        self._step = _places(market.step_size)

    def quote(self, price: Decimal) -> Quotes:
        """The ladder around ``price`` (``book.set_quotes(maker.source, *maker.quote(price))``)."""
        if not price.is_finite() or price <= 0 or price >= MAX_AMOUNT:
            raise ValueError(f"a price must be positive and below {MAX_AMOUNT:f}, not {price}")
        mid = int((price / self.market.tick_size).to_integral_value(ROUND_HALF_EVEN))
        best_bid = mid - self.spread_ticks // 2
        best_ask = best_bid + self.spread_ticks
        quoted: dict[tuple[BookSide, int], tuple[Decimal, Decimal]] = {}
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        for level in range(self.levels):
            offset = level * self.spacing_ticks
            if best_bid - offset > 0:
                bid, size = self._level(quoted, BookSide.BID, best_bid - offset)
                bids[bid] = size
            ask, size = self._level(quoted, BookSide.ASK, best_ask + offset)
            asks[ask] = size
        self._quoted = quoted
        return Quotes(bids, asks)

    def _level(
        self,
        quoted: dict[tuple[BookSide, int], tuple[Decimal, Decimal]],
        side: BookSide,
        ticks: int,
    ) -> tuple[Decimal, Decimal]:
        level = self._quoted.get((side, ticks))
        if level is None or self.random.random() < self.resize:
            steps = self.random.randint(self.min_size_steps, self.max_size_steps)
            size = (self.market.step_size * steps).quantize(self._step)
            price = (
                (self.market.tick_size * ticks).quantize(self._tick) if level is None else level[0]
            )
            level = (price, size)
        quoted[side, ticks] = level
        return level
