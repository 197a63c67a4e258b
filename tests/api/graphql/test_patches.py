"""The identity-aware JSON Patch diff, with python-json-patch applying every patch it makes."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.graphql.patches import diff, pointer_token


def applied(old: Any, new: Any) -> list[dict[str, Any]]:
    """The patch from ``old`` to ``new``, checked: RFC 6902 applied to ``old`` gives ``new``."""
    ops = diff(old, new)
    result = jsonpatch.apply_patch(copy.deepcopy(old), ops)
    assert result == new
    assert _typed(result) == _typed(new)
    return ops


def _typed(value: Any) -> Any:
    """``value`` with each scalar's type beside it: 1, 1.0 and True are not equal here."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


WIDE = "x" * 60
"""A field that makes a row larger than the operations that change it (else they are replaced
whole: see test_operations_larger_than_the_value_replace_it)."""


def rows(*logins: str, profit: int = 1) -> list[dict[str, Any]]:
    return [{"login": login, "profit": profit, "name": WIDE} for login in logins]


def test_equal_values_need_no_operation() -> None:
    value = {"rows": rows("a", "b"), "at": "x", "n": None}
    assert applied(value, copy.deepcopy(value)) == []


def test_a_changed_field_is_one_replace_at_the_rows_index() -> None:
    old = {"rows": rows("a", "b", "c")}
    new = copy.deepcopy(old)
    new["rows"][1]["profit"] = 7
    assert applied(old, new) == [{"op": "replace", "path": "/rows/1/profit", "value": 7}]


def test_a_row_that_moves_up_is_one_move() -> None:
    old = {"rows": rows("a", "b", "c", "d", "e")}
    new = {"rows": rows("a", "e", "b", "c", "d")}
    assert applied(old, new) == [{"op": "move", "from": "/rows/4", "path": "/rows/1"}]


def test_a_row_that_moves_down_is_one_move() -> None:
    old = {"rows": rows("a", "b", "c", "d", "e")}
    new = {"rows": rows("b", "c", "d", "a", "e")}
    assert applied(old, new) == [{"op": "move", "from": "/rows/0", "path": "/rows/3"}]


def test_an_insert_at_the_front_is_one_add() -> None:
    old = {"rows": rows("a", "b", "c")}
    new = {"rows": rows("z", "a", "b", "c")}
    assert applied(old, new) == [{"op": "add", "path": "/rows/0", "value": new["rows"][0]}]


def test_a_gone_row_is_one_remove() -> None:
    old = {"rows": rows("a", "b", "c")}
    assert applied(old, {"rows": rows("a", "c")}) == [{"op": "remove", "path": "/rows/1"}]


def test_a_moved_and_changed_row_gets_its_fields_at_its_new_index() -> None:
    old = {"rows": rows("a", "b", "c")}
    new = {"rows": [*rows("c"), *rows("a", "b")]}
    new["rows"][0]["profit"] = 9
    assert applied(old, new) == [
        {"op": "move", "from": "/rows/2", "path": "/rows/0"},
        {"op": "replace", "path": "/rows/0/profit", "value": 9},
    ]


def test_duplicate_identities_replace_the_whole_list() -> None:
    old = {"rows": rows("a", "a", "b")}
    new = {"rows": rows("a", "b", "b")}
    assert applied(old, new) == [{"op": "replace", "path": "/rows", "value": new["rows"]}]


def test_positions_are_keyed_by_id_and_candidates_by_position_id() -> None:
    p1, p2 = {"id": "p1", "size": "1", "market": WIDE}, {"id": "p2", "size": "2", "market": WIDE}
    old: dict[str, Any] = {"positions": [p1, p2]}
    new: dict[str, Any] = {"positions": [p2, {**p1, "size": "3"}]}
    assert applied(old, new) == [
        {"op": "move", "from": "/positions/0", "path": "/positions/1"},
        {"op": "replace", "path": "/positions/1/size", "value": "3"},
    ]
    old = {"candidates": [{"positionId": 1, "reward": "1"}, {"positionId": 2, "reward": "1"}]}
    new = {"candidates": [{"positionId": 2, "reward": "1"}]}
    assert applied(old, new) == [{"op": "remove", "path": "/candidates/0"}]


def test_nested_lists_are_diffed_inside_their_rows() -> None:
    x = {"symbol": "X", "v": 1, "comment": WIDE}
    old = {"rows": [{"login": 1, "openPositions": [x]}]}
    new = {"rows": [{"login": 1, "openPositions": [{"symbol": "Y", "v": 1}, {**x, "v": 2}]}]}
    assert applied(old, new) == [
        {"op": "add", "path": "/rows/0/openPositions/0", "value": {"symbol": "Y", "v": 1}},
        {"op": "replace", "path": "/rows/0/openPositions/1/v", "value": 2},
    ]


def test_nulls_and_types_are_replaced() -> None:
    applied({"a": None, "b": 1, "c": True}, {"a": {"x": 1}, "b": None, "c": 1})
    applied({"a": [1, 2]}, {"a": None})
    applied({"a": 1}, {"a": 1.0})
    applied({"rows": [None, {"id": 1}]}, {"rows": [{"id": 1}, None]})


def test_lists_without_identity_go_by_index() -> None:
    assert applied({"a": [WIDE, 2, 3]}, {"a": [WIDE, 5]}) == [
        {"op": "replace", "path": "/a/1", "value": 5},
        {"op": "remove", "path": "/a/2"},
    ]
    applied({"a": [{"v": 1}]}, {"a": [{"v": 2}, {"v": 3}]})


def test_operations_larger_than_the_value_replace_it() -> None:
    old = {"row": {"id": 1, "a": "1", "b": "1", "c": "1"}, "rows": rows("a", "b", "c")}
    new = {"row": {"id": 1, "a": "2", "b": "2", "c": "2"}, "rows": rows("c", "b", "a")}
    assert applied(old, new) == [
        {"op": "replace", "path": "/row", "value": new["row"]},
        {"op": "move", "from": "/rows/1", "path": "/rows/2"},
        {"op": "move", "from": "/rows/0", "path": "/rows/2"},
    ]
    narrow = [{"id": n} for n in range(3)]
    assert applied({"rows": narrow}, {"rows": narrow[::-1]}) == [
        {"op": "replace", "path": "/rows", "value": narrow[::-1]}
    ]


def test_union_members_that_change_type_change_their_fields() -> None:
    old = {"positions": {"__typename": "PositionOpened", "id": "p1"}}
    new = {"positions": {"__typename": "PositionsUpdate", "positions": [{"id": "p1"}]}}
    applied(old, new)


def test_keys_are_escaped_as_json_pointer_tokens() -> None:
    assert pointer_token("a/b~c") == "a~1b~0c"
    applied({"a/b": 1, "c~": 2}, {"a/b": 2})


# Random runs: rows with a few identities, shuffled, some gone, some new, some changed.
_identities = st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]) | st.integers(0, 7)
_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["1.5", "2", ""])


_trade = st.fixed_dictionaries({"symbol": _identities, "q": _scalars})


def _row(field: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {field: _identities, "v": _scalars},
        optional={
            "nested": st.lists(st.fixed_dictionaries({"symbol": _identities, "q": _scalars}))
        },
    )


_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from("xyz"), children)
    ),
    max_leaves=12,
)


@st.composite
def _results(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(["login", "id", "positionId"]))
    return {"rows": draw(st.lists(_row(field), max_size=12)), "other": draw(_values)}


@settings(max_examples=400, deadline=None)
@given(old=_results(), new=_results())
def test_any_two_results_are_patched_exactly(old: dict[str, Any], new: dict[str, Any]) -> None:
    applied(old, new)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_permutation_of_unique_rows_is_moves_only(data: st.DataObject) -> None:
    logins = data.draw(st.lists(st.text(min_size=1, max_size=3), unique=True, max_size=15))
    shuffled = data.draw(st.permutations(logins))
    ops = applied({"rows": rows(*logins)}, {"rows": rows(*shuffled)})
    if ops == [{"op": "replace", "path": "/rows", "value": rows(*shuffled)}]:
        return  # moves that would encode larger than the list
    assert {op["op"] for op in ops} <= {"move"}
    assert len(ops) < max(len(logins), 1)


@pytest.mark.parametrize("value", [[], {}, None, 0, "", [[]]])
def test_top_level_values(value: Any) -> None:
    applied(value, {"data": 1})
    applied({"data": 1}, value)
