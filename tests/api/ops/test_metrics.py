"""The metrics registry read directly: what other code counts shows in the exposition."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.datastructures import State

from api.ops.exposition import registry
from api.ops.metrics import LatencyHistogram, note_backend_reconnect


def _value(name: str) -> float:
    text = generate_latest(registry(State())).decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exposed")


def test_backend_reconnects_are_exposed_as_a_counter() -> None:
    before = _value("tradestream_backend_reconnects_total")
    note_backend_reconnect()
    note_backend_reconnect()
    assert _value("tradestream_backend_reconnects_total") == before + 2


def test_a_state_without_services_still_exposes_the_process() -> None:
    """Before start-up has built the services, /metrics answers with what it knows."""
    assert _value("tradestream_connections") == 0
    assert _value("process_cpu_seconds_total") >= 0


def test_latency_buckets_hold_values_at_most_their_bound() -> None:
    histogram = LatencyHistogram()
    histogram.observe(0.003, 2)
    histogram.observe(0.005)
    histogram.observe(-0.2)  # a publisher's clock slightly ahead: counted as no delay
    histogram.observe(60.0)
    assert histogram.buckets[0] == 1  # le 0.001: the clamped one
    assert histogram.buckets[2] == 3  # le 0.005: both 0.003 and the 0.005 itself
    assert histogram.buckets[-1] == 1  # +Inf
    assert sum(histogram.buckets) == 5
    assert histogram.sum == 0.003 * 2 + 0.005 + 60.0
