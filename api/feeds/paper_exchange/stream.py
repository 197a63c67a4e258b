"""The paper exchange's subscription stream: a paper account's live dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator  # noqa: TC003  (strawberry reads annotations at runtime)
from typing import TYPE_CHECKING

from api.feeds.paper_exchange.types import (
    BalanceUpdate,
    LiveDashboardEvent,
    OrdersUpdate,
    PaperBalance,
    PaperOrder,
    PaperPosition,
    PaperPositionsUpdate,
    account_views,
    changed_fills,
    changed_orders,
    open_orders_of,
)
from api.graphql.errors import StreamEndedError
from api.graphql.resume import resume, stamped
from api.graphql.streams import StreamWithPrices, decoded_price
from api.streaming.hub import HubError
from domain.exchange_gateway import ChangeKind
from domain.topics import live_topic

if TYPE_CHECKING:
    from api.runtime.services import Services
    from api.storage.history import Cursor
    from domain import paper_exchange as model
    from domain.events import Event
    from domain.exchange_gateway import AccountFeed
    from domain.ports import Clock


async def live_stream(
    services: Services, owner: str, after: list[Cursor] | None = None
) -> AsyncIterator[LiveDashboardEvent]:
    """Balance, positions and open orders at once; then each change of the account (orders,
    fills, positions, balance); and positions and balance again when a price they depend on
    moves. Resumed (``after``): the order changes since the cursor, then balance and positions.

    As the positions stream does (``docs/perps.md``, "What a tick costs"), a tick is decoded once
    for every stream, the account is valued from what its revision worked out once
    (:class:`domain.paper_exchange.AccountValuer`), and only the prices of the symbols the
    account holds are followed."""
    exchange = services.exchange
    topic = live_topic(owner)
    try:
        async with StreamWithPrices(services.hub, [topic]) as feed:
            resumption = await resume(
                services.history,
                services.hub,
                [topic],
                after,
                lambda: exchange.account(owner),
                always_snapshot=True,
            )
            snapshot = resumption.snapshot
            assert snapshot is not None
            account = snapshot
            valuer = account.valuer()
            await feed.follow(valuer.symbols)
            marks = await exchange.marks()
            now = services.clock.now()
            position = resumption.position
            for item in resumption.opening(lambda event: [_orders_update(event, snapshot)]):
                yield item
            balance, positions = account_views(valuer, marks)
            yield stamped(BalanceUpdate(balance=balance, at=now), position)
            yield stamped(PaperPositionsUpdate(positions=positions, at=now), position)
            if not resumption.resumed:
                orders = OrdersUpdate(
                    changed=[], fills=[], open_orders=open_orders_of(account), at=now
                )
                yield stamped(orders, position)
            while True:
                event = await feed.next()
                if event.topic != topic:
                    price = decoded_price(event)
                    if marks.get(price.market) == price.price:
                        continue
                    marks[price.market] = price.price
                    if price.market not in valuer.symbols:
                        continue  # left over from a symbol no longer held
                    new_balance, new_positions = account_views(valuer, marks)
                    if new_positions != positions:
                        positions = new_positions
                        update = PaperPositionsUpdate(positions=positions, at=event.published_at)
                        yield stamped(update, position)
                    if new_balance != balance:
                        balance = new_balance
                        yield stamped(
                            BalanceUpdate(balance=balance, at=event.published_at), position
                        )
                    continue
                if not position.advance(event):
                    continue  # the start covered it
                account = await exchange.account(owner)
                valuer = account.valuer()
                added = await feed.follow(valuer.symbols)
                if added:
                    # Not followed until now: their prices may have moved meanwhile.
                    latest = await exchange.marks()
                    for market in added:
                        if market in latest and marks.get(market) != latest[market]:
                            marks[market] = latest[market]
                yield stamped(_orders_update(event, account), position)
                balance, positions = account_views(valuer, marks)
                at = event.published_at
                yield stamped(PaperPositionsUpdate(positions=positions, at=at), position)
                yield stamped(BalanceUpdate(balance=balance, at=at), position)
    except HubError as exc:
        raise StreamEndedError(exc) from exc


def _orders_update(event: Event, account: model.PaperAccount) -> OrdersUpdate:
    return OrdersUpdate(
        changed=changed_orders(event.payload),
        fills=changed_fills(event.payload),
        open_orders=open_orders_of(account),
        at=event.published_at,
    )


async def venue_stream(clock: Clock, feed: AccountFeed) -> AsyncIterator[LiveDashboardEvent]:
    """A venue account's dashboard, in the paper dashboard's shapes: the account whole (orders,
    positions, balance), then what each change of the venue's stream touched; whole again after
    every reconnect. Not resumable (no cursor): a new subscription starts whole."""
    async for change in feed.changes():
        state, at = change.state, clock.now()
        if change.resync or ChangeKind.ORDERS in change.kinds:
            yield OrdersUpdate(
                changed=[PaperOrder.of(o.to_payload()) for o in change.changed],
                fills=[],
                open_orders=[PaperOrder.of(o.to_payload()) for o in state.open_orders],
                at=at,
            )
        if change.resync or ChangeKind.POSITIONS in change.kinds:
            positions = [PaperPosition.of_view(v) for v in state.positions]
            yield PaperPositionsUpdate(positions=positions, at=at)
        if change.resync or ChangeKind.BALANCE in change.kinds:
            yield BalanceUpdate(balance=PaperBalance.of_balance(state.balance), at=at)
