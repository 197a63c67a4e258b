"""Everything that touches the outside: the ASGI app, GraphQL schema, hub, storage, CLI."""
