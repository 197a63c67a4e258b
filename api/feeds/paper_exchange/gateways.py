"""Which exchange a user trades on: a venue account through ccxt when ``EXCHANGE_ACCOUNTS``
names the user, else the paper exchange. Both are :class:`domain.exchange_gateway.
ExchangeGateway`; :class:`PaperGateway` is the paper exchange as one, unchanged."""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.feeds.paper_exchange.venue_account import VenueAccount
from api.venues.ccxt_client import open_exchange
from domain.exchange_gateway import AccountState, Placement

if TYPE_CHECKING:
    from api.feeds.paper_exchange.desk import PaperExchange
    from api.settings import Settings
    from domain.exchange_gateway import ExchangeGateway
    from domain.paper_exchange import Order, OrderRequest


class PaperGateway:
    """The paper exchange (:class:`PaperExchange`) as an :class:`ExchangeGateway`."""

    def __init__(self, exchange: PaperExchange) -> None:
        self.exchange = exchange

    async def state(self, owner: str) -> AccountState:
        account = await self.exchange.account(owner)
        valuer = account.valuer()
        views = valuer.positions(await self.exchange.marks())
        return AccountState(valuer.balance(views), tuple(views), tuple(account.open_orders()))

    async def place(self, owner: str, request: OrderRequest) -> Placement:
        result = await self.exchange.place(owner, request)
        account = await self.exchange.account(owner)
        children = tuple(account.children(result.order.id))
        return Placement(result.order, duplicate=result.duplicate, children=children)

    async def cancel(self, owner: str, order_id: str) -> Order:
        await self.exchange.cancel(owner, order_id)
        order = (await self.exchange.account(owner)).order(order_id)
        assert order is not None  # cancel raised ORDER_NOT_FOUND otherwise
        return order


class ExchangeGateways:
    """Every user's gateway in this process: the configured venue accounts, opened at start (their
    credentials read then), and the paper exchange for everyone else."""

    def __init__(self, paper: PaperGateway, venues: dict[str, VenueAccount]) -> None:
        self.paper = paper
        self.venues = venues

    @classmethod
    def open(cls, settings: Settings, paper: PaperGateway) -> ExchangeGateways:
        """Read each configured account's credentials and make its ccxt client (it connects on
        first use). A missing or empty credential fails here, naming its source."""
        overrides = settings.url_override_map
        venues: dict[str, VenueAccount] = {}
        for owner, config in settings.exchange_account_map.items():
            try:
                api_key, secret = config.credentials()
            except ValueError as exc:
                raise ValueError(f"EXCHANGE_ACCOUNTS[{owner!r}]: {exc}") from None
            exchange = open_exchange(
                config.exchange,
                api_key=api_key,
                secret=secret,
                sandbox=config.sandbox,
                url_overrides=overrides,
            )
            venues[owner] = VenueAccount(owner, exchange, currency=config.currency)
        return cls(paper, venues)

    def gateway(self, owner: str) -> ExchangeGateway:
        return self.venues.get(owner) or self.paper

    def venue(self, owner: str) -> VenueAccount | None:
        """The owner's venue account, or None for a paper trader."""
        return self.venues.get(owner)

    async def close(self) -> None:
        for venue in self.venues.values():
            await venue.close()
