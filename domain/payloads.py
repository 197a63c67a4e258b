"""One camelCase codec for event payloads: a frozen dataclass to the JSON values an event carries,
and back, read off the dataclass's type hints.

An event payload is defined once, as a dataclass in the domain module it belongs to; a
:class:`PayloadCodec` made for it is its wire format, used by the publisher (``encode``) and by
every reader (``decode``, the schema included). The format is the one the project has always
written, byte for byte (``tests/domain/test_payloads.py`` pins it):

    key        the attribute in camelCase (``entry_price`` -> ``entryPrice``, ``change_24h`` ->
               ``change24h``), or what ``keys`` says for it
    Decimal    ``str(value)`` (``decimals="str"``: ``1E+3``) or fixed point (``decimals="fixed"``:
               ``1000``), per codec
    datetime   ``isoformat()``; a date likewise
    Enum       its value
    dataclass  its own payload (the codec registered for its class, else one made alike)
    tuple/list a list of the items' payloads
    X | None   null, or X's payload
    str, int, bool, float  as they are

``fields`` names the attributes in payload order (the dataclass's order if not given); a name may
be a property, which is encoded (its return annotation gives its type) and never decoded. On
decode a key that is absent gives the field's default (a field without one needs its key), so a
payload written before a field existed still reads. With ``omit_none`` an attribute that is None
is left out of the payload instead of written null (an event made of parts, some of them absent
depending on its type: the part is absent on the wire, and reads back as None). Encoders and
decoders are generated Python functions, as fast as the hand-written ones they replace (made on
first use).

A reader that needs one part of a large payload reads it with :meth:`PayloadCodec.part` (the
first items of a list, or each item straight into the schema's type) instead of decoding it all.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping, Sequence

T = TypeVar("T")
S = TypeVar("S")

DecimalText = Literal["str", "fixed"]

_MISSING = object()
_CODECS: dict[type, PayloadCodec[Any]] = {}


def camel(name: str) -> str:
    """``entry_price`` -> ``entryPrice``; ``change_24h_usd`` -> ``change24hUsd``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class PayloadCodec(Generic[T]):
    """The wire format of one payload dataclass (rules in the module docstring)."""

    encode: Callable[[T], dict[str, Any]]
    """The payload of an instance: a new dict of JSON values."""
    decode: Callable[[dict[str, Any]], T]
    """The instance a payload describes."""

    def __init__(
        self,
        cls: type[T],
        *,
        decimals: DecimalText = "str",
        keys: Mapping[str, str] | None = None,
        fields: Sequence[str] | None = None,
        types: Mapping[str, Any] | None = None,
        omit_none: bool = False,
    ) -> None:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} is not a dataclass")
        self.cls = cls
        self.decimals: DecimalText = decimals
        self._keys = dict(keys or {})
        self._names = (
            tuple(fields) if fields is not None else tuple(f.name for f in dataclasses.fields(cls))
        )
        self._types = dict(types or {})
        self.omit_none = omit_none
        self._encoder: Callable[[T], dict[str, Any]] | None = None
        self._decoder: Callable[[dict[str, Any]], T] | None = None
        self.encode = self._first_encode
        self.decode = self._first_decode
        if all(f.name in self._names for f in dataclasses.fields(cls) if f.init):
            _CODECS.setdefault(cls, self)  # the class's whole payload: what nesting it gives

    def key(self, name: str) -> str:
        """The payload key of an attribute."""
        return self._keys.get(name) or camel(name)

    def _first_encode(self, value: T) -> dict[str, Any]:
        encode = self._encoder
        if encode is None:  # the first call: generate it (a caller may hold on to this method)
            encode = self._encoder = self.encode = self._generate(encoding=True)
        return encode(value)

    def _first_decode(self, payload: dict[str, Any]) -> T:
        decode = self._decoder
        if decode is None:
            decode = self._decoder = self.decode = self._generate(encoding=False)
        return decode(payload)

    def part(self, name: str, read: Callable[[Any], S] | None = None) -> Callable[..., Any]:
        """A function that reads attribute ``name`` of a payload, and nothing else of it: its
        value, as :attr:`decode` reads it. For a tuple or list attribute, a list, each item read
        by ``read`` if given (a :meth:`reader` of the item's codec: straight into the schema's
        type) or else decoded; the function's second argument, if given, is how many of the
        first items to read (a reader that shows only the first few of a long list)."""
        writer = _Writer(self)
        hint = self._hints()[name]
        key = self.key(name)
        lookup = f"p.get({key!r})" if self.omit_none and _optional(hint) else f"p[{key!r}]"
        if _origin(hint) in (tuple, list):
            t = writer.temporary()
            item = (
                writer.decode(t, _item(hint)) if read is None else f"{writer.constant(read)}({t})"
            )
            source = f"def part(p, stop=None):\n    return [{item} for {t} in {lookup}[:stop]]\n"
        else:
            if read is not None:
                raise TypeError(
                    f"{self.cls.__name__}.{name} is not a list: it has no items to read"
                )
            source = f"def part(p):\n    return {writer.decode(lookup, hint)}\n"
        function: Callable[..., Any] = writer.compile(source, "part")
        return function

    def reader(
        self, target: type[S], *, as_is: Collection[str] = (), **names: str
    ) -> Callable[[dict[str, Any]], S]:
        """A function that makes a ``target`` (another dataclass: the schema's type of this
        payload) straight from a payload, each of its fields read as this codec reads the field
        of the same name (``names`` maps a target field to an attribute named otherwise), or
        taken as the JSON value it is for a target field in ``as_is`` (an enum shown as its
        value). A target field this payload lacks keeps its default. One step instead of two
        (the payload to this dataclass, that to the target), for readers a payload reaches many
        times."""
        writer = _Writer(self, target)
        hints = self._hints()
        encoded = set(self._names)
        arguments = []
        for field in dataclasses.fields(target):  # type: ignore[arg-type]
            name = names.get(field.name, field.name)
            if not field.init:
                continue
            if name not in encoded:
                if _default(field) is _MISSING:
                    raise TypeError(f"{self.cls.__name__}'s payload lacks {target.__name__}.{name}")
                continue
            optional = self.omit_none and _optional(hints[name])
            value = f"p.get({self.key(name)!r})" if optional else f"p[{self.key(name)!r}]"
            if field.name not in as_is:
                value = writer.decode(value, hints[name])
            arguments.append(f"{field.name}={value}")
        source = f"def read(p):\n    return cls({', '.join(arguments)})\n"
        read: Callable[[dict[str, Any]], S] = writer.compile(source, "read")
        return read

    # --- generation -----------------------------------------------------------------------------

    def _hints(self) -> dict[str, Any]:
        namespace = {"Decimal": Decimal, "datetime": datetime, "date": date, **self._types}
        hints = typing.get_type_hints(self.cls, localns=namespace)
        for name in self._names:
            if name not in hints:
                attribute = getattr(self.cls, name, None)
                if not isinstance(attribute, property) or attribute.fget is None:
                    raise TypeError(f"{self.cls.__name__}.{name} is neither a field nor a property")
                hints[name] = typing.get_type_hints(attribute.fget, localns=namespace)["return"]
        return hints

    def _generate(self, *, encoding: bool) -> Callable[..., Any]:
        writer = _Writer(self)
        hints = self._hints()
        if encoding:
            return writer.compile(self._encoder_source(writer, hints), "encode")
        names = set(self._names)
        arguments = []
        for field in dataclasses.fields(self.cls):  # type: ignore[arg-type]
            if not field.init:
                continue
            default = _default(field)
            if field.name not in names:
                if default is _MISSING:
                    raise TypeError(f"{self.cls.__name__}'s payload lacks {field.name}")
                arguments.append(writer.constant(default))
                continue
            key = self.key(field.name)
            hint = hints[field.name]
            left_out = self.omit_none and _optional(hint)  # absent: None, default or not
            if default is _MISSING and not left_out:
                value = writer.decode(f"p[{key!r}]", hint)
            elif (default is None or left_out) and _optional(hint):
                value = writer.decode(f"p.get({key!r})", hint)
            elif _reads_itself(hint):
                value = writer.decode(f"p.get({key!r}, {writer.constant(default)})", hint)
            else:
                d = writer.constant(default)
                t = writer.temporary()
                read = writer.decode(t, hint)
                value = f"({d} if ({t} := p.get({key!r}, {d})) is {d} else {read})"
            arguments.append(value)
        source = f"def decode(p):\n    return cls({', '.join(arguments)})\n"
        return writer.compile(source, "decode")

    def _encoder_source(self, writer: _Writer, hints: dict[str, Any]) -> str:
        omitted = [self.omit_none and _optional(hints[n]) for n in self._names]
        if not any(omitted):
            items = ", ".join(
                f"{self.key(n)!r}: {writer.encode(f'o.{n}', hints[n])}" for n in self._names
            )
            return f"def encode(o):\n    return {{{items}}}\n"
        # The keys up to the first that may be left out make the dict; each later one is set
        # in turn, so the payload's key order stays the attributes' order.
        first = omitted.index(True)
        items = ", ".join(
            f"{self.key(n)!r}: {writer.encode(f'o.{n}', hints[n])}" for n in self._names[:first]
        )
        lines = [f"def encode(o):\n    d = {{{items}}}\n"]
        for name, omit in zip(self._names[first:], omitted[first:], strict=True):
            key, hint = self.key(name), hints[name]
            if omit:
                t = writer.temporary()
                value = writer.encode(t, _without_none(hint))
                lines.append(
                    f"    if ({t} := o.{name}) is not None:\n        d[{key!r}] = {value}\n"
                )
            else:
                lines.append(f"    d[{key!r}] = {writer.encode(f'o.{name}', hint)}\n")
        lines.append("    return d\n")
        return "".join(lines)


def codec_of(cls: type[T], decimals: DecimalText = "str") -> PayloadCodec[T]:
    """The codec registered for ``cls``, else a new one with the defaults."""
    found = _CODECS.get(cls)
    return found if found is not None else PayloadCodec(cls, decimals=decimals)


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return _MISSING


def _reads_itself(hint: Any) -> bool:
    """Whether reading a value of this type as if it were its payload gives it back (a default
    may then stand in for an absent key without a test)."""
    if hint in (str, int, bool, float, Decimal):
        return True
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def _optional(hint: Any) -> bool:
    return _origin(hint) is types.UnionType and type(None) in typing.get_args(hint)


def _origin(hint: Any) -> Any:
    origin = typing.get_origin(hint)
    return types.UnionType if origin is typing.Union else origin


class _Writer:
    """Writes one generated function: its source and the names it uses."""

    def __init__(self, codec: PayloadCodec[Any], target: type | None = None) -> None:
        self._codec = codec
        self._namespace: dict[str, Any] = {
            "cls": codec.cls if target is None else target,
            "Decimal": Decimal,
            "fromisoformat": datetime.fromisoformat,
            "date_fromisoformat": date.fromisoformat,
            "format": format,
        }
        self._count = 0

    def compile(self, source: str, name: str) -> Callable[..., Any]:
        code = compile(source, f"<payload {name} of {self._codec.cls.__qualname__}>", "exec")
        exec(code, self._namespace)  # the source is made above from type hints only
        function: Callable[..., Any] = self._namespace[name]
        return function

    def constant(self, value: Any) -> str:
        self._count += 1
        name = f"c{self._count}"
        self._namespace[name] = value
        return name

    def temporary(self) -> str:
        self._count += 1
        return f"t{self._count}"

    def encode(self, expr: str, hint: Any) -> str:
        if _optional(hint):
            inner = _without_none(hint)
            t = self.temporary()
            return f"(None if ({t} := {expr}) is None else {self.encode(t, inner)})"
        if hint is Decimal:
            return f"str({expr})" if self._codec.decimals == "str" else f'format({expr}, "f")'
        if hint is datetime or hint is date:
            return f"{expr}.isoformat()"
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return f"{expr}.value"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            nested = codec_of(hint, self._codec.decimals)
            return f"{self.constant(nested)}.encode({expr})"
        if _origin(hint) in (tuple, list):
            t = self.temporary()
            return f"[{self.encode(t, _item(hint))} for {t} in {expr}]"
        if hint in (str, int, bool, float, Any):
            return expr
        raise TypeError(f"no payload format for {hint!r} in {self._codec.cls.__name__}")

    def decode(self, expr: str, hint: Any) -> str:
        if _optional(hint):
            inner = _without_none(hint)
            t = self.temporary()
            return f"(None if ({t} := {expr}) is None else {self.decode(t, inner)})"
        if hint is Decimal:
            return f"Decimal({expr})"
        if hint is datetime:
            return f"fromisoformat({expr})"
        if hint is date:
            return f"date_fromisoformat({expr})"
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            return f"{self.constant(hint)}({expr})"
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            nested = codec_of(hint, self._codec.decimals)
            return f"{self.constant(nested)}.decode({expr})"
        if _origin(hint) in (tuple, list):
            t = self.temporary()
            items = f"{self.decode(t, _item(hint))} for {t} in {expr}"
            return f"[{items}]" if _origin(hint) is list else f"tuple([{items}])"
        if hint in (str, int, bool, float, Any):
            return expr
        raise TypeError(f"no payload format for {hint!r} in {self._codec.cls.__name__}")


def _without_none(hint: Any) -> Any:
    rest = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(rest) != 1:
        raise TypeError(f"no payload format for {hint!r}")
    return rest[0]


def _item(hint: Any) -> Any:
    args = typing.get_args(hint)
    if _origin(hint) is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        raise TypeError(f"no payload format for {hint!r}: only tuple[X, ...]")
    return args[0]
