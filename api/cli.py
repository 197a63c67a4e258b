"""The ``tradestream`` command: ``serve`` runs the server, ``export-schema`` writes the SDL."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn

from api.app import App, create_app
from api.auth import Role, TokenVerifier, development_secret, mint, parse_ttl
from api.ops import logs
from api.schema import schema
from api.settings import Settings
from api.sources.registry import SourceConfigError, build_sources
from api.transport.slots import raise_open_files_limit
from api.transport.ws_protocol import WebSocketProtocol

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import socket
    from types import FrameType


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tradestream", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API server (settings from the environment)")
    serve.add_argument("--host", help="overrides HOST")
    serve.add_argument("--port", type=int, help="overrides PORT")

    export = commands.add_parser("export-schema", help="write the GraphQL schema as SDL")
    export.add_argument(
        "--output", "-o", default="schema.graphql", help="file to write, '-' for stdout"
    )

    token = commands.add_parser(
        "token", help="mint a token with the configured key (HS256 secret, or --private-key)"
    )
    token.add_argument("--sub", required=True, help="the user or wallet address, or a name")
    token.add_argument("--role", choices=[r.value for r in Role], default=Role.USER.value)
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    token.add_argument(
        "--private-key", help="PEM private key (RS256 or ES256) when the server verifies with a key"
    )

    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args.host, args.port)
    if args.command == "token":
        return _token(args.sub, Role(args.role), args.ttl, args.private_key)
    return _export_schema(args.output)


def _serve(host: str | None, port: int | None) -> int:
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        settings = Settings()
    except (ValidationError, SettingsError) as exc:
        # SettingsError: a JSON-valued setting (PRICE_SOURCES) that is not JSON.
        print(f"tradestream: invalid settings in the environment\n{exc}", file=sys.stderr)
        return 2
    try:
        build_sources(settings)  # the markets are checked once the database is open
    except SourceConfigError as exc:
        print(f"tradestream: {exc}", file=sys.stderr)
        return 2
    if settings.jwt_key_configured:
        try:
            TokenVerifier.from_settings(settings)
        except (OSError, ValueError) as exc:
            print(f"tradestream: the JWT key cannot be used: {exc}", file=sys.stderr)
            return 2
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    settings = settings.model_copy(update=overrides)
    log_config = logs.configure(settings.log_level, settings.log_format)
    banner = (
        f"tradestream on http://{settings.host}:{settings.port}/graphql "
        f"(GraphiQL in a browser; WebSocket graphql-transport-ws on the same path)"
    )
    if settings.log_format == "text":
        print(banner, flush=True)
    else:  # nothing but JSON lines on the output
        logger.info(banner)
    soft, hard = raise_open_files_limit()  # before the app sizes MAX_CONNECTIONS by it
    logger.info("open files: at most %d (hard limit %d)", soft, hard)
    app = create_app(settings)
    _tune_gc()
    # While the documents thread parses or validates a long document
    # (api/graphql/document_limits.py), the
    # event loop waits up to this long for the GIL at each step of serving anyone else.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config,
        # uvicorn's sans-io protocol, with closed sockets dropped in bounded time.
        ws=WebSocketProtocol,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=settings.ws_per_message_deflate,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        backlog=settings.listen_backlog,
    )
    _DrainingServer(
        config, app, settings.shutdown_grace_s, settings.shutdown_reconnect_spread_s
    ).run()
    return 0


def _tune_gc() -> None:
    """A server holding thousands of long-lived connection objects spends much of a reconnect
    storm in the cyclic collector, walking objects that will live as long as their sockets.
    Collect young objects less often, and leave what start-up made out of every collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)


GROUPS_END_WAIT_S = 1.0
"""At shutdown, how long the fan-out groups get to deliver SHUTTING_DOWN before the sockets
close (they take a loop iteration or two; leaderboards one LEADERBOARD_MAX_HZ interval)."""

SWITCH_INTERVAL_S = 0.001
"""How long a thread holding the GIL keeps it from one that waits (CPython's default is 5 ms).
Serving a request takes the GIL many times: with ten 140-fragment documents at a time in the
documents thread, /healthz answered in 10.9 ms (median; 21.6 ms p90) at 5 ms and in 2.9 ms
(5.1 ms p90) at 1 ms, polled from another process."""

GC_THRESHOLD = 10_000
"""Allocations between young-generation collections (CPython's default is 700): measured with
`python -m bench`, the reconnect storm of 5000 went from 5.2 s to 2.0 s, idle memory unchanged."""


class _DrainingServer(uvicorn.Server):
    """Graceful shutdown (:mod:`api.transport.shutdown`), on top of uvicorn's.

    uvicorn waits for open HTTP responses before it shuts the app down, and an SSE or multipart
    subscription never ends by itself; so on the exit signal, end every subscription first (each
    gets a SHUTTING_DOWN error, then completes). uvicorn closes WebSockets at once: before it
    does, stop accepting connections and let the queries and mutations running on them finish
    and send their answer, then close each WebSocket with when to reconnect. All of it within
    ``shutdown_grace_s``.
    """

    def __init__(
        self, config: uvicorn.Config, app: App, grace_s: float, reconnect_spread_s: float
    ) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self.reconnect_spread_s = reconnect_spread_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the loop has already stopped: nothing left to drain
            return
        # Stop listening before any subscriber is told to go: one told SHUTTING_DOWN reconnects
        # at once, and must reach another replica, not this one in the tick before uvicorn's
        # own shutdown closes the listener.
        loop.call_soon_threadsafe(self._stop_listening)
        loop.call_soon_threadsafe(self.app.view.shutdown.begin)
        services: Any = getattr(self.app.state, "services", None)
        if services is not None:
            loop.call_soon_threadsafe(services.hub.drain)

    def _stop_listening(self) -> None:
        for server in self.servers:  # new connections are refused from here on
            server.close()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        deadline = time.monotonic() + self.grace_s
        self._stop_listening()  # already, unless the exit did not come through handle_exit
        # The drained hub has told every subscription to end; give their groups a moment to hand
        # each member its SHUTTING_DOWN before uvicorn closes the WebSockets (a busy machine may
        # not have run them yet). Bounded: a stream that waits on something else ends later.
        services: Any = getattr(self.app.state, "services", None)
        if services is not None:
            await services.groups.ended(min(self.grace_s, GROUPS_END_WAIT_S))
        shutdown = self.app.view.shutdown
        if not await shutdown.finished(self.grace_s):
            logger.warning(
                "%d WebSocket operation(s) still running after %gs; closing anyway",
                shutdown.running,
                self.grace_s,
            )
        # Every graphql-transport-ws socket is closed here (1012), each told when to reconnect,
        # so a rolling deploy's clients come back spread over SHUTDOWN_RECONNECT_SPREAD_S.
        await shutdown.close_sockets(self.reconnect_spread_s)
        # What is left of the grace period (uvicorn counts whole seconds), for HTTP responses
        # still being sent.
        self.config.timeout_graceful_shutdown = max(math.ceil(deadline - time.monotonic()), 1)
        await super().shutdown(sockets)


def _token(sub: str, role: Role, ttl_text: str, private_key: str | None) -> int:
    from pydantic import ValidationError

    try:
        settings = Settings()
        ttl = parse_ttl(ttl_text)
    except (ValidationError, ValueError) as exc:
        print(f"tradestream token: {exc}", file=sys.stderr)
        return 2
    if private_key is not None:
        key, algorithm = _private_key(Path(private_key))
    elif settings.jwt_secret is not None:
        key, algorithm = settings.jwt_secret, "HS256"
    elif settings.jwt_public_key_file is None and settings.jwt_jwks_file is None:
        key, algorithm = development_secret(settings.data_dir), "HS256"
    else:
        print(
            "tradestream token: the server verifies with a public key; pass --private-key",
            file=sys.stderr,
        )
        return 2
    print(
        mint(
            key,
            sub=sub,
            role=role,
            ttl=ttl,
            algorithm=algorithm,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    )
    return 0


def _private_key(path: Path) -> tuple[Any, str]:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(path.read_bytes(), password=None)
    return key, "ES256" if isinstance(key, EllipticCurvePrivateKey) else "RS256"


def _export_schema(output: str) -> int:
    sdl = schema.as_str() + "\n"
    if output == "-":
        sys.stdout.write(sdl)
    else:
        Path(output).write_text(sdl, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
