"""Text a client sends holds no NUL (U+0000): one check for every String and ID input.

PostgreSQL ``text`` (and ``jsonb``) cannot hold NUL, so a marathon name, an order's client id or
an alert's action with one in it failed in the database, after the resolver had begun, as a
fault ("Unexpected error." and a traceback in the log). No input has a use for it, so every
string of a request is checked once, before any resolver runs: the document's string literals
and every string in the variables, whatever type reads them. A refusal is a request error
(nothing ran) with ``extensions.code`` ``INVALID_STRING``, naming the variable and where in it
(as graphql-core names a value its coercion refuses), or located at the literal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from graphql import GraphQLError, StringValueNode, Visitor, visit
from strawberry.extensions import SchemaExtension

from api.graphql.document_limits import VALID_DOCUMENTS, PassedDocuments

if TYPE_CHECKING:
    from collections.abc import Iterator

    from graphql import DocumentNode

INVALID_STRING = "INVALID_STRING"
NUL = "\x00"
REASON = "a string cannot hold NUL (U+0000)"


def nul_refusals(document: DocumentNode, variables: dict[str, Any] | None) -> list[GraphQLError]:
    """An error for each string literal of ``document`` and each variable of ``variables``
    that holds NUL; empty when none does."""
    errors = _literal_refusals(document)
    for name, value in (variables or {}).items():
        path = _where_nul(value)
        if path is not None:
            at = f" at {path}" if path else ""
            errors.append(
                GraphQLError(
                    f"Variable '${name}' has invalid value{at}: {REASON}",
                    extensions={"code": INVALID_STRING},
                )
            )
    return errors


_NUL_FREE = PassedDocuments(VALID_DOCUMENTS)
"""Documents whose literals hold no NUL: every subscriber of a document has it walked once."""


def _literal_refusals(document: DocumentNode) -> list[GraphQLError]:
    key = id(document)
    if _NUL_FREE.passed(key, document):
        return []
    collector = _Literals()
    visit(document, collector)
    if not collector.errors:
        _NUL_FREE.remember(key, document)
    return collector.errors


class _Literals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.errors: list[GraphQLError] = []

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        if NUL in node.value:
            self.errors.append(GraphQLError(REASON, node, extensions={"code": INVALID_STRING}))


SEARCHED_MAX_BYTES = 8192
"""A variable at most this long (as JSON) that holds NUL is searched for where; a longer one is
only named, so that no request walks a large value item by item."""


def _where_nul(value: object) -> str | None:
    """Where a variable's value holds NUL, as :func:`_nul_path` says, or None. Its JSON, written
    by orjson (a millisecond for a body at MAX_MESSAGE_BYTES), has ``\\u0000`` in it only if a
    string holds NUL: only then, and only for a small value, is it walked in Python, which takes
    a hundred milliseconds for a value of 240 KB."""
    try:
        encoded = orjson.dumps(value)
    except TypeError:  # not what orjson writes (an integer past 64 bits): walk it
        return _nul_path(value)
    if b"\\u0000" not in encoded:
        return None
    return _nul_path(value) if len(encoded) <= SEARCHED_MAX_BYTES else ""


def _nul_path(value: object) -> str | None:
    """Where in a variable's JSON value a string holds NUL (``''`` for the value itself,
    ``.name``, ``[2].name``, ...), or None. Walked with a stack, not recursion: a value nests
    as deep as its JSON does."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                return path
        elif isinstance(item, dict):
            stack.extend((v, f"{path}.{k}") for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


class NulFreeText(SchemaExtension):
    """Refuses, before validation, a request whose strings hold NUL (:func:`nul_refusals`)."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and not context.pre_execution_errors:
            errors = nul_refusals(document, context.variables)
            if errors:  # Strawberry runs no validation rule when an extension has set these
                context.pre_execution_errors = errors
        yield
