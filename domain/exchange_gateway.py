"""The exchange a user's live dashboard and orders go to: the paper exchange (the default) or a
real venue's account. :class:`ExchangeGateway` is what ``placeOrder``, ``cancelOrder`` and the
dashboard need from either; :class:`AccountFeed` is the stream of a venue account's changes.

The paper exchange has no :class:`AccountFeed`: its changes are numbered events on
``live:<owner>`` (resumable from a cursor, valued at every oracle tick), a stronger contract than
a venue's stream offers, and its dashboard reads them from the hub. A venue's account is followed
through the venue's own stream instead, whole again after every reconnect (:attr:`AccountChange.
resync`).

Errors. Both raise :class:`domain.paper_exchange.OrderError` with a stable code. Besides the
paper exchange's own codes (``INSUFFICIENT_BALANCE``, ``UNKNOWN_SYMBOL``, ...), a venue's
refusals map onto the same names where they mean the same thing, plus the venue's own:

    INSUFFICIENT_BALANCE   the venue says the margin or balance is insufficient
    UNKNOWN_SYMBOL         the venue does not trade that symbol (Binance -1121, ccxt BadSymbol)
    INVALID_ORDER          the venue refused the order's fields (quantity, price, filters)
    RATE_LIMITED           the venue's rate limit (HTTP 429/418, Binance -1003)
    EXCHANGE_UNAVAILABLE   the venue cannot be reached or answered 5xx (Binance -1001)
    EXCHANGE_REJECTED      any other refusal (its message is not passed on: it may carry a URL)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from domain.paper_exchange import Balance, Order, OrderRequest, PositionView

INSUFFICIENT_BALANCE = "INSUFFICIENT_BALANCE"
UNKNOWN_SYMBOL = "UNKNOWN_SYMBOL"
INVALID_ORDER = "INVALID_ORDER"
RATE_LIMITED = "RATE_LIMITED"
EXCHANGE_UNAVAILABLE = "EXCHANGE_UNAVAILABLE"
EXCHANGE_REJECTED = "EXCHANGE_REJECTED"


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account at one moment: its balance, open positions and open orders."""

    balance: Balance
    positions: tuple[PositionView, ...]
    open_orders: tuple[Order, ...]


class ChangeKind(enum.Enum):
    BALANCE = "balance"
    POSITIONS = "positions"
    ORDERS = "orders"


@dataclass(frozen=True, slots=True)
class AccountChange:
    """What changed (``kinds``) and the account after it (``state``). ``changed``: the orders an
    order update named, in their new state. ``resync``: the account was read whole again after a
    gap in the venue's stream (a reconnect), so everything may have changed."""

    kinds: frozenset[ChangeKind]
    state: AccountState
    changed: tuple[Order, ...] = ()
    resync: bool = False


@dataclass(frozen=True, slots=True)
class Placement:
    """What ``placeOrder`` answers: the entry as it stands, its take-profit and stop-loss, and
    whether the client order id had been placed before (then nothing new was placed)."""

    order: Order
    duplicate: bool
    children: tuple[Order, ...]


class ExchangeGateway(Protocol):
    """An exchange one user trades on."""

    async def state(self, owner: str) -> AccountState:
        """The owner's account now."""
        ...

    async def place(self, owner: str, request: OrderRequest) -> Placement:
        """Place the entry and its take-profit and stop-loss (if asked); idempotent by
        ``request.client_order_id``."""
        ...

    async def cancel(self, owner: str, order_id: str) -> Order:
        """Cancel an open order; the order as it stands after."""
        ...


class AccountFeed(Protocol):
    """A venue account's changes, as its own stream reports them."""

    def changes(self) -> AsyncIterator[AccountChange]:
        """The account whole (``resync``), then each change; whole again after a reconnect.
        Ends only when cancelled; raises when the account can no longer be followed."""
        ...
