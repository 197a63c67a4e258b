"""Limits on what one GraphQL document may ask: each refusal is a GraphQL error saying which limit,
with ``extensions.code`` ``QUERY_TOO_COMPLEX``.

Depth, aliases and fields are measured on the document as it expands: a fragment counts each time
it is spread. They are measured in one pass that costs each fragment once (memoized), so a
document that doubles a fragment at every level (``fragment F1 on T { ...F0 ...F0 }``, thirty
levels in a kilobyte) is measured in microseconds and refused, where walking each spread again
(Strawberry's ``QueryDepthLimiter`` and ``MaxAliasesLimiter``) takes time exponential in its
levels. Tokens (what parsing costs) use Strawberry's limiter, which aborts the parser itself.
Introspection can be switched off (it is, by default, in production). A long document is parsed
and validated off the event loop, in one worker thread (:func:`off_the_loop`).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
)
from strawberry.extensions import DisableIntrospection, MaxTokensLimiter, SchemaExtension
from strawberry.schema.schema import validate_document

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Hashable

    from graphql import DocumentNode, Node, SelectionSetNode

    from api.settings import Settings

QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Cost:
    """What a selection set asks for once expanded: fields selected (``__typename`` and
    introspection fields included), aliased fields, and how deep selections nest below it
    (fields under an introspection field such as ``__schema`` do not count towards depth)."""

    fields: int = 0
    aliases: int = 0
    depth: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.fields + other.fields,
            self.aliases + other.aliases,
            max(self.depth, other.depth),
        )


NOTHING = Cost()


class DocumentCost:
    """The expanded cost of each operation of a document, each fragment costed once.

    A fragment that spreads itself (directly or not) costs nothing more on its second visit:
    graphql-core's ``NoFragmentCyclesRule`` refuses such a document anyway. An unknown fragment
    costs nothing (``KnownFragmentNamesRule`` refuses it)."""

    def __init__(self, document: DocumentNode) -> None:
        self._fragments = {
            d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
        }
        self._costs: dict[str, Cost] = {}

    def of(self, selection_set: SelectionSetNode) -> Cost:
        total = NOTHING
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += Cost(1, int(selection.alias is not None))
                if selection.selection_set:
                    below = self.of(selection.selection_set)
                    deeper = not selection.name.value.startswith("__")  # introspection: no depth
                    total += Cost(below.fields, below.aliases, below.depth + 1 if deeper else 0)
            elif isinstance(selection, InlineFragmentNode):
                total += self.of(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection.name.value)
        return total

    def _fragment(self, name: str) -> Cost:
        if name not in self._costs:
            self._costs[name] = NOTHING  # while costing it: a cycle adds nothing
            fragment = self._fragments.get(name)
            if fragment is not None:
                self._costs[name] = self.of(fragment.selection_set)
        return self._costs[name]


def _count(n: int) -> str:
    return str(n) if n < 1_000_000 else "more than a million"


def refusals(
    document: DocumentNode, max_depth: int, max_aliases: int, max_fields: int
) -> list[GraphQLError]:
    """Why ``document`` asks too much: an operation whose expanded depth or field count, or a
    document whose aliases summed over its operations, pass the limits. Empty when it does not."""
    errors: list[GraphQLError] = []

    def refuse(message: str, node: Node) -> None:
        errors.append(GraphQLError(message, node, extensions={"code": QUERY_TOO_COMPLEX}))

    cost = DocumentCost(document)
    aliases = 0
    for operation in document.definitions:
        if not isinstance(operation, OperationDefinitionNode):
            continue
        name = operation.name.value if operation.name else "anonymous"
        try:
            expanded = cost.of(operation.selection_set)
        except RecursionError:  # nested past the interpreter's stack: too complex by far
            refuse(f"'{name}' nests too deeply", operation)
            continue
        if expanded.depth > max_depth:
            refuse(f"'{name}' exceeds maximum operation depth of {max_depth}", operation)
        if expanded.fields > max_fields:
            refuse(
                f"'{name}' selects {_count(expanded.fields)} fields, more than {max_fields}"
                " (MAX_FIELDS)",
                operation,
            )
        aliases += expanded.aliases
    if aliases > max_aliases:
        refuse(f"{_count(aliases)} aliases found. Allowed: {max_aliases}", document)
    return errors


_DOCUMENTS = ThreadPoolExecutor(max_workers=1, thread_name_prefix="documents")
"""The one thread long documents are parsed and validated in. One: with several, the event loop
would wait for each of them to take its turn with the GIL before it got it back."""


async def off_the_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in the documents thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_DOCUMENTS, partial(function, *args, **kwargs))


INLINE_MAX_CHARS = 2048
"""A document up to this long is validated on the event loop (well under a millisecond). A longer
one is validated in a worker thread: graphql-core's rules take from milliseconds to tens of
milliseconds for a document at ``MAX_QUERY_TOKENS`` (every rule walks every node, and
``OverlappingFieldsCanBeMergedRule`` compares same-named fields and spread fragments pairwise), and
while a thread runs them the interpreter hands the event loop the GIL every switch interval
(``sys.getswitchinterval()``: 1 ms in the server, ``api.cli.SWITCH_INTERVAL_S``), so no document
holds the loop much longer than that."""


class DocumentLimits(SchemaExtension):
    """Measures the document before any validation rule runs, and refuses it without running
    them when it asks too much; a long document that passes is validated in the documents thread
    (:data:`INLINE_MAX_CHARS`). In both cases Strawberry skips its own validation (it does when an
    extension has set ``pre_execution_errors``); a short document it validates as always."""

    def __init__(self, *, max_depth: int, max_aliases: int, max_fields: int) -> None:
        self.limits = (max_depth, max_aliases, max_fields)

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is None or context.pre_execution_errors is not None:
            yield
            return
        key = (id(document), id(context.schema), tuple(context.validation_rules))
        if _VALID.passed(key, document):
            # Validated before and found valid: validation depends on nothing but the schema,
            # the document and the rules. Strawberry skips its own when errors are set.
            context.pre_execution_errors = []
            yield
            return
        errors = refusals(document, *self.limits)
        if errors:
            context.pre_execution_errors = errors
        elif len(context.query or "") > INLINE_MAX_CHARS:
            # What Strawberry itself runs (its rules, the extensions' and its own two).
            context.pre_execution_errors = await off_the_loop(
                validate_document, context.schema._schema, document, context.validation_rules
            )
        yield
        if context.pre_execution_errors == []:
            _VALID.remember(key, document)


class PassedDocuments:
    """Documents that passed a check, by identity (Strawberry's parser cache hands every request
    of one text the same parsed document): a client subscribing 2,000 times to one document, or
    2,000 clients to theirs, have it checked once, not 2,000 times (validation: a few milliseconds
    each for a subscription document). ``key`` starts with the document's ``id`` and holds what
    else the check depends on. Bounded as the parser cache is; each entry keeps its document, so
    an identity is never reused while it is kept. Only documents that passed are kept: a refused
    one's errors are made anew for each request."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._kept: OrderedDict[Hashable, DocumentNode] = OrderedDict()

    def passed(self, key: Hashable, document: DocumentNode) -> bool:
        kept = self._kept.get(key)
        if kept is not document:
            return False
        self._kept.move_to_end(key)
        return True

    def remember(self, key: Hashable, document: DocumentNode) -> None:
        self._kept[key] = document
        if len(self._kept) > self.size:
            self._kept.popitem(last=False)


VALID_DOCUMENTS = 256
"""Documents remembered as valid: as many as the parser cache keeps parsed."""

_VALID = PassedDocuments(VALID_DOCUMENTS)


def extensions(settings: Settings) -> list[Callable[[], SchemaExtension]]:
    """Factories: Strawberry makes each extension anew for every operation."""
    chosen: list[Callable[[], SchemaExtension]] = [
        partial(MaxTokensLimiter, max_token_count=settings.max_query_tokens),
        partial(
            DocumentLimits,
            max_depth=settings.max_query_depth,
            max_aliases=settings.max_aliases,
            max_fields=settings.max_fields,
        ),
    ]
    if not settings.introspection_enabled:
        chosen.append(DisableIntrospection)
    return chosen
