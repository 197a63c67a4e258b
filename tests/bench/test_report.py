"""The positions scenarios' verdict: every target the issue sets, the reference ratio included."""

from __future__ import annotations

import dataclasses
from typing import Any

from bench.report import markdown, positions_lines, scenario_report, target_verdicts
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


STORM = Result(
    scenario="resume-storm",
    server=TRADESTREAM,
    label="tradestream",
    mode="resume",
    vars_mode="same",
    asked=5000,
    rate_hz=1,
    duration_s=30,
    subscribers_ok=5000,
    failed_conns=0,
    sub_errors=0,
    seconds=4.2,
    resume={
        "dropped": {
            "subscribed": 5000,
            "asked": 5000,
            "users": 2500,
            "failed_conns": 0,
            "sub_errors": 0,
            "distinct_pairs": 2502,
            "shared_pairs": ["marketStats@3.a", "rounds@9.b"],
        },
        "resumed": {
            "resumed": 5000,
            "caught_up": 5000,
            "p50_caught_up_ms": 2000.0,
            "p99_caught_up_ms": 4100.0,
            "failed_conns": 0,
            "sub_errors": 0,
            "lost": 0,
            "behind": 0,
            "duplicates": 0,
            "backwards": 0,
            "resets": 0,
            "replayed": 25000,
            "live": 100,
        },
        "away_s": 30.0,
        "increases_stored": 5000,
        "newest": {"marketStats": 9, "rounds": 21, "positions_total": 27500},
        "history_reads": {"events issued": 2502, "position issued": 2502},
        "reads_issued": 5004,
        "distinct_pairs": 2502,
        "reads_per_pair": 2.0,
    },
)


def _storm(resumed: dict[str, Any] | None = None, **fields: Any) -> Result:
    assert STORM.resume is not None
    storm = {**STORM.resume, **fields}
    storm["resumed"] = {**STORM.resume["resumed"], **(resumed or {})}
    return dataclasses.replace(STORM, resume=storm)


def test_the_resume_storm_is_met_when_every_target_is() -> None:
    [verdict] = target_verdicts("resume-storm", [STORM])
    assert verdict.startswith("tradestream MET"), verdict


def test_each_resume_storm_target_can_miss() -> None:
    misses = {
        "a client not caught up": dataclasses.replace(STORM, subscribers_ok=4999),
        "too slow": dataclasses.replace(STORM, seconds=10.5),
        "timed out": dataclasses.replace(STORM, seconds=None),
        "a failed connection": dataclasses.replace(STORM, failed_conns=1),
        "too many reads": _storm(reads_per_pair=2.01),
        "reads not counted": _storm(reads_per_pair=None),
        **{
            f"{what} 1": _storm({what: 1})
            for what in ("lost", "behind", "duplicates", "backwards", "resets")
        },
    }
    for what, ours in misses.items():
        [verdict] = target_verdicts("resume-storm", [ours])
        assert verdict.startswith("tradestream MISSED"), what


def test_the_resume_storm_phases_are_reported() -> None:
    text = scenario_report("resume-storm", "summary", [STORM], quick=False)
    assert "30 s away" in text
    assert "2,502 distinct (topic, cursor) pairs" in text
    assert "events issued 2,502, position issued 2,502" in text
    assert "5,000/5,000 caught up" in text
    table = markdown([STORM], "caption").splitlines()
    assert (
        table[-1]
        == "| resume-storm | tradestream | 5000/5000 | 4.20 | 4,100 | 0 | 5,004 | 2,502 | 2.00 |"
    )
