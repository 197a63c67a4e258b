"""The GraphQL endpoint: queries and mutations over HTTP, subscriptions over graphql-transport-ws,
GraphQL over SSE and HTTP multipart, GraphiQL for browsers."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import orjson
from cross_web import HTTPException
from strawberry.asgi import GraphQL
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)
from strawberry.types.graphql import OperationType

from api.schema.context import Context

if TYPE_CHECKING:
    from cross_web import AsyncHTTPRequestAdapter
    from starlette.requests import Request
    from starlette.responses import Response
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


class GraphQLView(GraphQL[Context, None]):
    def __init__(self, schema: Schema, settings: Settings) -> None:
        super().__init__(
            schema,
            subscription_protocols=PROTOCOLS,
            connection_init_wait_timeout=timedelta(seconds=settings.connection_init_wait_timeout_s),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            allowed_origins=settings.allowed_origin_list,
        )

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return Context(services=request.app.state.services, request=request, response=response)

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

    def encode_json(self, data: object) -> str:
        # Text, not bytes: graphql-ws clients read text frames, and SSE/multipart want str.
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)
