"""Domain objects for tests, with plausible defaults."""

from __future__ import annotations

from decimal import Decimal

from domain.markets import Market


def make_market(market_id: str = "BTC-PERP", tick_size: str = "0.1") -> Market:
    return Market(
        id=market_id,
        base=market_id.split("-")[0],
        quote="USD",
        tick_size=Decimal(tick_size),
        step_size=Decimal("0.001"),
        min_order_size=Decimal("0.001"),
        max_leverage=Decimal("20"),
        maintenance_margin_rate=Decimal("0.03"),
        liquidation_fee_rate=Decimal("0.015"),
    )
