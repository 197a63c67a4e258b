"""The GraphQL schema, assembled from one module per feed."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import strawberry
from graphql import (
    FieldNode,
    GraphQLError,
    StringValueNode,
    VariableNode,
    get_operation_ast,
    parse,
)
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import ParserCache
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.tools import merge_types
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from api.feeds.marathons.schema import MarathonMutation, MarathonQuery, MarathonSubscription
from api.feeds.martingale.schema import MartingaleMutation, MartingaleQuery, MartingaleSubscription
from api.feeds.paper_exchange.schema import ExchangeMutation, ExchangeQuery, ExchangeSubscription
from api.feeds.perps.schema import PUBLIC_SUBSCRIPTIONS as PERPS_PUBLIC_SUBSCRIPTIONS
from api.feeds.perps.schema import PerpsMutation, PerpsQuery, PerpsSubscription
from api.feeds.portfolio.schema import PortfolioMutation, PortfolioQuery, PortfolioSubscription
from api.feeds.prices.schema import PUBLIC_SUBSCRIPTIONS as PRICE_PUBLIC_SUBSCRIPTIONS
from api.feeds.prices.schema import PriceMutation, PriceQuery, PriceSubscription
from api.graphql import document_limits as limits
from api.graphql.context import Context
from api.graphql.errors import ClientError
from api.graphql.plans import PlannedExecutionContext
from api.graphql.scalars import DATETIME_SCALAR, DECIMAL_SCALAR, LONG_SCALAR, Long
from api.graphql.text import NulFreeText
from api.ops.metrics import counted_stream
from api.storage.database import UNAVAILABLE_MESSAGE
from api.storage.database import unavailable as database_unavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable, Iterable

    from strawberry.extensions import SchemaExtension
    from strawberry.schema.schema import StreamResult
    from strawberry.types import ExecutionContext

    from api.settings import Settings

logger = logging.getLogger("api.schema")

Query = merge_types(
    "Query",
    (PriceQuery, PerpsQuery, MarathonQuery, MartingaleQuery, ExchangeQuery, PortfolioQuery),
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
    ),
)
Subscription = merge_types(
    "Subscription",
    (
        PriceSubscription,
        PerpsSubscription,
        MarathonSubscription,
        MartingaleSubscription,
        ExchangeSubscription,
        PortfolioSubscription,
    ),
)


class Schema(strawberry.Schema):
    """Strawberry's schema, with identical subscriptions answered from one shared execution
    (:mod:`api.graphql.fanout`). SSE and multipart ask ``stream`` for their results;
    graphql-transport-ws
    joins the same groups directly (:mod:`api.transport.graphql_transport_ws`)."""

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> StreamResult:
        async def execute() -> StreamResult:
            return await strawberry.Schema.stream(
                self,
                query,
                variable_values=variable_values,
                context_value=context_value,
                root_value=root_value,
                operation_name=operation_name,
                operation_extensions=operation_extensions,
                allowed_operation_types=allowed_operation_types,
            )

        key = share_key(query, variable_values, context_value, operation_name, root_value)
        if (
            key is None
            or operation_extensions
            or (
                allowed_operation_types is not None
                and OperationType.SUBSCRIPTION not in allowed_operation_types
            )
        ):
            results = await execute()
            field = subscription_field(query, operation_name)
            if field is not None:
                results = counted_stream(results, field)
        else:
            assert isinstance(context_value, Context)
            results = context_value.services.groups.results(key, execute)
        if isinstance(context_value, Context) and context_value.connection is None:
            # An HTTP stream (SSE, multipart) lives no longer than the token that opened it;
            # WebSockets are closed by their handler at the same moment.
            deadline = context_value.services.verifier.deadline(context_value.principal)
            if deadline is not None:
                return _until(results, deadline)
        return results

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log faults with their traceback; errors a client caused are its answer, not ours.

        A fault's message may hold internals (SQL, paths): once logged, the client's copy says
        only "Unexpected error." Strawberry calls this before any result is encoded, on every
        path (queries, mutations, each subscription result), so nothing unmasked leaves.

        A fault that says PostgreSQL is down, restarting or not answering in time
        (:func:`api.storage.database.unavailable`) is not a bug: the client's copy says so, with
        the code SERVICE_UNAVAILABLE, and the log gets one line.
        """
        for error in errors:
            original = error.original_error
            if isinstance(error, ClientError) or isinstance(original, CALLER_ERRORS):
                # The caller's mistake, answered in its own words: no traceback, and nothing
                # above debug, or anyone could fill the log.
                logger.debug("client error: %s", error.message)
            elif original is None or (error.path is None and isinstance(original, GraphQLError)):
                # The request's own error, found before anything ran: a document that does not
                # parse or validate, variables that do not coerce (graphql-core keeps the
                # coercion's error as the original).
                logger.debug("invalid request: %s", error.message)
            elif database_unavailable(original):
                # Not a bug, and nothing the client did: one line in the log, and an answer
                # that says to retry.
                logger.warning("database unavailable: %s: %s", type(original).__name__, original)
                error.message = UNAVAILABLE_MESSAGE
                error.extensions = {"code": SERVICE_UNAVAILABLE}
            else:
                logger.error("error in resolver: %s", error.message, exc_info=original)
                if not isinstance(original, GraphQLError):
                    error.message = MASKED_ERROR


CALLER_ERRORS = (
    ClientError,
    MissingQueryError,
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
)
"""Errors the caller caused: ours (:class:`ClientError`), and what Strawberry raises for a
request it cannot run as sent (no query, no such operation, an operation type the transport
does not take), which it wraps in the result's error on a streaming transport."""

MASKED_ERROR = "Unexpected error."
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
"""``extensions.code`` of an error that a dependency being down caused: retry later."""


async def _until(results: StreamResult, deadline: float) -> StreamResult:
    """``results`` until the wall clock reaches ``deadline``, then a TOKEN_EXPIRED error."""
    iterator = aiter(results)
    try:
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            try:
                result = await asyncio.wait_for(anext(iterator), remaining)
            except StopAsyncIteration:
                return
            except TimeoutError:
                break
            yield result
        yield ExecutionResult(
            data=None,
            errors=[
                GraphQLError(
                    "the token expired: subscribe again with a fresh one",
                    extensions={"code": "TOKEN_EXPIRED"},
                )
            ],
        )
    finally:
        with contextlib.suppress(Exception):
            await results.aclose()


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
        parser_cache = functools.partial(_ParserCache, maxsize=PARSER_CACHE_SIZE)
        # The limits first: they bound what the text check walks.
        # NUL first: a request refused for it is not worth measuring or validating.
        extensions = [parser_cache, NulFreeText, *limits.extensions(settings)]
    return Schema(
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


PARSER_CACHE_SIZE = 256
"""Documents kept parsed; each is at most MAX_QUERY_TOKENS tokens."""


class _ParserCache(ParserCache):
    """Strawberry's, but a document that does not parse is left to Strawberry's own parse: raised
    from the extension, its syntax error would not be the pre-execution error that closes a
    WebSocket with 4400 and says why. A long document is parsed in a worker thread, as it is
    validated (:data:`api.graphql.document_limits.INLINE_MAX_CHARS`): at ``MAX_QUERY_TOKENS`` a
    parse takes milliseconds."""

    async def on_parse(self) -> AsyncIterator[None]:  # type: ignore[override]  # Strawberry takes either
        context = self.execution_context
        parse_options = context.parse_options
        with contextlib.suppress(GraphQLError):
            if len(context.query or "") > limits.INLINE_MAX_CHARS:
                context.graphql_document = await limits.off_the_loop(
                    self.cached_parse_document, context.query, **parse_options
                )
            else:
                context.graphql_document = self.cached_parse_document(
                    context.query, **parse_options
                )
        yield


schema = build_schema()

SUBSCRIPTION_FIELDS = frozenset(
    schema._schema.subscription_type.fields if schema._schema.subscription_type else ()
)


def subscription_field(query: str | None, operation_name: str | None) -> str | None:
    """The root field of a subscription, as a metrics label: ``other`` for one the schema does
    not have (clients must not make up labels), None when the operation is no subscription (or
    too large a document to look at, see SHARE_MAX_BYTES)."""
    if query is None or len(query) > SHARE_MAX_BYTES:
        return None
    operation_type, root_fields = operation_shape(query, operation_name)
    if operation_type is not OperationType.SUBSCRIPTION:
        return None
    if len(root_fields) == 1 and root_fields <= SUBSCRIPTION_FIELDS:
        return next(iter(root_fields))
    return "other"


def share_key_field(key: Hashable) -> str:
    """The root field of the subscription a :func:`share_key` stands for."""
    assert isinstance(key, tuple)
    return subscription_field(key[0], key[1]) or "other"


def share_key(
    query: str | None,
    variables: dict[str, Any] | None,
    context: Any,
    operation_name: str | None,
    root_value: Any,
) -> tuple[str, str | None, bytes, str] | None:
    """What makes two subscriptions identical, or None for an operation that is not shared (not a
    subscription, not parseable: those run on their own, as Strawberry runs them)."""
    if query is None or root_value is not None or not isinstance(context, Context):
        return None
    if len(query) > SHARE_MAX_BYTES:
        return None
    operation_type, root_fields = operation_shape(query, operation_name)
    if operation_type is not OperationType.SUBSCRIPTION:
        return None
    try:
        canonical = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    # Public feeds are the same for everyone, so everyone shares; anything else is shared only
    # between callers who may see exactly the same.
    public = root_fields <= PUBLIC_SUBSCRIPTIONS or _public_marathons(
        query, operation_name, variables, context, root_fields
    )
    scope = "public" if public else context.principal.scope
    return (query, operation_name, canonical, scope)


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
    (*PRICE_PUBLIC_SUBSCRIPTIONS, *PERPS_PUBLIC_SUBSCRIPTIONS, "rounds")
)
"""Root subscription fields whose events are the same whoever asks."""


SHARE_MAX_BYTES = 16 * 1024
SHARE_MAX_TOKENS = 2000
"""Larger documents are not shared: bounded parse work, and bounded memory in the cache below."""


@functools.lru_cache(maxsize=1024)
def operation_shape(
    query: str, operation_name: str | None
) -> tuple[OperationType | None, frozenset[str]]:
    """The operation's type and its root field names (aliases resolved), or (None, {}) for a
    document that does not parse within SHARE_MAX_TOKENS (it then runs on its own, where the
    schema's own document limits refuse it)."""
    try:
        operation = get_operation_ast(parse(query, max_tokens=SHARE_MAX_TOKENS), operation_name)
    except GraphQLError:
        return None, frozenset()
    if operation is None:
        return None, frozenset()
    fields = frozenset(
        selection.name.value
        for selection in operation.selection_set.selections
        if isinstance(selection, FieldNode)
    )
    if len(fields) != len(operation.selection_set.selections):
        fields |= {"<fragment>"}  # fragments at the root: never counted as public
    return OperationType(operation.operation.value), fields


def operation_type(query: object, operation_name: str | None) -> OperationType | None:
    """The type of the operation a request runs, or None when its document does not parse
    within SHARE_MAX_TOKENS or names no such operation (Strawberry then answers it). Large
    documents are parsed without the cache, which holds small ones only."""
    if not isinstance(query, str):
        return None
    shape = operation_shape if len(query) <= SHARE_MAX_BYTES else operation_shape.__wrapped__
    return shape(query, operation_name)[0]
