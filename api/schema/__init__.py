"""The GraphQL schema, assembled from one module per feed."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import strawberry
from strawberry.tools import merge_types

from api.schema.errors import ClientError
from api.schema.prices import PriceQuery, PriceSubscription

if TYPE_CHECKING:
    from graphql import GraphQLError
    from strawberry.types import ExecutionContext

logger = logging.getLogger("api.schema")

Query = merge_types("Query", (PriceQuery,))
Subscription = merge_types("Subscription", (PriceSubscription,))


class Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log faults with their traceback; errors a client caused are its answer, not ours."""
        for error in errors:
            original = error.original_error
            if isinstance(error, ClientError) or isinstance(original, ClientError):
                logger.debug("client error: %s", error.message)
            elif original is None:
                logger.debug("invalid request: %s", error.message)
            else:
                logger.error("error in resolver: %s", error.message, exc_info=original)


def build_schema() -> Schema:
    return Schema(query=Query, subscription=Subscription)


schema = build_schema()
