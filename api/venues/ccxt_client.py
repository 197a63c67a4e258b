"""Opening a ccxt (``ccxt.pro``) client for a venue, with its credentials, sandbox flag and the
URL overrides a stand-in needs; and mapping ccxt's errors to stable order error codes.

Nothing here logs or passes on a credential: ccxt's exception messages can hold a request URL
with its signature, and its verbose mode prints the key header, so messages are never forwarded
(only the venue's numeric code is read out of them) and verbose is never turned on.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from domain import exchange_gateway as codes
from domain.paper_exchange import OrderError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import SecretStr

_ZERO = Decimal(0)

_LOGGER = logging.getLogger("api.venues.ccxt")
_LOGGER.setLevel(logging.INFO)
"""ccxt's own logger: ccxt logs every request with its headers (the API key among them) at DEBUG,
so its records stop at INFO whatever LOG_LEVEL says."""

DERIVATIVES_OPTIONS: dict[str, Any] = {
    # A derivatives account needs no spot currency list; Binance serves it from a signed spot
    # endpoint (sapi) that a futures-only key may not reach.
    "fetchCurrencies": False,
    # Resyncing reads every open order of the account at once, knowingly.
    "warnOnFetchOpenOrdersWithoutSymbol": False,
    # The account is read whole by the caller once its streams are asked for; ccxt's own
    # snapshot, read again and applied whenever it lands, could overwrite a newer update.
    "watchBalance": {"fetchBalanceSnapshot": False, "awaitBalanceSnapshot": False},
    "watchPositions": {"fetchPositionsSnapshot": False, "awaitPositionsSnapshot": False},
}


@functools.cache
def ccxtpro() -> Any:
    """``ccxt.pro``, imported on first use: ccxt imports every one of its exchanges with it
    (0.6 s of CPU), which a server with no venue configured should not pay at each start."""
    return importlib.import_module("ccxt.pro")


@functools.cache
def ccxt_errors() -> Any:
    """``ccxt.base.errors`` (its exception classes), imported on first use as :func:`ccxtpro`."""
    return importlib.import_module("ccxt.base.errors")


def ccxt_decimal(value: Any) -> Decimal:
    """A number of ccxt's unified structures as a Decimal. ccxt gives floats; their shortest repr
    is the venue's decimal string, less its trailing zeros (60000.0 shows as 60000)."""
    return Decimal(str(value)).normalize() + _ZERO


def ccxt_optional(value: Any) -> Decimal | None:
    """:func:`ccxt_decimal`, or None for a number the venue did not give."""
    return None if value is None else ccxt_decimal(value)


def known_exchange(exchange_id: str) -> bool:
    return exchange_id in ccxtpro().exchanges


def open_exchange(
    exchange_id: str,
    *,
    api_key: SecretStr | None = None,
    secret: SecretStr | None = None,
    sandbox: bool = False,
    url_overrides: Mapping[str, str] | None = None,
) -> Any:
    """A ccxt.pro client of ``exchange_id`` (not connected yet: it connects on first use).
    ``url_overrides`` replaces URL prefixes in every API URL of the client (after sandbox mode
    has chosen them): for stand-ins and testing only."""
    if not known_exchange(exchange_id):
        raise ValueError(f"ccxt has no exchange {exchange_id!r}")
    config: dict[str, Any] = {
        "enableRateLimit": True,
        "options": dict(DERIVATIVES_OPTIONS),
        "logger": _LOGGER,
    }
    if api_key is not None and secret is not None:
        config["apiKey"] = api_key.get_secret_value()
        config["secret"] = secret.get_secret_value()
    exchange = getattr(ccxtpro(), exchange_id)(config)
    if sandbox:
        exchange.set_sandbox_mode(True)
    if url_overrides:
        exchange.urls["api"] = rewrite_urls(exchange.urls["api"], url_overrides)
    return exchange


def rewrite_urls(urls: Any, overrides: Mapping[str, str]) -> Any:
    """``urls`` (ccxt's nested dict of API URLs) with each URL that starts with a key of
    ``overrides`` starting with its value instead."""
    if isinstance(urls, str):
        for prefix, replacement in overrides.items():
            if urls.startswith(prefix):
                return replacement + urls[len(prefix) :]
        return urls
    if isinstance(urls, dict):
        return {key: rewrite_urls(value, overrides) for key, value in urls.items()}
    if isinstance(urls, list):
        return [rewrite_urls(value, overrides) for value in urls]
    return urls


_VENUE_CODES: dict[int, str] = {
    # Binance (spot and futures) codes that ccxt maps to a class too general to act on.
    -1001: codes.EXCHANGE_UNAVAILABLE,  # internal error; try again
    -1003: codes.RATE_LIMITED,  # too many requests
    -1121: codes.UNKNOWN_SYMBOL,
    -2019: codes.INSUFFICIENT_BALANCE,  # margin is insufficient
}
_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')

_MESSAGES = {
    codes.INSUFFICIENT_BALANCE: "the exchange says the account's margin is insufficient",
    codes.UNKNOWN_SYMBOL: "the exchange does not trade this symbol",
    codes.INVALID_ORDER: "the exchange refused the order's fields",
    codes.RATE_LIMITED: "the exchange's rate limit was reached; retry later",
    codes.EXCHANGE_UNAVAILABLE: "the exchange is unavailable; retry later",
    codes.EXCHANGE_REJECTED: "the exchange refused the request",
}


def error_code(exc: BaseException) -> str:
    """The stable code of a ccxt error (:mod:`domain.exchange_gateway` lists them)."""
    errors = ccxt_errors()
    match = _CODE.search(str(exc))
    if match is not None and int(match.group(1)) in _VENUE_CODES:
        return _VENUE_CODES[int(match.group(1))]
    if isinstance(exc, errors.InsufficientFunds):
        return codes.INSUFFICIENT_BALANCE
    if isinstance(exc, errors.BadSymbol):
        return codes.UNKNOWN_SYMBOL
    if isinstance(exc, errors.RateLimitExceeded | errors.DDoSProtection):
        return codes.RATE_LIMITED
    if isinstance(
        exc,
        errors.ExchangeNotAvailable
        | errors.OnMaintenance
        | errors.RequestTimeout
        | errors.NetworkError
        | OSError,
    ):
        return codes.EXCHANGE_UNAVAILABLE
    if isinstance(exc, errors.InvalidOrder):
        return codes.INVALID_ORDER
    return codes.EXCHANGE_REJECTED


def order_error(exc: BaseException) -> OrderError:
    """The :class:`OrderError` a client sees for a ccxt error: a stable code and our own message
    (never ccxt's, which may carry a signed URL)."""
    code = error_code(exc)
    return OrderError(code, _MESSAGES[code])
