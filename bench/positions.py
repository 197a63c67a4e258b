"""The ``positions`` scenarios' set-up: users ``user-<i>`` given their BTC-PERP position through
the public API, as a venue's indexer records them, and the tokens the benchmark signs in with.

User *i* holds the position the graphql-ws reference gives it (``../shared/bench/README.md``):
long for even *i*, short for odd, size 0.01 x (1 + i mod 5), entry (100 + (i mod 7) - 3) percent
of the market's price. Two things differ, because tradestream runs real margin rules: entries
are around BTC-PERP's price at set-up, not 100 (our simulated feed walks from 65,000 on a 0.1
tick, where 100 would barely move a tick in a second), and collateral is twice the reference's
(leverage (5 + i mod 16) / 2, 2.5x to 10x), since at BTC-PERP's 3% maintenance margin the
reference's 20x positions with an entry 3% off would be liquidated at once. Every position then
stays above the 1.2 warning health while the price stays within 2% of where it started.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

from api.auth import Role, mint
from bench.processes import BenchError

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

MARKET = "BTC-PERP"
TICK = Decimal("0.1")
"""BTC-PERP's price increment (the markets table)."""
FALLBACK_PRICE = Decimal(65000)
"""The simulated feed's starting price, for a market with no stored price yet."""
MONEY = Decimal("0.000001")
GROWTH = Decimal("0.001")
"""The size one increase (:meth:`BenchPosition.increase`) adds."""
BATCH = 25
"""Position changes per request, as aliases (the server allows 30 aliases an operation)."""
CONCURRENCY = 8
"""Requests in flight at once while creating positions."""
TOKEN_TTL = timedelta(hours=6)

SUBSCRIPTION = (
    "subscription($u: String!) { positions(user: $u) { ... on PositionsUpdate { user at pricedAt "
    "positions { id side size entryPrice markPrice unrealizedPnl healthFactor liquidationPrice } "
    "} } }"
)
REFERENCE_SUBSCRIPTION = (
    "subscription($u:String!){ positions(user:$u){ user ts positions "
    "{ id side size entryPrice markPrice unrealizedPnl healthFactor liquidationPrice } } }"
)
"""The reference's document, from ``../shared/bench/README.md`` (``ts`` is its publish time)."""
VARIABLES = '{"u":"user-$i"}'
"""The load client's VARS: ``$i`` becomes the subscriber's index."""


def user(i: int) -> str:
    return f"user-{i}"


@dataclass(frozen=True, slots=True)
class Tokens:
    """The benchmark's callers, signed with the secret it starts tradestream with."""

    service: str
    """Records positions and publishes prices, as a venue adapter and an oracle do."""
    admin: str
    """Every subscriber and the query probe: may read any user's positions."""

    @classmethod
    def signed(cls, secret: str) -> Tokens:
        return cls(
            service=mint(secret, sub="bench-oracle", role=Role.SERVICE, ttl=TOKEN_TTL),
            admin=mint(secret, sub="bench-admin", role=Role.ADMIN, ttl=TOKEN_TTL),
        )


@dataclass(frozen=True, slots=True)
class BenchPosition:
    owner: str
    side: str
    size: Decimal
    entry_price: Decimal
    collateral: Decimal

    @property
    def id(self) -> str:
        return f"bench-{self.owner}-btc"

    def change(self, at: datetime) -> dict[str, Any]:
        """The ``PositionChangeInput`` an indexer sends for the opening fill."""
        return self._input(at, "OPENED", "opened", self.size)

    def grown(self, k: int) -> BenchPosition:
        """The position after ``k`` increases of GROWTH at its entry price, with its collateral
        grown in proportion (the same leverage and health)."""
        size = self.size + GROWTH * k
        collateral = (self.collateral * size / self.size).quantize(MONEY)
        return replace(self, size=size, collateral=collateral)

    def increase(self, k: int, at: datetime) -> dict[str, Any]:
        """The ``PositionChangeInput`` for the ``k``-th increase (k >= 1): a MODIFIED change that
        leaves the position as :meth:`grown` says."""
        return self.grown(k)._input(at, "MODIFIED", f"increase-{k}", GROWTH)

    def _input(self, at: datetime, kind: str, step: str, fill_size: Decimal) -> dict[str, Any]:
        return {
            "externalId": f"bench:{self.id}:{step}",
            "kind": kind,
            "positionId": self.id,
            "owner": self.owner,
            "market": MARKET,
            "side": self.side,
            "size": str(self.size),
            "entryPrice": str(self.entry_price),
            "collateral": str(self.collateral),
            "fillSize": str(fill_size),
            "fillPrice": str(self.entry_price),
            "at": at.isoformat(),
        }


def position_of(i: int, price: Decimal) -> BenchPosition:
    """User *i*'s position when BTC-PERP trades at ``price`` (see the module's docstring)."""
    size = Decimal("0.01") * (1 + i % 5)
    entry = (price * (100 + i % 7 - 3) / 100 / TICK).to_integral_value(ROUND_HALF_EVEN) * TICK
    leverage = Decimal(5 + i % 16) / 2
    return BenchPosition(
        owner=user(i),
        side="LONG" if i % 2 == 0 else "SHORT",
        size=size,
        entry_price=entry,
        collateral=(size * entry / leverage).quantize(MONEY),
    )


def _batch_document(count: int) -> str:
    params = ", ".join(f"$c{k}: PositionChangeInput!" for k in range(count))
    fields = " ".join(
        f"c{k}: ingestPositionChange(input: $c{k}) {{ stored }}" for k in range(count)
    )
    return f"mutation({params}) {{ {fields} }}"


async def graphql(
    http: httpx.AsyncClient, url: str, token: str, query: str, variables: dict[str, Any]
) -> dict[str, Any]:
    """One operation over HTTP; its ``data``, or a BenchError naming the first error."""
    response = await http.post(
        url,
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {token}"},
    )
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise BenchError(f"{url} answered {response.status_code}: {response.text[:200]}") from None
    if body.get("errors") or response.status_code != 200:
        errors = body.get("errors") or [{"message": f"HTTP {response.status_code}"}]
        raise BenchError(f"{url} refused the set-up: {errors[0].get('message')}")
    data: dict[str, Any] = body["data"]
    return data


async def latest_price(
    http: httpx.AsyncClient, url: str, token: str, market: str
) -> Decimal | None:
    query = "query($m: String!) { price(market: $m) { price } }"
    data = await graphql(http, url, token, query, {"m": market})
    return None if data["price"] is None else Decimal(data["price"]["price"])


async def set_price(
    http: httpx.AsyncClient, url: str, token: str, market: str, price: Decimal
) -> None:
    body = publish_body(market, price)
    await graphql(http, url, token, body["query"], body["variables"])


PRICE_BAND = Decimal("0.01")
"""The oracle's prices stay within this fraction of where they started."""
PUBLISH_PRICE = (
    "mutation($m: String!, $p: Decimal!) { publishPrice(market: $m, price: $p) { publishedAt } }"
)


def oracle_price(start: Decimal, k: int) -> Decimal:
    """The k-th price the benchmark's oracle publishes: one tick up at a time, then down, within
    PRICE_BAND of ``start``. Each differs from the one before (so every one re-values every
    position), and none comes back for ``band`` steps (20/s at 65,000: over five minutes), so
    the load client can tell from a position's mark which price it shows."""
    band = max(1, int(start * PRICE_BAND / TICK))
    step = (k + 1) % (2 * band)
    return start + TICK * (step if step <= band else 2 * band - step)


def publish_body(market: str, price: Decimal) -> dict[str, Any]:
    return {"query": PUBLISH_PRICE, "variables": {"m": market, "p": str(price)}}


@dataclass(frozen=True, slots=True)
class SetUp:
    users: int
    stored: int
    """Positions stored by this set-up (the rest were there already: the same externalId)."""
    price: Decimal
    seconds: float

    def summary(self) -> dict[str, Any]:
        """What the report shows of it (``Result.setup``)."""
        return {
            "users": self.users,
            "stored": self.stored,
            "price": str(self.price),
            "seconds": self.seconds,
        }


async def create_positions(
    http: httpx.AsyncClient,
    url: str,
    tokens: Tokens,
    users: int,
    *,
    publish_if_missing: bool,
    batch: int = BATCH,
    concurrency: int = CONCURRENCY,
) -> SetUp:
    """Give ``user-0`` to ``user-<users - 1>`` their position, around BTC-PERP's price now. A
    market without a price gets FALLBACK_PRICE through ``publishPrice`` when
    ``publish_if_missing`` (no simulated feed will); else the set-up waits for the feed's."""
    t0 = time.monotonic()
    price = await _price_now(http, url, tokens, publish_if_missing)
    now = datetime.now(UTC)
    changes = [position_of(i, price).change(now) for i in range(users)]
    stored = await ingest_changes(
        http, url, tokens.service, changes, batch=batch, concurrency=concurrency
    )
    return SetUp(users, stored, price, round(time.monotonic() - t0, 2))


async def ingest_changes(
    http: httpx.AsyncClient,
    url: str,
    token: str,
    changes: Sequence[dict[str, Any]],
    *,
    batch: int = BATCH,
    concurrency: int = CONCURRENCY,
) -> int:
    """Send ``changes`` (``PositionChangeInput``s) through ``ingestPositionChange``, ``batch``
    to a request and ``concurrency`` requests at once; the number stored (not replays)."""
    chunks = [changes[k : k + batch] for k in range(0, len(changes), batch)]
    gate = asyncio.Semaphore(concurrency)

    async def send(chunk: Sequence[dict[str, Any]]) -> int:
        async with gate:
            data = await graphql(
                http,
                url,
                token,
                _batch_document(len(chunk)),
                {f"c{k}": change for k, change in enumerate(chunk)},
            )
        return sum(1 for answer in data.values() if answer["stored"])

    return sum(await asyncio.gather(*(send(chunk) for chunk in chunks)))


async def _price_now(
    http: httpx.AsyncClient, url: str, tokens: Tokens, publish_if_missing: bool
) -> Decimal:
    deadline = time.monotonic() + 10
    while True:
        price = await latest_price(http, url, tokens.admin, MARKET)
        if price is not None:
            return price
        if publish_if_missing:
            await set_price(http, url, tokens.service, MARKET, FALLBACK_PRICE)
            return FALLBACK_PRICE
        if time.monotonic() > deadline:
            raise BenchError(f"{MARKET} has no price 10 s after the server was ready")
        await asyncio.sleep(0.2)
