"""RFC 6902 JSON Patch between two GraphQL results, with list rows addressed by their identity.

:func:`diff` answers the operations that turn one result's JSON into the next one's. Objects are
compared field by field; a list of rows that all carry an identity field (the first of
:data:`IDENTITY_FIELDS` every row of both lists has, with a string or integer value unique within
each list) is compared row by row by that identity, not by index:

- a row that is gone is a ``remove``, a new row an ``add`` (the whole row), a row that moved a
  ``move`` (only the rows outside the longest run that kept its order move), and a row that stayed
  gets the operations of its own fields, at the index where it ends up;
- rows whose identity is not unique in either list make the whole list one ``replace``;
- a list without an identity field (scalars, rows that select none) is compared by index;
- an object or list whose operations would encode larger than one ``replace`` of its new value
  is that ``replace`` (a row with most of its fields changed, a list mostly new).

Every path is a JSON Pointer valid at the moment its operation is applied, in order, so any RFC
6902 implementation (python-json-patch, fast-json-patch) applies the patch; the tests use
python-json-patch as the oracle. No maintained Python library diffs lists by a key into standard
RFC 6902 operations (python-json-patch's ``make_patch`` compares lists by index and equality), so
this module does.

Pure functions over JSON values (dict, list, str, int, float, bool, None); no I/O.
"""

from __future__ import annotations

import bisect
from typing import Any, TypeAlias

import orjson

Operation: TypeAlias = dict[str, Any]
"""One RFC 6902 operation: ``{"op": ..., "path": ..., ("value" | "from"): ...}``."""

IDENTITY_FIELDS = ("id", "login", "positionId", "strategyId", "symbol", "asset", "status", "price")
"""The fields that identify a row of a list, in order of preference: positions and orders by
``id``, leaderboard rows by ``login``, liquidation candidates by ``positionId``, strategies by
``strategyId``, paper positions by ``symbol``, holdings by ``asset``, status totals by
``status``, book levels by ``price``. Whatever field is chosen, the patch is correct; a field
that really is the row's identity makes it small."""


def diff(old: Any, new: Any, path: str = "") -> list[Operation]:
    """The operations that turn ``old`` into ``new`` (both JSON values), at ``path``."""
    ops: list[Operation] = []
    _diff(old, new, path, ops)
    return ops


def pointer_token(key: str) -> str:
    """``key`` as one reference token of a JSON Pointer (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON: ``True`` is not ``1`` and ``1`` is not ``1.0`` (they encode differently)."""
    if type(old) is not type(new):
        return False
    if isinstance(old, dict):
        return old.keys() == new.keys() and all(_same(v, new[k]) for k, v in old.items())
    if isinstance(old, list):
        return len(old) == len(new) and all(_same(a, b) for a, b in zip(old, new, strict=True))
    return bool(old == new)


def _diff(old: Any, new: Any, path: str, ops: list[Operation]) -> None:
    if _unchanged(old, new):
        return
    start = len(ops)
    if isinstance(old, dict) and isinstance(new, dict):
        _diff_object(old, new, path, ops)
    elif isinstance(old, list) and isinstance(new, list):
        _diff_list(old, new, path, ops)
    else:
        if not _same(old, new):
            ops.append({"op": "replace", "path": path, "value": new})
        return
    if len(ops) - start > 1:
        replace = {"op": "replace", "path": path, "value": new}
        if _encoded_size(ops, start) > len(orjson.dumps(replace)):
            del ops[start:]
            ops.append(replace)


def _encoded_size(ops: list[Operation], start: int) -> int:
    """The bytes of ``ops[start:]`` in a JSON array (their commas included)."""
    return sum(len(orjson.dumps(op)) + 1 for op in ops[start:])


def _unchanged(old: Any, new: Any) -> bool:
    """Whether two objects or lists are the same JSON, compared at C speed: equal, and encoded
    alike (``==`` alone takes ``1``, ``1.0`` and ``True`` for one another). Most rows of a
    result are those of the one before."""
    if type(old) is not type(new) or not isinstance(old, dict | list):
        return False
    return bool(old == new) and orjson.dumps(old) == orjson.dumps(new)


def _diff_object(old: dict[str, Any], new: dict[str, Any], path: str, ops: list[Operation]) -> None:
    for key in old:
        if key not in new:
            ops.append({"op": "remove", "path": f"{path}/{pointer_token(key)}"})
    for key, value in new.items():
        if key not in old:
            ops.append({"op": "add", "path": f"{path}/{pointer_token(key)}", "value": value})
            continue
        before = old[key]
        if isinstance(value, dict | list) or isinstance(before, dict | list):
            _diff(before, value, f"{path}/{pointer_token(key)}", ops)
        elif not _same(before, value):
            ops.append({"op": "replace", "path": f"{path}/{pointer_token(key)}", "value": value})


def _diff_list(old: list[Any], new: list[Any], path: str, ops: list[Operation]) -> None:
    field = _identity_field(old, new)
    if field is None:
        _diff_by_index(old, new, path, ops)
        return
    old_keys = [row[field] for row in old]
    new_keys = [row[field] for row in new]
    if len(set(old_keys)) != len(old_keys) or len(set(new_keys)) != len(new_keys):
        if not _same(old, new):
            ops.append({"op": "replace", "path": path, "value": new})
        return
    _diff_by_identity(old, new, old_keys, new_keys, path, ops)


def _identity_field(old: list[Any], new: list[Any]) -> str | None:
    """The first identity field every row of both lists has, with a string or integer value; None
    for a list that is not of rows (or whose rows have none)."""
    rows = [*old, *new]
    if not rows or not all(isinstance(row, dict) for row in rows):
        return None
    for field in IDENTITY_FIELDS:
        if all(_is_key(row.get(field, None)) for row in rows):
            return field
    return None


def _is_key(value: object) -> bool:
    return isinstance(value, str | int) and not isinstance(value, bool)


def _diff_by_index(old: list[Any], new: list[Any], path: str, ops: list[Operation]) -> None:
    common = min(len(old), len(new))
    for index in range(common):
        _diff(old[index], new[index], f"{path}/{index}", ops)
    for index in range(len(old) - 1, common - 1, -1):
        ops.append({"op": "remove", "path": f"{path}/{index}"})
    for index in range(common, len(new)):
        ops.append({"op": "add", "path": f"{path}/{index}", "value": new[index]})


def _diff_by_identity(
    old: list[Any],
    new: list[Any],
    old_keys: list[Any],
    new_keys: list[Any],
    path: str,
    ops: list[Operation],
) -> None:
    target = {key: index for index, key in enumerate(new_keys)}
    # 1. Rows that are gone, from the last: each index is still the row's own when removed.
    for index in range(len(old) - 1, -1, -1):
        if old_keys[index] not in target:
            ops.append({"op": "remove", "path": f"{path}/{index}"})
    kept = [key for key in old_keys if key in target]
    # 2. The rows of the longest run that kept its order stay where they are; every other kept
    #    row moves, and every new row is added, each in the order of where it ends up, just
    #    after the rows already in place that come before it.
    stays = _longest_increasing([target[key] for key in kept])
    current = kept  # the list's keys as the operations so far leave it
    placed = {kept[i] for i in stays}
    moving = set(kept) - placed
    for index, key in enumerate(new_keys):
        if key in placed:
            continue
        at = _insertion_index(current, placed, target, index)
        if key in moving:
            source = current.index(key)
            current.pop(source)
            if source < at:
                at -= 1
            if source != at:
                ops.append({"op": "move", "from": f"{path}/{source}", "path": f"{path}/{at}"})
            current.insert(at, key)
        else:
            ops.append({"op": "add", "path": f"{path}/{at}", "value": new[index]})
            current.insert(at, key)
        placed.add(key)
    # 3. Now every row is at its final index: the changes of each one that was there before.
    old_rows = {key: old[i] for i, key in enumerate(old_keys) if key in target}
    for index, key in enumerate(new_keys):
        before = old_rows.get(key)
        if before is not None:
            _diff(before, new[index], f"{path}/{index}", ops)


def _insertion_index(current: list[Any], placed: set[Any], target: dict[Any, int], at: int) -> int:
    """Where a row that ends up at ``at`` goes now: just after the last row already in place
    (those keep the order of the final list) that comes before it, or first."""
    position = 0
    for index, key in enumerate(current):
        if key in placed and target[key] < at:
            position = index + 1
    return position


def _longest_increasing(values: list[int]) -> list[int]:
    """The indices of a longest strictly increasing subsequence of ``values`` (O(n log n))."""
    tails: list[int] = []  # tails[k]: index in values of the smallest tail of a run of k + 1
    previous = [-1] * len(values)
    for index, value in enumerate(values):
        k = bisect.bisect_left(tails, value, key=values.__getitem__)
        if k > 0:
            previous[index] = tails[k - 1]
        if k == len(tails):
            tails.append(index)
        else:
            tails[k] = index
    run: list[int] = []
    index = tails[-1] if tails else -1
    while index != -1:
        run.append(index)
        index = previous[index]
    run.reverse()
    return run
