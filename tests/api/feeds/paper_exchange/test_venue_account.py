"""A venue account on its own (no server), through real ccxt against the Binance USD-M stand-in:
read whole when not followed, a slow subscriber's backlog replaced by one resync, a cancel of an
order the account does not have."""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from api.feeds.paper_exchange.venue_account import SUBSCRIBER_QUEUE, VenueAccount
from api.venues.ccxt_client import open_exchange
from domain.paper_exchange import OrderError, OrderRequest, OrderSide, OrderType
from tests.standins.binance_usdm import API_KEY, SECRET, BinanceStandIn

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from domain.exchange_gateway import AccountChange

D = Decimal
ETH = "ETH/USDT:USDT"
BUY, MARKET, LIMIT = OrderSide.BUY, OrderType.MARKET, OrderType.LIMIT


@pytest.fixture(scope="module")
def standin() -> Iterator[BinanceStandIn]:
    binance = BinanceStandIn().run()
    binance.set_account("500.00000000", "450.00000000")
    binance.set_position("ETHUSDT", "-0.300", "3100.00", "3000.00", "30.00000000")
    yield binance
    binance.stop()


@pytest.fixture
async def account(standin: BinanceStandIn) -> AsyncIterator[VenueAccount]:
    exchange = open_exchange(
        "binanceusdm",
        api_key=SecretStr(API_KEY),
        secret=SecretStr(SECRET),
        url_overrides=standin.url_overrides(),
    )
    venue = VenueAccount("olga", exchange, currency="USDT")
    yield venue
    await venue.close()


async def test_an_account_not_followed_is_read_whole(account: VenueAccount) -> None:
    request = OrderRequest("ETH/USDT:USDT", BUY, LIMIT, Decimal("0.1"), Decimal("2900"))
    placed = await account.place("olga", request)
    state = await account.state("olga")
    balance = state.balance
    assert (balance.wallet_balance, balance.available_balance) == (Decimal(500), Decimal(450))
    assert balance.unrealized_pnl == 30
    [short] = state.positions
    assert (short.position.symbol, short.position.size, short.mark) == (
        "ETH/USDT:USDT",
        Decimal("-0.3"),
        Decimal(3000),
    )
    assert placed.order.id in {o.id for o in state.open_orders}


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (OrderRequest(ETH, BUY, OrderType.TAKE_PROFIT, D(1), D(3000)), "INVALID_ORDER_TYPE"),
        (OrderRequest(ETH, BUY, MARKET, D(0)), "INVALID_QUANTITY"),
        (OrderRequest(ETH, BUY, MARKET, D("NaN")), "INVALID_QUANTITY"),
        (OrderRequest(ETH, BUY, LIMIT, D(1)), "INVALID_PRICE"),
        (OrderRequest(ETH, BUY, LIMIT, D(1), D(-5)), "INVALID_PRICE"),
        (OrderRequest(ETH, BUY, MARKET, D(1), D(3000)), "INVALID_PRICE"),
        (OrderRequest(ETH, BUY, MARKET, D(1), take_profit=D("Infinity")), "INVALID_TAKE_PROFIT"),
        (OrderRequest(ETH, BUY, MARKET, D(1), stop_loss=D(0)), "INVALID_STOP_LOSS"),
    ],
)  # fmt: skip
async def test_a_bad_request_is_refused_before_the_venue(
    account: VenueAccount, standin: BinanceStandIn, request_: OrderRequest, code: str
) -> None:
    before = (len(standin.state.received), len(standin.state.requests))
    with pytest.raises(OrderError) as refused:
        await account.place("olga", request_)
    assert refused.value.code == code
    assert (len(standin.state.received), len(standin.state.requests)) == before


async def test_a_cancel_of_an_order_the_account_lacks_is_order_not_found(
    account: VenueAccount,
) -> None:
    with pytest.raises(OrderError) as refused:
        await account.cancel("olga", "123456789")
    assert refused.value.code == "ORDER_NOT_FOUND"


async def test_a_slow_subscriber_gets_one_resync_not_a_backlog(
    account: VenueAccount, standin: BinanceStandIn
) -> None:
    changes = account.changes()
    first = await asyncio.wait_for(anext(changes), 10)  # the account whole
    assert first.resync
    deadline = time.monotonic() + 10
    while standin.user_streams() != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    pushed = SUBSCRIBER_QUEUE * 2
    for n in range(pushed):  # nobody reads meanwhile
        standin.push(standin.balance_event(f"{600 + n}.00000000"))
        await asyncio.sleep(0.01)  # each taken in on its own (ccxt conflates a burst itself)
    last = Decimal(600 + pushed - 1)
    seen: list[AccountChange] = []
    try:
        while not seen or seen[-1].state.balance.wallet_balance != last:
            seen.append(await asyncio.wait_for(anext(changes), 10))
    finally:
        with contextlib.suppress(Exception):
            await changes.aclose()  # type: ignore[attr-defined]
    assert len(seen) < pushed  # conflated, not queued without bound
    assert any(change.resync for change in seen)
    assert standin.user_streams() == 0 or await _closed(standin)


async def _closed(standin: BinanceStandIn) -> bool:
    """The last subscription gone, the user-data socket closes (soon)."""
    deadline = time.monotonic() + 10
    while standin.user_streams():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    return True
