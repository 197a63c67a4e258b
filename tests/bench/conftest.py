"""A server for the benchmark's own tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.conftest import isolated_server

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.support import ServerProcess


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
