"""Access decisions kept so they can be asked again: what a renewed session replays.

A subscription decides once, before its first result, whether the caller may see what it asked
for (:mod:`api.graphql.permissions`, and the feeds' own rules). When a connection's credentials
change (``renewSession``, :mod:`api.graphql.session`), each of its running subscriptions is asked
the same questions again with the new caller: every decision goes through :func:`checked`, which
appends it with its outcome to the list :func:`record_checks` named for the task it runs in (the
operation's, or a shared execution's), and :func:`refusal` replays such a list.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from api.graphql.errors import ClientError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from api.auth import Principal


class AccessChangedError(ClientError):
    """The new credentials would let the subscription show something other than it shows."""

    code = "FORBIDDEN"


T = TypeVar("T")

Check: TypeAlias = "Callable[[Principal], object]"
"""An access decision: raises a :class:`ClientError` to refuse, else returns what the caller gets
to see (an owner, a wallet, None for everyone's)."""

_recorded: ContextVar[list[tuple[Check, object]] | None] = ContextVar("access_checks", default=None)


def record_checks(into: list[tuple[Check, object]]) -> None:
    """From here on in this task's context, every access decision (:func:`checked`) is appended
    to ``into`` with its outcome: what a renewed session replays (:func:`refusal`)."""
    _recorded.set(into)


def checked(principal: Principal, check: Callable[[Principal], T]) -> T:
    """``check(principal)``, recorded where :func:`record_checks` asked for it. Every check a
    subscription makes before its first result goes through here, so a connection whose
    credentials change can ask whether each of its subscriptions is still the caller's to see."""
    outcome = check(principal)
    recorded = _recorded.get()
    if recorded is not None:
        recorded.append((check, outcome))
    return outcome


def refusal(checks: Iterable[tuple[Check, object]], principal: Principal) -> ClientError | None:
    """Why ``principal`` may no longer see what passed ``checks``: the first check that now
    refuses, or that now lets it see something else (an admin's everyone's list, for a user, is
    that user's own); None when every one decides as before."""
    outer = _recorded.set(None)  # the checks a check makes inside are not this task's to keep
    try:
        for check, outcome in checks:
            try:
                again = check(principal)
            except ClientError as exc:
                return exc
            if again != outcome:
                return AccessChangedError(
                    "what this subscription shows depends on the role it began with"
                )
        return None
    finally:
        _recorded.reset(outer)
