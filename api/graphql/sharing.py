"""What makes two subscriptions identical, so that they share one execution
(:mod:`api.graphql.fanout`), and the operation a document runs, read without executing it.

Which root fields are the same for every caller is the schema's to say
(:func:`api.schema.is_public`); the rest is here: the document, its operation, the variables as
the client sent them and the caller's authorization scope.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import orjson
from graphql import FieldNode, GraphQLError, get_operation_ast, parse
from strawberry.types.graphql import OperationType

from api.graphql.context import Context

if TYPE_CHECKING:
    from collections.abc import Callable

ShareKey = tuple[str, str | None, bytes, str]
"""The document, the operation name, the variables (canonical JSON) and the scope."""


def share_key(
    query: str | None,
    variables: dict[str, Any] | None,
    context: Any,
    operation_name: str | None,
    root_value: Any,
    is_public: Callable[[str, str | None, dict[str, Any] | None, Context, frozenset[str]], bool],
) -> ShareKey | None:
    """What makes two subscriptions identical, or None for an operation that is not shared (not a
    subscription, not parseable: those run on their own, as Strawberry runs them).

    ``is_public(query, operation_name, variables, context, root_fields)`` says whether the
    operation's events are the same for every caller: then everyone shares; anything else is
    shared only between callers who may see exactly the same (the same scope)."""
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
    public = is_public(query, operation_name, variables, context, root_fields)
    scope = "public" if public else context.principal.scope
    return (query, operation_name, canonical, scope)


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
