"""Compiled subscription plans: each event of a subscription executed without graphql-core's
generic machinery, to the same result.

graphql-core executes every event of a subscription from scratch: it collects the root fields,
builds a ``Path`` and a ``GraphQLResolveInfo`` for every field, looks the field up in the schema,
checks for middleware and awaitables, and dispatches on the field's type, for every field of
every event. For a private subscription (a group of one, :mod:`api.graphql.fanout`) that is most of
what an event costs. A :class:`Plan` does that work once per operation: the fields to read on each
object type (graphql-core's own field collection, so fragments, inline fragments, aliases and
``@skip``/``@include`` mean what they mean there), how to read each one (an attribute read where
Strawberry's resolver is one; the field's resolver, with a resolve info, where it is not), and
how to complete its value (the type's own output coercion, lists, nullability, abstract types).
An event then costs what its values cost.

The result is graphql-core's, exactly: same data, same errors with the same messages, locations
and paths, in the same order, null propagated to the same parent, the fields after a failed
non-null field left unexecuted, as graphql-core leaves them
(tests/api/graphql/test_plans_property.py compares the two on random documents and events for
every subscription field of the schema).
What a plan does not serve it hands back before it has called a resolver (:class:`CannotPlan`):
an async resolver, an awaitable or async iterable returned where graphql-core would await it,
middleware, ``@defer``/``@stream``, fragment arguments. graphql-core then executes that event
as it always did; ``/metrics`` counts both outcomes by root field
(``tradestream_subscription_plan_events_total``).

Plans are cached per operation (the parsed document is cached by Strawberry's parser cache, so
every subscriber of one document shares one) and per value of the variables that reach below the
root field: a ``positions(user: $u)`` subscription has one plan for every user, since ``$u``
only chooses the source stream. The cache is bounded (:data:`MAX_PLANS`).
"""

from __future__ import annotations

import keyword
import logging
import operator
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextvars import ContextVar
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from graphql import (
    ExecutionResult,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLNonNull,
    GraphQLObjectType,
    InlineFragmentNode,
    OperationType,
    TypeNameMetaFieldDef,
    VariableNode,
    located_error,
)
from graphql.execution import execute_subscription_event
from graphql.execution.collect_fields import collect_fields, collect_subfields
from graphql.execution.executor import CollectedErrors, Executor, invalid_return_type_error
from graphql.execution.values import get_argument_values
from graphql.language import Visitor, visit
from graphql.pyutils import Path, Undefined, inspect, is_iterable
from graphql.type import (
    GraphQLID,
    GraphQLString,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import CustomGraphQLEnumType, GraphQLCoreConverter
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE

from api.ops.metrics import counts

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Callable, Hashable, Iterable

    from graphql import (
        FragmentDefinitionNode,
        GraphQLField,
        GraphQLSchema,
        Node,
        OperationDefinitionNode,
    )
    from graphql.execution.collect_fields import FieldDetails
    from graphql.pyutils import AwaitableOrValue
    from graphql.type.definition import GraphQLAbstractType, GraphQLOutputType

logger = logging.getLogger(__name__)

MAX_PLANS = 512
"""Plans kept: one per subscription document in use (and per value of the variables that reach
below its root field), so a few dozen in practice; the bound stops a client that sends endless
distinct documents from growing the cache."""


class CannotPlan(Exception):
    """The plan does not serve this part of the operation: graphql-core executes the event.
    Raised before any resolver of the event ran, or after only synchronous ones did."""


LEAF, LIST, OBJECT, ABSTRACT = range(4)


class _Completion:
    """How to complete a value of one output type (one layer of it: a non-null wrapper is a
    flag on the layer it wraps)."""

    __slots__ = ("abstract", "item", "kind", "leaf", "non_null", "object_type", "table", "type")

    def __init__(self, type_: GraphQLOutputType) -> None:
        self.non_null = is_non_null_type(type_)
        inner = cast("GraphQLNonNull[Any]", type_).of_type if self.non_null else type_
        self.type: GraphQLOutputType = inner
        self.item: _Completion | None = None
        self.leaf: Callable[[Any], Any] | None = None
        self.object_type: GraphQLObjectType | None = None
        self.abstract: GraphQLAbstractType | None = None
        self.table: dict[type, Callable[[Any], dict[str, Any]]] = {}
        """Abstract types: Python class -> the fast path of its runtime type's selection, for
        the classes whose runtime type Strawberry decides by class (filled as they are met)."""
        if is_list_type(inner):
            self.kind = LIST
            self.item = _Completion(inner.of_type)
        elif is_leaf_type(inner):
            self.kind = LEAF
            self.leaf = inner.coerce_output_value
        elif is_abstract_type(inner):
            self.kind = ABSTRACT
            self.abstract = inner
        else:
            self.kind = OBJECT
            self.object_type = cast("GraphQLObjectType", inner)


class _Field:
    """One response key of a selection on one object type."""

    __slots__ = (
        "args",
        "args_error",
        "attribute",
        "completion",
        "constant",
        "details",
        "field_def",
        "is_event",
        "key",
        "leaf",
        "name",
        "nodes",
        "parent",
        "read",
        "resolve",
    )

    def __init__(
        self,
        plan: Plan,
        parent: GraphQLObjectType,
        key: str,
        details: list[FieldDetails],
        field_def: GraphQLField,
    ) -> None:
        self.key = key
        self.parent = parent
        self.details = details
        self.nodes = [d.node for d in details]
        self.name = self.nodes[0].name.value
        self.field_def = field_def
        self.completion = _Completion(field_def.type)
        self.leaf = self.completion.leaf
        """The output coercion of a leaf field (None for any other): its fast path."""
        if any(d.fragment_variable_values is not None for d in details):
            raise CannotPlan("fragment arguments")
        definition = field_def.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
        resolve = field_def.resolve
        self.read: Callable[[Any], Any] | None = None
        """How to get the field's value without its resolver, where that is all it does."""
        self.attribute: str | None = None
        """The attribute ``read`` reads; or"""
        self.constant: str | None = None
        """the value ``read`` answers (``__typename``); or"""
        self.is_event = False
        """whether ``read`` answers the event itself (the subscription's root field)."""
        self.resolve = resolve
        if resolve is None:
            raise CannotPlan("a field without Strawberry's resolver")
        if field_def is TypeNameMetaFieldDef:
            # graphql-core's resolver reads the parent type's name from a resolve info built
            # for it: the plan knows that name.
            self.read = _constant(parent.name)
        elif getattr(resolve, "_is_default", False) and definition is not None:
            # Strawberry's resolver for a field without one: the config's default resolver
            # (getattr) on the field's Python name, called without arguments or info.
            default = definition.default_resolver
            python_name = definition.python_name
            if default is getattr:
                self.read = operator.attrgetter(python_name)
                self.attribute = python_name
            else:
                self.read = lambda source: default(source, python_name)
        elif field_def is TypeNameMetaFieldDef:
            # graphql-core's resolver answers the parent type's name: known now.
            self.read = _constant(parent.name)
            self.constant = parent.name
        elif (
            definition is not None and definition.is_subscription and resolve.__name__ == "<lambda>"
        ):
            # A subscription field's resolver in Strawberry: the event is the field's value.
            self.read = _event
            self.is_event = True
        elif definition is not None and definition.is_async:
            raise CannotPlan(f"{parent.name}.{self.name} has an async resolver")
        self.args: dict[str, Any] = {}
        self.args_error: Exception | None = None
        node = self.nodes[0]
        if self.read is None and (field_def.args or node.arguments):
            try:
                self.args = get_argument_values(
                    field_def,
                    node,
                    plan.variable_values,
                    details[0].fragment_variable_values,
                    plan.hide_suggestions,
                )
            except Exception as error:
                self.args_error = error


class _Selection:
    """The fields of one object type's selection, in response order."""

    __slots__ = ("fields", "name", "type")

    def __init__(self, type_: GraphQLObjectType, fields: list[_Field]) -> None:
        self.type = type_
        self.name = type_.name
        self.fields = fields


AnyExecutor: TypeAlias = Executor[Any]

_ENSURE = Executor.ensure_valid_runtime_type
"""graphql-core's runtime type check; it reads nothing but ``self.schema``."""


class Plan:
    """One subscription operation, compiled (see the module's docstring)."""

    def __init__(self, executor: AnyExecutor, root_field: str) -> None:
        self.schema: GraphQLSchema = executor.schema
        self.fragments = executor.fragments
        self.variable_values = executor.variable_values
        self.operation: OperationDefinitionNode = executor.operation
        self.hide_suggestions = executor.hide_suggestions
        self.root_field = root_field
        """The subscription's root field: the metrics' label."""
        self._shim = SimpleNamespace(schema=self.schema)
        self._runtime_types: dict[tuple[str, type], GraphQLObjectType] = {}
        """Abstract type and Python class -> object type, where Strawberry decides by class."""
        self._type_checks: dict[tuple[str, type], bool] = {}
        """Object type and Python class -> is_type_of, where Strawberry decides by class."""
        self._selections: dict[tuple[str, int], tuple[list[FieldDetails], _Selection]] = {}
        root_type = self.schema.subscription_type
        assert root_type is not None
        collected = collect_fields(
            self.schema,
            self.fragments,
            self.variable_values,
            root_type,
            self.operation,
            self.hide_suggestions,
        )
        self._subs: dict[tuple[str, int], _Selection] = {}
        self._fast: dict[int, Callable[[Any], dict[str, Any]] | None] = {}
        """Selection (by id) -> its generated fast path, or None where it has none."""
        self._type_ok: dict[str, set[type]] = {}
        """Object type -> the classes its ``is_type_of`` accepts by class alone."""
        self.root = self._selection_of(root_type, collected.grouped_field_set.items())
        self.fast_root = _FastPath(self).compile(self.root)

    def _selection_of(self, type_: GraphQLObjectType, grouped: Any) -> _Selection:
        fields = []
        for key, details in grouped:
            field_def = self.schema.get_field(type_, details[0].node.name.value)
            if field_def is not None:  # graphql-core skips it too (validation refuses it)
                fields.append(_Field(self, type_, key, details, field_def))
        return _Selection(type_, fields)

    def _subselection(self, type_: GraphQLObjectType, field: _Field) -> _Selection:
        key = (type_.name, id(field))
        selection = self._subs.get(key)
        if selection is None:
            collected = collect_subfields(
                self.schema,
                self.fragments,
                self.variable_values,
                self.operation,
                type_,
                field.details,
                self.hide_suggestions,
            )
            selection = self._subs[key] = self._selection_of(
                type_, collected.grouped_field_set.items()
            )
        return selection

    def execute(self, executor: AnyExecutor) -> dict[str, Any]:
        """The event's data (errors go to ``executor.collected_errors``). Raises
        :class:`CannotPlan` for what graphql-core must execute, and a GraphQLError where
        graphql-core's ``execute_operation`` catches one (a non-null root field nulled)."""
        fast = self.fast_root
        if fast is not None:
            try:
                return fast(executor.root_value)
            except Exception:
                pass
        return self._fields(executor, self.root, executor.root_value, None)

    def _fields(
        self, executor: AnyExecutor, selection: _Selection, source: Any, path: Path | None
    ) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for field in selection.fields:
            try:
                read = field.read
                value = (
                    read(source)
                    if read is not None
                    else self._resolve(executor, field, source, path)
                )
                leaf = field.leaf
                if (
                    leaf is not None
                    and value is not None
                    and value is not Undefined
                    and not isinstance(value, Exception)
                ):
                    # The common case, inline: a scalar or enum with a value.
                    completed = leaf(value)
                    if completed is None or completed is Undefined:
                        raise TypeError(_coerce_message(field.completion, value, completed))
                else:
                    completed = self._complete(
                        executor,
                        field.completion,
                        field,
                        Path(path, field.key, selection.name),
                        value,
                    )
            except CannotPlan:
                raise
            except Exception as raw:
                field_path = Path(path, field.key, selection.name)
                _field_error(executor, raw, field, field.completion, field_path)
                completed = None
            results[field.key] = completed
        return results

    def _resolve(self, executor: AnyExecutor, field: _Field, source: Any, path: Path | None) -> Any:
        if field.args_error is not None:
            raise field.args_error
        info = executor.build_resolve_info(
            field.field_def, field.nodes, field.parent, Path(path, field.key, field.parent.name)
        )
        value = field.resolve(source, info, **field.args)  # type: ignore[misc]
        if executor.is_awaitable(value):
            _discard(value)
            raise CannotPlan(f"{field.parent.name}.{field.name} returned an awaitable")
        return value

    def _complete(
        self,
        executor: AnyExecutor,
        completion: _Completion,
        field: _Field,
        path: Path,
        value: Any,
    ) -> Any:
        """graphql-core's ``complete_value`` for one layer of the field's type."""
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            if completion.non_null:
                raise TypeError(_null_message(field))
            return None
        kind = completion.kind
        if kind is LEAF:
            completed = completion.leaf(value)  # type: ignore[misc]
            if completed is None or completed is Undefined:
                raise TypeError(_coerce_message(completion, value, completed))
            return completed
        if kind is LIST:
            return self._list(executor, completion, field, path, value)
        object_type = (
            self._runtime_type(executor, completion, field, path, value)
            if kind is ABSTRACT
            else completion.object_type
        )
        assert object_type is not None
        if object_type.is_type_of is not None and not self._is_type_of(
            executor, object_type, field, path, value
        ):
            raise invalid_return_type_error(object_type, value, field.details)
        selection = self._subselection(object_type, field)
        if kind is ABSTRACT and _memo_key("", completion.abstract.resolve_type, value):  # type: ignore[union-attr]
            fast = _FastPath(self).compile(selection)
            if fast is not None:
                completion.table[type(value)] = fast
        return self._fields(executor, selection, value, path)

    def _list(
        self,
        executor: AnyExecutor,
        completion: _Completion,
        field: _Field,
        path: Path,
        value: Any,
    ) -> list[Any]:
        if executor.is_async_iterable(value):
            raise CannotPlan(f"{field.parent.name}.{field.name} returned an async iterable")
        if not is_iterable(value):
            raise GraphQLError(
                "Expected Iterable, but did not find one for field"
                f" '{field.parent.name}.{field.name}'."
            )
        item_completion = completion.item
        assert item_completion is not None
        completed: list[Any] = []
        append = completed.append
        for index, item in enumerate(value):
            if executor.is_awaitable(item):
                _discard(item)
                raise CannotPlan(f"{field.parent.name}.{field.name} holds an awaitable")
            item_path = path.add_key(index, None)
            try:
                append(self._complete(executor, item_completion, field, item_path, item))
            except CannotPlan:
                raise
            except Exception as raw:
                _field_error(executor, raw, field, item_completion, item_path)
                append(None)
        return completed

    def _runtime_type(
        self, executor: AnyExecutor, completion: _Completion, field: _Field, path: Path, value: Any
    ) -> GraphQLObjectType:
        abstract = completion.abstract
        assert abstract is not None
        memo = _memo_key(abstract.name, abstract.resolve_type, value)
        if memo is not None:
            known = self._runtime_types.get(memo)
            if known is not None:
                return known
        resolve_type = abstract.resolve_type or executor.type_resolver
        info = self._info(executor, field, path)
        runtime = resolve_type(value, info, abstract)
        if executor.is_awaitable(runtime):
            _discard(runtime)
            raise CannotPlan(f"{abstract.name}.resolve_type returned an awaitable")
        object_type: GraphQLObjectType = _ENSURE(
            self._shim,  # type: ignore[arg-type]
            runtime,
            abstract,
            field.details,
            info,
            value,
        )
        if memo is not None:
            self._runtime_types[memo] = object_type
        return object_type

    def _is_type_of(
        self,
        executor: AnyExecutor,
        object_type: GraphQLObjectType,
        field: _Field,
        path: Path,
        value: Any,
    ) -> bool:
        is_type_of = object_type.is_type_of
        assert is_type_of is not None
        memo = _memo_key(object_type.name, is_type_of, value)
        if memo is not None:
            known = self._type_checks.get(memo)
            if known is not None:
                return known
        answer = is_type_of(value, self._info(executor, field, path))
        if executor.is_awaitable(answer):
            _discard(answer)
            raise CannotPlan(f"{object_type.name}.is_type_of returned an awaitable")
        if memo is not None:
            self._type_checks[memo] = bool(answer)
            if answer:
                self._type_ok.setdefault(object_type.name, set()).add(memo[1])
        return bool(answer)

    @staticmethod
    def _info(executor: AnyExecutor, field: _Field, path: Path) -> Any:
        return executor.build_resolve_info(field.field_def, field.nodes, field.parent, path)


_SLOW = RuntimeError("the plan's fast path does not serve this value")


class _FastPath:
    """Generates a selection's fast path: one Python function that reads the selection's
    attributes and coerces its values, for values that need nothing else.

    It raises (anything) at the first value that needs more: a null in a non-null position, a
    value a coercion refuses, an exception as a value, a list that is not a list or tuple, an
    abstract value or an ``is_type_of`` the interpreter has not yet seen decided by class. The
    plan then executes the event with its interpreter (:meth:`Plan._fields`), which gives the
    errors graphql-core gives. The fast path only reads attributes and calls coercions, so
    running the interpreter after it changes nothing; a selection with any field that has a
    resolver of its own has no fast path.
    """

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.names: dict[str, Any] = {"Undefined": Undefined, "SLOW": _SLOW, "Exception": Exception}
        self.lines: list[str] = []
        self.counter = 0

    def compile(self, selection: _Selection) -> Callable[[Any], dict[str, Any]] | None:
        known = self.plan._fast.get(id(selection), _MISSING)
        if known is not _MISSING:
            return known  # type: ignore[return-value]
        self.plan._fast[id(selection)] = None
        function = self._function(selection)
        self.plan._fast[id(selection)] = function
        return function

    def _name(self, prefix: str, value: Any) -> str:
        self.counter += 1
        name = f"{prefix}{self.counter}"
        self.names[name] = value
        return name

    def _function(self, selection: _Selection) -> Callable[[Any], dict[str, Any]] | None:
        lines = ["def fast(source):", " r = {}"]
        for field in selection.fields:
            if field.attribute is not None:
                if not field.attribute.isidentifier() or keyword.iskeyword(field.attribute):
                    return None
                value = f"source.{field.attribute}"
            elif field.constant is not None:
                value = self._name("const", field.constant)
            elif field.is_event:
                value = "source"
            else:
                return None
            variable = self._variable()
            lines.append(f" {variable} = {value}")
            if not self._complete(lines, 1, field.completion, field, variable):
                return None
            lines.append(f" r[{field.key!r}] = {variable}")
        lines.append(" return r")
        namespace = dict(self.names)
        exec("\n".join(lines), namespace)
        return cast("Callable[[Any], dict[str, Any]]", namespace["fast"])

    def _variable(self) -> str:
        self.counter += 1
        return f"v{self.counter}"

    def _complete(
        self, lines: list[str], depth: int, completion: _Completion, field: _Field, v: str
    ) -> bool:
        """Lines that replace the value in ``v`` with its completion; False when a part of the
        completion has no fast path."""
        pad = " " * depth
        if completion.non_null:
            # (Undefined is null to graphql-core too; the interpreter says so.)
            lines.append(f"{pad}if {v} is None or {v} is Undefined: raise SLOW")
        else:
            lines.append(f"{pad}if {v} is Undefined: raise SLOW")
            lines.append(f"{pad}if {v} is not None:")
            depth += 1
            pad = " " * depth
        kind = completion.kind
        if kind is LEAF:
            # A value of the class a leaf type takes as it is (a str of String or ID) or by one
            # lookup (a member of a Strawberry enum) is completed here; any other goes through
            # the type's own coercion.
            known = _known_leaf_values(completion.type)
            if known is None:
                generic = pad
            else:
                cls, names = known
                generic = pad + " "
                lines.append(f"{pad}if {v}.__class__ is {self._name('cls', cls)}:")
                if names is not None:
                    lines.append(f"{pad} {v} = {self._name('names', names)}[{v}]")
                else:
                    lines.append(f"{pad} pass")
                lines.append(f"{pad}else:")
            leaf = self._name("leaf", completion.leaf)
            lines.append(f"{generic}if isinstance({v}, Exception): raise SLOW")
            lines.append(f"{generic}{v} = {leaf}({v})")
            lines.append(f"{generic}if {v} is None or {v} is Undefined: raise SLOW")
            return True
        if kind is LIST:
            item = completion.item
            assert item is not None
            items, element = self._variable(), self._variable()
            lines.append(f"{pad}if {v}.__class__ is not list and {v}.__class__ is not tuple:")
            lines.append(f"{pad} raise SLOW")
            lines.append(f"{pad}{items} = []")
            lines.append(f"{pad}for {element} in {v}:")
            if not self._complete(lines, depth + 1, item, field, element):
                return False
            lines.append(f"{pad} {items}.append({element})")
            lines.append(f"{pad}{v} = {items}")
            return True
        if kind is ABSTRACT:
            table = self._name("table", completion.table)
            function = self._variable()
            lines.append(f"{pad}{function} = {table}.get({v}.__class__)")
            lines.append(
                f"{pad}if {function} is None or hasattr({v}, {TYPE_CAST_ATTRIBUTE!r}): raise SLOW"
            )
            lines.append(f"{pad}{v} = {function}({v})")
            return True
        object_type = completion.object_type
        assert object_type is not None
        if object_type.is_type_of is not None:
            accepted = self._name("ok", self.plan._type_ok.setdefault(object_type.name, set()))
            lines.append(
                f"{pad}if {v}.__class__ not in {accepted} or hasattr({v}, {TYPE_CAST_ATTRIBUTE!r}):"
            )
            lines.append(f"{pad} raise SLOW")
        else:
            lines.append(f"{pad}if isinstance({v}, Exception): raise SLOW")
        try:
            selection = self.plan._subselection(object_type, field)
        except GraphQLError:
            # Its fields cannot be collected (a directive's variable that does not coerce):
            # graphql-core fails the field when it gets there, and so does the interpreter.
            return False
        sub = _FastPath(self.plan).compile(selection)
        if sub is None:
            return False
        lines.append(f"{pad}{v} = {self._name('sub', sub)}({v})")
        return True


_MISSING = object()


def _known_leaf_values(type_: Any) -> tuple[type, dict[Any, str] | None] | None:
    """For a leaf type whose output coercion of a value of one class is known in advance: the
    class, and what each of its values becomes (None: the value itself). String and ID keep a
    str as it is (graphql-core's ``serialize_string``, ``serialize_id``); a Strawberry enum
    makes each member of its class the name its own coercion gives it."""
    if type_ is GraphQLString or type_ is GraphQLID:
        return str, None
    if isinstance(type_, CustomGraphQLEnumType) and type(type_).coerce_output_value is (
        CustomGraphQLEnumType.coerce_output_value
    ):
        cls: Any = type_.wrapped_cls
        return cls, {member: type_.coerce_output_value(member) for member in cls}
    return None


def _field_error(
    executor: AnyExecutor, raw: Exception, field: _Field, completion: _Completion, path: Path
) -> None:
    """graphql-core's ``handle_field_error``: the error located at ``path``, raised on to the
    parent where the position is non-null, else collected (the position is then null)."""
    error = located_error(raw, field.nodes, path.as_list())
    if completion.non_null and executor.error_propagation:
        raise error from None
    executor.collected_errors.add(error, path)


def _memo_key(name: str, decider: Any, value: Any) -> tuple[str, type] | None:
    """The key under which a type decision about ``value`` may be remembered, or None.

    Strawberry's own type resolvers and ``is_type_of`` checks decide by the value's class alone
    when it is a Strawberry object of a non-generic type that was not ``strawberry.cast``: then
    the first answer for a class is every answer. Anyone else's may look at the value.
    """
    if decider is None or not getattr(decider, "__module__", "").startswith("strawberry."):
        return None
    cls = type(value)
    by_class = _DECIDED_BY_CLASS.get(cls)
    if by_class is None:
        definition = getattr(cls, "__strawberry_definition__", None)
        by_class = _DECIDED_BY_CLASS[cls] = (
            definition is not None
            and not definition.is_graphql_generic
            and definition.concrete_of is None
        )
    if not by_class or getattr(value, TYPE_CAST_ATTRIBUTE, None) is not None:
        return None
    return (name, cls)


_DECIDED_BY_CLASS: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()
"""Whether Strawberry decides the type of a class's instances by their class."""


def _constant(value: Any) -> Callable[[Any], Any]:
    return lambda _source: value


def _event(source: Any) -> Any:
    return source


def _null_message(field: _Field) -> str:
    return f"Cannot return null for non-nullable field {field.parent.name}.{field.name}."


def _coerce_message(completion: _Completion, value: Any, coerced: Any) -> str:
    return (
        f"Expected `{inspect(completion.type)}.coerce_output_value("
        f"{inspect(value)})` to return non-nullable value, returned:"
        f" {inspect(coerced)}"
    )


def _discard(awaitable: Any) -> None:
    """An awaitable the plan will not await (graphql-core runs the event again): closed, so no
    'never awaited' warning is left behind."""
    close = getattr(awaitable, "close", None)
    if close is not None:
        close()


class _VariablesBelowRoot(Visitor):
    """The variables an operation uses below its root fields' own arguments: those the plan
    depends on (directives, arguments of nested fields)."""

    def __init__(self, root_arguments: set[int]) -> None:
        super().__init__()
        self.root_arguments = root_arguments
        self.names: set[str] = set()

    def enter_argument(self, node: Any, *_: Any) -> Any:
        if id(node) in self.root_arguments:
            return self.SKIP
        return None

    def enter_variable(self, node: VariableNode, *_: Any) -> None:
        self.names.add(node.name.value)


def _plan_variables(
    operation: OperationDefinitionNode, fragments: Iterable[FragmentDefinitionNode]
) -> tuple[str, ...]:
    root_arguments = {
        id(argument)
        for selection in operation.selection_set.selections
        if isinstance(selection, FieldNode)
        for argument in selection.arguments or ()
    }
    visitor = _VariablesBelowRoot(root_arguments)
    visit(operation.selection_set, visitor)
    for fragment in fragments:
        visit(fragment, visitor)
    return tuple(sorted(visitor.names))


_DEFER_OR_STREAM = frozenset({"defer", "stream"})


class _Plans:
    """Every plan of this process, by operation and the values of its plan variables."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._plans: OrderedDict[Hashable, tuple[OperationDefinitionNode, Plan | None]] = (
            OrderedDict()
        )
        self._variables: dict[int, tuple[OperationDefinitionNode, tuple[str, ...] | None]] = {}

    def __len__(self) -> int:
        return len(self._plans)

    def clear(self) -> None:
        self._plans.clear()
        self._variables.clear()

    def plan_of(self, executor: AnyExecutor) -> Plan | None:
        operation = executor.operation
        names = self._names(operation, executor.fragment_definitions)
        if names is None:
            return None
        coerced = executor.variable_values.coerced
        try:
            values = tuple(coerced.get(name) for name in names)
            key = (id(executor.schema), id(operation), values)
            hash(key)
        except TypeError:
            return None
        entry = self._plans.get(key)
        if entry is not None:
            self._plans.move_to_end(key)
            return entry[1]
        try:
            plan: Plan | None = Plan(executor, _root_field_name(operation))
        except (CannotPlan, GraphQLError) as reason:
            # GraphQLError: the root fields cannot be collected; graphql-core answers each
            # event with that error.
            logger.debug("no plan for this subscription: %s", reason)
            plan = None
        # The operation is kept with its plan: its id is part of the key, so it must not be
        # freed (and the id reused) while the entry lives.
        self._plans[key] = (operation, plan)
        if len(self._plans) > self.size:
            self._plans.popitem(last=False)
        return plan

    def _names(
        self, operation: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
    ) -> tuple[str, ...] | None:
        """The plan variables of an operation, or None when it is not to be planned."""
        entry = self._variables.get(id(operation))
        if entry is not None and entry[0] is operation:
            return entry[1]
        names: tuple[str, ...] | None = None
        parts = (operation, *fragments.values())
        if not any(_uses_incremental_delivery(part) for part in parts):
            names = _plan_variables(operation, fragments.values())
        if len(self._variables) >= self.size:
            self._variables.clear()
        self._variables[id(operation)] = (operation, names)
        return names


class _Directives(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found = False

    def enter_directive(self, node: Any, *_: Any) -> Any:
        if node.name.value in _DEFER_OR_STREAM:
            self.found = True
            return self.BREAK
        return None


def _uses_incremental_delivery(node: Node) -> bool:
    visitor = _Directives()
    visit(node, visitor)
    return visitor.found


def _root_field_name(operation: OperationDefinitionNode) -> str:
    for selection in operation.selection_set.selections:
        if isinstance(selection, FieldNode):
            return selection.name.value
        if isinstance(selection, InlineFragmentNode | FragmentSpreadNode):
            return "other"
    return "other"


plans = _Plans(MAX_PLANS)

T = TypeVar("T")

planned_source: ContextVar[Callable[[PlannedExecutionContext, AsyncIterator[Any]], None] | None] = (
    ContextVar("tradestream_planned_source", default=None)
)
"""Set by a fan-out group (:mod:`api.graphql.fanout`) in its task: told the subscription's executor
and source stream once graphql-core has made them, so the group can execute events itself."""


class PlannedExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's execution context, with each subscription event executed by its plan.

    graphql-core executes a subscription's event as ``execute_operation(False)`` on a copy of
    the subscription's executor whose root value is the event (``build_per_event_executor``);
    everything else (queries, mutations, the subscription's own start) is graphql-core's.
    """

    _plan: Plan | None = None
    _planned_once = False
    _per_event = False

    def build_per_event_executor(self, payload: Any) -> PlannedExecutionContext:
        """graphql-core's copy for one event (``copy(self)`` with its own root value and
        errors), made without ``copy``'s generic machinery; the subscription's plan is looked up
        once, here, and travels with every copy."""
        if not self._planned_once:
            self._planned_once = True
            self._plan = self._find_plan()
        executor = object.__new__(type(self))
        executor.__dict__.update(self.__dict__)
        executor.root_value = payload
        executor.collected_errors = CollectedErrors()
        executor._per_event = True
        return executor

    def _find_plan(self) -> Plan | None:
        if (
            self.operation.operation is not OperationType.SUBSCRIPTION
            or self.abort_signal is not None
            or not self.error_propagation
            or _has_middleware(self)
        ):
            return None
        return plans.plan_of(self)

    def cancellable_iterable(self, iterable: AsyncIterable[T]) -> AsyncIterable[T]:
        # graphql-core wraps the subscription's source stream here (and, per event, an async
        # iterable a field returns): the stream is offered to whoever runs the subscription.
        stream = super().cancellable_iterable(iterable)
        if not self._per_event and isinstance(stream, AsyncIterator):
            # (an iterator: its own ``__aiter__``, so whoever takes it reads the very iterator
            # graphql-core's mapping reads)
            take = planned_source.get()
            if take is not None:
                take(self, stream)
        return stream

    def execute_event(self, payload: Any) -> AwaitableOrValue[ExecutionResult]:
        """One event of the subscription, executed as graphql-core's mapping of the source
        stream executes it. An event its plan's fast path serves needs no per-event executor:
        the fast path reads nothing but the event."""
        if not self._planned_once:
            self._planned_once = True
            self._plan = self._find_plan()
        plan = self._plan
        if plan is not None and plan.fast_root is not None:
            try:
                data = plan.fast_root(payload)
            except Exception:
                pass
            else:
                counts.plan_hits[plan.root_field] += 1
                return ExecutionResult(data, None)
        return execute_subscription_event(self.build_per_event_executor(payload))

    def execute_operation(self, serially: bool | None = None) -> Any:
        if self._per_event and serially is False:
            plan = self._plan
            if plan is not None:
                result = self._planned(plan)
                if result is not None:
                    return result
            field = plan.root_field if plan is not None else _root_field_name(self.operation)
            counts.plan_fallbacks[field] += 1
        return super().execute_operation(serially)

    def _planned(self, plan: Plan) -> ExecutionResult | None:
        try:
            data: dict[str, Any] | None = plan.execute(self)
        except CannotPlan as reason:
            logger.debug("event executed by graphql-core: %s", reason)
            self.collected_errors = CollectedErrors()
            return None
        except GraphQLError as error:
            self.collected_errors.add(error, None)
            data = None
        counts.plan_hits[plan.root_field] += 1
        # graphql-core's own response, without the incremental executor's look for deferred
        # work (a subscription has none).
        return cast("ExecutionResult", self.finish(Executor.build_response(self, data)))


def _has_middleware(executor: AnyExecutor) -> bool:
    manager = executor.middleware_manager
    return manager is not None and manager._middleware_resolvers is not None
