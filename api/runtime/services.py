"""What resolvers and workers share in one process, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

    from api.auth import TokenVerifier
    from api.feeds.marathons.boards import MarathonBoards
    from api.feeds.marathons.desk import MarathonDesk
    from api.feeds.marathons.ingest import SnapshotConsumer
    from api.feeds.marathons.store import PgMarathonStore
    from api.feeds.martingale.desk import MartingaleDesk
    from api.feeds.martingale.store import PgMartingaleStore
    from api.feeds.paper_exchange.desk import PaperExchange
    from api.feeds.paper_exchange.gateways import ExchangeGateways
    from api.feeds.perps.desk import PerpsDesk
    from api.feeds.perps.store import PgPositionBook
    from api.feeds.portfolio.desk import PortfolioDesk
    from api.graphql.fanout import Groups
    from api.settings import Settings
    from api.storage.history import PgHistory
    from api.storage.latest import PgLatestEvents
    from api.streaming.broadcast import Broadcast
    from api.streaming.hub import Hub
    from api.transport.limits import CallerLimits
    from domain.markets import MarketCatalog
    from domain.ports import Clock, PriceRepository, PriceSource, Publisher


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    dsn: str
    """The PostgreSQL the pool connects to (for connections of their own, such as the leader's)."""
    pool: asyncpg.Pool
    broadcast: Broadcast
    hub: Hub
    history: PgHistory
    groups: Groups
    publisher: Publisher
    clock: Clock
    markets: MarketCatalog
    prices: PriceRepository
    verifier: TokenVerifier
    latest: PgLatestEvents
    book: PgPositionBook
    desk: PerpsDesk
    mutation_limits: CallerLimits
    marathon_store: PgMarathonStore
    marathon_desk: MarathonDesk
    boards: MarathonBoards
    martingale_store: PgMartingaleStore
    martingale_desk: MartingaleDesk
    exchange: PaperExchange
    gateways: ExchangeGateways
    """Each user's exchange: a venue account (EXCHANGE_ACCOUNTS) or the paper exchange."""
    portfolio: PortfolioDesk
    consumer: SnapshotConsumer | None
    """The RabbitMQ consumer of account snapshots, when RABBITMQ_URL is set."""
    price_sources: tuple[PriceSource, ...] = ()
    """The external price sources PRICE_SOURCES configures (:mod:`api.sources`); the leader
    runs them, and the simulated feed leaves their markets alone."""
