"""Compiled subscription plans (api/graphql/plans.py) give graphql-core's results, and hand back
what they cannot serve. The random comparison over the real schema is in test_plans_property.py."""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
from collections.abc import AsyncIterator  # noqa: TC003  (Strawberry resolves it at run time)
from typing import Annotated, Any

import pytest
import strawberry
from graphql import DocumentNode, ExecutionResult, Undefined, parse
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from api.graphql.plans import PlannedExecutionContext, plans
from api.ops.metrics import counts

calls: list[str] = []


@strawberry.type
class Leaf:
    name: str
    size: int | None

    @strawberry.field
    def loud(self) -> str | None:
        calls.append(f"loud:{self.name}")
        if self.name == "boom":
            raise ValueError("the resolver failed")
        return self.name.upper()

    @strawberry.field
    async def later(self) -> str:
        return self.name


@strawberry.type
class Other:
    code: int


Thing = Annotated[Leaf | Other, strawberry.union("Thing")]


@strawberry.enum
class Side(enum.Enum):
    LONG = "long"
    SHORT = "short"


@strawberry.type
class Event:
    title: str
    leaves: list[Leaf]
    strict: list[Leaf]
    first: Leaf | None
    must: Leaf
    thing: Thing | None
    count: int
    side: Side = Side.LONG
    ref: strawberry.ID = strawberry.ID("r1")


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def events(self, tag: str = "") -> AsyncIterator[Event]:
        yield EVENT  # pragma: no cover  (the tests execute events directly)


EVENT = Event(
    title="t",
    leaves=[Leaf(name="a", size=1), Leaf(name="b", size=None)],
    strict=[Leaf(name="c", size=3)],
    first=Leaf(name="f", size=2),
    must=Leaf(name="m", size=4),
    thing=Other(code=7),
    count=3,
)

schema = strawberry.Schema(query=Query, subscription=Subscription)


@functools.lru_cache
def parsed(document: str) -> DocumentNode:
    """Parsed once, as Strawberry's parser cache does for every subscriber of a document."""
    return parse(document)


def run(
    executor_class: type[StrawberryGraphQLCoreExecutionContext],
    document: str,
    event: Any,
    variables: dict[str, Any] | None = None,
) -> tuple[Any, list[dict[str, Any]]]:
    executor = executor_class.build(
        schema._schema, parsed(document), raw_variable_values=variables or {}
    )
    assert not isinstance(executor, list), executor
    result = executor.build_per_event_executor(event).execute_operation(False)
    assert isinstance(result, ExecutionResult)
    return result.data, [dict(e.formatted) for e in result.errors or ()]


def both(
    document: str, event: Any = EVENT, variables: dict[str, Any] | None = None
) -> tuple[Any, list[dict[str, Any]]]:
    """The plan's result, checked to be graphql-core's and to have come from the plan."""
    calls.clear()
    expected = run(StrawberryGraphQLCoreExecutionContext, document, event, variables)
    core_calls = list(calls)
    calls.clear()
    hits = counts.plan_hits["events"]
    planned = run(PlannedExecutionContext, document, event, variables)
    assert planned == expected
    assert calls == core_calls, "the plan called resolvers graphql-core did not, or more often"
    assert counts.plan_hits["events"] == hits + 1, "the plan did not execute it"
    return planned


@pytest.fixture(autouse=True)
def fresh_plans() -> None:
    plans.clear()


def test_fields_aliases_fragments_typename_and_unions() -> None:
    data, errors = both(
        """subscription { events { __typename t: title count ...F
             first { ... on Leaf { name size } name }
             thing { __typename ... on Other { code } ... on Leaf { name } } } }
           fragment F on Event { leaves { name loud } }"""
    )
    assert errors == []
    assert data == {
        "events": {
            "__typename": "Event",
            "t": "t",
            "count": 3,
            "leaves": [{"name": "a", "loud": "A"}, {"name": "b", "loud": "B"}],
            "first": {"name": "f", "size": 2},
            "thing": {"__typename": "Other", "code": 7},
        }
    }


def test_skip_and_include_follow_the_variables_with_a_plan_per_value() -> None:
    document = (
        "subscription($with: Boolean!, $tag: String) { events(tag: $tag) {"
        " title count @include(if: $with) first @skip(if: $with) { name } } }"
    )
    with_count = both(document, variables={"with": True, "tag": "x"})
    without = both(document, variables={"with": False, "tag": "y"})
    assert with_count[0] == {"events": {"title": "t", "count": 3}}
    assert without[0] == {"events": {"title": "t", "first": {"name": "f"}}}
    both(document, variables={"with": True, "tag": "z"})
    assert len(plans) == 2, "the root field's own argument does not make another plan"


def test_a_resolver_error_is_located_and_nulls_its_nullable_field() -> None:
    event = Event(
        title="t",
        leaves=[Leaf(name="a", size=1), Leaf(name="boom", size=2)],
        strict=[],
        first=Leaf(name="boom", size=None),
        must=Leaf(name="m", size=1),
        thing=None,
        count=1,
    )
    data, errors = both("subscription { events { leaves { loud } first { loud } } }", event)
    assert data == {"events": {"leaves": [{"loud": "A"}, {"loud": None}], "first": {"loud": None}}}
    assert [e["path"] for e in errors] == [
        ["events", "leaves", 1, "loud"],
        ["events", "first", "loud"],
    ]
    assert all(e["message"] == "the resolver failed" for e in errors)


def test_null_in_a_non_null_position_propagates_and_stops_its_siblings() -> None:
    event = Event(
        title="t",
        leaves=[],
        strict=[Leaf(name="x", size=1), None],  # type: ignore[list-item]
        first=None,
        must=Leaf(name="boom", size=1),
        thing=None,
        count=1,
    )
    # `must.name` is null: `must` is non-null, and so is `events`: the whole data is null;
    # `strict` and the fields after it are never executed, as in graphql-core.
    event.must.name = None  # type: ignore[assignment]
    data, errors = both(
        "subscription { events { title must { loud name } strict { loud } } }", event
    )
    assert data is None
    # (`loud` fails on the missing name first: nullable, so it is only nulled)
    assert [e["path"] for e in errors] == [["events", "must", "loud"], ["events", "must", "name"]]
    assert calls == ["loud:None"]
    data, errors = both("subscription { events { strict { name } title } }", event)
    assert data is None
    assert errors[0]["message"] == "Cannot return null for non-nullable field Event.strict."
    assert errors[0]["path"] == ["events", "strict", 1]


def test_a_wrong_value_is_graphql_cores_error() -> None:
    event = Event(
        title=5,  # type: ignore[arg-type]
        leaves="nope",  # type: ignore[arg-type]
        strict=[],
        first=Other(code=1),  # type: ignore[arg-type]
        must=Leaf(name="m", size=1),
        thing=None,
        count="many",  # type: ignore[arg-type]
    )
    data, errors = both("subscription { events { count leaves { name } first { name } } }", event)
    assert data is None
    assert len(errors) == 1
    data, errors = both("subscription { events { leaves { name } first { name } } }", event)
    assert data is None
    assert "Expected Iterable" in errors[0]["message"]


def test_an_async_resolver_is_left_to_graphql_core() -> None:
    document = "subscription { events { title first { later } } }"
    fallbacks = counts.plan_fallbacks["events"]
    hits = counts.plan_hits["events"]
    executor = PlannedExecutionContext.build(schema._schema, parse(document))
    assert not isinstance(executor, list)
    pending = executor.build_per_event_executor(EVENT).execute_operation(False)
    assert inspect.isawaitable(pending), "graphql-core executed it (awaiting the resolver)"

    async def result() -> Any:
        return await pending

    assert asyncio.run(result()).data == {"events": {"title": "t", "first": {"later": "f"}}}
    assert counts.plan_fallbacks["events"] == fallbacks + 1
    assert counts.plan_hits["events"] == hits


def test_plans_are_bounded() -> None:
    for i in range(plans.size + 10):
        run(PlannedExecutionContext, f"subscription {{ events {{ title t{i}: count }} }}", EVENT)
    assert len(plans) == plans.size


def test_a_directive_whose_variable_does_not_coerce_fails_its_field_as_in_graphql_core() -> None:
    """`$b` is nullable with a default, sent as null: `@skip(if: $b)` cannot take it. graphql-core
    fails the field whose subfields it collects; the plan must too (found by the property test:
    the fast path collected the subfields while it was compiled, and the error escaped)."""
    document = "subscription($b: Boolean = true) { events { title first { name @skip(if: $b) } } }"
    data, errors = both(document, variables={"b": None})
    assert data == {"events": {"title": "t", "first": None}}
    assert [e["path"] for e in errors] == [["events", "first"]]
    assert "Expected variable '$b'" in errors[0]["message"]


def test_undefined_is_null_on_the_fast_path_too() -> None:
    """graphql-core treats Undefined as null: a non-null field (here the root) holding it is an
    error, even when every subfield is skipped (found by the property test)."""
    data, errors = both("subscription { events { title @skip(if: true) } }", Undefined)
    assert data is None
    assert errors[0]["message"] == "Cannot return null for non-nullable field Subscription.events."


class Text(str):
    """A str of a class of its own."""


def test_strings_ids_and_enum_members_are_completed_as_graphql_core_does() -> None:
    """The fast path keeps a str of String or ID as it is and looks an enum member's name up;
    any other value (a str subclass, a number, an enum's value in place of its member) goes
    through the type's coercion, as in graphql-core."""
    document = "subscription { events { title side ref count } }"
    expected = {"events": {"title": "t", "side": "LONG", "ref": "r1", "count": 3}}
    assert both(document) == (expected, [])
    odd = Event(
        title=Text("x"),
        leaves=[],
        strict=[],
        first=None,
        must=Leaf(name="m", size=1),
        thing=None,
        count=1,
        side=Side.SHORT,
        ref=7,  # type: ignore[arg-type]
    )
    assert both(document, odd) == (
        {"events": {"title": "x", "side": "SHORT", "ref": "7", "count": 1}},
        [],
    )
    # An enum's value in place of its member: graphql-core looks the value up too.
    odd.side = "short"  # type: ignore[assignment]
    assert both(document, odd)[0]["events"]["side"] == "SHORT"
