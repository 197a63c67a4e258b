"""The ASGI application and its lifespan: database, migrations, broadcaster, hub, workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

import asyncpg
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import RedirectResponse
from starlette.routing import Route, WebSocketRoute

from api.broadcast import Broadcast
from api.clock import SystemClock
from api.embedded_postgres import EmbeddedPostgres
from api.health import healthz, readyz
from api.hub import Hub
from api.migrations import migrate
from api.publisher import BroadcastPublisher
from api.schema import schema
from api.services import Services
from api.settings import Settings
from api.store import PgPriceRepository, PgSequencer, load_markets
from api.view import GraphQLView
from api.workers import Workers, start_simulated_feeds

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    view = GraphQLView(schema, settings)

    async def index(request: Request) -> RedirectResponse:
        return RedirectResponse("/graphql")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            services = await _start_services(settings, stack)
            app.state.services = services
            workers = Workers()
            stack.push_async_callback(workers.stop)
            if settings.simulated_feeds:
                await start_simulated_feeds(services, workers)
            logger.info("tradestream ready: broadcast backend %s", services.broadcast.scheme)
            yield

    middleware = []
    if settings.allowed_origin_list:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origin_list,
                allow_methods=["GET", "POST"],
                allow_headers=["*"],
                max_age=600,
            )
        )
    return Starlette(
        middleware=middleware,
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/graphql", view),
            WebSocketRoute("/graphql", view),
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
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=settings.database_pool_size)
    stack.push_async_callback(pool.close)
    await migrate(pool)

    broadcast = Broadcast(settings.broadcast_url)
    await broadcast.connect()
    stack.push_async_callback(_disconnect, broadcast)

    hub = Hub(broadcast, queue_size=settings.subscriber_queue_size)
    stack.push_async_callback(hub.close)

    clock = SystemClock()
    return Services(
        settings=settings,
        pool=pool,
        broadcast=broadcast,
        hub=hub,
        publisher=BroadcastPublisher(broadcast, PgSequencer(pool), clock),
        clock=clock,
        markets=await load_markets(pool),
        prices=PgPriceRepository(pool),
    )


async def _disconnect(broadcast: Broadcast) -> None:
    try:
        await broadcast.disconnect()
    except Exception:
        logger.exception("broadcast backend did not disconnect cleanly")
