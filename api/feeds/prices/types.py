"""The price feed's GraphQL types that its root fields and its stream both show: ``Price``."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry

from domain.events import Event
from domain.prices import PRICE_UPDATE, OraclePrice
from domain.topics import price_topic


@strawberry.type(
    description="An oracle price: the true price lies within price ± confidence. "
    "Decimals are strings, to keep every digit."
)
class Price:
    market: str
    price: Decimal
    confidence: Decimal
    published_at: datetime
    sequence: int = strawberry.field(
        description="Position of this price in its market's stream: 1, 2, 3, ... without gaps "
        "on the publishing side. A subscriber may skip values (prices are conflated: a slow "
        "client gets the newest) but never sees one go backwards."
    )

    @classmethod
    def from_event(cls, event: Event) -> Price:
        price = OraclePrice.from_payload(event.payload)
        return cls(
            market=price.market,
            price=price.price,
            confidence=price.confidence,
            published_at=price.published_at,
            sequence=event.sequence,
        )


def price_event(stored: tuple[OraclePrice, int] | None) -> Event | None:
    """A stored price as the event that published it."""
    if stored is None:
        return None
    price, sequence = stored
    return Event(
        price_topic(price.market), sequence, price.published_at, PRICE_UPDATE, price.to_payload()
    )
