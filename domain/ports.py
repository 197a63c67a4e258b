"""The small protocols domain workers are written against.

The server provides real adapters (:mod:`api.streaming.publisher`, :mod:`api.storage.prices`,
:mod:`api.runtime.clock`); tests provide in-memory fakes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from datetime import datetime
    from decimal import Decimal

    from domain.events import Event, Unnumbered
    from domain.paper_exchange import OrderRequest, PaperAccount, PlaceResult
    from domain.prices import OraclePrice


class Publisher(Protocol):
    """Publishing is two steps so a worker can store state between them: ``prepare`` numbers the
    event, the worker stores what the event says with that number, ``send`` delivers it. A
    subscriber that reads the store then goes live (by sequence) then never misses an event."""

    async def prepare(self, topic: str, type: str, payload: dict[str, Any]) -> Event:
        """The envelope of the topic's next event, its sequence assigned, not yet delivered."""
        ...

    async def prepare_all(
        self, events: Sequence[Unnumbered], *, keep_latest: bool = False
    ) -> list[Event]:
        """:meth:`prepare` for many events at once (one round trip to where they are numbered),
        in the order given; a worker that publishes several in one pass numbers them together.
        ``keep_latest``: each latest-value topic's newest of them is also stored as that topic's
        newest state, what a new subscriber (or a process that missed it) reads first."""
        ...

    async def send(self, event: Event) -> None:
        """Deliver a prepared event to every subscriber of its topic."""
        ...


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for scheduling."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class PriceRepository(Protocol):
    async def record(self, prices: Sequence[OraclePrice]) -> list[Event]:
        """Number each price's event on its market's price topic and store the price as its
        market's latest with that number, together (one round trip for a whole tick). The events
        are not delivered yet: :meth:`Publisher.send` does that. One price per market."""
        ...

    async def latest(self, market: str) -> tuple[OraclePrice, int] | None:
        """The latest stored price of ``market`` and its event sequence, if any."""
        ...

    async def latest_of(self, markets: Sequence[str]) -> dict[str, OraclePrice]:
        """The latest stored price of each of ``markets`` that has one, by market: one read."""
        ...


class PriceSource(Protocol):
    """Prices of some markets from outside the process (an oracle, an exchange)."""

    name: str
    markets: frozenset[str]

    def stream(
        self,
    ) -> AsyncIterator[OraclePrice]: ...  # until cancelled; raises on lost connection


class PaperTrading(Protocol):
    """A paper exchange as another feed trades on it (the portfolio's trims sell through it)."""

    async def marks(self) -> dict[str, Decimal]:
        """The latest fresh price of every market."""
        ...

    async def account(self, owner: str) -> PaperAccount:
        """The owner's account as stored."""
        ...

    async def place(self, owner: str, request: OrderRequest) -> PlaceResult:
        """Place an order for the owner at the current prices."""
        ...
