"""The perpetuals engine: a domain worker that marks every open position to the oracle, warns
owners as health crosses the warning band, keeps the ranked liquidation candidates, liquidates the
ones still under water after a grace delay, and keeps each market's stats and funding.

One evaluation (every ``interval_s``) reads the positions changed since the last one (every
process's writes: :meth:`PositionBook.position_changes`) and the latest prices. It keeps the open
positions in a :class:`domain.perps_index.PositionIndex`, so a pass values only the positions a
price move may have pushed across a threshold, the ones that changed, and the liquidation
candidates (whose published figures move with every price); warnings, candidates, liquidations
and market stats are what valuing every position would give (:mod:`domain.perps_reference` is that
algorithm, kept to check this one against). A market whose price is older than
``price_max_age_s`` is left alone: no warning, liquidation or funding sample is ever based on a
stale price.

Events (topics from :mod:`domain.topics`):

    positions:<owner>     position.warning, position.liquidated, position.modified (funding):
                          a PositionChange
    liquidations          liquidations.updated  LiquidationsUpdated, the newest list only
    market-stats:<market> market-stats.updated  open interest, 24 h volume, mark, index, funding
    funding:<market>      funding.settled       the rate of the interval just ended
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import timedelta
from decimal import Context, Decimal, getcontext
from typing import TYPE_CHECKING, Any, Protocol

from domain.events import Unnumbered
from domain.payloads import PayloadCodec
from domain.perps import (
    FundingAccumulator,
    LiquidationWatch,
    OpenInterest,
    Position,
    Side,
    Signal,
    Valuation,
    funding_payment,
    mark_price,
    mark_to_market,
    ranked_candidates,
)
from domain.perps_index import PositionIndex
from domain.perps_margin import MarginAccount  # noqa: TC001  (a payload codec reads hints at runtime)
from domain.perps_trades import FillKind, liquidate_position
from domain.topics import (
    funding_topic,
    liquidations_topic,
    market_stats_topic,
    positions_topic,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from domain.events import Event
    from domain.markets import Market, MarketCatalog
    from domain.perps_trades import Fill, Trade
    from domain.ports import Clock, PriceRepository, Publisher

logger = logging.getLogger(__name__)

POSITION_OPENED = "position.opened"
POSITION_MODIFIED = "position.modified"
POSITION_CLOSED = "position.closed"
POSITION_LIQUIDATED = "position.liquidated"
POSITION_WARNING = "position.warning"
LIQUIDATIONS_UPDATED = "liquidations.updated"
MARKET_STATS_UPDATED = "market-stats.updated"
FUNDING_SETTLED = "funding.settled"

DAY = timedelta(hours=24)
_WIDE = Context(prec=1000)


def _exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int), "a fill's notional is finite"
    return exponent


@dataclass(frozen=True, slots=True)
class Announcement:
    """A positions event to publish once the change it announces is stored: the store numbers it
    in the same transaction, so a topic's sequence has no holes from changes that were rolled
    back. The store completes it (:meth:`with_account`, :meth:`with_position`) with what only the
    stored rows tell."""

    topic: str
    type: str
    change: PositionChange

    @property
    def payload(self) -> dict[str, Any]:
        return POSITION_CHANGE.encode(self.change)

    def with_account(self, account: MarginAccount) -> Announcement:
        return replace(self, change=replace(self.change, account=account))

    def with_position(self, position: Position) -> Announcement:
        return replace(self, change=replace(self.change, position=position))


@dataclass(frozen=True, slots=True)
class PositionChanges:
    """What :meth:`PositionBook.position_changes` read: every position that changed since the
    cursor it was given (it may repeat some that did not), and the cursor to give next time."""

    open: list[Position]
    """Open positions as they are now; every open position when read without a cursor."""
    ended: list[str]
    """Ids of positions closed or liquidated (some perhaps never seen open)."""
    cursor: int | None


class PositionBook(Protocol):
    """Where positions live (PostgreSQL in the server)."""

    async def open_positions(self) -> list[Position]: ...

    async def position_changes(self, cursor: int | None) -> PositionChanges:
        """Every open position (``cursor`` None), or the positions changed since the read that
        returned ``cursor``: none is ever missed, whichever process wrote it."""
        ...

    async def oldest_fill_since(self, since: datetime) -> datetime | None:
        """When the oldest fill at or after ``since`` was made (None: there is none), so that
        the volumes of :meth:`volumes_since` are read again only when one leaves the window."""
        ...

    async def liquidate_all(
        self, liquidations: Sequence[tuple[Trade, Announcement]]
    ) -> list[Event | None]:
        """Store each liquidation and number its announcement, in one transaction, where the
        position is still open at ``trade.position.revision - 1``; for each, its event, or None
        (it changed meanwhile)."""
        ...

    async def settle_funding(
        self,
        market: str,
        rate: Decimal,
        mark: Decimal,
        index: Decimal,
        at: datetime,
        payment: Callable[[Position], Decimal],
        announce: Callable[[Position], Announcement],
    ) -> list[Event]:
        """Charge every open position of ``market`` its ``payment`` and record the rate, in one
        transaction; the numbered announcements of the positions it changed (after the charge)."""
        ...

    async def volumes_since(self, since: datetime) -> dict[str, Decimal]:
        """Traded notional per market since ``since``."""
        ...

    async def last_funding(self) -> dict[str, tuple[Decimal, datetime]]:
        """Each market's last settled rate and when it was settled."""
        ...


@dataclass(frozen=True, slots=True)
class EngineSettings:
    interval_s: float = 0.5
    liquidation_delay_s: float = 1.0
    """How long a position stays a public candidate before the engine liquidates it itself."""
    price_max_age_s: float = 30.0
    funding_interval_s: float = 3600.0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A liquidation candidate as the public sees it: no owner, only the position id."""

    position_id: str
    market: str
    side: Side
    size: Decimal
    mark_price: Decimal
    notional: Decimal
    health_factor: Decimal
    liquidation_price: Decimal | None
    potential_reward: Decimal

    @classmethod
    def of(cls, valuation: Valuation) -> Candidate:
        p = valuation.position
        assert valuation.health is not None, "a candidate has a health factor"
        return cls(
            p.id,
            p.market,
            p.side,
            p.size,
            valuation.mark,
            valuation.notional,
            valuation.health,
            valuation.liquidation_price,
            valuation.liquidation_reward,
        )


CANDIDATE = PayloadCodec(Candidate, types={"Side": Side})
"""One of a liquidations event's ``candidates``."""


@dataclass(frozen=True, slots=True)
class TradeFill:
    """A trade's fill as a positions event carries it (``fill``): what the owner sees of it."""

    kind: FillKind
    size: Decimal
    price: Decimal
    fee: Decimal
    realized_pnl: Decimal
    at: datetime

    @classmethod
    def of(cls, fill: Fill) -> TradeFill:
        return cls(fill.kind, fill.size, fill.price, fill.fee, fill.realized_pnl, fill.at)


TRADE_FILL = PayloadCodec(TradeFill, types={"FillKind": FillKind})


@dataclass(frozen=True, slots=True)
class MarketStats:
    """A market-stats event's payload."""

    market: str
    index_price: Decimal | None
    mark_price: Decimal | None
    open_interest_long: Decimal
    open_interest_short: Decimal
    volume_24h: Decimal
    funding_rate: Decimal | None
    last_funding_at: datetime | None
    next_funding_at: datetime


MARKET_STATS = PayloadCodec(MarketStats)


@dataclass(frozen=True, slots=True)
class FundingSettled:
    """A funding event's payload: one market's funding settled for an interval."""

    market: str
    rate: Decimal
    mark_price: Decimal
    index_price: Decimal
    settled_at: datetime
    next_funding_at: datetime
    positions_charged: int


FUNDING = PayloadCodec(FundingSettled)


@dataclass(frozen=True, slots=True)
class LiquidationsUpdated:
    """A liquidations event's payload: every candidate, the largest potential reward first."""

    candidates: tuple[Candidate, ...]

    @classmethod
    def of(cls, valuations: list[Valuation]) -> LiquidationsUpdated:
        return cls(tuple(Candidate.of(v) for v in valuations))


LIQUIDATIONS = PayloadCodec(LiquidationsUpdated)


@dataclass(frozen=True, slots=True)
class PositionChange:
    """A positions event's payload: the position as it is after the event, and the parts the
    event's type has (the others are absent, not null):

        position.opened, .modified (a trade), .closed   fill, returned; account (a desk trade)
        position.liquidated                             fill, returned, reward; account (desk)
        position.modified by funding                    reason ("funding"; absent: "trade")
        position.warning                                mark_price, health_factor

    ``account`` is the owner's margin account after the trade moved its money."""

    position: Position
    fill: TradeFill | None = None
    returned: Decimal | None = None
    reward: Decimal | None = None
    reason: str | None = None
    mark_price: Decimal | None = None
    health_factor: Decimal | None = None
    account: MarginAccount | None = None


POSITION_CHANGE = PayloadCodec(PositionChange, omit_none=True)


def _position_id(valuation: Valuation) -> str:
    return valuation.position.id


def candidates_payload(candidates: list[Valuation]) -> dict[str, Any]:
    return LIQUIDATIONS.encode(LiquidationsUpdated.of(candidates))


def warning_payload(valuation: Valuation) -> dict[str, Any]:
    assert valuation.health is not None, "a warning has a health factor"
    change = PositionChange(
        valuation.position, mark_price=valuation.mark, health_factor=valuation.health
    )
    return POSITION_CHANGE.encode(change)


def position_announcement(type: str, change: PositionChange) -> Announcement:
    return Announcement(positions_topic(change.position.owner), type, change)


def trade_announcement(type: str, trade: Trade) -> Announcement:
    fill = TradeFill.of(trade.fill)
    return position_announcement(type, PositionChange(trade.position, fill, trade.returned))


def liquidated_announcement(trade: Trade) -> Announcement:
    fill = TradeFill.of(trade.fill)
    change = PositionChange(trade.position, fill, trade.returned, trade.reward)
    return position_announcement(POSITION_LIQUIDATED, change)


def funding_announcement(position: Position) -> Announcement:
    return position_announcement(POSITION_MODIFIED, PositionChange(position, reason="funding"))


class PerpsEngine:
    def __init__(
        self,
        markets: MarketCatalog,
        *,
        book: PositionBook,
        prices: PriceRepository,
        publisher: Publisher,
        clock: Clock,
        settings: EngineSettings | None = None,
    ) -> None:
        self.markets = markets
        self.book = book
        self.prices = prices
        self.publisher = publisher
        self.clock = clock
        self.settings = settings or EngineSettings()
        self.watch = LiquidationWatch()
        self._candidate_since: dict[str, float] = {}
        self._funding = {m.id: FundingAccumulator() for m in markets}
        self._last_rate: dict[str, tuple[Decimal, datetime]] = {}
        self._next_funding: dict[str, datetime] = {}
        self._published: dict[str, dict[str, Any]] = {}
        self._due: list[Unnumbered] = []
        self._warnings_due: list[Valuation] = []
        self._started = False
        self.positions = PositionIndex(markets)
        self._cursor: int | None = None
        self._volumes_read: dict[str, Decimal] | None = None
        self._oldest_fill: datetime | None = None
        self._volumes_inexact = False
        self._encoded_candidates: dict[str, tuple[Valuation, dict[str, Any]]] = {}
        self.valued = 0
        """How many positions the last pass valued (a figure for the benchmark)."""

    async def start(self) -> None:
        """Pick up the funding schedule where the last process left it."""
        self._last_rate = await self.book.last_funding()
        now = self.clock.now()
        interval = timedelta(seconds=self.settings.funding_interval_s)
        for market in self.markets:
            last = self._last_rate.get(market.id)
            self._next_funding[market.id] = now + interval if last is None else last[1] + interval
        self._started = True

    async def evaluate(self) -> None:
        """One pass: take in the book's changes, value what the prices' moves may have changed,
        warn, rank and liquidate, then each market's stats and funding. A pass that fails before
        its warnings are numbered warns again: the next pass values every position anew."""
        try:
            await self._evaluate()
        except BaseException:
            for valuation in self._warnings_due:
                self.watch.unwarn(valuation.position.id)
            if self._warnings_due:
                for positions in self.positions.markets.values():
                    positions.forget_observations()
            raise
        finally:
            self._warnings_due = []

    async def _evaluate(self) -> None:
        if not self._started:
            await self.start()
        self._due = []
        now = self.clock.now()
        changes = await self.book.position_changes(self._cursor)
        self._cursor = changes.cursor
        for position_id in changes.ended:
            self.watch.forget(position_id)
        changed = self.positions.apply(changes.open, changes.ended)
        indexes = await self._fresh_indexes(now)

        observed: list[Valuation] = []
        liquidatable: list[Valuation] = []
        for market_id, index in indexes.items():
            positions = self.positions.markets[market_id]
            market = positions.market
            try:
                for position in positions.to_observe(index):
                    valuation = mark_to_market(position, index, market)
                    positions.observed(valuation)
                    observed.append(valuation)
            except BaseException:
                positions.forget_observations()  # the next pass values all of them again
                raise
            liquidatable.extend(positions.liquidatable.values())
        self.valued = len(observed)
        # In the order of a read of every position (by id), as each owner's stream had them.
        self._warn([v for v in sorted(observed, key=_position_id) if self._warns(v)])

        candidates = ranked_candidates(liquidatable)
        liquidated = await self._candidates(candidates)
        for position_id in liquidated:
            self.positions.remove(position_id)

        volumes = await self._volumes(now, changed)
        for market in self.markets:
            interest = self.positions.markets[market.id].open_interest()
            await self._market(market, interest, indexes.get(market.id), volumes, now)
        await self._publish_due()

    async def _candidates(self, candidates: list[Valuation]) -> set[str]:
        """Liquidate the candidates whose grace delay is over and publish the others; the ids
        of the ones liquidated."""
        # A position that recovered (or whose price went stale) starts its grace delay afresh
        # when it is next a candidate.
        candidate_ids = {v.position.id for v in candidates}
        for recovered in [pid for pid in self._candidate_since if pid not in candidate_ids]:
            del self._candidate_since[recovered]
        liquidated = await self._liquidate_due(candidates)
        if liquidated:
            candidates = [v for v in candidates if v.position.id not in liquidated]
        self._latest(
            liquidations_topic(), LIQUIDATIONS_UPDATED, self._candidates_payload(candidates)
        )
        return liquidated

    def _candidates_payload(self, candidates: list[Valuation]) -> dict[str, Any]:
        """:func:`candidates_payload`, each candidate encoded again only when its valuation is
        a new one (a market whose price did not move keeps its candidates' valuations)."""
        held = self._encoded_candidates
        self._encoded_candidates = {}
        encoded = []
        for valuation in candidates:
            known = held.get(valuation.position.id)
            if known is not None and known[0] is valuation:
                item = known[1]
            else:
                item = CANDIDATE.encode(Candidate.of(valuation))
            self._encoded_candidates[valuation.position.id] = (valuation, item)
            encoded.append(item)
        return {"candidates": encoded}

    async def _volumes(self, now: datetime, changed: bool) -> dict[str, Decimal]:
        """The traded notional per market over the last 24 h, read again only when it may have
        changed: another writer stored a fill (it comes with a position change) or one left the
        window. The engine's own liquidations' fills are added as the query would sum them."""
        since = now - DAY
        expired = self._oldest_fill is not None and self._oldest_fill < since
        if self._volumes_read is None or changed or expired or self._volumes_inexact:
            self._volumes_read = await self.book.volumes_since(since)
            self._oldest_fill = await self.book.oldest_fill_since(since)
            self._volumes_inexact = False
        return self._volumes_read

    def _add_volume(self, fill: Fill) -> None:
        """Add a fill the engine stored to the volumes read, with the digits and exponent
        PostgreSQL's ``sum`` gives (its scale is the largest of the summed values'; a stored
        numeric has none below 0); where the sum would round, read it again instead."""
        if self._volumes_read is None:
            return
        notional = fill.notional
        stored = notional.quantize(Decimal(1).scaleb(min(0, _exponent(notional))))
        held = self._volumes_read.get(fill.market)
        total = stored if held is None else _WIDE.add(held, stored)
        if len(total.as_tuple().digits) > getcontext().prec:
            self._volumes_inexact = True
            return
        self._volumes_read = {**self._volumes_read, fill.market: total}
        if self._oldest_fill is None or fill.at < self._oldest_fill:
            self._oldest_fill = fill.at

    async def _fresh_indexes(self, now: datetime) -> dict[str, Decimal]:
        max_age = timedelta(seconds=self.settings.price_max_age_s)
        latest = await self.prices.latest_of([m.id for m in self.markets])  # one read
        indexes: dict[str, Decimal] = {}
        for market in self.markets:
            price = latest.get(market.id)
            if price is not None and abs(now - price.published_at) <= max_age:
                indexes[market.id] = price.price
        return indexes

    def _warns(self, valuation: Valuation) -> bool:
        """Whether ``valuation`` makes its owner's stream get a warning (the watch moves on)."""
        return Signal.WARNING in self.watch.observe(valuation)

    def _warn(self, valuations: list[Valuation]) -> None:
        """Warn each owner at the end of the pass (:meth:`_publish_due`)."""
        self._warnings_due = valuations
        self._due.extend(
            Unnumbered(positions_topic(v.position.owner), POSITION_WARNING, warning_payload(v))
            for v in valuations
        )

    async def _liquidate_due(self, candidates: list[Valuation]) -> set[str]:
        """Liquidate, together, the candidates whose grace delay is over."""
        now_mono = self.clock.monotonic()
        due: list[tuple[Valuation, Trade]] = []
        for valuation in candidates:
            position = valuation.position
            since = self._candidate_since.setdefault(position.id, now_mono)
            if now_mono - since < self.settings.liquidation_delay_s:
                continue
            trade = liquidate_position(
                position,
                market=self.markets.get(position.market),
                price=valuation.mark,
                at=self.clock.now(),
            )
            due.append((valuation, trade))
        if not due:
            return set()
        events = await self.book.liquidate_all(
            [(trade, liquidated_announcement(trade)) for _, trade in due]
        )
        done: set[str] = set()
        for (valuation, trade), event in zip(due, events, strict=True):
            position = valuation.position
            if event is None:
                continue  # changed since we read it; the next pass sees the new state
            await self.publisher.send(event)
            self._add_volume(trade.fill)
            done.add(position.id)
            self.watch.forget(position.id)
            self._candidate_since.pop(position.id, None)
            logger.info(
                "liquidated %s (%s %s %s at %s), reward %s",
                position.id,
                position.side.value,
                position.size,
                position.market,
                valuation.mark,
                trade.reward,
            )
        return done

    async def _market(
        self,
        market: Market,
        interest: OpenInterest,
        index: Decimal | None,
        volumes: dict[str, Decimal],
        now: datetime,
    ) -> None:
        mark = None if index is None else mark_price(index, interest, market)
        accumulator = self._funding[market.id]
        if index is not None and mark is not None:
            accumulator.sample(mark, index)
        if now >= self._next_funding[market.id] and index is not None and mark is not None:
            # Settled on the first pass with a fresh price: a stale moment postpones the
            # settlement, it never discards the interval's samples.
            await self._settle_funding(market, mark, index, now)
        last = self._last_rate.get(market.id)
        self._latest(
            market_stats_topic(market.id),
            MARKET_STATS_UPDATED,
            MARKET_STATS.encode(
                MarketStats(
                    market=market.id,
                    index_price=index,
                    mark_price=mark,
                    open_interest_long=interest.long,
                    open_interest_short=interest.short,
                    volume_24h=volumes.get(market.id, Decimal(0)),
                    funding_rate=None if last is None else last[0],
                    last_funding_at=None if last is None else last[1],
                    next_funding_at=self._next_funding[market.id],
                )
            ),
        )

    async def _settle_funding(
        self, market: Market, mark: Decimal, index: Decimal, now: datetime
    ) -> None:
        interval = timedelta(seconds=self.settings.funding_interval_s)
        # The next settlement is one interval on; a process that was down skips what it missed.
        next_at = self._next_funding[market.id] + interval
        self._next_funding[market.id] = next_at if next_at > now else now + interval
        rate = self._funding[market.id].settle()
        if rate is None:
            return  # nothing sampled: no rate to settle

        def payment(position: Position) -> Decimal:
            return funding_payment(position, mark, rate)

        events = await self.book.settle_funding(
            market.id, rate, mark, index, now, payment, funding_announcement
        )
        for event in events:
            await self.publisher.send(event)
        self._last_rate[market.id] = (rate, now)
        event = await self.publisher.prepare(
            funding_topic(market.id),
            FUNDING_SETTLED,
            FUNDING.encode(
                FundingSettled(
                    market.id, rate, mark, index, now, self._next_funding[market.id], len(events)
                )
            ),
        )
        await self.publisher.send(event)

    def _latest(self, topic: str, type: str, payload: dict[str, Any]) -> None:
        """Publish ``payload`` on a latest-value topic at the end of the pass
        (:meth:`_publish_due`) if it differs from the last one sent."""
        if self._published.get(topic) != payload:
            self._due.append(Unnumbered(topic, type, payload))

    async def _publish_due(self) -> None:
        """The pass's warnings and new latest values (candidates, each market's stats), numbered
        together in one round trip that also stores the latest values as their topics' newest
        state, then sent. (A warning is numbered after the liquidations of its pass: on an
        owner's stream, a position's warning may follow another position's liquidation of the
        same pass.)"""
        due, self._due = self._due, []
        if not due:
            return
        events = await self.publisher.prepare_all(due, keep_latest=True)
        self._warnings_due = []  # numbered: they exist, and are sent (or read from history)
        for event in events:
            await self.publisher.send(event)
            if event.type != POSITION_WARNING:
                self._published[event.topic] = event.payload

    async def run(self) -> None:
        """Evaluate every ``interval_s`` until cancelled; a failed pass is logged, not fatal."""
        while True:
            try:
                await self.evaluate()
            except Exception:
                logger.exception("perps engine pass failed; continuing with the next one")
            await self.clock.sleep(self.settings.interval_s)
