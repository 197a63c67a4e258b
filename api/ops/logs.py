"""Logging: plain text (the default) or one JSON object per line (``LOG_FORMAT=json``).

A JSON line has ``time`` (ISO-8601, UTC), ``level``, ``logger``, ``message``, ``exception`` (the
traceback, when there is one), and ``connection_id`` or ``request_id`` when it was logged while
serving a WebSocket connection or an HTTP request. :class:`App` sets those two context variables
where it accepts a socket or a request; every task started from there (a connection's flusher, an
operation's task) inherits them.

HTTP responses carry the request's id in ``X-Request-ID``: the client's own when it sent a sane one
(:data:`SANE_REQUEST_ID`), else a new one.
"""

from __future__ import annotations

import logging
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

connection_id: ContextVar[str | None] = ContextVar("tradestream_connection_id", default=None)
request_id: ContextVar[str | None] = ContextVar("tradestream_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
"""An incoming X-Request-ID is kept only if it looks like an id (a UUID, hex, a trace id), so
that nothing a client sends can forge or break a log line."""

REQUEST_ID_HEADER = b"x-request-id"


def new_id() -> str:
    """A short random id: 12 hex digits (48 bits) are unique enough among one log's lines."""
    return secrets.token_hex(6)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        connection = connection_id.get()
        if connection is not None:
            line["connection_id"] = connection
        request = request_id.get()
        if request is not None:
            line["request_id"] = request
        return orjson.dumps(line, default=str).decode()


def configure(level: str, log_format: str) -> dict[str, Any] | None:
    """Set up the root logger; return the ``log_config`` uvicorn should apply on top: its own
    (text) or none, so that its loggers reach the root's JSON handler."""
    numeric = logging.DEBUG if level == "trace" else getattr(logging, level.upper())
    # httpx logs every request's URL at info (httpcore its details at debug): the Pyth source's
    # URL may hold a provider's key, and a log must not.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    if log_format == "text":
        logging.basicConfig(level=numeric, format=TEXT_FORMAT)
        from uvicorn.config import LOGGING_CONFIG

        return LOGGING_CONFIG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    logging.captureWarnings(True)  # warnings.warn() becomes a line like any other
    return None


class RequestId:
    """ASGI middleware: each HTTP request gets an id, in the log context and in ``X-Request-ID``
    on its response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        value = _incoming(scope) or new_id()
        header = (REQUEST_ID_HEADER, value.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0] != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = request_id.set(value)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


def _incoming(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            return value.decode() if SANE_REQUEST_ID.fullmatch(value) else None
    return None
