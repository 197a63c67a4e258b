"""What resolvers and workers share in one process, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncpg

    from api.auth import TokenVerifier
    from api.broadcast import Broadcast
    from api.exchange import PaperExchange
    from api.fanout import Groups
    from api.history import PgHistory
    from api.hub import Hub
    from api.limits import CallerLimits
    from api.marathon_boards import MarathonBoards
    from api.marathon_desk import MarathonDesk
    from api.marathon_store import PgMarathonStore
    from api.martingale_desk import MartingaleDesk
    from api.martingale_store import PgMartingaleStore
    from api.perps_desk import PerpsDesk
    from api.perps_store import PgLatestEvents, PgPositionBook
    from api.portfolio import PortfolioDesk
    from api.rabbit import SnapshotConsumer
    from api.settings import Settings
    from domain.markets import MarketCatalog
    from domain.ports import Clock, PriceRepository, Publisher


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
    portfolio: PortfolioDesk
    consumer: SnapshotConsumer | None
    """The RabbitMQ consumer of account snapshots, when RABBITMQ_URL is set."""
