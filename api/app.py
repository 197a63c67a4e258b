"""The ASGI application and its lifespan: database, migrations, broadcaster, hub, workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from decimal import Decimal
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from api.auth import DEV_SECRET_FILE, TokenVerifier, development_secret
from api.feeds.marathons.boards import MarathonBoards
from api.feeds.marathons.desk import MarathonDesk
from api.feeds.marathons.ingest import SnapshotConsumer
from api.feeds.marathons.store import PgMarathonStore
from api.feeds.martingale.desk import MartingaleDesk
from api.feeds.martingale.store import PgMartingaleStore
from api.feeds.paper_exchange.desk import PaperExchange
from api.feeds.paper_exchange.gateways import ExchangeGateways, PaperGateway
from api.feeds.paper_exchange.store import PgPaperAccounts
from api.feeds.perps.desk import PerpsDesk
from api.feeds.perps.store import PgPositionBook
from api.feeds.portfolio.desk import CASH, PortfolioDesk
from api.feeds.portfolio.store import PgPortfolioStore
from api.graphql import core_fix as graphql_core_fix
from api.graphql.fanout import Groups
from api.ops.exposition import metrics, registry
from api.ops.health import healthz, readyz, stats
from api.ops.logs import RequestId, connection_id, new_id
from api.runtime.clock import SystemClock
from api.runtime.leader import Leadership
from api.runtime.services import Services
from api.runtime.workers import Workers, start_cluster_workers, start_process_workers
from api.schema import build_schema, schema
from api.settings import Settings
from api.sources.registry import build_sources
from api.storage.database import connect, create_pool
from api.storage.embedded_postgres import EmbeddedPostgres
from api.storage.history import PgHistory
from api.storage.latest import PgLatestEvents
from api.storage.migrate import migrate
from api.storage.prices import PgPriceRepository, load_markets
from api.streaming.broadcast import Broadcast
from api.streaming.hub import Hub
from api.streaming.publisher import BroadcastPublisher
from api.transport.demo import routes as demo_routes
from api.transport.limits import (
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TRY_AGAIN_LATER,
    BodySizeLimit,
    CallerLimits,
    refuse_websocket,
)
from api.transport.slots import SCOPE_KEY as SLOT_KEY
from api.transport.slots import Refusal, address_key
from api.transport.view import GraphQLView
from domain.portfolio import Holding

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.datastructures import State
    from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)


class App:
    """The ASGI application.

    Starlette serves HTTP and the lifespan. The GraphQL WebSocket endpoint is called directly,
    outside Starlette's middleware, so it receives the server's own ``send`` and the fan-out can
    write frames to the socket without a task per message (:mod:`api.streaming.connection`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.http = _http_app(settings)
        self.view = GraphQLView(build_schema(settings), settings, self.http.state)
        self.http.state.view = self.view
        self.http.state.metrics = registry(self.http.state)
        self.http.router.routes.append(Route("/graphql", self.view))
        self.with_request_ids = RequestId(self.http)

    @property
    def state(self) -> State:
        return self.http.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.with_request_ids(scope, receive, send)
            return
        token = connection_id.set(new_id())  # in every log line logged while serving it
        try:
            if scope["path"] != "/graphql":
                await self.http(scope, receive, send)
                return
            # A connection slot under its address; the view moves it to its user if
            # connection_init names one (api/transport/slots.py). Inline, not a helper coroutine:
            # each idle socket would keep one more suspended frame alive (about 400 bytes).
            slots = self.view.slots
            slot = slots.take(address_key(scope), "ws")
            if isinstance(slot, Refusal):
                code = (
                    CLOSE_TRY_AGAIN_LATER if slot is Refusal.PROCESS else CLOSE_TOO_MANY_CONNECTIONS
                )
                await refuse_websocket(scope, receive, send, code, slots.reason(slot))
                return
            scope[SLOT_KEY] = slot
            try:
                await self.view(scope, receive, send)
            finally:
                scope.pop(SLOT_KEY, None)
                slot.release()
        finally:
            connection_id.reset(token)


def create_app(settings: Settings | None = None) -> App:
    graphql_core_fix.apply()
    return App(settings or Settings())


def _http_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            services = await _start_services(settings, stack)
            app.state.services = services
            workers = Workers()
            stack.push_async_callback(workers.stop)
            start_process_workers(services, workers)
            leadership = Leadership(
                lambda: connect(services.dsn, settings),
                lambda cluster: start_cluster_workers(services, cluster),
                Workers,
                poll_s=settings.leader_poll_s,
                alone=services.broadcast.scheme == "memory",
            )
            app.state.leadership = leadership
            app.state.workers = workers
            workers.start("leader-election", leadership.run())
            logger.info("tradestream ready: broadcast backend %s", services.broadcast.scheme)
            yield

    # CORS outermost, so that even a refusal (413) carries its headers and a browser can read it.
    middleware = []
    if settings.allowed_origin_list:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origin_list,
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
                expose_headers=["X-Request-ID"],
                max_age=600,
            )
        )
    middleware.append(Middleware(BodySizeLimit, max_bytes=settings.max_message_bytes))
    return Starlette(
        middleware=middleware,
        routes=[
            *demo_routes,
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/stats", stats),
            Route("/metrics", metrics),
        ],
        lifespan=lifespan,
    )


async def _start_services(settings: Settings, stack: contextlib.AsyncExitStack) -> Services:
    """Open every shared resource; ``stack`` closes them in reverse order."""
    dsn = settings.database_url
    if dsn is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        dsn = await asyncio.to_thread(embedded.start)
        stack.push_async_callback(asyncio.to_thread, embedded.stop)
    pool = await create_pool(dsn, settings)
    stack.push_async_callback(pool.close)
    await migrate(pool)

    broadcast = Broadcast(settings.broadcast_url)
    await broadcast.connect()
    stack.push_async_callback(_disconnect, broadcast)

    history = PgHistory(pool, settings.history_limit_map)
    hub = Hub(
        broadcast,
        queue_size=settings.subscriber_queue_size,
        history=history,
        max_lag_s=settings.subscriber_max_lag_s,
    )
    stack.push_async_callback(hub.close)

    clock = SystemClock()
    markets = await load_markets(pool)
    # Before anything else starts: a PRICE_SOURCES naming a market this database lacks stops
    # the server here, with the reason (SourceConfigError).
    price_sources = build_sources(settings, [market.id for market in markets])
    prices = PgPriceRepository(pool)
    publisher = BroadcastPublisher(broadcast, pool, clock)
    book = PgPositionBook(pool, clock, initial_balance=settings.perps_initial_balance)
    marathon_store = PgMarathonStore(pool, clock, message_max_bytes=broadcast.max_message_bytes)
    marathon_desk = MarathonDesk(marathon_store, publisher)
    martingale_store = PgMartingaleStore(pool, clock)
    exchange = PaperExchange(
        PgPaperAccounts(
            pool, clock, markets=markets, initial_balance=settings.paper_initial_balance
        ),
        markets=markets,
        prices=prices,
        publisher=publisher,
        clock=clock,
        price_max_age_s=settings.price_max_age_s,
    )
    gateways = ExchangeGateways.open(settings, PaperGateway(exchange))
    stack.push_async_callback(gateways.close)
    consumer = (
        None
        if settings.rabbitmq_url is None
        else SnapshotConsumer(
            settings.rabbitmq_url, settings.rabbitmq_queue, marathon_desk.ingest_many
        )
    )
    return Services(
        verifier=await _token_verifier(settings),
        settings=settings,
        dsn=dsn,
        pool=pool,
        broadcast=broadcast,
        hub=hub,
        history=history,
        groups=Groups(
            queue_size=settings.subscriber_queue_size,
            field_of=schema.share_key_field,
            max_lag_s=settings.subscriber_max_lag_s,
        ),
        publisher=publisher,
        clock=clock,
        markets=markets,
        prices=prices,
        latest=PgLatestEvents(pool),
        book=book,
        desk=PerpsDesk(
            book=book,
            markets=markets,
            prices=prices,
            publisher=publisher,
            clock=clock,
            price_max_age_s=settings.price_max_age_s,
        ),
        mutation_limits=CallerLimits(settings.mutation_rate_per_s, settings.mutation_burst),
        marathon_store=marathon_store,
        marathon_desk=marathon_desk,
        boards=MarathonBoards(marathon_store, hub),
        martingale_store=martingale_store,
        martingale_desk=MartingaleDesk(martingale_store, publisher, clock),
        exchange=exchange,
        gateways=gateways,
        portfolio=PortfolioDesk(
            PgPortfolioStore(
                pool,
                clock,
                initial=Holding(CASH, settings.portfolio_initial_cash, Decimal(1)),
            ),
            markets=markets,
            exchange=exchange,
            publisher=publisher,
            clock=clock,
            conversion_fee_rate=settings.conversion_fee_rate,
        ),
        consumer=consumer,
        price_sources=tuple(price_sources),
    )


async def _token_verifier(settings: Settings) -> TokenVerifier:
    if settings.jwt_key_configured:
        return TokenVerifier.from_settings(settings)
    # Development without a key: a secret of its own under DATA_DIR (settings refuse production).
    secret = await asyncio.to_thread(development_secret, settings.data_dir)
    logger.warning(
        "no JWT key configured: using the development secret in %s; mint a token with "
        "`%s token --sub alice --role user --ttl 1h`",
        settings.data_dir / DEV_SECRET_FILE,
        sys.argv[0] if sys.argv[0].endswith("tradestream") else "tradestream",
    )
    return TokenVerifier(
        [(secret, "HS256", None)],
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        leeway_s=settings.jwt_leeway_s,
    )


async def _disconnect(broadcast: Broadcast) -> None:
    try:
        await broadcast.disconnect()
    except Exception:
        logger.exception("broadcast backend did not disconnect cleanly")
