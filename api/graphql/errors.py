"""GraphQL errors a client can act on. Each carries a stable ``extensions.code``.

ClientError                     the request cannot be served as asked; not logged as a fault
 ├── UnknownMarketGraphQLError  code UNKNOWN_MARKET, extensions.market names it
 └── StreamEndedError           a subscription the server had to end: code SUBSCRIBER_LAGGED,
                                STREAM_GAP, UPSTREAM_UNAVAILABLE or SHUTTING_DOWN; resubscribe
                                (with after: the last cursor) to go on
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError

from api.streaming.hub import HubClosedError, HubError, StreamGapError, SubscriberLaggedError
from domain.markets import Market, MarketCatalog, UnknownMarketError


class ClientError(GraphQLError):
    code = "BAD_REQUEST"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": self.code, **extensions})


class UnknownMarketGraphQLError(ClientError):
    code = "UNKNOWN_MARKET"

    def __init__(self, market: str) -> None:
        super().__init__(f"Unknown market {market!r}", market=market)


def market_or_error(markets: MarketCatalog, market: str) -> Market:
    """The market with this id, or a GraphQL error that names the unknown one."""
    try:
        return markets.get(market)
    except UnknownMarketError:
        raise UnknownMarketGraphQLError(market) from None


class StreamEndedError(ClientError):
    def __init__(self, error: HubError) -> None:
        self.code = _STREAM_END_CODES.get(type(error), "UPSTREAM_UNAVAILABLE")
        super().__init__(str(error))


_STREAM_END_CODES: dict[type[HubError], str] = {
    SubscriberLaggedError: "SUBSCRIBER_LAGGED",
    HubClosedError: "SHUTTING_DOWN",
    StreamGapError: "STREAM_GAP",
}
