"""Debian's nginx with the project's own ``deploy/nginx.conf`` in front of local servers: the
shipped file with its Docker-only lines replaced (each replacement asserted to match once), run in
the foreground as a child of the test with everything it writes under one folder.

nginx is Debian's package (``apt-get install nginx``): without it a test using it is skipped, unless
TRADESTREAM_REQUIRE_NGINX=1 (``.ci/run`` sets it), which makes that a failure."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import httpx
import pytest

from tests.support import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    if found is None:
        unavailable("nginx is not installed: apt-get install nginx (Debian's package)")
    return found


def unavailable(reason: str) -> NoReturn:
    if os.environ.get("TRADESTREAM_REQUIRE_NGINX") == "1":
        pytest.fail(f"{reason} (TRADESTREAM_REQUIRE_NGINX=1)")
    pytest.skip(reason)


def replace_once(text: str, pattern: str, replacement: str | Callable[[re.Match[str]], str]) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"deploy/nginx.conf no longer has exactly one match for {pattern!r}"
    return new


def proxy_config(shipped: str, port: int, replicas: Sequence[int], run_dir: Path) -> str:
    """The shipped configuration, pointed at ``replicas`` and listening on ``port``."""
    text = replace_once(shipped, r"^(\s*)listen 8000;", rf"\g<1>listen 127.0.0.1:{port};")
    local_paths = " ".join(
        f"{directive} {run_dir / name};"
        for directive, name in [
            ("access_log", "access.log"),
            ("client_body_temp_path", "client_body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        ]
    )
    text = replace_once(text, r"^(\s*)resolver [^;\n]*;.*$", rf"\g<1>{local_paths}")

    def servers(match: re.Match[str]) -> str:
        indent, parameters = match.group(1), match.group(2)
        return "\n".join(f"{indent}server 127.0.0.1:{p}{parameters};" for p in replicas)

    return replace_once(text, r"^(\s*)server server:8000 resolve([^;\n]*);", servers)


class Proxy:
    """nginx in the foreground, a child of the test, everything it writes under ``run_dir``, in
    front of the replicas on ``upstreams`` (ports of 127.0.0.1)."""

    def __init__(self, upstreams: Sequence[int], run_dir: Path) -> None:
        self.port = free_port()
        self.run_dir = run_dir
        self.config_path = run_dir / "nginx.conf"
        self.config_path.write_text(
            proxy_config(SHIPPED_CONFIG.read_text(), self.port, upstreams, run_dir)
        )
        self.error_log = run_dir / "error.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/graphql"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"

    def start(self, binary: str, timeout: float = 10.0) -> None:
        directives = (
            f"daemon off; pid {self.run_dir / 'nginx.pid'}; error_log {self.error_log} info;"
        )
        command = [binary, "-p", str(self.run_dir), "-c", str(self.config_path)]
        command += ["-e", str(self.error_log), "-g", directives]
        with (self.run_dir / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(command, stdout=stderr, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base_url}/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"nginx not answering after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # fast shutdown: open connections are closed
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.run_dir / "stderr.log", self.error_log)
            if path.exists()
        )
