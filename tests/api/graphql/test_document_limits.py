"""The document limits (api/graphql/document_limits.py) measure a document as it expands, in time
that does
not grow with the expansion: random documents of fragments, aliases and nesting are measured
against a naive expansion, and run through the real schema within a time bound."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import pytest
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.graphql.document_limits import Cost, DocumentCost, refusals
from api.schema import build_schema
from api.settings import Settings

CAP = 20_000
"""Past this many nodes the naive expansion stops counting: only "more than" is compared."""


class TooBig(Exception):
    pass


@dataclass
class Naive:
    """The document expanded the slow way: every spread walked again, every node visited."""

    fragments: dict[str, SelectionSetNode]
    visited: int = 0

    def of(self, selection_set: SelectionSetNode, seen: frozenset[str] = frozenset()) -> Cost:
        fields = aliases = depth = 0
        for selection in selection_set.selections:
            self.visited += 1
            if self.visited > CAP:
                raise TooBig
            if isinstance(selection, FieldNode):
                fields += 1
                aliases += selection.alias is not None
                if selection.selection_set:
                    below = self.of(selection.selection_set, seen)
                    fields, aliases = fields + below.fields, aliases + below.aliases
                    if not selection.name.value.startswith("__"):
                        depth = max(depth, below.depth + 1)
                continue
            if isinstance(selection, InlineFragmentNode):
                below = self.of(selection.selection_set, seen)
            else:
                assert isinstance(selection, FragmentSpreadNode)
                name = selection.name.value
                if name in seen or name not in self.fragments:
                    continue
                below = self.of(self.fragments[name], seen | {name})
            fields, aliases = fields + below.fields, aliases + below.aliases
            depth = max(depth, below.depth)
        return Cost(fields, aliases, depth)


LEAVES = ["name", "kind", "description", "n: name", "k: kind", "__typename", "t: __typename"]


@st.composite
def selection_sets(draw: st.DrawFn, spreadable: int, depth: int = 3) -> str:
    """A selection set on ``__Type``: leaves, aliases, nested ``ofType``, inline fragments and
    spreads of the fragments numbered below ``spreadable`` (so no cycle)."""
    kinds = ["leaf", "leaf"] + (["nested", "inline"] if depth else []) + ["spread"] * spreadable
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(kinds))
        if kind == "leaf":
            parts.append(draw(st.sampled_from(LEAVES)))
        elif kind == "nested":
            alias = draw(st.sampled_from(["", "o: "]))
            parts.append(f"{alias}ofType {draw(selection_sets(spreadable, depth - 1))}")
        elif kind == "inline":
            parts.append(f"... on __Type {draw(selection_sets(spreadable, depth - 1))}")
        else:
            parts.extend([f"...F{draw(st.integers(0, spreadable - 1))}"] * draw(st.integers(1, 3)))
    return "{ " + " ".join(parts) + " }"


@st.composite
def documents(draw: st.DrawFn) -> str:
    count = draw(st.integers(0, 14))
    fragments = [f"fragment F{i} on __Type {draw(selection_sets(i))}" for i in range(count)]
    return " ".join([f'{{ __type(name: "Market") {draw(selection_sets(count))} }}', *fragments])


def naive_cost(source: str) -> Cost | None:
    document = parse(source)
    fragments = {
        d.name.value: d.selection_set
        for d in document.definitions
        if isinstance(d, FragmentDefinitionNode)
    }
    [operation] = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    try:
        return Naive(fragments).of(operation.selection_set)
    except TooBig:
        return None


@given(source=documents())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_measure_is_the_naive_expansion(source: str) -> None:
    document = parse(source)
    [operation] = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    measured = DocumentCost(document).of(operation.selection_set)
    naive = naive_cost(source)
    if naive is None:
        assert measured.fields > CAP // 4
    else:
        assert measured == naive


LIMITS = Settings(max_fields=60, max_aliases=8, max_query_depth=10)
SCHEMA = build_schema(LIMITS)


@given(source=documents())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
async def test_random_documents_are_answered_in_bounded_time(source: str) -> None:
    """Through the real schema (parse, limits, graphql-core's rules, execution): a bound far
    above what a document takes here (milliseconds), far below what an expansion walked spread by
    spread takes (2^14 spreads deep: seconds and more). The process's CPU time, not the wall
    clock: on a busy machine (the whole suite, CI's neighbours) waiting for a core is not the
    document's cost, and a wall-clock bound failed there now and then (0.318 s of wall time).
    Nor is a collection of the suite's whole heap that happens to fall in it (0.252 s of CPU once,
    in a fresh-clone CI run): the collector is paused while it is measured."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        started = time.process_time()
        result = await SCHEMA.execute(source)
        elapsed = time.process_time() - started
    finally:
        if collecting:
            gc.enable()
    assert elapsed < 0.25, f"{elapsed:.3f} s of CPU"
    document = parse(source)
    expected = refusals(document, 10, 8, 60)
    if expected:
        assert result.data is None
        assert result.errors is not None
        assert [e.message for e in result.errors] == [e.message for e in expected]
        assert {e.extensions["code"] for e in result.errors if e.extensions} == {
            "QUERY_TOO_COMPLEX"
        }
    elif result.errors:  # fragments the operation does not spread: graphql-core refuses those
        assert all(e.message.endswith("is never used.") for e in result.errors), result.errors
    else:
        assert result.data is not None
        assert result.data["__type"] is not None


def doubling(levels: int) -> str:
    fragments = ["fragment F0 on Market { id base }"] + [
        f"fragment F{i} on Market {{ ...F{i - 1} ...F{i - 1} }}" for i in range(1, levels + 1)
    ]
    return " ".join([f"{{ markets {{ ...F{levels} }} }}", *fragments])


@pytest.mark.parametrize("levels", [10, 30, 200])
def test_a_doubled_fragment_is_measured_once_per_fragment(levels: int) -> None:
    document = parse(doubling(levels))
    [operation] = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    assert DocumentCost(document).of(operation.selection_set) == Cost(1 + 2 ** (levels + 1), 0, 1)
    [error] = refusals(document, max_depth=10, max_aliases=30, max_fields=300)
    assert error.extensions == {"code": "QUERY_TOO_COMPLEX"}


def test_a_fragment_cycle_is_left_to_graphql_core() -> None:
    source = "{ markets { ...A } } fragment A on Market { id ...B } fragment B on Market { ...A }"
    document = parse(source)
    [operation] = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    assert DocumentCost(document).of(operation.selection_set) == Cost(2, 0, 1)
    assert refusals(document, 10, 30, 300) == []


def test_depth_counts_below_the_root_fields_but_not_under_introspection() -> None:
    def depth(source: str) -> int:
        document = parse(source)
        [operation] = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        return DocumentCost(document).of(operation.selection_set).depth

    assert depth("{ __typename }") == 0
    assert depth("{ markets { id } }") == 1
    assert depth("{ markets { ...F } } fragment F on Market { id }") == 1
    assert depth("{ __schema { types { fields { type { ofType { name } } } } } }") == 0
