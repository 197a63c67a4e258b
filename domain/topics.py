"""The one place topic names are built, and the delivery policy of each kind of topic.

A topic is ``<kind>:<key>`` (``price:BTC-PERP``) or a bare ``<kind>`` for cluster-wide feeds.
Call sites never format topic strings themselves.
"""

from __future__ import annotations

import enum

from domain.events import DeliveryPolicy


class TopicKind(enum.Enum):
    PRICE = "price"
    POSITIONS = "positions"
    """One user's position events: opened, modified, closed, liquidated, warnings."""
    LIQUIDATIONS = "liquidations"
    """The ranked liquidation candidates, cluster-wide."""
    MARKET_STATS = "market-stats"
    FUNDING = "funding"
    """Funding settlements of one market."""
    ROUNDS = "rounds"
    """Mining rounds opening and being settled."""
    MARTINGALE = "martingale"
    """Strategy progress: ``martingale:<wallet>`` for one wallet; bare ``martingale``, the
    admins' summary of every strategy."""
    DASHBOARD = "dashboard"
    """One user's portfolio events: trims, alerts that fired, conversions."""
    LIVE = "live"
    """One user's paper exchange account: orders, fills, positions, balance changes."""
    ORDER_BOOK = "book"
    """One market's level-2 book: a full snapshot (at start, and when the book is rebuilt), then
    each change of its levels."""
    BOOK_ORDERS = "book-orders"
    """One market's users' limit orders as they rest and end: what the leader's book takes in
    (not a subscription of its own)."""
    TRADES = "trades"
    """One market's public trade tape: every fill, without who traded."""
    ORDER_BOOK_STATE = "book-state"
    """One market's whole book as of the newest change: what a new subscriber starts from."""
    MARATHON_FEED = "marathon-feed"
    """Every account snapshot and marathon membership change, in order, cluster-wide: what each
    process's leaderboards are built from."""

    @property
    def policy(self) -> DeliveryPolicy:
        return _POLICIES[self]


_POLICIES: dict[TopicKind, DeliveryPolicy] = {
    TopicKind.PRICE: DeliveryPolicy.LATEST_VALUE,
    TopicKind.POSITIONS: DeliveryPolicy.STREAM,
    TopicKind.LIQUIDATIONS: DeliveryPolicy.LATEST_VALUE,
    TopicKind.MARKET_STATS: DeliveryPolicy.LATEST_VALUE,
    TopicKind.FUNDING: DeliveryPolicy.STREAM,
    TopicKind.MARATHON_FEED: DeliveryPolicy.STREAM,
    TopicKind.ORDER_BOOK: DeliveryPolicy.STREAM,
    TopicKind.TRADES: DeliveryPolicy.STREAM,
    TopicKind.BOOK_ORDERS: DeliveryPolicy.STREAM,
    TopicKind.ORDER_BOOK_STATE: DeliveryPolicy.LATEST_VALUE,
    TopicKind.ROUNDS: DeliveryPolicy.STREAM,
    TopicKind.MARTINGALE: DeliveryPolicy.LATEST_VALUE,
    TopicKind.LIVE: DeliveryPolicy.STREAM,
    TopicKind.DASHBOARD: DeliveryPolicy.STREAM,
}

_SEPARATOR = ":"


def topic(kind: TopicKind, key: str | None = None) -> str:
    """Build the topic name for ``kind`` and, for per-entity topics, its ``key``."""
    if key is None:
        return kind.value
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"invalid topic key {key!r}")
    return f"{kind.value}{_SEPARATOR}{key}"


def price_topic(market: str) -> str:
    return topic(TopicKind.PRICE, market)


def positions_topic(user: str) -> str:
    return topic(TopicKind.POSITIONS, user)


def liquidations_topic() -> str:
    return topic(TopicKind.LIQUIDATIONS)


def market_stats_topic(market: str) -> str:
    return topic(TopicKind.MARKET_STATS, market)


def funding_topic(market: str) -> str:
    return topic(TopicKind.FUNDING, market)


def rounds_topic() -> str:
    return topic(TopicKind.ROUNDS)


def martingale_topic(wallet: str | None = None) -> str:
    """One wallet's strategies' progress, or (None) the admins' summary of every strategy."""
    return topic(TopicKind.MARTINGALE, wallet)


def dashboard_topic(user: str) -> str:
    return topic(TopicKind.DASHBOARD, user)


def live_topic(user: str) -> str:
    return topic(TopicKind.LIVE, user)


def book_topic(market: str) -> str:
    return topic(TopicKind.ORDER_BOOK, market)


def book_orders_topic(market: str) -> str:
    return topic(TopicKind.BOOK_ORDERS, market)


def trades_topic(market: str) -> str:
    return topic(TopicKind.TRADES, market)


def book_state_topic(market: str) -> str:
    return topic(TopicKind.ORDER_BOOK_STATE, market)


def marathon_feed_topic() -> str:
    return topic(TopicKind.MARATHON_FEED)


def kind_of(name: str) -> TopicKind:
    """The kind of a topic name built by :func:`topic`."""
    return TopicKind(name.split(_SEPARATOR, 1)[0])


def policy_of(name: str) -> DeliveryPolicy:
    return kind_of(name).policy
