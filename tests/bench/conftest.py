"""A server for the benchmark's own tests."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bench import nodeenv
from bench.scenarios import Config
from tests.conftest import isolated_server
from tests.support import node_packages

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support import ServerProcess

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="package")
def oracle_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """As the benchmark starts tradestream with --price-source publish: no simulated feed (the
    tests are the oracle), a mutation allowance the set-up and the oracle fit in, and a database
    of its own (the tests create users' positions)."""
    env = {"SIMULATED_FEEDS": "false", "MUTATION_RATE_PER_S": "1000", "MUTATION_BURST": "1000"}
    log = tmp_path_factory.mktemp("bench") / "server.log"
    with isolated_server(database_url, env, log) as server:
        yield server


@pytest.fixture(scope="package")
def node_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The load client beside the ``ws`` the client examples pin (examples/js, ``npm ci`` as
    the examples' tests run it): the project's own, not the shared bench folder's, which a
    clone elsewhere does not have."""
    examples = PROJECT / "examples" / "js"
    node_packages(examples)
    workdir = tmp_path_factory.mktemp("bench-node")
    shutil.copyfile(PROJECT / "bench" / nodeenv.CLIENT, workdir / nodeenv.CLIENT)
    (workdir / "node_modules").symlink_to(examples / "node_modules")
    (workdir / "logs").mkdir()
    return workdir


@pytest.fixture
def quick_config(database_url: str, node_workdir: Path) -> Config:
    """``python -m bench --quick``'s configuration on the tests' database, with the load client
    of :func:`node_workdir`."""
    return Config(
        project=PROJECT,
        workdir=node_workdir,
        logs=node_workdir / "logs",
        node=shutil.which("node") or "node",
        rate_hz=20.0,
        idle_rate_hz=0.1,
        quick=True,
        database_url=database_url,
        data_dir=None,
    )
