"""The perps engine's pass as it was before the threshold index: every open position read and
valued on every pass. Too slow for 10^5 positions, and simple enough to be obviously what the
definitions say, so it is kept as the reference the indexed :class:`PerpsEngine` is checked
against, event for event (the property test in ``tests/domain/test_perps_reference.py``, and
``python -m bench.engine``, which also times it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.perps import mark_to_market, open_interest, ranked_candidates
from domain.perps_engine import DAY, PerpsEngine, candidates_payload

if TYPE_CHECKING:
    from typing import Any

    from domain.perps import Valuation


class FullScanEngine(PerpsEngine):
    """:class:`PerpsEngine` with the pass that values every position."""

    async def _evaluate(self) -> None:
        if not self._started:
            await self.start()
        self._due = []
        now = self.clock.now()
        positions = await self.book.open_positions()
        indexes = await self._fresh_indexes(now)

        self.watch.retain({p.id for p in positions})

        valuations: list[Valuation] = []
        for position in positions:
            index = indexes.get(position.market)
            if index is None:
                continue
            valuations.append(mark_to_market(position, index, self.markets.get(position.market)))
        self._warn([v for v in valuations if self._warns(v)])

        liquidated = await self._candidates(ranked_candidates(valuations))

        still_open = [p for p in positions if p.id not in liquidated]
        volumes = await self.book.volumes_since(now - DAY)
        for market in self.markets:
            interest = open_interest(still_open, market.id)
            await self._market(market, interest, indexes.get(market.id), volumes, now)
        await self._publish_due()

    def _candidates_payload(self, candidates: list[Valuation]) -> dict[str, Any]:
        return candidates_payload(candidates)  # every candidate encoded on every pass
