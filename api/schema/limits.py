"""Limits on what one GraphQL document may ask: each refusal is a GraphQL error saying which limit.

Depth, aliases and tokens (document size) use Strawberry's limiters; the field count is ours.
Introspection can be switched off (it is, by default, in production).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from graphql import FieldNode, GraphQLError, ValidationRule
from strawberry.extensions import AddValidationRules, DisableIntrospection, MaxTokensLimiter
from strawberry.extensions.max_aliases import create_validator as max_aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as max_depth_rule

if TYPE_CHECKING:
    from collections.abc import Callable

    from graphql import ASTValidationRule, ValidationContext
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
    """Factories: Strawberry makes each extension anew for every operation.

    The depth and alias rules are Strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter``,
    but made once here: those extensions make a new rule class each, so every operation made two
    classes, and a class is always in reference cycles (its ``__mro__``, its methods): a long-lived
    subscription's classes outlived it until the oldest generation was collected, which the
    server's collector thresholds (api/cli.py) make rare.
    """
    rules: list[type[ASTValidationRule]] = [
        max_depth_rule(settings.max_query_depth, None),
        max_aliases_rule(settings.max_aliases),
        max_fields_rule(settings.max_fields),
    ]
    chosen: list[Callable[[], SchemaExtension]] = [
        partial(MaxTokensLimiter, max_token_count=settings.max_query_tokens),
        partial(AddValidationRules, rules),
    ]
    if not settings.introspection_enabled:
        chosen.append(DisableIntrospection)
    return chosen
