"""Authorization checks every private field and subscription makes before its first result.

ForbiddenError     code FORBIDDEN: the caller may not see what it asked for; the message
                   names what was refused (never whose it is beyond what the caller sent)
RateLimitedError   code RATE_LIMITED: the caller made more mutations than its allowance
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from api.auth import Role
from api.graphql.access import checked
from api.graphql.errors import ClientError

if TYPE_CHECKING:
    from api.auth import Principal
    from api.graphql.context import Info


class ForbiddenError(ClientError):
    code = "FORBIDDEN"


class UnauthenticatedError(ClientError):
    code = "UNAUTHENTICATED"


def _signed_in(principal: Principal, what: str) -> None:
    if principal.anonymous:
        raise UnauthenticatedError(f"{what} needs a signed-in caller: send a token")


def _owner(principal: Principal, owner: str, what: str) -> None:
    _signed_in(principal, what)
    if principal.role is Role.ADMIN:
        return
    if principal.role is not Role.USER or principal.sub != owner:
        raise ForbiddenError(f"{what} of {owner!r} are not yours to see")


def _role(principal: Principal, roles: tuple[Role, ...], what: str) -> None:
    _signed_in(principal, what)
    if principal.role not in roles:
        allowed = ", ".join(role.value for role in roles)
        raise ForbiddenError(f"{what} needs the role {allowed}")


def _user(principal: Principal, what: str) -> str:
    _role(principal, (Role.USER,), what)
    assert principal.sub is not None
    return principal.sub


def require_signed_in(principal: Principal, what: str) -> None:
    checked(principal, lambda p: _signed_in(p, what))


def require_owner(principal: Principal, owner: str, what: str) -> None:
    """``owner``'s ``what`` (``positions``, ``orders``...): for that user, and for admins."""
    checked(principal, lambda p: _owner(p, owner, what))


def require_role(principal: Principal, *roles: Role, what: str) -> None:
    checked(principal, lambda p: _role(p, roles, what))


def signed_in_user(principal: Principal, what: str) -> str:
    """The caller's own ``what`` (a user's paper account, dashboard...): for the ``user`` role
    only; the caller's ``sub``."""
    return checked(principal, lambda p: _user(p, what))


class RateLimitedError(ClientError):
    code = "RATE_LIMITED"


def limit_mutations(info: Info) -> Principal:
    """Every mutation starts here: a signed-in caller within its mutation allowance."""
    context = info.context
    principal = context.principal
    require_signed_in(principal, "mutations")
    if not context.services.mutation_limits.take(principal.scope):
        settings = context.services.settings
        raise RateLimitedError(
            f"too many mutations: at most {settings.mutation_rate_per_s:g} a second "
            f"(bursts of {settings.mutation_burst})"
        )
    return principal
