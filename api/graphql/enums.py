"""GraphQL enums of the domain's enums that more than one feed shows: each is declared once, in
``domain/``, and named here as the schema shows it."""

from __future__ import annotations

from typing import TypeAlias

import strawberry

from domain import paper_exchange, perps

strawberry.enum(perps.Side, name="PositionSide", description="Which way a position is exposed.")
PositionSide: TypeAlias = perps.Side

strawberry.enum(paper_exchange.OrderSide, name="OrderSide")
OrderSide: TypeAlias = paper_exchange.OrderSide
