"""Market prices from an exchange end to end: a real server whose PRICE_SOURCES points a market
at ``ccxt:binanceusdm:<symbol>``, real ccxt against the local Binance USD-M stand-in
(tests/standins/binance_usdm.py, its book ticker stream), real graphql-transport-ws subscribers.

No machine here reaches an exchange: this is the wire format as documented, not a live venue."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from tests.conftest import isolated_server
from tests.standins.binance_usdm import BinanceStandIn
from tests.support import PRICE_SUBSCRIPTION, GraphQLWS, ServerProcess, sample, scrape

if TYPE_CHECKING:
    from collections.abc import Iterator

BOOK_TICKER_AT_MS = 1_796_000_000_000


@pytest.fixture(scope="module")
def standin() -> Iterator[BinanceStandIn]:
    binance = BinanceStandIn().run()
    yield binance
    binance.stop()


@pytest.fixture(scope="module")
def server(
    database_url: str, standin: BinanceStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    env = {
        "SIMULATED_FEEDS": "false",  # the stand-in is the only source of BTC-PERP's price
        "PRICE_SOURCES": json.dumps({"BTC-PERP": "ccxt:binanceusdm:BTC/USDT:USDT"}),
        "CCXT_URL_OVERRIDES": json.dumps(standin.url_overrides()),
    }
    log = tmp_path_factory.mktemp("exchange-prices") / "server.log"
    with isolated_server(database_url, env, log) as process:
        yield process


async def test_a_market_priced_by_an_exchange_streams_its_quotes_mid_and_half_spread(
    server: ServerProcess, standin: BinanceStandIn
) -> None:
    async with GraphQLWS.connect(server.ws_url) as client:
        await client.subscribe("btc", PRICE_SUBSCRIPTION, {"m": "BTC-PERP"})
        # The server's watch may not be subscribed yet: push until a price comes through.
        deadline = time.monotonic() + 20
        while not standin.market_streams():
            assert time.monotonic() < deadline, "the server never watched the venue's quotes"
            await asyncio.sleep(0.05)
        first = None
        sent = 0
        while first is None:
            assert time.monotonic() < deadline, "no price came through"
            sent += standin.push_ticker("BTCUSDT", "60000.10", "60010.30", BOOK_TICKER_AT_MS)
            try:
                first = await asyncio.wait_for(client.next_data("btc", "priceUpdates"), 0.5)
            except TimeoutError:
                continue
        assert first["market"] == "BTC-PERP"
        assert first["price"] == "60005.2"
        assert first["confidence"] == "5.1"
        # The venue's event time (the stand-in stamps it 2 ms after the quote's).
        made = datetime.fromtimestamp((BOOK_TICKER_AT_MS + 2) / 1000, UTC)
        assert first["publishedAt"] == made.isoformat()
        standin.push_ticker("BTCUSDT", "60100.00", "60100.20", BOOK_TICKER_AT_MS + 1000)
        second = await client.next_data("btc", "priceUpdates")
        assert (second["price"], second["confidence"]) == ("60100.1", "0.1")
        assert second["sequence"] == first["sequence"] + 1
    samples = scrape(server)
    assert sample(samples, "tradestream_source_prices_total", source="ccxt:binanceusdm") >= 2
