"""Compiled subscription plans (api/graphql/plans.py) give graphql-core's result for every
subscription field of the real schema.

Random valid documents (fields at every level, aliases, one response key selected twice with
different subselections, named and inline fragments on object, union and interface types, most
of them not the event's type, ``__typename``, ``@skip``/``@include`` with literals and variables)
are executed on random events (the Strawberry types the field returns, and faults: nulls in
non-null positions, values of the wrong type, objects of a type outside the union, exceptions
returned as values, attributes whose read raises), each event by graphql-core as Strawberry
runs it and by the plan.

The plan must give what a subscriber would receive from graphql-core (the ``next`` payload as
:mod:`api.graphql.fanout` encodes it: the same data, the same errors with their messages, locations,
paths and extensions, in the same order), with each error's original error of the same class
(:meth:`api.schema.Schema.process_errors` masks by it), and must have executed the event itself:
nothing here is what a plan hands back to graphql-core (an awaitable, an async resolver), so a
fallback is a defect too.
"""

from __future__ import annotations

import functools
import itertools
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import orjson
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    get_named_type,
    is_abstract_type,
    is_composite_type,
    is_leaf_type,
    is_non_null_type,
    is_object_type,
    parse,
    validate,
)
from graphql.pyutils import Undefined
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter

from api.graphql.plans import PlannedExecutionContext
from api.ops.metrics import counts
from api.schema import schema

if TYPE_CHECKING:
    import enum
    from collections.abc import Hashable, Sequence

    from graphql import (
        ExecutionResult,
        GraphQLArgument,
        GraphQLCompositeType,
        GraphQLInputType,
        GraphQLObjectType,
        GraphQLOutputType,
    )

SCHEMA = schema._schema
SUBSCRIPTION = SCHEMA.subscription_type
assert SUBSCRIPTION is not None
FIELDS = sorted(SUBSCRIPTION.fields)

EXAMPLES = 120
"""Documents per subscription field, each executed on one to three events: the module takes
35-50 s on the 2-core machine."""

MAX_DEPTH = 3
"""Levels of fields below the root field (the deepest subscription type has three)."""

MAX_NESTING = 2
"""Fragments in fragments, on one level."""


@functools.cache
def _choice(options: tuple[Hashable, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from(options)


@functools.cache
def _between(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high)


class Drawing:
    """Draws through strategies made once (making one per draw costs more than the draw)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def pick(self, options: Sequence[Any]) -> Any:
        return self.draw(_choice(tuple(options)))

    def between(self, low: int, high: int) -> int:
        return self.draw(_between(low, high))

    def one_in(self, n: int) -> bool:
        """True about once in ``n + 1`` draws: the middle value, which hypothesis favours no
        more than any other (it favours the bounds) and shrinks away from."""
        return self.draw(_between(0, n)) == n // 2


def possible(type_: GraphQLCompositeType) -> frozenset[str]:
    """The object types a value of ``type_`` may be."""
    if is_object_type(type_):
        return frozenset({type_.name})
    return frozenset(t.name for t in SCHEMA.get_possible_types(type_))  # type: ignore[arg-type]


COMPOSITES: list[GraphQLCompositeType] = sorted(
    (t for t in SCHEMA.type_map.values() if is_composite_type(t) and not t.name.startswith("__")),
    key=lambda t: t.name,
)


@functools.cache
def conditions(type_name: str) -> tuple[GraphQLCompositeType, ...]:
    """The type conditions a fragment may have where a ``type_name`` is selected: every type
    that overlaps it (inside a union, its members, the interfaces they implement and the other
    unions that share a member: most of them do not match the event's runtime type)."""
    overlap = possible(SCHEMA.type_map[type_name])  # type: ignore[arg-type]
    return tuple(t for t in COMPOSITES if possible(t) & overlap)


ABSENT: Any = object()
"""A variable left out of the request (its default applies)."""


class Document(Drawing):
    """A random valid subscription document on one root field, drawn piece by piece.

    Each response key stands for one field name and one output type in the whole document
    (aliases are ``<name>_a``, ``<name>_b``, or numbered when those are taken), so fields that
    merge (the same key selected twice, directly or through fragments) always may, as
    graphql-core's validation requires.
    """

    def __init__(self, draw: st.DrawFn, root: str) -> None:
        super().__init__(draw)
        self.keys: dict[str, tuple[str, str]] = {}
        self.names = itertools.count()
        self.fragments: list[tuple[str, str, str]] = []
        """Name, type condition and selections of each named fragment drawn so far."""
        self.variables: dict[str, tuple[str, Any]] = {}
        """Each variable's definition and value (ABSENT: not sent)."""
        self.selected: set[tuple[str, str]] = set()
        """The object types and fields the document selects somewhere."""
        self.named: set[str] = set()
        """The object types the document names in a type condition."""
        self.text = self._operation(root)

    def __repr__(self) -> str:
        return f"{self.text!r} with {self.variable_values!r}"

    @property
    def variable_values(self) -> dict[str, Any]:
        return {name: value for name, (_, value) in self.variables.items() if value is not ABSENT}

    def _operation(self, root: str) -> str:
        """The root field, once or twice under one response key (two subselections that merge),
        maybe in a fragment on Subscription; no directive at the top level (a subscription's
        root field is unconditional)."""
        field = SUBSCRIPTION.fields[root]  # type: ignore[union-attr]
        arguments = self._arguments(field.args)
        alias = self.pick(["", "", "event: "])
        body = " ".join(
            f"{alias}{root}{arguments} {self._selection_set(field.type, MAX_DEPTH)}"
            for _ in range(1 + self.one_in(3))
        )
        wrap = self.pick(["none", "none", "none", "inline", "fragment"])
        if wrap == "inline":
            body = f"... on Subscription {{ {body} }}"
        elif wrap == "fragment":
            self.fragments.append(("Root", "Subscription", body))
            body = "...Root"
        definitions = ", ".join(
            f"${name}: {definition}" for name, (definition, _) in self.variables.items()
        )
        header = f"subscription Op({definitions})" if definitions else "subscription Op"
        fragments = " ".join(
            f"fragment {name} on {condition} {{ {text} }}"
            for name, condition, text in self.fragments
        )
        return f"{header} {{ {body} }} {fragments}"

    def _arguments(self, arguments: dict[str, GraphQLArgument]) -> str:
        """Valid values for the root field's arguments: they choose the source stream only,
        which the comparison does not run, but graphql-core coerces them on every event."""
        written = []
        for name, argument in arguments.items():
            required = is_non_null_type(argument.type) and argument.default_value is Undefined
            if not required and self.one_in(2):
                continue
            literal, value = self.draw(input_value(argument.type))
            if self.one_in(2):
                variable = f"a{len(self.variables)}"
                self.variables[variable] = (str(argument.type), value)
                written.append(f"{name}: ${variable}")
            else:
                written.append(f"{name}: {literal}")
        return f"({', '.join(written)})" if written else ""

    def _directives(self) -> str:
        if not self.one_in(4):
            return ""
        chosen = self.pick([("skip",), ("include",), ("skip", "include"), ("include", "skip")])
        return "".join(f" @{name}(if: {self._condition()})" for name in chosen)

    def _condition(self) -> str:
        kind = self.pick(["literal", "required", "defaulted", "required with a default"])
        if kind == "literal":
            return str(self.pick(["true", "false"]))
        variable = f"b{len(self.variables)}"
        if kind == "required":
            self.variables[variable] = ("Boolean!", self.pick([True, False]))
        elif kind == "required with a default":
            value = self.pick([ABSENT, True, False])
            self.variables[variable] = (f"Boolean! = {self.pick(['true', 'false'])}", value)
        else:
            # A nullable variable with a default may stand where Boolean! is expected; sent
            # as null, it is an execution error (graphql-core's, at the selection's field).
            value = self.pick([ABSENT, ABSENT, True, False, True, False, None])
            self.variables[variable] = (f"Boolean = {self.pick(['true', 'false'])}", value)
        return f"${variable}"

    def _selection_set(self, type_: GraphQLOutputType, depth: int, nesting: int = 0) -> str:
        """The selections on ``type_``, ``depth`` levels of fields deep at most, inside
        ``nesting`` fragments of the same level."""
        named: GraphQLCompositeType = get_named_type(type_)  # type: ignore[assignment]
        # More on an abstract type: its selections are mostly fragments on one member or other.
        count = self.between(2, 5) if is_abstract_type(named) else self.between(1, 4)
        selections = (self._selection(named, depth, nesting) for _ in range(count))
        return "{ " + " ".join(selections) + " }"

    def _selection(self, type_: GraphQLCompositeType, depth: int, nesting: int) -> str:
        if nesting >= MAX_NESTING:
            kind = "field"
        elif is_abstract_type(type_):  # of a union, only __typename is a field
            kind = self.pick(["inline", "field", "inline", "inline", "spread", "spread"])
        else:
            kind = self.pick(["field", "field", "field", "field", "inline", "spread"])
        if kind == "field":
            return self._field(type_, depth)
        condition: GraphQLCompositeType = self.pick(conditions(type_.name))
        if is_object_type(condition):
            self.named.add(condition.name)
        if kind == "inline":
            if self.one_in(5):  # no type condition: the enclosing type's
                inner = self._selection_set(type_, depth, nesting + 1)
                return f"...{self._directives()} {inner}"
            inner = self._selection_set(condition, depth, nesting + 1)
            return f"... on {condition.name}{self._directives()} {inner}"
        reusable = [
            name for name, on, _ in self.fragments if SCHEMA.type_map[on] in conditions(type_.name)
        ]
        if reusable and self.one_in(2):
            name = self.pick(reusable)
        else:
            name = f"F{next(self.names)}"
            selections = self._selection_set(condition, depth, nesting + 1)[2:-2]
            self.fragments.append((name, condition.name, selections))
        return f"...{name}{self._directives()}"

    def _field(self, type_: GraphQLCompositeType, depth: int) -> str:
        fields = getattr(type_, "fields", {})
        names = [
            name
            for name, field in fields.items()
            if depth > 1 or is_leaf_type(get_named_type(field.type))
        ]
        name = "__typename" if not names or self.one_in(8) else self.pick(names)
        output = "String!" if name == "__typename" else str(fields[name].type)
        bare = name.strip("_")
        keys = [
            key
            for key in (name, name, name, f"{bare}_a", f"{bare}_b")
            if self.keys.get(key, (name, output)) == (name, output)
        ]
        key = self.pick(keys) if keys else f"{bare}_{next(self.names)}"
        self.keys[key] = (name, output)
        self.selected.update((possible_type, name) for possible_type in possible(type_))
        alias = "" if key == name else f"{key}: "
        selection = f"{alias}{name}{self._directives()}"
        if name != "__typename" and is_composite_type(get_named_type(fields[name].type)):
            selection += " " + self._selection_set(fields[name].type, depth - 1)
        return selection


@st.composite
def input_value(draw: st.DrawFn, type_: GraphQLInputType) -> tuple[str, Any]:
    """A valid value of a root argument's type, as a literal and as a variable's value."""
    drawing = Drawing(draw)
    if not is_non_null_type(type_) and drawing.one_in(6):
        return "null", None
    name = get_named_type(type_).name
    if name in {"String", "ID"}:
        text = drawing.pick(["BTC-PERP", "alice", "1", "m-1"])
        return orjson.dumps(text).decode(), text
    number = drawing.between(0, 1000)  # Int, Long (test_every_root_argument_is_generated)
    return str(number), number


@st.composite
def documents(draw: st.DrawFn, root: str) -> Document:
    return Document(draw, root)


# Events: instances of the Strawberry types the root field returns, with faults.


class Unreadable(Exception):
    """Raised by an attribute read of a faulty event."""


@functools.cache
def unreadable(cls: type, attribute: str) -> type:
    """A subclass of a Strawberry type whose ``attribute`` raises when read (a property, as a
    computed attribute of a payload type would be)."""

    def read(self: Any) -> Any:
        raise Unreadable(f"reading {attribute} failed")

    return type(f"Unreadable{cls.__name__}", (cls,), {attribute: property(read)})


class Opaque:
    """An object of no type the schema knows."""

    def __repr__(self) -> str:
        return "<Opaque>"


WRONG_VALUES = (
    "not a number",
    "",
    "LONG",
    "1.5",
    Decimal("NaN"),
    Decimal("-0"),
    float("inf"),
    2.5,
    True,
    2**40,
    -1,
    Opaque(),
    {"price": "1"},
    [1, 2],
    (),
    b"bytes",
    datetime(2026, 1, 1),  # naive
    Undefined,
)
"""Values a field of this schema should not hold (some are right for some fields)."""
WRONG = st.sampled_from(WRONG_VALUES)
RETURNED = ValueError("an exception returned as a value")


def python_name(type_: GraphQLObjectType, field: str) -> str:
    definition = type_.fields[field].extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
    name: str = definition.python_name
    return name


def strawberry_class(type_: GraphQLObjectType) -> type:
    cls: type = type_.extensions[GraphQLCoreConverter.DEFINITION_BACKREF].origin
    return cls


def has_resolver(type_: GraphQLObjectType, field: str) -> bool:
    definition = type_.fields[field].extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
    return definition.base_resolver is not None


OBJECT_TYPES: list[GraphQLObjectType] = sorted(
    (
        t
        for t in SCHEMA.type_map.values()
        if is_object_type(t)
        and not t.name.startswith("__")
        and t.name not in {"Query", "Mutation", "Subscription"}
    ),
    key=lambda t: t.name,
)

TEXTS = ("", "BTC-PERP", "alice", "trade", "ünïcode ✓", 'quote " and \\', "nul \x00")


class Event(Drawing):
    """A random value of an output type for a document: one event in four has no fault, the
    others about one fault in ``fault_rate`` values, so both errors and whole results are
    common. The fields the document selects are drawn (and made faulty); the others are left
    null, as they are never read, and the union member is mostly one the document names."""

    def __init__(self, draw: st.DrawFn, document: Document) -> None:
        super().__init__(draw)
        self.fault_rate = self.pick([0, 3, 6, 15])
        self.document = document

    def value(self, type_: GraphQLOutputType) -> Any:
        if self.fault_rate and self.one_in(self.fault_rate):
            return self._fault()
        if isinstance(type_, GraphQLNonNull):
            return self._present(type_.of_type)
        return None if self.one_in(6) else self._present(type_)

    def _present(self, type_: GraphQLOutputType) -> Any:
        if isinstance(type_, GraphQLList):
            items = [self.value(type_.of_type) for _ in range(self.between(0, 3))]
            return tuple(items) if self.one_in(4) else items
        if isinstance(type_, GraphQLScalarType):
            return self._scalar(type_.name)
        if isinstance(type_, GraphQLEnumType):
            members: list[enum.Enum] = list(type_.wrapped_cls)  # type: ignore[attr-defined]
            return self.pick(members)
        if is_object_type(type_):
            return self._object(type_)
        members_of = sorted(SCHEMA.get_possible_types(type_), key=lambda t: t.name)  # type: ignore[arg-type]
        named = [t for t in members_of if t.name in self.document.named]
        return self._object(self.pick(named if named and not self.one_in(4) else members_of))

    def _fault(self) -> Any:
        kind = self.pick(["null", "wrong", "returned", "object", "wrong", "class", "null"])
        if kind == "null":
            return None
        if kind == "wrong":
            return self.draw(WRONG)
        if kind == "returned":  # graphql-core raises an exception a resolver returns
            return self.pick([RETURNED, Undefined])
        if kind == "class":  # a Strawberry type itself, not an instance of it
            return strawberry_class(self.pick(OBJECT_TYPES))
        # Of a type other than the field's, or outside the union.
        return self._object(self.pick(OBJECT_TYPES), faults=False)

    def _scalar(self, name: str) -> Any:
        if name == "String":
            return self.pick(TEXTS)
        if name == "ID":
            return self.pick(TEXTS) if self.one_in(2) else self.between(-5, 10**6)
        if name == "Int":
            return self.between(-(2**31), 2**31 - 1)
        if name == "Long":
            return self.between(0, 2**53 - 1)
        if name == "Boolean":
            return self.pick([True, False])
        if name == "Decimal":
            digits = self.between(-(10**20), 10**20)
            return Decimal(digits).scaleb(-self.between(0, 20))
        if name == "DateTime":
            moment = datetime(2026, 12, 6, tzinfo=UTC) + timedelta(
                microseconds=self.between(-(10**15), 10**15)
            )
            return moment.replace(tzinfo=None) if self.one_in(6) else moment
        raise AssertionError(f"no values for the scalar {name}")  # a new scalar: add it here

    def _object(self, type_: GraphQLObjectType, faults: bool = True) -> Any:
        cls = strawberry_class(type_)
        resolvers = any(has_resolver(type_, name) for name in type_.fields)
        names = sorted(
            name
            for name in type_.fields
            if resolvers or (type_.name, name) in self.document.selected
        )
        raising = None
        if faults and names and self.fault_rate and self.one_in(self.fault_rate):
            raising = python_name(type_, self.pick(names))
            cls = unreadable(cls, raising)
        instance: Any = object.__new__(cls)
        for name in type_.fields:
            attribute = python_name(type_, name)
            if attribute == raising or has_resolver(type_, name):  # resolvers run
                continue
            drawn = faults and name in names
            instance.__dict__[attribute] = self.value(type_.fields[name].type) if drawn else None
        return instance


@st.composite
def events(draw: st.DrawFn, type_: GraphQLOutputType, document: Document) -> Any:
    return Event(draw, document).value(type_)


# The comparison.


def received(result: ExecutionResult) -> tuple[bytes, list[str | None]]:
    """What a subscriber receives of a result (the ``next`` payload, encoded as
    :class:`api.graphql.fanout.Encoded` encodes it), and the class of each error's original
    error."""
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    originals = [
        None if error.original_error is None else type(error.original_error).__name__
        for error in result.errors or ()
    ]
    return orjson.dumps(body), originals


def per_event(executor: Any, event: Any) -> ExecutionResult:
    result = executor.build_per_event_executor(event).execute_operation(False)
    assert not hasattr(result, "__await__"), "an event of this schema completed asynchronously"
    return result  # type: ignore[no-any-return]


def build(
    executor_class: type[StrawberryGraphQLCoreExecutionContext],
    document: Any,
    variables: dict[str, Any],
) -> Any:
    executor = executor_class.build(SCHEMA, document, raw_variable_values=variables)
    assert not isinstance(executor, list), executor  # the variables are valid
    return executor


def compare(text: str, variables: dict[str, Any], event_list: list[Any]) -> None:
    document = parse(text)
    errors = validate(SCHEMA, document)
    assert not errors, f"the generator made an invalid document: {errors}\n{text}"
    core = build(StrawberryGraphQLCoreExecutionContext, document, variables)
    planned = build(PlannedExecutionContext, document, variables)
    for event in event_list:
        expected = received(per_event(core, event))
        hits, fallbacks = counts.plan_hits.total(), counts.plan_fallbacks.total()
        result = received(per_event(planned, event))
        assert result == expected, "the plan's result is not graphql-core's"
        assert counts.plan_fallbacks.total() == fallbacks, "graphql-core executed the event"
        assert counts.plan_hits.total() == hits + 1, "the plan did not execute the event"


EXPLORE = os.environ.get("PLANS_PROPERTY_EXPLORE") == "1"
"""Random examples on each run (``PLANS_PROPERTY_EXPLORE=1``, to hunt for differences, as two
earlier runs found the two fixed in tests/api/graphql/test_plans.py); by default the same examples
every run, so CI's verdict is the code's, not the draw's."""


@pytest.mark.parametrize("root", FIELDS)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=not EXPLORE,
    # An event of the larger types (leaderboards of rows of trades) is a few hundred draws.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_the_plan_gives_graphql_cores_result(root: str, data: st.DataObject) -> None:
    document = data.draw(documents(root), label="document")
    field = SUBSCRIPTION.fields[root]  # type: ignore[union-attr]
    event_list = data.draw(
        st.lists(events(field.type, document), min_size=1, max_size=3), label="events"
    )
    compare(document.text, document.variable_values, event_list)


def test_every_root_argument_is_generated() -> None:
    """A new subscription field is compared as soon as it exists (FIELDS is read from the
    schema); its arguments must be of a type :func:`input_value` writes."""
    assert len(FIELDS) >= 10
    for root in FIELDS:
        for argument in SUBSCRIPTION.fields[root].args.values():  # type: ignore[union-attr]
            assert get_named_type(argument.type).name in {"String", "ID", "Int", "Long"}
