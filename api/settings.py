"""Settings, read from the environment in one place."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BROADCAST_SCHEMES = ("memory", "redis", "rediss", "postgres", "postgresql")


class Settings(BaseSettings):
    """Every setting tradestream reads, with its environment variable (the field name, upper case).

    ``docs/configuration.md`` is the reference for users; keep the two in step.
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: str = "info"

    database_url: str | None = None
    """PostgreSQL to use; unset starts an embedded PostgreSQL under ``data_dir``."""
    database_pool_size: int = Field(default=10, ge=1)
    data_dir: Path = Path(".data")

    broadcast_url: str = "memory://"
    """broadcaster backend: ``memory://`` (one process), ``redis://...`` or ``postgres://...``."""

    simulated_feeds: bool = True
    price_feed_hz: float = Field(default=1.0, gt=0, le=1000)
    simulation_seed: int | None = None

    subscriber_queue_size: int = Field(default=64, ge=1)
    """Events buffered per subscription before its topic's policy applies."""
    max_subscriptions_per_connection: int = Field(default=100, ge=1)
    connection_init_wait_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("broadcast_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in BROADCAST_SCHEMES:
            raise ValueError(f"unsupported broadcast backend {scheme!r}; use {BROADCAST_SCHEMES}")
        return value
