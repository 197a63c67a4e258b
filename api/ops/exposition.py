"""``GET /metrics``: Prometheus's text exposition of what :mod:`api.ops.metrics` counted and of
the live state of the app (sockets, connection slots, queues, groups, leadership, the RabbitMQ
consumer), read when Prometheus scrapes.

``docs/operations.md`` lists every metric and what it means.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector as _Collector
from starlette.responses import Response

from api.ops.metrics import LATENCY_BUCKETS, PREFIX, counts, fanout_latency
from api.transport.slots import TRANSPORTS, ConnectionSlots, Refusal

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric
    from starlette.datastructures import State
    from starlette.requests import Request


class Collector(_Collector):
    """Reads :data:`counts`, :data:`fanout_latency` and the app's state at scrape time."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        yield from self._connections()
        yield from self._counters()
        yield _latency()
        services: Any = getattr(self.state, "services", None)
        if services is not None:
            yield from self._services(services)
        leadership: Any = getattr(self.state, "leadership", None)
        if leadership is not None:
            yield _gauge("leader", "1 while this process leads the cluster", int(leadership.leader))
            yield _counter("leader_terms", "times this process became the leader", leadership.terms)

    def _connections(self) -> Iterable[Metric]:
        view: Any = getattr(self.state, "view", None)
        sockets = view.connections if view is not None else set()
        slots = view.slots if view is not None else ConnectionSlots(0, 0)  # none open yet
        connections = GaugeMetricFamily(
            PREFIX + "connections",
            "open connections on /graphql, by transport",
            labels=["transport"],
        )
        refused = CounterMetricFamily(
            PREFIX + "connections_refused",
            "connections refused at MAX_CONNECTIONS (limit=process) or "
            "MAX_CONNECTIONS_PER_CLIENT (limit=client), by transport",
            labels=["transport", "limit"],
        )
        for transport in TRANSPORTS:
            connections.add_metric([transport], slots.by_transport[transport])
            for refusal in Refusal:
                refused.add_metric([transport, refusal.value], slots.refused[transport, refusal])
        yield connections
        yield refused
        yield _gauge("connections_limit", "MAX_CONNECTIONS of this process", slots.max_total)
        yield _gauge(
            "connections_per_client_limit",
            "MAX_CONNECTIONS_PER_CLIENT of this process",
            slots.max_per_client,
        )
        yield _gauge(
            "connected_clients", "clients (users, addresses) holding a connection", slots.clients
        )
        yield _gauge(
            "websockets_written_directly",
            "open WebSockets written straight to uvicorn's transport (the others: ASGI fallback)",
            sum(c.direct for c in sockets),
        )
        pending = [c.pending_bytes for c in sockets]
        yield _gauge(
            "send_queue_bytes", "bytes waiting in the send queues of all WebSockets", sum(pending)
        )
        yield _gauge(
            "send_queue_largest_bytes",
            "bytes waiting in the fullest WebSocket send queue",
            max(pending, default=0),
        )

    def _counters(self) -> Iterable[Metric]:
        subscriptions = GaugeMetricFamily(
            PREFIX + "subscriptions", "open subscriptions, by root field", labels=["field"]
        )
        for field, open_now in sorted(counts.subscriptions.items()):
            subscriptions.add_metric([field], open_now)
        yield subscriptions
        yield _by_label(
            "events_published",
            "events this process published, by topic kind",
            "kind",
            counts.published,
        )
        yield _by_label(
            "events_delivered",
            "results handed to subscribers (written or queued), by subscription field",
            "field",
            counts.delivered,
        )
        plan_events = CounterMetricFamily(
            PREFIX + "subscription_plan_events",
            "subscription events executed by a compiled plan or, where it could not, by "
            "graphql-core, by subscription field",
            labels=["field", "executor"],
        )
        for executor, by_field in (
            ("plan", counts.plan_hits),
            ("graphql_core", counts.plan_fallbacks),
        ):
            for field, n in sorted(by_field.items()):
                plan_events.add_metric([field, executor], n)
        yield plan_events
        conflated = CounterMetricFamily(
            PREFIX + "conflations",
            "latest-value events or results replaced by a newer one before delivery, by queue",
            labels=["queue"],
        )
        conflated.add_metric(["hub"], counts.hub_conflated)
        conflated.add_metric(["send"], counts.send_conflated)
        conflated.add_metric(["http_stream"], counts.stream_conflated)
        yield conflated
        lagged = CounterMetricFamily(
            PREFIX + "subscriptions_lagged",
            "stream subscriptions ended for falling too far behind (SUBSCRIBER_LAGGED), by queue",
            labels=["queue"],
        )
        lagged.add_metric(["hub"], counts.hub_lagged)
        lagged.add_metric(["http_stream"], counts.stream_lagged)
        yield lagged
        yield _counter(
            "slow_consumer_closes",
            "WebSockets closed with 4008: more than SEND_QUEUE_MAX_BYTES waiting",
            counts.slow_consumer_closes,
        )
        yield _counter(
            "backend_reconnects",
            "times the broadcast backend's connection was lost and made again",
            counts.backend_reconnects,
        )
        yield _counter(
            "gap_events_filled",
            "stream events read from the topic history to fill a gap in what the broker delivered",
            counts.gap_events_filled,
        )
        reads = CounterMetricFamily(
            PREFIX + "history_reads",
            "topic-history reads (a topic's position, its events after a cursor, a latest "
            "state), by kind, sent to PostgreSQL or merged into an identical read in flight",
            labels=["kind", "outcome"],
        )
        for outcome, by_kind in (("issued", counts.reads_issued), ("merged", counts.reads_merged)):
            for kind, n in sorted(by_kind.items()):
                reads.add_metric([kind, outcome], n)
        yield reads
        yield _counter(
            "stream_gaps",
            "stream subscriptions ended with STREAM_GAP (history no longer held what was missed)",
            counts.stream_gaps,
        )
        yield from _sources()

    def _services(self, services: Any) -> Iterable[Metric]:
        yield _gauge(
            "hub_topics", "topics with an open upstream subscription", len(services.hub.topics)
        )
        yield _gauge(
            "hub_queued_events",
            "events waiting in hub subscriber queues",
            services.hub.queued_events,
        )
        yield _gauge("fanout_groups", "open shared executions", len(services.groups))
        yield _gauge(
            "subscription_starts_waiting",
            "subscriptions and connection_inits waiting for their turn (STARTS_PER_TURN a turn)",
            services.groups.starts.waiting,
        )
        yield _counter(
            "publish_failures",
            "events the broadcast backend could not take (subscribers read them from storage)",
            getattr(services.publisher, "failures", 0),
        )
        yield _gauge("tasks", "asyncio tasks in the process", len(asyncio.all_tasks()))
        consumer = services.consumer
        if consumer is None:
            return
        yield _gauge(
            "rabbitmq_ready", "1 while the RabbitMQ consumer is connected", int(consumer.ready)
        )
        messages = CounterMetricFamily(
            PREFIX + "rabbitmq_messages",
            "account snapshot messages taken from RabbitMQ, by outcome",
            labels=["outcome"],
        )
        messages.add_metric(["processed"], consumer.processed)
        messages.add_metric(["dead_lettered"], consumer.dead_lettered)
        messages.add_metric(["failed"], consumer.failed)
        yield messages
        yield _counter(
            "rabbitmq_reconnects",
            "times the RabbitMQ connection was lost and made again",
            consumer.reconnects,
        )


def _sources() -> Iterable[Metric]:
    yield _by_label(
        "source_prices",
        "prices received from external price sources (PRICE_SOURCES), by source",
        "source",
        counts.source_prices,
    )
    yield _by_label(
        "source_reconnects",
        "times an external price source's connection was lost or refused and made again, by source",
        "source",
        counts.source_reconnects,
    )
    yield _by_label(
        "source_malformed_messages",
        "messages of an external price source skipped as malformed, by source",
        "source",
        counts.source_malformed,
    )
    yield _by_label(
        "venue_reconnects",
        "times a venue account's streams (EXCHANGE_ACCOUNTS) were lost or refused and made "
        "again, by exchange",
        "exchange",
        counts.venue_reconnects,
    )
    age = GaugeMetricFamily(
        PREFIX + "source_price_age_seconds",
        "seconds since the publish time of the newest price published for a market priced by "
        "an external source (the leader's; PRICE_MAX_AGE_S makes it stale), by market and source",
        labels=["market", "source"],
    )
    now = time.time()
    for market, (source, published) in sorted(counts.source_price_times.items()):
        age.add_metric([market, source], max(now - published, 0.0))
    yield age


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, documentation, value=value)


def _by_label(
    name: str, documentation: str, label: str, values: Counter[str]
) -> CounterMetricFamily:
    family = CounterMetricFamily(PREFIX + name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _latency() -> HistogramMetricFamily:
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip((*LATENCY_BUCKETS, float("inf")), fanout_latency.buckets, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    family = HistogramMetricFamily(
        PREFIX + "fanout_latency_seconds",
        "seconds from an event's publication to the write of a result made from it, per message",
    )
    family.add_metric([], buckets, sum_value=fanout_latency.sum)
    return family


def registry(state: State) -> CollectorRegistry:
    """A registry of this app's metrics and the process's own (CPU, memory, files, GC)."""
    registry = CollectorRegistry()
    registry.register(Collector(state))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


async def metrics(request: Request) -> Response:
    """``GET /metrics``: every metric, in the Prometheus text format (or OpenMetrics, when the
    scraper asks for it in ``Accept``)."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(request.app.state.metrics), headers={"Content-Type": content_type})
