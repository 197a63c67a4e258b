"""Renewing a session's credentials in band: ``renewSession(token:)``.

A trading screen stays open all day, longer than a token lives. Sent over an open
graphql-transport-ws connection as any operation is, ``renewSession`` replaces that connection's
credentials without touching its subscriptions: the new token must name the same subject (else
FORBIDDEN, and the old credentials stay), its expiry governs the connection's 4403 close from then
on, and a subscription the new role may no longer see is ended with that refusal while the others
go on (:func:`api.graphql.permissions.refusal`). Over HTTP there is no session to renew: the
mutation validates the token the same way and reports who it names and when it expires.
"""

from __future__ import annotations

from datetime import datetime

import strawberry

from api.auth import AuthenticationError
from api.graphql.context import Info  # noqa: TC001 (Strawberry reads the annotation at runtime)
from api.graphql.permissions import ForbiddenError, UnauthenticatedError, limit_mutations


@strawberry.type(description="The credentials a connection runs with.")
class Session:
    subject: str = strawberry.field(description="The token's sub: who the caller is.")
    role: str = strawberry.field(description="The token's role: user, service or admin.")
    expires_at: datetime | None = strawberry.field(
        description="When the token expires (its exp); null for a token without one. A "
        "WebSocket is closed with 4403 then, unless renewed before."
    )
    renewed: bool = strawberry.field(
        description="True when this connection now runs with the new token (over "
        "graphql-transport-ws); false over HTTP, where the token was only validated."
    )
    ended_subscriptions: int = strawberry.field(
        description="Subscriptions of this connection ended because the new token's role may "
        "not see them (each got a FORBIDDEN error and its complete)."
    )


@strawberry.type
class SessionMutation:
    @strawberry.mutation(
        description="Replace this connection's credentials with a fresh token for the same "
        "subject, keeping its subscriptions (over graphql-transport-ws; over HTTP the token is "
        "only validated). A token for another subject is refused with FORBIDDEN and changes "
        "nothing; a token that does not verify, with UNAUTHENTICATED."
    )
    def renew_session(self, info: Info, token: str) -> Session:
        current = limit_mutations(info)
        context = info.context
        try:
            renewed = context.services.verifier.verify(token)
        except AuthenticationError as exc:
            raise UnauthenticatedError(f"the new token was refused: {exc}") from None
        if renewed.sub != current.sub:
            raise ForbiddenError(
                "the new token names another subject: a session is renewed for the same caller "
                "only (connect again to change who you are)"
            )
        assert renewed.sub is not None
        assert renewed.role is not None
        ended = 0
        if context.session is not None:
            ended = context.session.renew(renewed)
        return Session(
            subject=renewed.sub,
            role=renewed.role.value,
            expires_at=renewed.expires_at,
            renewed=context.session is not None,
            ended_subscriptions=ended,
        )
