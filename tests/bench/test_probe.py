"""The probe: calls on a schedule against a real server, and what its statistics count."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING

import httpx

from bench import positions
from bench.probe import Call, Caller, Probe, percentile_ms, summarize
from tests.support import TEST_JWT_SECRET

if TYPE_CHECKING:
    from tests.support import ServerProcess

TOKENS = positions.Tokens.signed(TEST_JWT_SECRET)


def test_the_probe_publishes_and_queries_on_schedule(oracle_server: ServerProcess) -> None:
    start = Decimal(65000)
    oracle = Caller(
        "publishPrice",
        "publishPrice(BTC-PERP)",
        20,
        lambda k: positions.publish_body("BTC-PERP", positions.oracle_price(start, k)),
        TOKENS.service,
    )
    query = Caller("query", "positions", 5, lambda k: {"query": "{ markets { id } }"}, TOKENS.admin)
    # publishPrice is for the service role: each of these is answered with FORBIDDEN.
    refused = Caller("refused", "publishPrice as admin", 5, oracle.body, TOKENS.admin)
    probe = Probe(oracle_server.url, [oracle, query, refused])
    probe.start()
    time.sleep(1.0)
    stats = {s.name: s for s in probe.stop()}
    assert probe.error is None

    assert 18 <= stats["publishPrice"].sent <= 22
    assert stats["publishPrice"].answered == stats["publishPrice"].sent
    assert stats["publishPrice"].p99_ms is not None
    assert stats["publishPrice"].errors == 0
    assert 4 <= stats["query"].sent <= 6
    assert stats["query"].answered == stats["query"].sent
    assert stats["refused"].answered == 0
    assert stats["refused"].errors == stats["refused"].sent
    assert stats["refused"].p50_ms is None

    # The oracle's last price is the market's latest (the refused calls stored nothing).
    body = {"query": '{ price(market: "BTC-PERP") { price } }'}
    latest = httpx.post(oracle_server.url, json=body, timeout=10).json()["data"]["price"]["price"]
    last = positions.oracle_price(start, stats["publishPrice"].sent - 1)
    assert Decimal(latest) == last


def test_a_window_counts_only_the_calls_sent_within_it(oracle_server: ServerProcess) -> None:
    query = Caller("query", "markets", 20, lambda k: {"query": "{ markets { id } }"}, TOKENS.admin)
    probe = Probe(oracle_server.url, [query])
    probe.start()
    time.sleep(0.5)
    begin = time.monotonic()
    time.sleep(0.5)
    [stats] = probe.stop((begin, time.monotonic()))
    assert 8 <= stats.sent <= 12
    assert stats.sent < len(probe.calls["query"])


def test_calls_not_answered_are_slower_than_every_answered_one() -> None:
    assert percentile_ms([0.010, 0.020, None, 0.030], 0.5) == 30.0
    assert percentile_ms([0.010, 0.020, None, 0.030], 0.99) is None
    assert percentile_ms([], 0.5) is None
    caller = Caller("c", "c", 1, lambda k: {}, "t")
    calls = [Call(0, 0.002), Call(1, None, "FORBIDDEN"), Call(2, None), Call(3, 0.004)]
    stats = summarize(caller, calls)
    assert (stats.sent, stats.answered, stats.errors) == (4, 2, 1)
    assert (stats.p50_ms, stats.p99_ms, stats.max_ms) == (None, None, 4.0)
