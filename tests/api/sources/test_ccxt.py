"""The ccxt ticker price source through real ccxt against the Binance USD-M stand-in: one socket
and one watch for every market, each book ticker an oracle price (mid, half the spread, the
venue's time), a dropped socket raising, and a new stream recovering."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from ccxt.base import errors as ccxt_errors

from api.settings import Settings
from api.sources.ccxt import ccxt_ticker_source
from domain.prices import OraclePrice, quote_price
from tests.standins.binance_usdm import BinanceStandIn

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from domain.ports import PriceSource

MARKETS = {"BTC-PERP": "BTC/USDT:USDT", "ETH-PERP": "ETH/USDT:USDT"}


@pytest.fixture(scope="module")
def standin() -> Iterator[BinanceStandIn]:
    binance = BinanceStandIn().run()
    yield binance
    binance.stop()


def source_at(standin: BinanceStandIn, markets: dict[str, str] = MARKETS) -> PriceSource:
    settings = Settings(ccxt_url_overrides=json.dumps(standin.url_overrides()))
    return ccxt_ticker_source(markets, "binanceusdm", settings)


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def collect(source: PriceSource, into: list[OraclePrice]) -> None:
    async for price in source.stream():
        into.append(price)


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# published_at is the event time (Binance's E; the stand-in sends E = T + 2 ms), which ccxt
# takes as the ticker's timestamp.
async def test_quotes_arrive_as_oracle_prices_over_one_socket(standin: BinanceStandIn) -> None:
    source = source_at(standin)
    assert (source.name, source.markets) == ("ccxt:binanceusdm", frozenset(MARKETS))
    prices: list[OraclePrice] = []
    task = asyncio.create_task(collect(source, prices))
    try:
        await wait_for(lambda: standin.market_streams() == 1)
        sent = 0
        deadline = time.monotonic() + 10
        # The subscription may not be in yet when the socket opens: push until both land.
        while {p.market for p in prices} != set(MARKETS):
            assert time.monotonic() < deadline, prices
            sent += standin.push_ticker("BTCUSDT", "60000.10", "60010.30", 1796000000000)
            sent += standin.push_ticker("ETHUSDT", "3000.00", "3000.50", 1796000000500)
            await asyncio.sleep(0.1)
        assert standin.market_streams() == 1  # one socket, one watch, both markets
        btc = next(p for p in prices if p.market == "BTC-PERP")
        eth = next(p for p in prices if p.market == "ETH-PERP")
        assert btc == OraclePrice("BTC-PERP", Decimal("60005.2"), Decimal("5.1"), at(1796000000002))
        assert eth == OraclePrice(
            "ETH-PERP", Decimal("3000.25"), Decimal("0.25"), at(1796000000502)
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await wait_for(lambda: standin.market_streams() == 0)  # nothing left open


async def test_a_dropped_socket_raises_and_a_new_stream_recovers(
    standin: BinanceStandIn,
) -> None:
    source = source_at(standin)
    prices: list[OraclePrice] = []
    first = asyncio.create_task(collect(source, prices))
    await wait_for(lambda: standin.market_streams() == 1)
    standin.drop_sockets()
    with pytest.raises(ccxt_errors.NetworkError):
        async with asyncio.timeout(10):
            await first
    # What the runner does after its backoff: stream again.
    second = asyncio.create_task(collect(source, prices))
    try:
        deadline = time.monotonic() + 10
        while not prices:
            assert time.monotonic() < deadline
            standin.push_ticker("BTCUSDT", "61000.00", "61000.20", 1796000001000)
            await asyncio.sleep(0.1)
        assert prices[-1].price == Decimal("61000.1")
    finally:
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second


async def test_a_symbol_the_venue_does_not_list_is_refused(standin: BinanceStandIn) -> None:
    source = source_at(standin, {"DOGE-PERP": "DOGE/USDT:USDT"})
    with pytest.raises(ccxt_errors.BadSymbol):
        async with asyncio.timeout(10):
            await collect(source, [])


@pytest.mark.parametrize(
    ("bid", "ask", "last", "expected"),
    [
        ("100", "102", "150", ("101", "1")),  # the mid, whatever the last trade
        (None, None, "99.5", ("99.5", "0")),  # no quote: the last trade, no confidence given
        ("101", "100", "99", ("99", "0")),  # a crossed quote is not a quote
        ("0", "1", None, None),
        (None, None, None, None),
    ],
)
def test_a_quote_as_an_oracle_price(
    bid: str | None, ask: str | None, last: str | None, expected: tuple[str, str] | None
) -> None:
    def d(value: str | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    now = datetime(2026, 1, 1, tzinfo=UTC)
    price = quote_price("M", bid=d(bid), ask=d(ask), last=d(last), published_at=now)
    if expected is None:
        assert price is None
    else:
        assert price == OraclePrice("M", Decimal(expected[0]), Decimal(expected[1]), now)
