"""``GET /metrics`` on a real server: gauges follow real clients up and back down, counters count
what they really received, and the exposition parses as Prometheus parses it."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import aio_pika
import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import isolated_database, isolated_server
from tests.e2e.support import wire
from tests.support import (
    PRICE_SUBSCRIPTION,
    GraphQLWS,
    Samples,
    ServerProcess,
    delete_ingest_queues,
    price_sse,
    sample,
    scrape,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

SETTLE_S = 10.0
"""How long a gauge may take to come back down after its clients left."""

LATENCY = "tradestream_fanout_latency_seconds"
OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.fixture(scope="module")
def metrics_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A process of its own: its counters and gauges are this module's clients' alone."""
    with isolated_server(
        database_url, {"PRICE_FEED_HZ": "10"}, tmp_path_factory.mktemp("metrics") / "server.log"
    ) as process:
        yield process


async def settled(server: ServerProcess, done: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``done`` holds (bounded by SETTLE_S); the last scrape either way."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        samples = await asyncio.to_thread(scrape, server)
        if done(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.1)


def open_subscriptions(samples: Samples) -> float:
    return sum(v for (name, _), v in samples.items() if name == "tradestream_subscriptions")


async def test_websocket_subscribers_move_the_gauges_and_counters_and_leave_no_trace(
    metrics_server: ServerProcess,
) -> None:
    before = await asyncio.to_thread(scrape, metrics_server)
    assert sample(before, "tradestream_connections", transport="ws") == 0
    assert sample(before, "tradestream_subscriptions", field="priceUpdates") == 0

    received = 0
    async with (
        GraphQLWS.connect(metrics_server.ws_url) as a,
        GraphQLWS.connect(metrics_server.ws_url) as b,
    ):
        await a.subscribe("1", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        await a.next_data("1", "priceUpdates")
        await b.subscribe("7", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        for client, id in ((a, "1"), (b, "7")):
            for _ in range(5):
                await client.next_data(id, "priceUpdates")
        received = 11
        during = await asyncio.to_thread(scrape, metrics_server)

    assert sample(during, "tradestream_connections", transport="ws") == 2
    assert sample(during, "tradestream_websockets_written_directly") == 2
    assert sample(during, "tradestream_subscriptions", field="priceUpdates") == 2
    groups = sample(during, "tradestream_fanout_groups") - sample(
        before, "tradestream_fanout_groups"
    )
    assert groups == 1, "two identical subscriptions share one execution"
    assert sample(during, "tradestream_subscription_starts_waiting") == 0
    delivered = sample(during, "tradestream_events_delivered_total", field="priceUpdates")
    assert delivered >= received
    published = sample(during, "tradestream_events_published_total", kind="price")
    assert published > sample(before, "tradestream_events_published_total", kind="price")
    assert sample(during, "tradestream_hub_topics") >= 1

    # Every live price (not the two first results: the stored one, and the group's last for the
    # late joiner) was timed once per subscriber it went to.
    timed = sample(during, LATENCY + "_count") - sample(before, LATENCY + "_count")
    assert timed >= received - 2
    assert sample(during, LATENCY + "_bucket", le="+Inf") == sample(during, LATENCY + "_count")
    seconds = sample(during, LATENCY + "_sum") - sample(before, LATENCY + "_sum")
    assert 0 < seconds / timed < 1.0, "from publication to the socket within a second on 127.0.0.1"

    after = await settled(
        metrics_server,
        lambda s: (
            sample(s, "tradestream_connections", transport="ws") == 0 and open_subscriptions(s) == 0
        ),
    )
    assert sample(after, "tradestream_connections", transport="ws") == 0
    assert open_subscriptions(after) == 0
    assert sample(after, "tradestream_fanout_groups") == sample(before, "tradestream_fanout_groups")
    assert sample(after, "tradestream_send_queue_bytes") == 0
    assert sample(after, "tradestream_events_delivered_total", field="priceUpdates") >= delivered, (
        "a counter never goes down"
    )


async def test_sse_streams_shared_or_not_are_counted_until_they_end(
    metrics_server: ServerProcess,
) -> None:
    """An SSE subscription joins a group; one with request extensions runs on its own (Strawberry's
    own path): both count as SSE connections and priceUpdates subscriptions while open."""
    before = await asyncio.to_thread(scrape, metrics_server)
    unshared_body = {
        "query": PRICE_SUBSCRIPTION,
        "variables": {"m": "ETH-PERP"},
        "extensions": {"tag": "unshared"},
    }
    async with (
        httpx.AsyncClient(timeout=10) as http,
        price_sse(http, metrics_server, "ETH-PERP") as shared,
        aconnect_sse(http, "POST", metrics_server.url, json=unshared_body) as unshared,
    ):
        # Both iterators kept: dropping one closes its response.
        streams = [shared.aiter_sse(), unshared.aiter_sse()]
        for events in streams:
            for _ in range(3):
                data = orjson.loads((await anext(events)).data)
                assert data["data"]["priceUpdates"]["market"] == "ETH-PERP", data
        during = await asyncio.to_thread(scrape, metrics_server)

    assert sample(during, "tradestream_connections", transport="sse") == 2
    assert sample(during, "tradestream_connections", transport="ws") == 0
    assert sample(during, "tradestream_subscriptions", field="priceUpdates") == 2
    groups = sample(during, "tradestream_fanout_groups") - sample(
        before, "tradestream_fanout_groups"
    )
    assert groups == 1, "the request with extensions is not shared"
    delivered = sample(during, "tradestream_events_delivered_total", field="priceUpdates")
    assert (
        delivered - sample(before, "tradestream_events_delivered_total", field="priceUpdates") >= 6
    )

    after = await settled(
        metrics_server,
        lambda s: (
            sample(s, "tradestream_connections", transport="sse") == 0
            and open_subscriptions(s) == 0
        ),
    )
    assert sample(after, "tradestream_connections", transport="sse") == 0
    assert open_subscriptions(after) == 0


async def test_refused_subscriptions_leave_no_open_subscription(
    metrics_server: ServerProcess,
) -> None:
    async with GraphQLWS.connect(metrics_server.ws_url) as client:
        await client.subscribe("1", "subscription { noSuchField }")
        refused = await client.receive()
        assert refused["type"] == "error", refused
        assert "noSuchField" in refused["payload"][0]["message"]
        await client.subscribe("2", PRICE_SUBSCRIPTION, {"m": "NOPE-PERP"})
        unknown = await client.receive()
        assert unknown["id"] == "2"
        assert unknown["payload"][0]["extensions"]["code"] == "UNKNOWN_MARKET", unknown
        async with GraphQLWS.connect(metrics_server.ws_url) as broken:
            await broken.subscribe("3", "subscription {")
            code, reason = await broken.closed()
            assert (code, reason) == (4400, "Syntax Error: Expected Name, found <EOF>.")
        during = await settled(metrics_server, lambda s: open_subscriptions(s) == 0)
        assert sample(during, "tradestream_connections", transport="ws") == 1
        assert open_subscriptions(during) == 0, "a refused subscription is still counted"
        # The socket still works.
        await client.subscribe("4", PRICE_SUBSCRIPTION, {"m": "SOL-PERP"})
        assert (await client.next_data("4", "priceUpdates"))["market"] == "SOL-PERP"
        assert (
            sample(
                await asyncio.to_thread(scrape, metrics_server),
                "tradestream_subscriptions",
                field="priceUpdates",
            )
            == 1
        )


def test_exposition_has_every_family_and_negotiates_openmetrics(
    metrics_server: ServerProcess,
) -> None:
    samples = scrape(metrics_server)
    names = {name for name, _ in samples}
    for name in (
        "tradestream_backend_reconnects_total",
        "tradestream_conflations_total",
        "tradestream_subscriptions_lagged_total",
        "tradestream_slow_consumer_closes_total",
        "tradestream_connections_refused_total",
        "tradestream_hub_queued_events",
        "tradestream_send_queue_bytes",
        "tradestream_leader",
        "tradestream_leader_terms_total",
        "tradestream_publish_failures_total",
        "tradestream_tasks",
        "process_resident_memory_bytes",
    ):
        assert name in names, f"{name} missing from /metrics"
    assert sample(samples, "tradestream_backend_reconnects_total") == 0
    assert sample(samples, "tradestream_leader") == 1, "memory:// leads itself"
    assert sample(samples, "tradestream_leader_terms_total") == 1
    assert sample(samples, "tradestream_publish_failures_total") == 0
    assert sample(samples, "tradestream_tasks") > 1
    assert sample(samples, "process_resident_memory_bytes") > 10_000_000

    plain = httpx.get(metrics_server.base_url + "/metrics", timeout=5)
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    open_metrics = httpx.get(
        metrics_server.base_url + "/metrics",
        headers={"accept": "application/openmetrics-text; version=1.0.0"},
        timeout=5,
    )
    assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")


def test_every_tradestream_metric_the_server_exports_is_listed_in_operations_md(
    metrics_server: ServerProcess,
) -> None:
    """docs/operations.md says it lists every metric: a new one fails here until it does."""
    response = httpx.get(metrics_server.base_url + "/metrics", timeout=5)
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(response.text)
        if family.name.startswith("tradestream_")
    }
    listed = set(re.findall(r"^\| `(tradestream_\w+)`", OPERATIONS_MD.read_text(), re.MULTILINE))
    assert len(exported) > 15
    assert not exported - listed, "add these to the metrics table of docs/operations.md"
    # The RabbitMQ consumer's metrics exist only with RABBITMQ_URL (this server has none).
    gone = {name for name in listed - exported if not name.startswith("tradestream_rabbitmq_")}
    assert not gone, "no such metric: drop these from docs/operations.md"


async def test_rabbitmq_consumer_counters_follow_real_messages(
    database_url: str, rabbitmq_url: str, tmp_path: Path
) -> None:
    """One malformed message is dead-lettered, one snapshot processed: both show, and nothing is
    counted twice."""
    queue = f"socket_data_test_{uuid.uuid4().hex[:8]}"
    async with isolated_database(database_url) as url:
        env = {
            "DATABASE_URL": url,
            "SIMULATED_FEEDS": "false",
            "RABBITMQ_URL": rabbitmq_url,
            "RABBITMQ_QUEUE": queue,
        }
        server = ServerProcess(env, tmp_path / "server.log").start()
        broker = await aio_pika.connect(rabbitmq_url)
        try:
            before = await asyncio.to_thread(scrape, server)
            assert sample(before, "tradestream_rabbitmq_ready") == 1
            channel = await broker.channel()
            for body in (b'{"login": "not a number"}', wire(6001, "1000", "1010", at=0)):
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=queue,
                )

            def both_handled(samples: Samples) -> bool:
                messages = "tradestream_rabbitmq_messages_total"
                return (
                    sample(samples, messages, outcome="processed")
                    + sample(samples, messages, outcome="dead_lettered")
                    >= 2
                )

            after = await settled(server, both_handled)
        finally:
            await broker.close()
            server.stop()
            await _delete_queues(rabbitmq_url, queue)
    messages = "tradestream_rabbitmq_messages_total"
    assert sample(before, messages, outcome="processed") == 0
    assert sample(after, messages, outcome="processed") == 1
    assert sample(after, messages, outcome="dead_lettered") == 1
    assert sample(after, messages, outcome="failed") == 0
    assert sample(after, "tradestream_rabbitmq_reconnects_total") == 0


async def _delete_queues(rabbitmq_url: str, queue: str) -> None:
    broker = await aio_pika.connect(rabbitmq_url)
    try:
        await delete_ingest_queues(broker, queue)
    finally:
        await broker.close()
