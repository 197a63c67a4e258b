"""The small protocols domain workers are written against.

The server provides real adapters (:mod:`api.publisher`, :mod:`api.store`, :mod:`api.clock`); tests
provide in-memory fakes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime

    from domain.events import Event
    from domain.prices import OraclePrice


class Publisher(Protocol):
    async def publish(self, topic: str, type: str, payload: dict[str, Any]) -> Event:
        """Assign the topic's next sequence number, publish, and return the envelope sent."""
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
    async def save(self, price: OraclePrice, sequence: int) -> None:
        """Store ``price`` as its market's latest, with the sequence of the event carrying it."""
        ...

    async def latest(self, market: str) -> tuple[OraclePrice, int] | None:
        """The latest stored price of ``market`` and its event sequence, if any."""
        ...
