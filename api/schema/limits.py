"""Limits on what one GraphQL document may ask: each refusal is a GraphQL error saying which limit.

Depth, aliases and tokens (document size) use Strawberry's limiters; the field count is ours.
Introspection can be switched off (it is, by default, in production).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from graphql import FieldNode, GraphQLError, ValidationRule
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)

from api.schema.errors import ClientError

if TYPE_CHECKING:
    from collections.abc import Callable

    from graphql import ValidationContext
    from strawberry.extensions import SchemaExtension

    from api.settings import Settings


def max_fields_rule(limit: int) -> type[ValidationRule]:
    class MaxFields(ValidationRule):
        """Counts every field a document selects, fragments included once each."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.count = 0

        def enter_field(self, node: FieldNode, *_args: Any) -> None:
            self.count += 1
            if self.count == limit + 1:
                self.report_error(
                    GraphQLError(
                        f"the document selects more than {limit} fields (MAX_FIELDS)",
                        node,
                        extensions={"code": "QUERY_TOO_COMPLEX"},
                    )
                )

    return MaxFields


def extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Factories: Strawberry makes each extension anew for every operation."""
    fields_rule = max_fields_rule(settings.max_fields)
    chosen: list[Callable[[], SchemaExtension]] = [
        partial(MaxTokensLimiter, max_token_count=settings.max_query_tokens),
        partial(QueryDepthLimiter, max_depth=settings.max_query_depth),
        partial(MaxAliasesLimiter, max_alias_count=settings.max_aliases),
        partial(AddValidationRules, [fields_rule]),
    ]
    if not settings.introspection_enabled:
        chosen.append(DisableIntrospection)
    chosen.append(partial(MaskErrors, should_mask_error=is_fault))
    return chosen


def is_fault(error: GraphQLError) -> bool:
    """An error the server caused (a bug, a database failure): its message may hold internals
    (SQL, paths), so the client gets "Unexpected error." and the log keeps the original. Errors
    about the request (validation, ClientError) reach the client as they are."""
    original = error.original_error
    if isinstance(error, ClientError) or original is None:
        return False
    return not isinstance(original, (ClientError, GraphQLError))
