"""What the server counts for Prometheus, kept where the counting is cheap.

The fan-out delivers tens of thousands of messages a second, so nothing on that path calls
prometheus_client. Code that counts bumps a plain int in :data:`counts` (once per event, per
group result or per rare occurrence, never per subscriber), and the latency histogram is a list of
bucket counts updated with ``bisect``. :mod:`api.ops.exposition` reads them (and the live state
of the app) when Prometheus scrapes ``GET /metrics``.

``docs/operations.md`` lists every metric and what it means.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator


PREFIX = "tradestream_"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the fan-out latency histogram's buckets; +Inf follows."""


class Counts:
    """Everything this process has counted since it started. Plain ints, bumped in place."""

    __slots__ = (
        "backend_reconnects",
        "delivered",
        "gap_events_filled",
        "hub_conflated",
        "hub_lagged",
        "plan_fallbacks",
        "plan_hits",
        "published",
        "reads_issued",
        "reads_merged",
        "send_conflated",
        "slow_consumer_closes",
        "source_malformed",
        "source_price_times",
        "source_prices",
        "source_reconnects",
        "stream_conflated",
        "stream_gaps",
        "stream_lagged",
        "subscriptions",
        "venue_reconnects",
    )

    def __init__(self) -> None:
        self.published: Counter[str] = Counter()
        """Events published by this process, by topic kind."""
        self.delivered: Counter[str] = Counter()
        """Results handed to subscribers, by subscription field."""
        self.subscriptions: Counter[str] = Counter()
        """Subscriptions open now, by subscription field (a gauge kept by open and close)."""
        self.plan_hits: Counter[str] = Counter()
        """Subscription events executed by their compiled plan (:mod:`api.graphql.plans`), by
        field."""
        self.plan_fallbacks: Counter[str] = Counter()
        """Subscription events graphql-core executed because their plan could not, by field."""
        self.hub_conflated = 0
        """Latest-value events dropped from a full hub subscriber queue."""
        self.send_conflated = 0
        """Latest-value frames replaced in a WebSocket send queue."""
        self.stream_conflated = 0
        """Latest-value results replaced in an SSE or multipart subscriber's queue."""
        self.hub_lagged = 0
        """Hub subscriptions ended with SubscriberLaggedError (each ends one execution)."""
        self.stream_lagged = 0
        """SSE or multipart subscribers of a stream group ended as lagging."""
        self.slow_consumer_closes = 0
        """WebSockets closed with 4008 because their send queue was full."""
        self.backend_reconnects = 0
        """Times a broadcast backend connection was lost and made again."""
        self.gap_events_filled = 0
        """Stream events the hub read from the topic history to fill a gap (a late or missed
        publish, a backend reconnect)."""
        self.reads_issued: Counter[str] = Counter()
        """Topic-history reads sent to PostgreSQL (:mod:`api.storage.coalesce`), by kind."""
        self.reads_merged: Counter[str] = Counter()
        """Topic-history reads answered by an identical read already in flight, by kind."""
        self.stream_gaps = 0
        """Stream subscriptions ended with STREAM_GAP: the history no longer held what was
        missed."""
        self.source_prices: Counter[str] = Counter()
        """Prices received from external price sources (:mod:`api.sources`), by source."""
        self.source_reconnects: Counter[str] = Counter()
        """Times an external price source's connection was lost (or could not be made) and
        made again, by source."""
        self.source_malformed: Counter[str] = Counter()
        """Messages of an external price source skipped as malformed, by source."""
        self.venue_reconnects: Counter[str] = Counter()
        """Times a venue account's following (its user-data streams, ``EXCHANGE_ACCOUNTS``) was
        lost or refused and made again, by exchange id (never by user)."""
        self.source_price_times: dict[str, tuple[str, float]] = {}
        """Per market an external source prices: that source, and the publish time (Unix
        seconds) of the newest price published from it."""


counts = Counts()


class LatencyHistogram:
    """Bucket counts of :data:`LATENCY_BUCKETS`, not cumulative (the collector sums them)."""

    __slots__ = ("buckets", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float, count: int = 1) -> None:
        """``count`` messages that took ``seconds`` each."""
        if seconds < 0:  # another process's clock, a little ahead of ours
            seconds = 0.0
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += count
        self.sum += seconds * count


fanout_latency = LatencyHistogram()
"""Seconds from an event's ``published_at`` to the write of a result made from it. Observed once
per result of a shared execution, after the result was handed to every member, with the number
of members as its count: no sampling, and no cost per subscriber."""


def note_backend_reconnect() -> None:
    """The hub reconnected to the broadcast backend after losing it."""
    counts.backend_reconnects += 1


async def counted_stream(
    results: AsyncGenerator[Any, None], field: str
) -> AsyncGenerator[Any, None]:
    """A subscription that does not share an execution, counted as open while it is read, and
    each of its results as delivered."""
    counts.subscriptions[field] += 1
    try:
        async for result in results:
            counts.delivered[field] += 1
            yield result
    finally:
        counts.subscriptions[field] -= 1
        await results.aclose()
