"""Running the server in production: logs, metrics, health."""
