"""The GraphQL endpoint: queries and mutations over HTTP, subscriptions over graphql-transport-ws,
GraphQL over SSE and HTTP multipart, GraphiQL for browsers."""

from __future__ import annotations

from datetime import timedelta
from json import JSONDecodeError
from typing import TYPE_CHECKING

import orjson
from cross_web import HTTPException
from starlette.datastructures import Headers
from starlette.responses import HTMLResponse, JSONResponse
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
from api.connection import SCOPE_KEY, Connection, scope_connection
from api.graphiql import CONTENT_SECURITY_POLICY as GRAPHIQL_POLICY
from api.graphiql import graphiql_html
from api.schema.context import Context
from api.shutdown import Shutdown
from api.transport_ws import TransportWSHandler

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from cross_web import AsyncHTTPRequestAdapter
    from starlette.datastructures import State
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import Receive, Scope, Send
    from starlette.websockets import WebSocket
    from strawberry.http import GraphQLRequestData
    from strawberry.types import ExecutionResult

    from api.schema import Schema
    from api.settings import Settings

PROTOCOLS = (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL, MULTIPART_SUBSCRIPTION_PROTOCOL)
"""graphql-transport-ws is the one WebSocket subprotocol: the legacy ``graphql-ws``
(subscriptions-transport-ws) is deprecated and gets close code 4406."""

SUBSCRIPTION_NEEDS_STREAM = (
    "Subscriptions need a streaming transport: a WebSocket with graphql-transport-ws, "
    "SSE (Accept: text/event-stream) or multipart (Accept: multipart/mixed;subscriptionSpec=1.0)"
)


PRINCIPAL_KEY = "tradestream.principal"
"""Where an HTTP request's verified caller waits in the ASGI scope for the context."""


def _unauthenticated(reason: str) -> JSONResponse:
    """A refused token on HTTP: 401, with the reason as a GraphQL error."""
    return JSONResponse(
        {
            "data": None,
            "errors": [
                {"message": f"Unauthenticated: {reason}", "extensions": {"code": "UNAUTHENTICATED"}}
            ],
        },
        status_code=401,
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


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
        await super().close(code, reason)


class GraphQLView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = TransportWSHandler
    websocket_adapter_class = _WebSocketAdapter

    def __init__(self, schema: Schema, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self.connections: set[Connection] = set()
        self.graphiql = graphiql_html()
        self.shutdown = Shutdown()
        self.streams = {"sse": 0, "multipart": 0}
        """Open streaming HTTP responses (subscriptions over SSE or multipart), for metrics."""
        super().__init__(
            schema,
            subscription_protocols=PROTOCOLS,
            connection_init_wait_timeout=timedelta(seconds=settings.connection_init_wait_timeout_s),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            allowed_origins=settings.allowed_origin_list,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            authorization = Headers(scope=scope).get("authorization")
            if authorization is not None:
                try:
                    token = bearer_token(authorization)
                    scope[PRINCIPAL_KEY] = self.state.services.verifier.verify(token)
                except AuthenticationError as exc:
                    await _unauthenticated(str(exc))(scope, receive, send)
                    return
            await super().__call__(scope, receive, send)
            return
        connection = Connection(send, max_pending_bytes=self.settings.send_queue_max_bytes)
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
        """
        method = request_adapter.method
        allowed = OperationType.from_http(method) - {OperationType.SUBSCRIPTION}
        if method == "GET" and not self.allow_queries_via_get:
            allowed -= {OperationType.QUERY}
        try:
            return await self.schema.execute(
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
            raise HTTPException(400, e.as_http_error_reason(method)) from e
        except CannotGetOperationTypeError as e:
            raise HTTPException(400, e.as_http_error_reason()) from e
        except MissingQueryError as e:
            raise HTTPException(400, "No GraphQL query found in the request") from e

    async def create_streaming_response(
        self,
        request: Request | WebSocket,
        stream: Callable[[], AsyncIterator[str]],
        sub_response: Response,
        headers: Mapping[str, str],
    ) -> Response:
        """Strawberry's streaming response, counted in :attr:`streams` while it is sent."""
        content_type = headers.get("Content-Type", headers.get("content-type", ""))
        transport = "sse" if content_type.startswith("text/event-stream") else "multipart"
        streams = self.streams

        async def counted() -> AsyncGenerator[str, None]:
            streams[transport] += 1
            try:
                async for chunk in stream():
                    yield chunk
            finally:
                streams[transport] -= 1

        return await super().create_streaming_response(request, counted, sub_response, headers)

    def encode_json(self, data: object) -> str:
        # Text, not bytes: graphql-ws clients read text frames, and SSE/multipart want str.
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)
