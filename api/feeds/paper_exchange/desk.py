"""The paper exchange's desk: what ``placeOrder``, ``cancelOrder`` and its price worker do to an
account, stored and numbered by :class:`api.feeds.paper_exchange.store.PgPaperAccounts`, then
announced on ``live:<owner>``.

Orders fill at the latest oracle prices. A worker (:meth:`PaperExchange.follow_prices`) hands
each new price to the accounts whose open orders it can fill or trigger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from api.feeds.prices.follower import follow_prices

if TYPE_CHECKING:
    from collections.abc import Callable
    from decimal import Decimal

    from api.feeds.paper_exchange.store import PgPaperAccounts
    from api.streaming.hub import Hub
    from domain.markets import MarketCatalog
    from domain.paper_exchange import Changes, OrderRequest, PaperAccount, PlaceResult
    from domain.ports import Clock, PriceRepository, Publisher


class PaperExchange:
    def __init__(
        self,
        store: PgPaperAccounts,
        *,
        markets: MarketCatalog,
        prices: PriceRepository,
        publisher: Publisher,
        clock: Clock,
        price_max_age_s: float,
    ) -> None:
        self.store = store
        self.markets = markets
        self.prices = prices
        self.publisher = publisher
        self.clock = clock
        self.price_max_age_s = price_max_age_s

    async def marks(self) -> dict[str, Decimal]:
        """The latest fresh oracle price of every market (stale ones are left out)."""
        now = self.clock.now()
        latest = await self.prices.latest_of([market.id for market in self.markets])
        return {
            market: price.price
            for market, price in latest.items()
            if (now - price.published_at).total_seconds() <= self.price_max_age_s
        }

    async def account(self, owner: str) -> PaperAccount:
        """The owner's account as stored (a fresh one, not yet stored, if it has none)."""
        return await self.store.account(owner)

    async def fills(self, owner: str, limit: int) -> list[dict[str, Any]]:
        return await self.store.fills(owner, limit)

    async def place(self, owner: str, request: OrderRequest) -> PlaceResult:
        marks = await self.marks()
        result: PlaceResult | None = None

        def place(account: PaperAccount) -> Changes:
            nonlocal result
            result = account.place_order(request, marks, self.clock.now())
            return result.changes

        await self._change(owner, place)
        assert result is not None
        return result

    async def cancel(self, owner: str, order_id: str) -> Changes:
        return await self._change(owner, lambda a: a.cancel_order(order_id, self.clock.now()))

    async def on_price(self, symbol: str, price: Decimal) -> int:
        """Hand a new price to every account it can fill or trigger; how many changed."""
        changed = 0
        for owner in await self.store.watching(symbol):
            changes = await self._change(
                owner, lambda a: a.on_price(symbol, price, self.clock.now())
            )
            changed += bool(changes)
        return changed

    async def follow_prices(self, hub: Hub) -> None:
        """The worker: every price of every market, to the accounts waiting on it."""
        await follow_prices(hub, self.markets, self.clock, self.on_price, worker="paper exchange")

    async def _change(self, owner: str, change: Callable[[PaperAccount], Changes]) -> Changes:
        changes, events = await self.store.change(owner, change)
        for event in events:
            await self.publisher.send(event)
        return changes
