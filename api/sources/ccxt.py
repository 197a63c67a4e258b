"""Market prices from an exchange through ccxt, as a :class:`domain.ports.PriceSource`: one
ccxt client and one watch for all its markets (``watch_bids_asks`` where the venue has it, else
``watch_tickers``), each quote an :class:`OraclePrice` by :func:`domain.prices.quote_price` (the
mid, confidence half the spread), published at the venue's timestamp.

Why best bid and ask first: a price's confidence comes from the spread, and some venues' tickers
carry no bid or ask at all (Binance USD-M's 24-hour ticker has only the last price and the day's
statistics); its book ticker carries exactly the best bid and ask, with the time it was made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from api.venues.ccxt_client import ccxt_optional, known_exchange, open_exchange
from domain.prices import quote_price

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from api.settings import Settings
    from domain.ports import PriceSource
    from domain.prices import OraclePrice


class CcxtTickerSource:
    """The quotes of ``symbols`` (market id -> the venue's symbol, ``BTC-PERP`` ->
    ``BTC/USDT:USDT``) at one venue, through one ccxt client (``exchange``)."""

    def __init__(self, exchange_id: str, exchange: Any, symbols: Mapping[str, str]) -> None:
        self.name = f"ccxt:{exchange_id}"
        self.markets = frozenset(symbols)
        self.exchange = exchange
        self._market_of = {symbol: market for market, symbol in symbols.items()}

    async def stream(self) -> AsyncIterator[OraclePrice]:
        """Every new quote of the markets, until cancelled. A lost connection raises (ccxt's
        ``NetworkError``); the caller calls again after its backoff, and ccxt connects anew. A
        symbol the venue does not list raises ``BadSymbol`` before anything is watched."""
        exchange = self.exchange
        symbols = list(self._market_of)
        try:
            await exchange.load_markets()
            watch = (
                exchange.watch_bids_asks
                if exchange.has.get("watchBidsAsks")
                else exchange.watch_tickers
            )
            while True:
                tickers = await watch(symbols)
                for symbol, ticker in tickers.items():
                    price = self._price(symbol, ticker)
                    if price is not None:
                        yield price
        finally:
            # Nothing left open by a stream that ended (its sockets and its HTTP session, or the
            # runner's cancellation at shutdown would leave them): the next call opens anew.
            await exchange.close()

    def _price(self, symbol: str, ticker: dict[str, Any]) -> OraclePrice | None:
        market = self._market_of.get(symbol)
        if market is None:
            return None
        timestamp = ticker.get("timestamp")
        published_at = (
            datetime.now(UTC)  # a venue that stamps nothing: when it arrived
            if timestamp is None
            else datetime.fromtimestamp(int(timestamp) / 1000, UTC)
        )
        return quote_price(
            market,
            bid=ccxt_optional(ticker.get("bid")),
            ask=ccxt_optional(ticker.get("ask")),
            last=ccxt_optional(ticker.get("last")),
            published_at=published_at,
        )


def ccxt_ticker_source(
    markets: dict[str, str], exchange_id: str, settings: Settings
) -> PriceSource:
    """The price source of ``markets`` (market id -> the venue's symbol) at ``exchange_id``:
    public data, no credentials; ``CCXT_URL_OVERRIDES`` applies."""
    exchange = open_exchange(exchange_id, url_overrides=settings.url_override_map)
    return CcxtTickerSource(exchange_id, exchange, markets)


def ccxt_sources(routes: Mapping[str, str], settings: Settings) -> list[PriceSource]:
    """The ``ccxt`` kind of ``PRICE_SOURCES``: ``routes`` maps each market to ``<exchange
    id>:<the exchange's symbol>`` (``binanceusdm:BTC/USDT:USDT``); one source, one client and
    one watch, per exchange."""
    by_exchange: dict[str, dict[str, str]] = {}
    for market, argument in sorted(routes.items()):
        exchange_id, _, symbol = argument.partition(":")
        if not exchange_id or not symbol:
            raise ValueError(f"{market}: 'ccxt' takes <exchange id>:<symbol>, not {argument!r}")
        if not known_exchange(exchange_id):
            raise ValueError(f"{market}: ccxt has no exchange {exchange_id!r}")
        by_exchange.setdefault(exchange_id, {})[market] = symbol
    return [
        ccxt_ticker_source(markets, exchange_id, settings)
        for exchange_id, markets in by_exchange.items()
    ]
