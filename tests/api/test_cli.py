from __future__ import annotations

import os
import subprocess
import sys


def test_serve_refuses_invalid_settings_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env={**os.environ, "BROADCAST_URL": "kafka://localhost:9092"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr
    assert "broadcast_url" in result.stderr
    assert "unsupported broadcast backend 'kafka'" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "launch"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "invalid choice: 'launch'" in result.stderr


def test_serve_refuses_an_unknown_log_format_before_starting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env={**os.environ, "LOG_FORMAT": "xml", "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr
    assert "log_format" in result.stderr
    assert "Input should be 'text' or 'json'" in result.stderr
    assert result.stdout == "", "nothing was started"


def test_serve_refuses_price_sources_it_cannot_use_before_starting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env={**os.environ, "PRICE_SOURCES": '{"BTC-PERP": "chainlink:0xabc"}', "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "tradestream: PRICE_SOURCES: BTC-PERP: unknown source kind 'chainlink' "
        "(known: ccxt, pyth, simulated)\n"
    )


def test_serve_refuses_price_sources_that_are_not_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "serve"],
        env={**os.environ, "PRICE_SOURCES": "BTC-PERP=pyth:0xe62d", "PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr
    assert 'error parsing value for field "price_sources"' in result.stderr
