"""Oracle prices from Pyth Hermes: one SSE stream (``ids[]`` for every ``pyth:`` market) read
with httpx and httpx-sse."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import httpx
from httpx_sse import aconnect_sse

from api.ops.metrics import counts
from api.sources.hermes import STREAM_PATH, MalformedUpdateError, feed_id, parse_price_update
from domain.prices import OraclePrice

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from api.settings import Settings
    from domain.ports import PriceSource

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
ERROR_BODY_CHARS = 300
"""Of a refusal's body, what goes into the error (Hermes says which ids it does not know)."""


class HermesError(Exception):
    """Hermes answered the stream request with an error status."""


class PythHermes:
    """Every ``pyth:`` market's price, from one Hermes price update stream.

    Each feed's update is yielded for every market that names that feed. A feed id Hermes does
    not know makes Hermes refuse the whole stream (404); that is raised, like a lost connection,
    so the runner keeps trying (and logs it) while the other sources go on.
    """

    name = "pyth"

    def __init__(
        self, base_url: str, feeds: Mapping[str, tuple[str, ...]], *, read_timeout_s: float
    ) -> None:
        """``feeds``: feed id (as :func:`~api.sources.hermes.feed_id` normalizes it) to the
        markets it prices. ``base_url`` may hold a provider's key: it is never logged."""
        self.base_url = base_url
        self.feeds = dict(feeds)
        self.markets = frozenset(market for markets in feeds.values() for market in markets)
        self.timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=read_timeout_s)

    async def stream(self) -> AsyncIterator[OraclePrice]:
        params = [("ids[]", id_) for id_ in sorted(self.feeds)] + [("parsed", "true")]
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout) as client,
            aconnect_sse(client, "GET", STREAM_PATH, params=params) as source,
        ):
            response = source.response
            if response.is_error:
                await response.aread()
                raise HermesError(
                    f"Hermes answered {response.status_code}: {response.text[:ERROR_BODY_CHARS]!r}"
                )
            async for event in source.aiter_sse():
                if event.event == "error":  # Hermes' own trouble reading an update
                    logger.warning("Hermes sent an error event: %.300s", event.data)
                    continue
                try:
                    prices, problems = parse_price_update(event.data)
                except MalformedUpdateError as exc:
                    problems, prices = [str(exc)], []
                for problem in problems:
                    counts.source_malformed[self.name] += 1
                    logger.warning("skipped a malformed Hermes price update: %s", problem)
                for price in prices:
                    for market in self.feeds.get(price.feed_id, ()):
                        yield OraclePrice(market, price.price, price.confidence, price.published_at)


def pyth_sources(routes: Mapping[str, str], settings: Settings) -> list[PriceSource]:
    """The ``pyth`` kind: ``routes`` maps each market to its feed id; one stream serves them
    all."""
    feeds: dict[str, tuple[str, ...]] = {}
    for market, argument in sorted(routes.items()):
        try:
            id_ = feed_id(argument)
        except ValueError as exc:
            raise ValueError(f"{market}: {exc}") from None
        feeds[id_] = (*feeds.get(id_, ()), market)
    return [
        PythHermes(settings.pyth_hermes_url, feeds, read_timeout_s=settings.pyth_read_timeout_s)
    ]
