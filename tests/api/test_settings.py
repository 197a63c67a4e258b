from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from api.settings import ENVIRONMENT_VARIABLES, Settings
from domain.topics import TopicKind


def test_defaults_are_the_embedded_single_process_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "BROADCAST_URL", "PORT", "HOST", "PRICE_FEED_HZ"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.database_url is None
    assert settings.broadcast_url == "memory://"
    assert (settings.host, settings.port, settings.price_feed_hz) == ("127.0.0.1", 8000, 1.0)
    assert settings.simulated_feeds is True


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("SIMULATED_FEEDS", "0")
    monkeypatch.setenv("BROADCAST_URL", "redis://127.0.0.1:6379/0")
    settings = Settings()
    assert (settings.port, settings.simulated_feeds) == (9001, False)
    assert settings.broadcast_url.startswith("redis://")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BROADCAST_URL", "kafka://localhost"),
        ("PRICE_FEED_HZ", "0"),
        ("PORT", "70000"),
        ("SUBSCRIBER_QUEUE_SIZE", "0"),
        ("LOG_LEVEL", "verbose"),
        ("PERPS_INITIAL_BALANCE", "-1"),
        ("PERPS_INITIAL_BALANCE", "0.0000001"),
        ("PERPS_INITIAL_BALANCE", "1e13"),
        ("MAX_CONNECTIONS", "0"),
        ("MAX_CONNECTIONS_PER_CLIENT", "0"),
        ("FORWARDED_ALLOW_IPS", "127.0.0.1,nginx"),
        ("FORWARDED_ALLOW_IPS", "10.0.0.0/33"),
        ("PRICE_SOURCES", '{"BTC-PERP": "pyth: 0xe62d"}'),
        ("PRICE_SOURCES", '{"BTC-PERP": "Pyth:0xe62d"}'),
        ("PRICE_SOURCES", '{"BTC-PERP": ""}'),
        ("PRICE_SOURCES", '{"": "simulated"}'),
        ("PRICE_SOURCES", '{"BTC-PERP": 1}'),
        ("PRICE_SOURCES", '["BTC-PERP"]'),
        ("PYTH_HERMES_URL", "hermes.pyth.network"),
        ("PYTH_HERMES_URL", "ftp://hermes.pyth.network"),
        ("PYTH_READ_TIMEOUT_S", "0"),
        ("PRICE_SOURCE_BACKOFF_MAX_S", "0"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()


def test_price_sources_are_a_json_object_of_specs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PRICE_SOURCES", '{"BTC-PERP": "pyth:0xE62D", "ETH-PERP": "simulated", "X": "k:a:b/c"}'
    )
    assert Settings().price_source_specs == {
        "BTC-PERP": ("pyth", "0xE62D"),
        "ETH-PERP": ("simulated", ""),
        "X": ("k", "a:b/c"),
    }
    monkeypatch.delenv("PRICE_SOURCES")
    assert Settings().price_sources == {}


def test_price_sources_that_are_not_json_are_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRICE_SOURCES", "BTC-PERP=pyth:0xe62d")
    with pytest.raises(SettingsError, match="price_sources"):
        Settings()


def test_empty_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """``DATABASE_URL=`` starts the embedded PostgreSQL; it never reaches asyncpg as a DSN."""
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("SIMULATION_SEED", "")
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    settings = Settings()
    assert (settings.database_url, settings.simulation_seed) == (None, None)
    assert settings.log_level == "warning"


def test_allowed_origins_are_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://app.example.com, http://localhost:3000,")
    assert Settings().allowed_origin_list == ["https://app.example.com", "http://localhost:3000"]


def test_every_setting_is_documented() -> None:
    reference = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}`" not in reference]
    assert missing == [], f"add these to docs/configuration.md: {missing}"


def test_connection_limits_unset_and_trusted_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_CONNECTIONS", "MAX_CONNECTIONS_PER_CLIENT", "FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert (settings.max_connections, settings.max_connections_per_client) == (None, None)
    assert settings.forwarded_allow_ips == "127.0.0.1,::1"  # uvicorn's own default
    monkeypatch.setenv("MAX_CONNECTIONS", "")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8, 192.168.1.5,")
    assert Settings().max_connections is None
    assert Settings().forwarded_allow_ips == "10.0.0.0/8, 192.168.1.5,"
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    assert Settings().forwarded_allow_ips == "*"


def test_the_marathon_feed_keeps_fewer_events_as_each_is_an_ingest_window() -> None:
    limits = Settings().history_limit_map
    assert (
        limits[TopicKind.MARATHON_FEED].max_events,
        limits[TopicKind.MARATHON_FEED].max_age_s,
    ) == (
        1_000,
        600,
    )
