"""The GraphQL schema, assembled from one module per feed (:mod:`api.feeds`), and the one rule
that needs to know them all: which subscriptions are the same for every caller (:func:`is_public`).
How the schema runs is :mod:`api.graphql.execution`'s."""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from graphql import (
    FieldNode,
    GraphQLError,
    StringValueNode,
    VariableNode,
    get_operation_ast,
    parse,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types

from api.feeds.marathons.schema import MarathonMutation, MarathonQuery, MarathonSubscription
from api.feeds.martingale.schema import MartingaleMutation, MartingaleQuery, MartingaleSubscription
from api.feeds.orderbook.schema import PUBLIC_SUBSCRIPTIONS as BOOK_PUBLIC_SUBSCRIPTIONS
from api.feeds.orderbook.schema import OrderBookQuery, OrderBookSubscription
from api.feeds.paper_exchange.schema import ExchangeMutation, ExchangeQuery, ExchangeSubscription
from api.feeds.perps.schema import PUBLIC_SUBSCRIPTIONS as PERPS_PUBLIC_SUBSCRIPTIONS
from api.feeds.perps.schema import PerpsMutation, PerpsQuery, PerpsSubscription
from api.feeds.portfolio.schema import PortfolioMutation, PortfolioQuery, PortfolioSubscription
from api.feeds.prices.schema import PUBLIC_SUBSCRIPTIONS as PRICE_PUBLIC_SUBSCRIPTIONS
from api.feeds.prices.schema import PriceMutation, PriceQuery, PriceSubscription
from api.graphql import document_limits as limits
from api.graphql.execution import PARSER_CACHE_SIZE, ParserCache, Schema
from api.graphql.plans import PlannedExecutionContext
from api.graphql.scalars import DATETIME_SCALAR, DECIMAL_SCALAR, LONG_SCALAR, Long
from api.graphql.session import SessionMutation
from api.graphql.sharing import SHARE_MAX_TOKENS
from api.graphql.text import NulFreeText

if TYPE_CHECKING:
    from collections.abc import Callable

    from strawberry.extensions import SchemaExtension

    from api.graphql.context import Context
    from api.settings import Settings

Query = merge_types(
    "Query",
    (
        PriceQuery,
        PerpsQuery,
        OrderBookQuery,
        MarathonQuery,
        MartingaleQuery,
        ExchangeQuery,
        PortfolioQuery,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        PriceMutation,
        PerpsMutation,
        MarathonMutation,
        MartingaleMutation,
        ExchangeMutation,
        PortfolioMutation,
        SessionMutation,
    ),
)
Subscription = merge_types(
    "Subscription",
    (
        PriceSubscription,
        PerpsSubscription,
        OrderBookSubscription,
        MarathonSubscription,
        MartingaleSubscription,
        ExchangeSubscription,
        PortfolioSubscription,
    ),
)


def build_schema(settings: Settings | None = None) -> Schema:
    """The schema; with ``settings``, the document limits they set (the SDL is the same).
    Every request's strings are checked for NUL either way (:mod:`api.graphql.text`).

    Parsed documents are cached (by text and token limit): clients send the same few documents
    over and over, and a document's tokens are a doubly linked list, a reference cycle, so each
    operation's own parse outlived it until the collector's oldest generation was collected
    (rare with the server's thresholds, api/cli.py).
    """
    extensions: list[Callable[[], SchemaExtension]] = [NulFreeText]
    if settings is not None:
        parser_cache = functools.partial(ParserCache, maxsize=PARSER_CACHE_SIZE)
        # The limits first: they bound what the text check walks.
        # NUL first: a request refused for it is not worth measuring or validating.
        extensions = [parser_cache, NulFreeText, *limits.extensions(settings)]
    return Schema(
        is_public=is_public,
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        config=StrawberryConfig(
            scalar_map={Long: LONG_SCALAR, Decimal: DECIMAL_SCALAR, datetime: DATETIME_SCALAR}
        ),
        extensions=extensions,
        # Each subscription event executed by a compiled plan (api/graphql/plans.py).
        execution_context_class=PlannedExecutionContext,
    )


def is_public(
    query: str,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    context: Context,
    root_fields: frozenset[str],
) -> bool:
    """Whether a subscription's events are the same whoever asks: every root field is a public
    feed, or a marathon field of a public marathon."""
    return root_fields <= PUBLIC_SUBSCRIPTIONS or _public_marathons(
        query, operation_name, variables, context, root_fields
    )


PUBLIC_IF_MARATHON_IS = frozenset({"marathonLeaderboard", "accountUpdates"})
"""Root fields that are the same for everyone when their marathon is public (every caller may
read a public marathon, so sharing one execution among them shows nobody anything more)."""


def _public_marathons(
    query: str,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    context: Context,
    root_fields: frozenset[str],
) -> bool:
    if not root_fields <= PUBLIC_SUBSCRIPTIONS | PUBLIC_IF_MARATHON_IS:
        return False
    references = _marathon_arguments(query, operation_name)
    if not references:
        return False
    marathons = context.services.boards.marathons
    for is_variable, value in references:
        marathon_id = (variables or {}).get(value) if is_variable else value
        marathon = marathons.get(marathon_id) if isinstance(marathon_id, str) else None
        if marathon is None or not marathon.public:
            return False
    return True


@functools.lru_cache(maxsize=1024)
def _marathon_arguments(
    query: str, operation_name: str | None
) -> tuple[tuple[bool, str], ...] | None:
    """Each marathon root field's ``marathonId`` as (is a variable, name or literal value); None
    when one is neither (then the operation is not shared as public)."""
    try:
        operation = get_operation_ast(parse(query, max_tokens=SHARE_MAX_TOKENS), operation_name)
    except GraphQLError:
        return None
    if operation is None:
        return None
    references = []
    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode) or selection.name.value not in (
            PUBLIC_IF_MARATHON_IS
        ):
            continue
        argument = next(
            (a.value for a in selection.arguments or () if a.name.value == "marathonId"), None
        )
        if isinstance(argument, VariableNode):
            references.append((True, argument.name.value))
        elif isinstance(argument, StringValueNode):
            references.append((False, argument.value))
        else:
            return None
    return tuple(references)


PUBLIC_SUBSCRIPTIONS = frozenset(
    (*PRICE_PUBLIC_SUBSCRIPTIONS, *PERPS_PUBLIC_SUBSCRIPTIONS, *BOOK_PUBLIC_SUBSCRIPTIONS, "rounds")
)
"""Root subscription fields whose events are the same whoever asks."""


schema = build_schema()
"""The schema without a process's document limits (the SDL is the same): for tools and tests."""
