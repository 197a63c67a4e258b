"""The GraphQL endpoint: queries and mutations over HTTP, subscriptions over graphql-transport-ws,
GraphQL over SSE and HTTP multipart, GraphiQL for browsers."""

from __future__ import annotations

import logging
from datetime import timedelta
from json import JSONDecodeError
from typing import TYPE_CHECKING

import orjson
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.types.graphql import OperationType

from api.auth import ANONYMOUS, AuthenticationError, bearer_token
from api.graphql.context import Context
from api.graphql.sharing import operation_type
from api.streaming.connection import SCOPE_KEY, Connection, scope_connection
from api.transport.graphiql import CONTENT_SECURITY_POLICY as GRAPHIQL_POLICY
from api.transport.graphiql import graphiql_html
from api.transport.graphql_transport_ws import TransportWSHandler, close_reason
from api.transport.limits import RETRY_AFTER_S
from api.transport.media_types import GRAPHQL_RESPONSE_JSON, JSON, response_media_type
from api.transport.shutdown import Shutdown
from api.transport.slots import SCOPE_KEY as SLOT_KEY
from api.transport.slots import Refusal, client_key, connection_slots

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from cross_web import AsyncHTTPRequestAdapter
    from starlette.datastructures import State
    from starlette.types import Receive, Scope, Send
    from starlette.websockets import WebSocket
    from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
    from strawberry.types import ExecutionResult, SubscriptionExecutionResult

    from api.graphql.execution import Schema
    from api.settings import Settings
    from api.transport.slots import Transport

logger = logging.getLogger(__name__)

PROTOCOLS = (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL, MULTIPART_SUBSCRIPTION_PROTOCOL)
"""graphql-transport-ws is the one WebSocket subprotocol: the legacy ``graphql-ws``
(subscriptions-transport-ws) is deprecated and gets close code 4406."""

SUBSCRIPTION_NEEDS_STREAM = (
    "Subscriptions need a streaming transport: a WebSocket with graphql-transport-ws, "
    "SSE (Accept: text/event-stream) or multipart (Accept: multipart/mixed;subscriptionSpec=1.0)"
)


PRINCIPAL_KEY = "tradestream.principal"
"""Where an HTTP request's verified caller waits in the ASGI scope for the context."""


def _graphql_response(
    body: Mapping[str, object] | list[GraphQLHTTPResponse],
    status: int,
    media_type: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A GraphQL response over HTTP in the media type the request's ``Accept`` chose
    (:mod:`api.transport.media_types`). In ``application/graphql-response+json`` a status other
    than 2xx means a request error, and such a response has no ``data`` entry: nothing ran. In
    ``application/json`` the body is as it always was."""
    content_type = JSON
    if media_type == GRAPHQL_RESPONSE_JSON:
        content_type = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
        if not isinstance(body, list) and not 200 <= status < 300:
            body = {key: value for key, value in body.items() if key != "data"}
    return Response(orjson.dumps(body), status, headers, media_type=content_type)


def _unauthenticated(reason: str, media_type: str) -> Response:
    """A refused token on HTTP: 401, with the reason as a GraphQL error."""
    error = {"message": f"Unauthenticated: {reason}", "extensions": {"code": "UNAUTHENTICATED"}}
    return _graphql_response(
        {"data": None, "errors": [error]},
        401,
        media_type,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _did_not_run(result: ExecutionResult) -> bool:
    """Whether a GraphQL request error kept the operation from running: its document did not
    parse or validate, or its variables did not coerce. Each is answered before execution, with no
    data and with errors that have no path (every field error has one). A fault outside the
    resolvers (an exception that is not a GraphQLError) is the server's, not the request's."""
    return (
        result.data is None
        and bool(result.errors)
        and all(
            error.path is None
            and (error.original_error is None or isinstance(error.original_error, GraphQLError))
            for error in result.errors or ()
        )
    )


class MethodNotAllowedError(HTTPException):
    """405, naming the methods that would do (a mutation sent with GET: POST)."""

    def __init__(self, reason: str, allow: str) -> None:
        super().__init__(405, reason)
        self.allow = allow


def _http_error(exc: HTTPException) -> Response:
    """Strawberry's plain-text answer to a request it cannot run, with the ``Allow`` header that a
    405 must carry (RFC 9110)."""
    headers = None
    if isinstance(exc, MethodNotAllowedError):
        headers = {"Allow": exc.allow}
    elif exc.status_code == 405:  # Strawberry's, for a method other than GET and POST
        headers = {"Allow": "GET, POST"}
    return PlainTextResponse(exc.reason, exc.status_code, headers)


class _WebSocketAdapter(ASGIWebSocketAdapter):
    """Every message Strawberry sends goes through the connection's one ordered queue, behind any
    results the fan-out has written there directly."""

    async def iter_json(
        self, *, ignore_parsing_errors: bool = False
    ) -> AsyncGenerator[object, None]:
        # Strawberry's, without a local holding the last frame's text while waiting for the next:
        # an idle subscribed socket would keep its subscribe message alive for its whole life.
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                try:
                    yield self.view.decode_json(await self.ws.receive_text())
                except JSONDecodeError as e:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from e
        except KeyError as e:
            raise NonTextMessageReceived from e
        except WebSocketDisconnect:
            pass

    async def send_json(self, message: Mapping[str, object]) -> None:
        connection = scope_connection(self.ws.scope)
        if connection is None:
            await super().send_json(message)
            return
        connection.write(orjson.dumps(message))
        await connection.drained()

    async def close(self, code: int, reason: str) -> None:
        connection = scope_connection(self.ws.scope)
        if connection is not None:
            await connection.close()
        # Reasons may quote the client (a message type, a syntax error's token, an operation
        # name): a close frame holds at most 123 bytes of them.
        await super().close(code, close_reason(reason))


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = _WebSocketAdapter

    def __init__(self, schema: Schema, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self.connections: set[Connection] = set()
        self.graphiql = graphiql_html()
        self.shutdown = Shutdown()
        self.slots = connection_slots(settings.max_connections, settings.max_connections_per_client)
        """Every long-lived connection: WebSockets (taken in :class:`api.app.App`), SSE and
        multipart responses (:meth:`create_streaming_response`)."""
        super().__init__(
            schema,
            subscription_protocols=PROTOCOLS,
            connection_init_wait_timeout=timedelta(seconds=settings.connection_init_wait_timeout_s),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            allowed_origins=settings.allowed_origin_list,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self._http(scope, receive, send)
            return
        connection = Connection(
            send,
            max_pending_bytes=self.settings.send_queue_max_bytes,
            max_lag_s=self.settings.subscriber_max_lag_s,
        )
        scope[SCOPE_KEY] = connection
        self.connections.add(connection)
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.connections.discard(connection)
            # The scope is the protocol's and the connection sends through the protocol: a cycle
            # that only the cyclic collector (rarely run in its oldest generation) would free.
            scope.pop(SCOPE_KEY, None)
            await connection.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        if authorization is not None:
            try:
                token = bearer_token(authorization)
                scope[PRINCIPAL_KEY] = self.state.services.verifier.verify(token)
            except AuthenticationError as exc:
                logger.debug("refused token: %s", exc)
                media_type = response_media_type(headers.get("accept"))
                await _unauthenticated(str(exc), media_type)(scope, receive, send)
                return
        try:
            try:
                response = await self.run(Request(scope, receive))
            except HTTPException as exc:
                response = _http_error(exc)
            await response(scope, receive, send)
        finally:
            # A stream's slot, however the stream ended: completed, failed, its client gone.
            slot = scope.pop(SLOT_KEY, None)
            if slot is not None:
                slot.release()

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        """Strawberry's, in the media type the request's ``Accept`` chose: what
        :meth:`create_response` encodes a query's or mutation's result in (streams have their
        own)."""
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = response_media_type(request.headers.get("accept"))
        return sub_response

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        """The response to a query or mutation: Strawberry's, but in the negotiated media type
        and with the status :meth:`execute_single` chose (200 unless a request error answered in
        ``application/graphql-response+json``)."""
        response = _graphql_response(
            response_data, sub_response.status_code or 200, sub_response.media_type or JSON
        )
        response.headers.raw.extend(sub_response.headers.raw)
        response.background = sub_response.background
        return response

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        return HTMLResponse(
            self.graphiql,
            headers={"Content-Security-Policy": GRAPHIQL_POLICY, "Cache-Control": "no-cache"},
        )

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return Context(
            services=self.state.services,
            request=request,
            response=response,
            connection=scope_connection(request.scope),
            principal=request.scope.get(PRINCIPAL_KEY, ANONYMOUS),
        )

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: None,
        sub_response: Response,
    ) -> ExecutionResult | list[ExecutionResult] | SubscriptionExecutionResult:
        """A mutation sent with GET is refused with 405 before anything runs, whatever the
        ``Accept``: Strawberry refuses it so only for a plain response, and a streaming one (SSE,
        multipart) answered 200 with a masked error in its stream."""
        mutation = OperationType.MUTATION
        if (
            request_adapter.method == "GET"
            and not isinstance(request_data, list)
            and operation_type(request_data.query, request_data.operation_name) is mutation
        ):
            reason = InvalidOperationTypeError(mutation).as_http_error_reason("GET")
            raise MethodNotAllowedError(reason, allow="POST")
        return await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: Context,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        """A plain (non-streaming) HTTP request. Strawberry would run a subscription here as if it
        were a query and answer with a null-field error; refuse it with a 400 that says what to use.
        A mutation sent with GET is refused with 405 before anything runs.

        A request error (a document that does not parse or validate, variables that do not coerce)
        answered in ``application/graphql-response+json`` gets status 400; in ``application/json``
        it stays 200, as older clients expect.
        """
        method = request_adapter.method
        allowed = OperationType.from_http(method) - {OperationType.SUBSCRIPTION}
        if method == "GET" and not self.allow_queries_via_get:
            allowed -= {OperationType.QUERY}
        try:
            result = await self.schema.execute(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except InvalidOperationTypeError as e:
            if e.operation_type is OperationType.SUBSCRIPTION:
                raise HTTPException(400, SUBSCRIPTION_NEEDS_STREAM) from e
            reason = e.as_http_error_reason(method)
            if e.operation_type is OperationType.MUTATION and method == "GET":
                raise MethodNotAllowedError(reason, allow="POST") from e
            raise HTTPException(400, reason) from e
        except CannotGetOperationTypeError as e:
            raise HTTPException(400, e.as_http_error_reason()) from e
        except MissingQueryError as e:
            raise HTTPException(400, "No GraphQL query found in the request") from e
        if sub_response.media_type == GRAPHQL_RESPONSE_JSON and _did_not_run(result):
            sub_response.status_code = 400
        return result

    async def create_streaming_response(
        self,
        request: Request | WebSocket,
        stream: Callable[[], AsyncIterator[str]],
        sub_response: Response,
        headers: Mapping[str, str],
    ) -> Response:
        """Strawberry's streaming response, once the stream has a connection slot: refused
        with 503 at MAX_CONNECTIONS and 429 at MAX_CONNECTIONS_PER_CLIENT, before anything ran
        (the result stream has not started). :meth:`_http` releases the slot."""
        content_type = headers.get("Content-Type", headers.get("content-type", ""))
        transport: Transport = (
            "sse" if content_type.startswith("text/event-stream") else "multipart"
        )
        principal = request.scope.get(PRINCIPAL_KEY, ANONYMOUS)
        slot = self.slots.take(client_key(request.scope, principal), transport)
        if isinstance(slot, Refusal):
            return self._refused_stream(slot, request.headers.get("accept"))
        request.scope[SLOT_KEY] = slot
        return await super().create_streaming_response(request, stream, sub_response, headers)

    def _refused_stream(self, refusal: Refusal, accept: str | None) -> Response:
        process = refusal is Refusal.PROCESS
        error = {
            "message": self.slots.reason(refusal),
            "extensions": {"code": "SERVER_BUSY" if process else "TOO_MANY_CONNECTIONS"},
        }
        return _graphql_response(
            {"errors": [error]},
            503 if process else 429,
            response_media_type(accept),
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    def encode_json(self, data: object) -> str:
        # Text, not bytes: graphql-ws clients read text frames, and SSE/multipart want str.
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)
