"""graphql-transport-ws: Strawberry's protocol handler, with shared subscriptions joined directly.

A subscription that can be shared (see :meth:`api.graphql.execution.Schema.share_key`) joins its
group right in ``handle_subscribe``: no task, no stream, no Strawberry ``Operation`` per
subscriber, just a :class:`api.graphql.fanout.RawSink` writing ready frames to the connection, and
an entry in the handler's operation table so ids, limits and ``complete`` behave as for any other
operation. Everything else (queries and mutations over the socket, operations that are not
shared, every protocol rule and close code) is Strawberry's own handling.

A ``subscribe`` whose ``extensions`` ask for deltas (:mod:`api.graphql.deltas`) joins with a
:class:`api.graphql.fanout.DeltaSink`; a request in a shape the server does not take is refused
with an ``error`` message coded ``INVALID_DELTA``, the connection and its other operations going
on. An operation that is not shared gets whole results, unnumbered, whatever it asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol, cast

import strawberry
from graphql import GraphQLError
from strawberry.http.exceptions import (
    NonJsonMessageReceived,
    NonTextMessageReceived,
    WebSocketDisconnected,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.types.graphql import OperationType

from api.auth import AuthenticationError, bearer_token
from api.graphql.access import record_checks, refusal
from api.graphql.context import Context
from api.graphql.deltas import DeltaRequestError, requested
from api.graphql.execution import Schema
from api.graphql.fanout import DeltaSink, RawSink
from api.graphql.sharing import operation_type
from api.transport.limits import CLOSE_TOO_MANY_CONNECTIONS, TokenBucket
from api.transport.shutdown import CLOSE_SERVICE_RESTART, SHUTTING_DOWN_MESSAGE
from api.transport.slots import Refusal, scope_slot, user_key

if TYPE_CHECKING:
    from strawberry.schema.schema import StreamResult
    from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
    from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
        ConnectionInitMessage,
        Message,
        PingMessage,
        SubscribeMessage,
    )

    from api.auth import Principal
    from api.graphql.access import Check
    from api.graphql.fanout import Member
    from api.transport.shutdown import Shutdown


logger = logging.getLogger(__name__)


class _SharedOperation:
    """Stands in a handler's operation table for a subscription served by a group."""

    __slots__ = ("member",)

    task = None  # Strawberry's shutdown collects operation tasks; a shared one has none

    def __init__(self, member: Member | None = None) -> None:
        self.member = member


class _ShuttingDown(Protocol):
    """What the handler needs of its view (:class:`api.transport.view.GraphQLView`)."""

    shutdown: Shutdown


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    _init_timer: asyncio.TimerHandle | None = None
    _expiry_timer: asyncio.TimerHandle | None = None
    _notice_timer: asyncio.TimerHandle | None = None
    _checks: dict[str, list[tuple[Check, object]]] | None = None
    """The access decisions of each running operation that is not shared, by id."""
    _closing: asyncio.Task[None] | None = None
    _notice: asyncio.Task[None] | None = None
    _ending: set[asyncio.Task[None]] | None = None
    """Subscriptions being ended after a renewal (kept until done)."""
    _subscribe_bucket: TokenBucket | None = None

    def on_request_accepted(self) -> None:
        # A timer, not Strawberry's task sleeping in asyncio.sleep: a reconnect storm opens
        # thousands of sockets at once, and a task each is time and memory they all pay for.
        delay = self.connection_init_wait_timeout.total_seconds()
        self._init_timer = asyncio.get_running_loop().call_later(delay, self._init_timed_out)

    def _init_timed_out(self) -> None:
        self._init_timer = None
        if not self.connection_init_received:
            self.connection_timed_out = True
            self.connection_init_timeout_task = asyncio.create_task(
                self.websocket.close(code=4408, reason="Connection initialisation timeout")
            )

    async def handle(self) -> None:
        # Strawberry's loop, without keeping the last message alive while it waits for the next:
        # an idle subscribed socket would hold its subscribe message for its whole life.
        self.on_request_accepted()
        sockets = self._shutdown.sockets
        sockets.add(self)
        try:
            try:
                async for message in self.websocket.iter_json():
                    await self.handle_message(cast("Message", message))
                    del message
            except NonTextMessageReceived:
                await self.handle_invalid_message("WebSocket message type must be text")
            except NonJsonMessageReceived:
                await self.handle_invalid_message("WebSocket message must be valid JSON")
        except WebSocketDisconnected:
            pass
        finally:
            sockets.discard(self)
            await self.shutdown()

    async def close_for_restart(self, reason: str) -> None:
        """:class:`api.transport.shutdown.Closable`: closed with 1012 and when to come back."""
        await self.websocket.close(code=CLOSE_SERVICE_RESTART, reason=reason)

    async def handle_message(self, message: Message) -> None:
        # Strawberry's handlers index the message as the protocol shapes it: ``[]``, ``"str"``
        # or a query that is not a string raised there, and the socket dropped with no close
        # code. Each frame is checked first, as graphql-ws's own server checks it.
        reason = invalid_message(message)
        if reason is not None:
            logger.debug("invalid graphql-transport-ws message: %s", reason)
            await self.handle_invalid_message(reason)
            return
        await super().handle_message(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self._init_timer is not None:
            self._init_timer.cancel()
            self._init_timer = None
        if not self.connection_init_received:
            # Verifying the token and acknowledging are a connection's start: admitted a few
            # per turn of the loop, as subscriptions' starts are (api.graphql.fanout.Starts).
            context = self.context
            assert isinstance(context, Context)
            await context.services.groups.starts.turn()
            if not await self._authenticate(message):
                return
            context.session = self
            await super().handle_connection_init(message)
            if self.connection_acknowledged:
                self._time_expiry()  # after the ack: a notice may not come before it
            return
        await super().handle_connection_init(message)

    async def _authenticate(self, message: ConnectionInitMessage) -> bool:
        """Take the token from ``connection_init`` (``{"authorization": "Bearer ..."}``, the key in
        any case, or ``{"token": "..."}``), else from the handshake's Authorization header; none
        is anonymous. A refused token closes the socket with 4403 and says why."""
        context = self.context
        assert isinstance(context, Context)
        payload = message.get("payload")
        try:
            token = _token_of(payload if isinstance(payload, dict) else {}, context)
            if token is None:
                return True
            principal = context.services.verifier.verify(token)
        except AuthenticationError as exc:
            logger.debug("refused token: %s", exc)
            await self.websocket.close(code=4403, reason=f"Forbidden: {exc}")
            return False
        if not await self._count_as(principal):
            return False
        context.principal = principal
        return True

    def _time_expiry(self) -> None:
        """(Re)start the timers of the caller's token: the notice ``TOKEN_RENEW_NOTICE_S``
        before it expires (at once when less is left), and the 4403 close when it has."""
        context = self.context
        assert isinstance(context, Context)
        for timer in (self._expiry_timer, self._notice_timer):
            if timer is not None:
                timer.cancel()
        self._expiry_timer = self._notice_timer = None
        if context.principal.expires_at is None:
            return  # anonymous, or a token without end
        deadline = context.services.verifier.deadline(context.principal)
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        left = deadline - time.time()
        self._expiry_timer = loop.call_later(left, self._expired)
        notice_s = context.services.settings.token_renew_notice_s
        if notice_s > 0:
            self._notice_timer = loop.call_later(max(left - notice_s, 0), self._expiring, deadline)

    def _expiring(self, deadline: float) -> None:
        # A ping with a payload (graphql-transport-ws allows one; graphql-ws hands it to
        # on.ping): the client has this long to send renewSession before the 4403 close.
        self._notice_timer = None
        context = self.context
        assert isinstance(context, Context)
        expires_at = context.principal.expires_at
        payload: dict[str, object] = {
            "tokenExpiresInS": max(round(deadline - time.time(), 1), 0.0),
            "tokenExpiresAt": None if expires_at is None else expires_at.isoformat(),
        }
        ping: PingMessage = {"type": "ping", "payload": payload}
        self._notice = asyncio.create_task(self.send_message(ping))

    def renew(self, principal: Principal) -> int:
        """:class:`api.graphql.context.Renewable`: the connection's caller is ``principal`` from
        now on (``renewSession`` checked it names the same subject), its token's expiry times the
        4403 close, and each running subscription is asked its access questions again: one the
        new caller may not see (or would see differently) gets the refusal as an error and its
        ``complete``; the others go on untouched."""
        context = self.context
        assert isinstance(context, Context)
        context.principal = principal
        self._time_expiry()
        ended = 0
        for id, operation in list(self.operations.items()):
            checks = self._checks_of(id, operation)
            if checks is None:
                continue
            refused = refusal(checks, principal)
            if refused is None:
                continue
            ended += 1
            if self._ending is None:
                self._ending = set()
            task = asyncio.create_task(self._end_refused(id, refused))
            self._ending.add(task)
            task.add_done_callback(self._ending.discard)
        return ended

    def _checks_of(self, id: str, operation: Any) -> list[tuple[Check, object]] | None:
        """A running subscription's access decisions; None for a query or mutation in flight."""
        if isinstance(operation, _SharedOperation):
            member = operation.member
            return None if member is None else member.group.checks
        if operation_type(operation.query, operation.operation_name) is not (
            OperationType.SUBSCRIPTION
        ):
            return None
        return (self._checks or {}).get(id)

    async def _end_refused(self, id: str, error: GraphQLError) -> None:
        await self.cleanup_operation(id)
        await self.send_message(
            {"id": id, "type": "next", "payload": {"data": None, "errors": [error.formatted]}}
        )
        await self.send_message({"id": id, "type": "complete"})

    async def _count_as(self, principal: Principal) -> bool:
        """Move the socket's connection slot from its address to its user; a user who holds
        MAX_CONNECTIONS_PER_CLIENT already is closed with 4029."""
        assert isinstance(self.context, Context)
        slot = scope_slot(self.context.request.scope)
        user = user_key(principal)
        if slot is None or user is None or slot.move_to(user):
            return True
        reason = slot.slots.reason(Refusal.CLIENT)
        await self.websocket.close(code=CLOSE_TOO_MANY_CONNECTIONS, reason=reason)
        return False

    def _expired(self) -> None:
        # graphql-ws clients reconnect on 4403: with a fresh token, if they have one.
        self._expiry_timer = None
        self._closing = asyncio.create_task(
            self.websocket.close(code=4403, reason="Forbidden: token expired")
        )

    async def shutdown(self) -> None:
        for timer in (self._init_timer, self._expiry_timer, self._notice_timer):
            if timer is not None:
                timer.cancel()
        self._init_timer = self._expiry_timer = self._notice_timer = None
        await super().shutdown()

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and self._shutdown.begun:
            await self._refuse(message, SHUTTING_DOWN_MESSAGE, "SHUTTING_DOWN")
            return
        if self.connection_acknowledged and not self._subscribe_allowed():
            bucket = self._subscribe_bucket
            assert bucket is not None
            await self._refuse(
                message,
                f"too many subscribe messages: at most {bucket.rate:g} a second "
                f"(bursts of {bucket.burst})",
                "RATE_LIMITED",
            )
            return
        full_every: int | None = None
        if self.connection_acknowledged and message["id"] not in self.operations:
            assert isinstance(self.context, Context)
            settings = self.context.services.settings
            try:
                full_every = requested(
                    message["payload"].get("extensions"), settings.delta_full_every
                )
            except DeltaRequestError as exc:
                error = exc.error()
                await self.send_message(
                    {"id": message["id"], "type": "error", "payload": [error.formatted]}
                )
                return
        if not self._join_shared(message, full_every):
            await super().handle_subscribe(message)

    @property
    def _shutdown(self) -> Shutdown:
        return cast("_ShuttingDown", self.view).shutdown

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        # A query or mutation is awaited by the graceful shutdown until its answer is sent; a
        # subscription is not (the shutdown ends those).
        if operation_type(operation.query, operation.operation_name) is OperationType.SUBSCRIPTION:
            # Its access decisions, kept for renewSession (api.graphql.access): made in this
            # task, the operation's own.
            checks: list[tuple[Check, object]] = []
            if self._checks is None:
                self._checks = {}
            self._checks[operation.id] = checks
            record_checks(checks)
            try:
                await super().run_operation(operation)
            finally:
                if self._checks.get(operation.id) is checks:
                    del self._checks[operation.id]
            return
        with self._shutdown.operation():
            await super().run_operation(operation)

    def _subscribe_allowed(self) -> bool:
        if self._subscribe_bucket is None:
            assert isinstance(self.context, Context)
            settings = self.context.services.settings
            self._subscribe_bucket = TokenBucket(
                settings.subscribe_rate_per_s, settings.subscribe_burst
            )
        return self._subscribe_bucket.take()

    async def _refuse(self, message: SubscribeMessage, reason: str, code: str) -> None:
        error = GraphQLError(reason, extensions={"code": code})
        await self.send_message(
            {"id": message["id"], "type": "error", "payload": [error.formatted]}
        )

    def _join_shared(self, message: SubscribeMessage, full_every: int | None = None) -> bool:
        """Join the operation's group if it can be shared (with deltas, a whole result at least
        every ``full_every``); False leaves it to Strawberry, which also answers every protocol
        error (not acknowledged, duplicate id, limit, bad payload)."""
        context = self.context
        if not (self.connection_acknowledged and isinstance(context, Context)):
            return False
        if context.connection is None:
            return False
        id = message["id"]  # the message's shape is checked (invalid_message)
        payload = message["payload"]
        query = payload["query"]
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if id in self.operations:
            return False
        limit = self.max_subscriptions_per_connection
        if limit is not None and len(self.operations) >= limit:
            return False
        schema = self.schema
        assert isinstance(schema, Schema)
        key = schema.share_key(query, variables, context, operation_name, self.root_value)
        if key is None:
            return False

        root_value = self.root_value

        async def execute() -> StreamResult:
            return await strawberry.Schema.stream(
                schema,
                query,
                variable_values=variables,
                context_value=context,
                root_value=root_value,
                operation_name=operation_name,
            )

        operations: dict[str, Any] = self.operations
        entry = _SharedOperation()
        operations[id] = entry  # before joining: the group may end this operation at once

        def forget() -> None:
            if operations.get(id) is entry:
                del operations[id]
            entry.member = None  # entry -> member -> sink -> forget -> entry: no cycle left

        sink = (
            RawSink(context.connection, id, forget)
            if full_every is None
            else DeltaSink(context.connection, id, forget, full_every)
        )
        entry.member = context.services.groups.join(key, execute, sink)
        return True

    async def cleanup_operation(self, operation_id: str) -> None:
        operation: Any = self.operations.get(operation_id)
        if isinstance(operation, _SharedOperation):
            del self.operations[operation_id]
            member, operation.member = operation.member, None  # the cycle through forget()
            if member is not None:
                member.leave()
            return
        await super().cleanup_operation(operation_id)


def invalid_message(message: object) -> str | None:
    """Why a client's frame is no graphql-transport-ws message (graphql-ws's
    ``validateMessage``, for the types a client sends), or None. Unknown types, and a
    ``connection_init`` payload that is not an object, are left to Strawberry, which refuses
    them with reasons of its own."""
    if not isinstance(message, dict):
        return f"Invalid message: expected a JSON object, not {_json_type(message)}"
    type = message.get("type")
    if not isinstance(type, str):
        return f"Invalid message: 'type' must be a string, not {_json_type(type)}"
    if type in ("ping", "pong") and not _optional_object(message.get("payload")):
        return f"Invalid {type} message: 'payload' must be an object or null"
    if type not in ("subscribe", "complete"):
        return None
    id = message.get("id")
    if not isinstance(id, str) or not id:
        return f"Invalid {type} message: 'id' must be a non-empty string"
    if type == "complete":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return f"Invalid subscribe message: 'payload' must be an object, not {_json_type(payload)}"
    if not isinstance(payload.get("query"), str):
        return "Invalid subscribe message: 'payload.query' must be a string"
    for key in ("variables", "extensions"):
        if not _optional_object(payload.get(key)):
            return f"Invalid subscribe message: 'payload.{key}' must be an object or null"
    if not isinstance(payload.get("operationName"), str | None):
        return "Invalid subscribe message: 'payload.operationName' must be a string or null"
    return None


def _optional_object(value: object) -> bool:
    return value is None or isinstance(value, dict)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _token_of(payload: dict[str, Any], context: Context) -> str | None:
    # The key in any case: GraphiQL and other tools send their header editor's "Authorization".
    key = "authorization" if "authorization" in payload else _authorization_key(payload)
    if key is not None:
        value = payload[key]
        if not isinstance(value, str):
            raise AuthenticationError("'authorization' must be a string 'Bearer <token>'")
        return bearer_token(value)
    if "token" in payload:
        value = payload["token"]
        if not isinstance(value, str) or not value:
            raise AuthenticationError("'token' must be a non-empty string")
        return value
    header = context.request.headers.get("authorization")
    return None if header is None else bearer_token(header)


def _authorization_key(payload: dict[str, Any]) -> str | None:
    return next((k for k in payload if isinstance(k, str) and k.lower() == "authorization"), None)


def close_reason(text: str) -> str:
    """At most 123 bytes of UTF-8, as a close frame allows (a longer one is a protocol error)."""
    return text.encode()[:123].decode(errors="ignore")
