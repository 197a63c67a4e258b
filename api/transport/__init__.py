"""How clients reach the schema: the GraphQL endpoint (HTTP, graphql-transport-ws, SSE,
multipart), connection slots and limits, shutdown, GraphiQL and the demo page."""
