"""Deltas, opted into per subscription: a result sent as an RFC 6902 patch against the one before.

A graphql-transport-ws client asks on ``subscribe`` with ``extensions: {"delta": true}`` (or
``{"delta": {"fullEvery": n}}``). Its ``next`` payloads are then of two kinds:

- a whole result, as any subscriber gets it, numbered:
  ``{"data": ..., "errors": [...], "extensions": {"delta": {"seq": n}}}``;
- a patch: no ``data``, only ``{"extensions": {"delta": {"seq": n, "patch": [...]}}}``, the RFC
  6902 operations that turn the result numbered ``n - 1`` into the one numbered ``n``
  (:mod:`api.graphql.patches`: list rows addressed by their identity).

A client applies a patch only to the result numbered just before it; any other number means it
missed one, and it subscribes again. A whole result comes first, after a result with errors, when
the patch would be no smaller, when the subscriber's previous result still waits to be sent (a
slow socket's conflation would have replaced it), and at least every ``DELTA_FULL_EVERY`` results
(or the client's ``fullEvery``, if fewer). The numbers are those of the shared execution's
results (:class:`api.graphql.fanout.Group`), so one patch serves every member that had the result
before it, encoded once.
"""

from __future__ import annotations

from typing import Any

import orjson
from graphql import GraphQLError

from api.graphql.patches import diff

CODE = "INVALID_DELTA"
"""The error code of a ``subscribe`` whose delta request is not one of the shapes above."""


class DeltaRequestError(ValueError):
    """A ``subscribe`` asked for deltas in a shape this server does not take."""

    def error(self) -> GraphQLError:
        return GraphQLError(str(self), extensions={"code": CODE})


def requested(extensions: object, full_every: int) -> int | None:
    """How often a subscriber that sent ``extensions`` gets a whole result (the server's
    ``full_every``, or the client's ``fullEvery`` if fewer); None when it did not ask for deltas.

    Raises :class:`DeltaRequestError` for a value it may have meant as a request but is not one.
    """
    if not isinstance(extensions, dict):
        return None
    value = extensions.get("delta")
    if value is None or value is False:
        return None
    if value is True:
        return full_every
    if not isinstance(value, dict):
        raise DeltaRequestError(
            'extensions.delta must be true, false, null or an object {"fullEvery": n}'
        )
    unknown = sorted(set(value) - {"fullEvery"})
    if unknown:
        raise DeltaRequestError(
            f"extensions.delta has unknown field(s) {', '.join(unknown)}: only fullEvery"
        )
    asked = value.get("fullEvery")
    if asked is None:
        return full_every
    if not isinstance(asked, int) or isinstance(asked, bool) or asked < 1:
        raise DeltaRequestError("extensions.delta.fullEvery must be an integer of at least 1")
    return min(asked, full_every)


def whole(payload: bytes, extensions: dict[str, Any] | None, seq: int) -> bytes:
    """A result's encoded ``payload`` as a delta subscriber gets it whole: numbered ``seq``."""
    if not extensions:
        return b"".join((payload[:-1], b',"extensions":{"delta":{"seq":', b"%d" % seq, b"}}}"))
    body = orjson.loads(payload)
    body["extensions"] = {**extensions, "delta": {"seq": seq}}
    return orjson.dumps(body)


def patch(base: Any, data: Any, seq: int) -> bytes:
    """The payload that turns the result numbered ``seq - 1``, whose data was ``base``, into the
    one whose data is ``data``: its paths start at the result (``/data/...``)."""
    ops = diff(base, data, "/data")
    return orjson.dumps({"extensions": {"delta": {"seq": seq, "patch": ops}}})
