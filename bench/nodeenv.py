"""The Node side, set up outside the project tree: the shared peers, our load client, ``ws``."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

from bench.processes import BenchError

if TYPE_CHECKING:
    from pathlib import Path

PEER_FILES = ("package.json", "node_graphql_ws_server.mjs", "node_raw_broadcast.mjs")
CLIENT = "load_client.mjs"
MODULES = ("ws", "graphql", "graphql-ws")
STAMP = ".installed-package.json"
"""A copy of the package.json that node_modules was installed for."""


def shared_folder(project: Path) -> Path:
    """``<project>/../shared/bench``, with every file the benchmark needs in it."""
    shared = project.parent / "shared" / "bench"
    missing = [name for name in PEER_FILES if not (shared / name).is_file()]
    if missing:
        raise BenchError(
            f"the reference peers are missing: expected {', '.join(missing)} in {shared} "
            "(the shared bench folder beside the project)"
        )
    return shared


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is not on PATH; the peers and the load client need Node.js 18+")
    return subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def prepare(shared: Path, workdir: Path, client: Path) -> bool:
    """Copy the peers and the load client into ``workdir`` and install their packages there
    (kept if already installed for the same package.json). Return whether npm ran."""
    workdir.mkdir(parents=True, exist_ok=True)
    for source in [*(shared / name for name in PEER_FILES), client]:
        target = workdir / source.name
        target.unlink(missing_ok=True)  # the shared files are read-only; so are their copies
        shutil.copyfile(source, target)
    package = (workdir / "package.json").read_bytes()
    stamp = workdir / STAMP
    installed = all((workdir / "node_modules" / m / "package.json").is_file() for m in MODULES)
    if installed and stamp.is_file() and stamp.read_bytes() == package:
        return False
    npm = shutil.which("npm")
    if npm is None:
        raise BenchError("npm is not on PATH; it installs ws, graphql and graphql-ws for the peers")
    done = subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(
            f"npm install in {workdir} failed ({done.returncode}):\n{done.stderr or done.stdout}"
        )
    stamp.write_bytes(package)
    return True
