"""Strawberry's schema as tradestream runs it: identical subscriptions answered from one shared
execution, HTTP streams ended at token expiry, faults masked and logged, documents parsed once.

The schema's types come from the feeds (:mod:`api.schema` assembles them); this module knows none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import strawberry
from graphql import GraphQLError
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import ParserCache as StrawberryParserCache
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from api.graphql import document_limits as limits
from api.graphql.context import Context
from api.graphql.errors import ClientError
from api.graphql.sharing import SHARE_MAX_BYTES, ShareKey, operation_shape, share_key
from api.ops.metrics import counted_stream
from api.storage.database import UNAVAILABLE_MESSAGE
from api.storage.database import unavailable as database_unavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable, Iterable

    from strawberry.schema.schema import StreamResult
    from strawberry.types import ExecutionContext

logger = logging.getLogger(__name__)

IsPublic = Callable[[str, str | None, dict[str, Any] | None, Context, frozenset[str]], bool]
"""Whether a subscription's events are the same for every caller (:func:`share_key`)."""


def _never_public(
    query: str,
    operation_name: str | None,
    variables: dict[str, Any] | None,
    context: Context,
    root_fields: frozenset[str],
) -> bool:
    return False


class Schema(strawberry.Schema):
    """Strawberry's schema, with identical subscriptions answered from one shared execution
    (:mod:`api.graphql.fanout`). SSE and multipart ask ``stream`` for their results;
    graphql-transport-ws joins the same groups directly
    (:mod:`api.transport.graphql_transport_ws`), through :meth:`share_key`.

    ``is_public`` is the schema's rule for which subscriptions everyone shares
    (:func:`api.graphql.sharing.share_key`); by default none: callers share only within their
    authorization scope.
    """

    def __init__(self, *args: Any, is_public: IsPublic = _never_public, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.is_public = is_public
        subscription = self._schema.subscription_type
        self.subscription_fields = frozenset(subscription.fields if subscription else ())

    def share_key(
        self,
        query: str | None,
        variables: dict[str, Any] | None,
        context: Any,
        operation_name: str | None,
        root_value: Any,
    ) -> ShareKey | None:
        """What makes two subscriptions of this schema identical, or None for one not shared."""
        return share_key(query, variables, context, operation_name, root_value, self.is_public)

    def subscription_field(self, query: str | None, operation_name: str | None) -> str | None:
        """The root field of a subscription, as a metrics label: ``other`` for one the schema
        does not have (clients must not make up labels), None when the operation is no
        subscription (or too large a document to look at, see SHARE_MAX_BYTES)."""
        if query is None or len(query) > SHARE_MAX_BYTES:
            return None
        operation_type, root_fields = operation_shape(query, operation_name)
        if operation_type is not OperationType.SUBSCRIPTION:
            return None
        if len(root_fields) == 1 and root_fields <= self.subscription_fields:
            return next(iter(root_fields))
        return "other"

    def share_key_field(self, key: Hashable) -> str:
        """The root field of the subscription a :meth:`share_key` stands for."""
        assert isinstance(key, tuple)
        return self.subscription_field(key[0], key[1]) or "other"

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

        key = self.share_key(query, variable_values, context_value, operation_name, root_value)
        if (
            key is None
            or operation_extensions
            or (
                allowed_operation_types is not None
                and OperationType.SUBSCRIPTION not in allowed_operation_types
            )
        ):
            results = await execute()
            field = self.subscription_field(query, operation_name)
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
                notice_s = context_value.services.settings.token_renew_notice_s
                return _until(results, deadline, notice_s)
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


_DONE = object()
"""What :func:`_until`'s driver puts last: the stream ended by itself."""


async def _until(results: StreamResult, deadline: float, notice_s: float) -> StreamResult:
    """``results`` until the wall clock reaches ``deadline``, then a TOKEN_EXPIRED error; and
    ``notice_s`` before it (at once when less is left) the expiry notice, a result of its own
    whose ``extensions`` say how long the token has left (``data`` null, no errors): what a
    WebSocket gets as a ping. The stream is driven by a task of its own, handing each result over
    one at a time, so that waiting for the notice's moment never interrupts the stream."""
    handed: asyncio.Queue[object] = asyncio.Queue(maxsize=1)

    async def drive() -> None:
        try:
            async for result in results:
                await handed.put(result)
            await handed.put(_DONE)
        except Exception as exc:  # the consumer raises it as the stream would have
            await handed.put(exc)
        finally:
            with contextlib.suppress(Exception):
                await results.aclose()

    driver = asyncio.create_task(drive(), name="token-deadline")
    notice_at = deadline - notice_s if notice_s > 0 else None
    try:
        while True:
            now = time.time()
            if notice_at is not None and now >= notice_at:
                notice_at = None
                yield ExecutionResult(
                    data=None,
                    errors=None,
                    extensions={
                        "tokenExpiresInS": max(round(deadline - now, 1), 0.0),
                        "tokenExpiresAt": datetime.fromtimestamp(deadline, UTC).isoformat(),
                    },
                )
                continue
            until = deadline if notice_at is None else min(notice_at, deadline)
            if until - now <= 0:
                break
            try:
                async with asyncio.timeout(until - now):
                    item = await handed.get()
            except TimeoutError:
                continue
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]  # a result of the stream, as it came
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
        driver.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await driver


PARSER_CACHE_SIZE = 256
"""Documents kept parsed; each is at most MAX_QUERY_TOKENS tokens."""


class ParserCache(StrawberryParserCache):
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
