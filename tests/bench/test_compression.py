"""The compression benchmark at a small size (a real server each way, the Node load client), and
its target checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.compression import VARIANTS, checks
from bench.scenarios import SCENARIOS, TRADESTREAM, Config, Result, measure

PROJECT = Path(__file__).resolve().parents[2]
SMALL_HOT = dataclasses.replace(SCENARIOS["hot"], quick_subscribers=20, quick_duration_s=2.0)


def test_the_load_client_counts_the_bytes_on_the_wire_with_and_without_compression(
    quick_config: Config,
) -> None:
    base = quick_config
    results = {}
    for variant, (server_env, load_env) in VARIANTS.items():
        config = dataclasses.replace(base, server_env=server_env, load_env=load_env)
        results[variant] = result = measure(SMALL_HOT, TRADESTREAM, config)
        assert result.error is None, result.error
        assert result.subscribers_ok == 20
        assert result.msgs_per_s
        assert result.wire_bytes_per_msg is not None
        assert result.payload_bytes_per_msg is not None
    off, on = results["off"], results["on"]
    assert off.compressed_conns == 0
    assert on.compressed_conns == 20
    assert off.wire_bytes_per_msg is not None
    assert off.payload_bytes_per_msg is not None
    assert on.wire_bytes_per_msg is not None
    # Off: each message's bytes and its frame header, 2 or 4 bytes (a ping now and then).
    assert off.payload_bytes_per_msg + 2 <= off.wire_bytes_per_msg < off.payload_bytes_per_msg + 6
    assert on.wire_bytes_per_msg < off.wire_bytes_per_msg
    # The same messages, decompressed (prices differ in length by a digit or two).
    assert on.payload_bytes_per_msg == pytest.approx(off.payload_bytes_per_msg, abs=2)


def _result(**fields: float | int | None) -> Result:
    return Result(
        scenario="hot",
        server=TRADESTREAM,
        label="tradestream",
        mode="stream",
        vars_mode="same",
        asked=100,
        rate_hz=20.0,
        duration_s=10.0,
        **fields,  # type: ignore[arg-type]
    )


def test_the_checks_compare_on_with_off() -> None:
    results = {
        "hot-off": _result(msgs_per_s=1000, wire_bytes_per_msg=300.0, p99_ms=10.0),
        "hot-on": _result(
            msgs_per_s=950,
            wire_bytes_per_msg=90.0,
            p99_ms=20.0,
            compressed_conns=100,
            subscribers_ok=100,
        ),
        "idle-off": _result(bytes_per_subscriber=10_000),
        "idle-on": _result(bytes_per_subscriber=11_500),
    }
    found = checks(results)
    assert [ok for _, ok in found] == [True, True, True, True, False]
    assert "3.33x fewer" in found[0][0]
    assert "1.15x" in found[4][0]
