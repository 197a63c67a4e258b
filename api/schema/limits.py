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
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)

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
    return chosen
