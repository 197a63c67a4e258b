"""Settings, read from the environment in one place."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.events import DeliveryPolicy
from domain.topics import TopicKind

MIN_SECRET_BYTES = 32
"""HS256 wants a key as long as its hash (RFC 7518 §3.2)."""

BROADCAST_SCHEMES = ("memory", "redis", "rediss", "postgres", "postgresql")

SOURCE_SPEC = re.compile(r"([a-z][a-z0-9_-]*)(?::(\S+))?")
"""A ``PRICE_SOURCES`` value: a source kind, then its own argument after a colon
(``pyth:<feed id>``, ``simulated``). Which kinds exist, and what their arguments mean, is the
source registry's to say (:mod:`api.sources.registry`) when the server starts."""


@dataclass(frozen=True, slots=True)
class HistoryLimit:
    """How much of a topic's history is kept: the newest ``max_events``, none older than
    ``max_age_s``."""

    max_events: int
    max_age_s: float


DEFAULT_LIMIT = HistoryLimit(max_events=1000, max_age_s=24 * 3600)
DEFAULT_LIMITS: dict[TopicKind, HistoryLimit] = {
    # The cluster-wide marathon feed carries every account snapshot, an ingest window per event
    # (up to 1,000 snapshots, some 400 KB): enough for a process to ride out a broker blip;
    # longer gaps rebuild the boards from the tables.
    TopicKind.MARATHON_FEED: HistoryLimit(max_events=1_000, max_age_s=600),
    # A market's book changes up to BOOK_QUOTE_HZ times a second; a client away longer than a
    # few minutes gets a snapshot instead of a replay anyway.
    TopicKind.ORDER_BOOK: HistoryLimit(max_events=3_000, max_age_s=600),
}

STREAM_KINDS = tuple(kind for kind in TopicKind if kind.policy is DeliveryPolicy.STREAM)
"""The kinds that keep history: every event matters, in order."""


def parse_limits(text: str) -> dict[TopicKind, HistoryLimit]:
    """``HISTORY_LIMITS``: ``kind=events/seconds`` pairs, comma-separated
    (``positions=5000/86400,funding=100/604800``), over :data:`DEFAULT_LIMITS`."""
    limits = {kind: DEFAULT_LIMITS.get(kind, DEFAULT_LIMIT) for kind in STREAM_KINDS}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = re.fullmatch(r"([a-z-]+)=(\d+)/(\d+(?:\.\d+)?)", item)
        if match is None:
            raise ValueError(f"{item!r}: expected kind=events/seconds, e.g. positions=1000/86400")
        name, events, seconds = match.groups()
        try:
            kind = TopicKind(name)
        except ValueError:
            raise ValueError(f"{name!r} is not a topic kind") from None
        if kind not in limits:
            raise ValueError(f"{name!r} is a latest-value kind: it keeps only its newest state")
        if int(events) < 1 or float(seconds) <= 0:
            raise ValueError(f"{item!r}: keep at least one event for a positive time")
        limits[kind] = HistoryLimit(int(events), float(seconds))
    return limits


class ExchangeAccount(BaseModel):
    """One user's account at a real venue (``EXCHANGE_ACCOUNTS``): the ccxt exchange id, where
    its API key and secret are read from (a file or an environment variable each, never the
    value itself), and whether to use the venue's sandbox (testnet)."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)

    exchange: str = Field(pattern=r"^[a-z0-9]{2,40}$")
    api_key_file: Path | None = None
    api_key_env: str | None = None
    secret_file: Path | None = None
    secret_env: str | None = None
    sandbox: bool = False
    currency: str = Field(default="USDT", pattern=r"^[A-Z0-9]{2,12}$")
    """The settlement currency whose balance the dashboard shows."""

    @model_validator(mode="after")
    def _one_source_each(self) -> ExchangeAccount:
        for name, file, env in (
            ("apiKey", self.api_key_file, self.api_key_env),
            ("secret", self.secret_file, self.secret_env),
        ):
            if (file is None) == (env is None):
                raise ValueError(f"give one of {name}File and {name}Env")
        return self

    def credentials(self) -> tuple[SecretStr, SecretStr]:
        """The API key and secret, read now (ValueError naming the source, never the value)."""
        return (
            _secret("apiKey", self.api_key_file, self.api_key_env),
            _secret("secret", self.secret_file, self.secret_env),
        )


def _secret(name: str, file: Path | None, env: str | None) -> SecretStr:
    if file is not None:
        try:
            value = file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"{name}File {file}: {exc.strerror}") from None
        where = f"{name}File {file}"
    else:
        assert env is not None
        value = os.environ.get(env, "").strip()
        where = f"{name}Env {env}"
    if not value:
        raise ValueError(f"{where} is empty")
    return SecretStr(value)


def parse_exchange_accounts(text: str) -> dict[str, ExchangeAccount]:
    """``EXCHANGE_ACCOUNTS``: a JSON object, user id -> :class:`ExchangeAccount`."""
    if not text.strip():
        return {}
    raw = json.loads(text)
    if not isinstance(raw, dict):
        raise ValueError("EXCHANGE_ACCOUNTS must be a JSON object: user id -> account")
    return {str(user): ExchangeAccount.model_validate(account) for user, account in raw.items()}


def parse_url_overrides(text: str) -> dict[str, str]:
    """``CCXT_URL_OVERRIDES``: a JSON object, URL prefix -> its replacement."""
    if not text.strip():
        return {}
    raw = json.loads(text)
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ValueError("CCXT_URL_OVERRIDES must be a JSON object of URL prefix -> URL prefix")
    return raw


class Settings(BaseSettings):
    """Every setting tradestream reads, with its environment variable (the field name, upper case).

    ``docs/configuration.md`` is the reference for users; keep the two in step.
    """

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"
    log_format: Literal["text", "json"] = "text"
    """``json``: every log line (ours and uvicorn's) is one JSON object (:mod:`api.ops.logs`)."""

    database_url: str | None = None
    """PostgreSQL to use; unset starts an embedded PostgreSQL under ``data_dir``."""
    database_pool_size: int = Field(default=10, ge=1)
    database_connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """How long opening a PostgreSQL connection may take before the request that needed it fails
    with SERVICE_UNAVAILABLE (a database that is down refuses at once; a hung one does not)."""
    database_command_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """How long one PostgreSQL command may take (waiting for a row lock included) before it is
    cancelled and its request fails with SERVICE_UNAVAILABLE."""
    data_dir: Path = Path(".data")

    broadcast_url: str = "memory://"
    """broadcaster backend: ``memory://`` (one process), ``redis://...`` or ``postgres://...``."""

    simulated_feeds: bool = True
    price_feed_hz: float = Field(default=1.0, gt=0, le=1000)
    book_quote_hz: float = Field(default=20.0, gt=0, le=1000)
    """How often the simulated market makers look at the oracle prices and move their quotes in
    each market's order book (a market whose price did not move is left as it is)."""
    simulation_seed: int | None = None

    price_sources: dict[str, str] = Field(default_factory=dict)
    """Where each market's oracle price comes from: a JSON object of market id to source spec
    (``{"BTC-PERP": "pyth:0xe62d...", "ETH-PERP": "simulated"}``). Markets not named stay
    simulated (with SIMULATED_FEEDS); ``docs/sources.md`` describes each kind."""
    pyth_hermes_url: str = "https://hermes.pyth.network"
    """The Pyth Hermes the ``pyth:`` markets stream their prices from."""
    pyth_read_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """A Hermes stream silent this long (no price, no keep-alive comment: Hermes sends one every
    15 s) is taken as lost and made again."""
    price_source_backoff_max_s: float = Field(default=30.0, gt=0, le=3600)
    """The longest wait between two attempts to reconnect an external price source."""

    perps_engine_interval_s: float = Field(default=0.5, gt=0, le=60)
    """How often the perpetuals engine marks every position, checks liquidations and stats."""
    liquidation_delay_s: float = Field(default=2.0, ge=0, le=3600)
    """How long a position stays a public liquidation candidate before the engine liquidates it
    itself (outside keepers get this long to act first)."""
    funding_interval_s: float = Field(default=3600.0, gt=0)
    """Funding is settled every this many seconds (venues settle hourly or every 8 h)."""
    price_max_age_s: float = Field(default=30.0, gt=0)
    """An oracle price older than this is stale: no trade fills, no position is warned or
    liquidated, no funding premium is sampled on it."""
    mutation_rate_per_s: float = Field(default=5.0, gt=0)
    """Mutations one caller may make a second on average (bursts of MUTATION_BURST); past it
    each is refused with RATE_LIMITED."""
    mutation_burst: int = Field(default=20, ge=1)

    rabbitmq_url: str | None = None
    """RabbitMQ with the collectors' account snapshots (``amqp://user:password@host:5672/``);
    unset: no consumer (snapshots can still come through ``ingestAccountSnapshot``)."""
    rabbitmq_queue: str = Field(default="socket_data", min_length=1, max_length=200)
    leaderboard_max_hz: float = Field(default=2.0, gt=0, le=100)
    """Leaderboard and account subscriptions send at most this many updates a second each;
    changes in between are conflated into the next."""
    leaderboard_top_max: int = Field(default=100, ge=1, le=1000)
    """The largest ``top`` a leaderboard subscription may ask for."""
    leaderboard_snapshot_interval_s: float = Field(default=60.0, gt=0)
    """How often each running marathon's leaderboard is stored, for ``leaderboardAt``."""
    leaderboard_snapshot_rows: int = Field(default=1000, ge=1)
    """Rows of each stored leaderboard (the top of it)."""

    martingale_round_period_s: float = Field(default=60.0, gt=0)
    """How long a mining round lasts: the round clock opens one every this many seconds."""
    martingale_outcomes: Literal["simulated", "service"] = "simulated"
    """Where round outcomes come from: ``simulated`` (seeded by SIMULATION_SEED, settled as each
    round ends) or ``service`` (a service-role caller settles each round with ``settleRound``)."""
    martingale_win_probability: float = Field(default=0.48, ge=0, le=1)
    martingale_reward_multiplier: Decimal = Field(default=Decimal(2), ge=0, le=1000)
    """SOL a simulated win pays back per SOL deployed, stake included."""
    martingale_refresh_s: float = Field(default=60.0, gt=0)
    """``martingaleProgress`` sends the progress again after this long without a change."""

    paper_initial_balance: Decimal = Field(default=Decimal(10_000), gt=0, le=10**12)
    """USD a new paper trading account starts with."""
    perps_initial_balance: Decimal = Field(
        default=Decimal(10_000), ge=0, le=10**12, decimal_places=6
    )
    """USD a new perps margin account starts with: the free collateral a user opens positions
    with (0: nobody trades perps until funded)."""
    portfolio_initial_cash: Decimal = Field(default=Decimal(10_000), ge=0, le=10**12)
    """USD a new portfolio (spot holdings, for conversions) starts with."""
    conversion_fee_rate: Decimal = Field(default=Decimal("0.001"), ge=0, lt=1)
    """Fee of a conversion, as a fraction of its value (0.001 is 0.1%)."""
    portfolio_update_threshold_percent: Decimal = Field(default=Decimal("0.5"), ge=0, le=100)
    """``dashboardUpdates`` sends the portfolio value again only when it moved by at least this
    many percent since the last one sent."""

    exchange_accounts: str = ""
    """Users whose live dashboard and orders go to a real venue through ccxt instead of the paper
    exchange: a JSON object, user id -> ``{"exchange": "binanceusdm", "apiKeyFile" | "apiKeyEnv",
    "secretFile" | "secretEnv", "sandbox": false, "currency": "USDT"}``. The key and secret are
    read at start from the files or variables named; they are never logged or shown."""
    ccxt_url_overrides: str = ""
    """For stand-ins and testing only: a JSON object of URL prefix -> replacement applied to every
    API URL of every ccxt client (``{"https://fapi.binance.com": "http://127.0.0.1:9000"}``)."""

    leader_poll_s: float = Field(default=2.0, gt=0, le=60)
    """How often a process that does not lead tries to become the leader, and how often the
    leader checks it still holds the lock: the longest a cluster runs without a leader after the
    leader dies (plus PostgreSQL noticing the dead session)."""

    history_limits: str = ""
    """How much history stream topics keep for resuming subscribers: ``kind=events/seconds``
    pairs, comma-separated (``positions=5000/86400``). Unnamed kinds keep 1000 events for 24 h
    (``marathon-feed``: 1000 for 10 minutes)."""
    history_prune_interval_s: float = Field(default=60.0, gt=0)
    """How often the leader deletes history past those limits."""

    gc_collect_interval_s: float = Field(default=60.0, ge=0)
    """Seconds between full garbage collections (0: never, leaving it to Python's thresholds)."""

    subscriber_queue_size: int = Field(default=64, ge=1)
    subscriber_max_lag_s: float = Field(default=30.0, gt=0, le=3600)
    """Events buffered per subscription before its topic's policy applies."""
    max_subscriptions_per_connection: int = Field(default=100, ge=1)
    delta_full_every: int = Field(default=100, ge=1, le=100_000)
    """A subscriber that asked for deltas gets a whole result at least every this many results
    (:mod:`api.graphql.deltas`); 1 sends every result whole."""
    max_connections: int | None = Field(default=None, ge=1)
    """Long-lived connections one process holds: WebSockets, SSE and multipart responses. The
    next WebSocket is closed with 1013, the next stream answered 503. Unset: 20,000, or three
    quarters of the open-files limit when that is lower (:mod:`api.transport.slots`)."""
    max_connections_per_client: int | None = Field(default=None, ge=1)
    """Of those, how many one client holds (a signed-in user, else an address); the next
    WebSocket is closed with 4029, the next stream answered 429. Unset: 200, or a quarter of
    MAX_CONNECTIONS when that is lower."""
    listen_backlog: int = Field(default=4096, ge=1, le=65535)
    """Connections the kernel queues for the process to accept (uvicorn's ``backlog``): when a
    replica restarts, its thousands of clients reconnect within a second or two, and a SYN past a
    full queue is dropped and retried only after a second. The kernel caps it at
    ``net.core.somaxconn`` (4096 on current Linux)."""
    forwarded_allow_ips: str = "127.0.0.1,::1"
    """Proxies whose ``X-Forwarded-For`` names the client (passed to uvicorn): comma-separated
    addresses or networks, ``*`` for every peer. What a client is counted as for
    MAX_CONNECTIONS_PER_CLIENT."""
    max_message_bytes: int = Field(default=256 * 1024, ge=1024)
    """Largest message a client may send: WebSocket frames past it close with 1009, HTTP request
    bodies past it get 413."""
    send_queue_max_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Bytes that may wait to be sent to one WebSocket whose client reads too slowly; past it the
    connection is closed with 4008 (latest-value results are conflated and never pile up)."""
    ws_per_message_deflate: bool = False
    """Per-message compression (permessage-deflate without context takeover) on WebSockets whose
    client offers it: a shared result compressed once for its group (api/streaming/deflate.py).
    Off by default: small messages (prices) shrink little."""
    connection_init_wait_timeout_s: float = Field(default=10.0, gt=0)
    shutdown_grace_s: float = Field(default=20.0, ge=0, le=3600)
    shutdown_reconnect_spread_s: float = Field(default=5.0, ge=0, le=300)
    """On SIGTERM, how long queries and mutations already executing get to finish and send their
    answer before the connections are closed anyway (then the workers stop and the process exits).
    Keep it below the orchestrator's own grace period (Kubernetes: 30 s by default)."""
    ws_ping_interval_s: float = Field(default=20.0, gt=0, le=3600)
    """The server pings every WebSocket this often (a WebSocket ping frame, not graphql-transport-ws
    ``ping``), so a client that vanished without closing is noticed."""
    ws_ping_timeout_s: float = Field(default=20.0, gt=0, le=3600)
    """A WebSocket whose pong has not come this long after a ping is closed (1011) and dropped."""

    environment: Literal["development", "production"] = "development"
    """``production`` refuses to start without a JWT key; ``development`` makes one under
    ``data_dir`` when none is configured."""
    jwt_secret: str | None = None
    """HS256 shared secret."""
    jwt_public_key_file: Path | None = None
    """PEM public key: RS256 (RSA) or ES256 (EC P-256)."""
    jwt_jwks_file: Path | None = None
    """A JWKS document; tokens name their key with ``kid`` when it holds several."""
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_s: float = Field(default=0.0, ge=0, le=300)
    token_renew_notice_s: float = Field(default=60.0, ge=0, le=86_400)

    subscribe_rate_per_s: float = Field(default=10.0, gt=0)
    """subscribe messages one WebSocket may send a second on average (bursts of
    SUBSCRIBE_BURST); past it, each is answered with a RATE_LIMITED error."""
    subscribe_burst: int = Field(default=100, ge=1)
    max_query_depth: int = Field(default=10, ge=0)
    """Nesting below the root fields (0: root fields only)."""
    max_aliases: int = Field(default=30, ge=0)
    max_fields: int = Field(default=300, ge=1)
    """Fields one operation selects once its fragments are expanded (a fragment counts at each
    spread), `__typename` and introspection fields included."""
    max_query_tokens: int = Field(default=2000, ge=10)
    """Size of a GraphQL document in lexical tokens: what it costs to parse."""
    introspection: bool | None = None
    """Unset: on in development, off in production."""

    @property
    def jwt_key_configured(self) -> bool:
        return any(
            source is not None
            for source in (self.jwt_secret, self.jwt_public_key_file, self.jwt_jwks_file)
        )

    @property
    def introspection_enabled(self) -> bool:
        if self.introspection is None:
            return self.environment != "production"
        return self.introspection

    allowed_origins: str = ""
    """Comma-separated origins (``https://app.example.com``) whose pages may call the API from a
    browser: WebSocket handshakes and CORS. Same-origin pages and non-browser clients always may;
    ``*`` allows every origin."""

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip() for o in self.allowed_origins.split(",") if o.strip()]

    @model_validator(mode="after")
    def _one_key_source(self) -> Settings:
        sources = [self.jwt_secret, self.jwt_public_key_file, self.jwt_jwks_file]
        if sum(source is not None for source in sources) > 1:
            raise ValueError(
                "set one of JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWT_JWKS_FILE, not several"
            )
        if self.environment == "production" and not self.jwt_key_configured:
            raise ValueError(
                "ENVIRONMENT=production needs JWT_SECRET, JWT_PUBLIC_KEY_FILE or JWT_JWKS_FILE"
            )
        if (
            self.environment == "production"
            and self.jwt_secret is not None
            and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES
        ):
            raise ValueError(f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes in production")
        return self

    @field_validator(
        "database_url",
        "rabbitmq_url",
        "simulation_seed",
        "jwt_secret",
        "jwt_public_key_file",
        "jwt_jwks_file",
        "jwt_issuer",
        "jwt_audience",
        "introspection",
        "max_connections",
        "max_connections_per_client",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("history_limits")
    @classmethod
    def _valid_history_limits(cls, value: str) -> str:
        parse_limits(value)
        return value

    @field_validator("exchange_accounts")
    @classmethod
    def _valid_exchange_accounts(cls, value: str) -> str:
        parse_exchange_accounts(value)
        return value

    @property
    def exchange_account_map(self) -> dict[str, ExchangeAccount]:
        return parse_exchange_accounts(self.exchange_accounts)

    @field_validator("ccxt_url_overrides")
    @classmethod
    def _valid_url_overrides(cls, value: str) -> str:
        parse_url_overrides(value)
        return value

    @property
    def url_override_map(self) -> dict[str, str]:
        return parse_url_overrides(self.ccxt_url_overrides)

    @property
    def history_limit_map(self) -> dict[TopicKind, HistoryLimit]:
        return parse_limits(self.history_limits)

    @field_validator("price_sources")
    @classmethod
    def _source_specs(cls, value: dict[str, str]) -> dict[str, str]:
        for market, spec in value.items():
            if not market.strip() or market != market.strip():
                raise ValueError(f"{market!r} is not a market id")
            if SOURCE_SPEC.fullmatch(spec) is None:
                raise ValueError(
                    f"{market}: {spec!r} is not a source spec (kind or kind:argument, e.g. "
                    "'simulated' or 'pyth:<feed id>')"
                )
        return value

    @property
    def price_source_specs(self) -> dict[str, tuple[str, str]]:
        """``PRICE_SOURCES`` as market -> (kind, argument; empty when the spec has none)."""
        specs = {}
        for market, spec in self.price_sources.items():
            match = SOURCE_SPEC.fullmatch(spec)
            assert match is not None  # validated above
            specs[market] = (match.group(1), match.group(2) or "")
        return specs

    @field_validator("pyth_hermes_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = urlparse(value)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses_or_networks(cls, value: str) -> str:
        # uvicorn would take a typo for a host name and trust nothing: refuse it here instead.
        if value.strip() == "*":
            return value
        for item in value.split(","):
            if item.strip():
                ipaddress.ip_network(item.strip(), strict=False)  # ValueError names the item
        return value

    @field_validator("broadcast_url")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        scheme = urlparse(value).scheme
        if scheme not in BROADCAST_SCHEMES:
            raise ValueError(f"unsupported broadcast backend {scheme!r}; use {BROADCAST_SCHEMES}")
        return value


ENVIRONMENT_VARIABLES = tuple(sorted(name.upper() for name in Settings.model_fields))
"""Every variable tradestream reads: what a child process started for tests or benchmarks must
not inherit from the environment that starts it."""
