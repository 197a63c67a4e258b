"""The GraphQL endpoint: queries and mutations over HTTP, subscriptions over graphql-transport-ws,
GraphQL over SSE and HTTP multipart, GraphiQL for browsers."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import orjson
from strawberry.asgi import GraphQL
from strawberry.subscriptions import (
    GRAPHQL_SSE_PROTOCOL,
    GRAPHQL_TRANSPORT_WS_PROTOCOL,
    MULTIPART_SUBSCRIPTION_PROTOCOL,
)

from api.schema.context import Context

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.websockets import WebSocket

    from api.schema import Schema
    from api.settings import Settings

PROTOCOLS = (GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL, MULTIPART_SUBSCRIPTION_PROTOCOL)
"""graphql-transport-ws is the one WebSocket subprotocol: the legacy ``graphql-ws``
(subscriptions-transport-ws) is deprecated and gets close code 4406."""


class GraphQLView(GraphQL[Context, None]):
    def __init__(self, schema: Schema, settings: Settings) -> None:
        super().__init__(
            schema,
            subscription_protocols=PROTOCOLS,
            connection_init_wait_timeout=timedelta(seconds=settings.connection_init_wait_timeout_s),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
        )

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> Context:
        return Context(services=request.app.state.services, request=request, response=response)

    def encode_json(self, data: object) -> str:
        # Text, not bytes: graphql-ws clients read text frames, and SSE/multipart want str.
        return orjson.dumps(data).decode()

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)
