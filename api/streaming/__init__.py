"""Events between processes and to subscribers: the broadcast backend, the envelope, the
publisher, the hub, stepping subscribers from the hub, and the outgoing side of a WebSocket."""
