"""The positions scenarios' verdict: every target the issue sets, the reference ratio included."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.report import positions_lines, target_verdicts
from bench.scenarios import GRAPHQL_WS, TRADESTREAM, Result


def _probe(name: str, p99_ms: float | None, answered: int = 50) -> dict[str, Any]:
    return {
        "name": name,
        "what": name,
        "hz": 5.0,
        "sent": 50,
        "answered": answered,
        "errors": 0,
        "p50_ms": 3.0,
        "p99_ms": p99_ms,
        "max_ms": 9.0,
    }


OURS = Result(
    scenario="positions",
    server=TRADESTREAM,
    label="tradestream",
    mode="stream",
    vars_mode="same",
    asked=2000,
    rate_hz=20,
    duration_s=10,
    subscribers_ok=2000,
    receiving_conns=2000,
    failed_conns=0,
    sub_errors=0,
    msgs_per_s=38000,
    offered_msgs_per_s=40000,
    p99_ms=80.0,
    price_source="publish",
    setup={"users": 2000, "stored": 2000, "price": "65000", "seconds": 6.1},
    probes=[_probe("publishPrice", 40.0), _probe("query", 60.0)],
)
REFERENCE = dataclasses.replace(
    OURS, server=GRAPHQL_WS, label="graphql-ws reference", msgs_per_s=12000, probes=[]
)


def test_met_when_every_target_is() -> None:
    [verdict] = target_verdicts("positions", [OURS, REFERENCE])
    assert verdict.startswith("tradestream MET")
    assert "3.17x the graphql-ws reference ok" in verdict


def test_each_target_can_miss() -> None:
    misses = {
        "a subscriber receiving nothing": dataclasses.replace(OURS, receiving_conns=1999),
        "too little delivered": dataclasses.replace(OURS, msgs_per_s=35000),
        "a slow p99": dataclasses.replace(OURS, p99_ms=101.0),
        "a slow probe": dataclasses.replace(
            OURS, probes=[_probe("publishPrice", 40.0), _probe("query", 120.0)]
        ),
        "a probe call not answered": dataclasses.replace(
            OURS, probes=[_probe("publishPrice", 40.0, answered=49), _probe("query", 60.0)]
        ),
        "no probe at all": dataclasses.replace(OURS, probes=[]),
        "under 1.5x the reference": dataclasses.replace(
            OURS, msgs_per_s=17000, offered_msgs_per_s=18000
        ),
    }
    for what, ours in misses.items():
        [verdict] = target_verdicts("positions", [ours, REFERENCE])
        assert verdict.startswith("tradestream MISSED"), what


def test_the_set_up_and_probes_are_reported() -> None:
    lines = positions_lines(OURS)
    assert lines[0] == "tradestream prices: the benchmark's oracle, publishPrice 20/s over HTTP"
    assert "2,000 of 2,000 positions stored" in lines[1]
    assert lines[2].startswith("tradestream probe publishPrice 5/s: 50/50 answered")
