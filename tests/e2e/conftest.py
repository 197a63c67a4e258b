"""Every test under tests/e2e/ is marked ``e2e``: it starts real servers. ``pytest -m "not e2e"``
runs the rest (the quick loop); ``pytest tests/domain`` takes seconds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterable

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: Iterable[pytest.Item]) -> None:
    """Runs before ``-m`` deselects; the hook sees every item of the session, so it marks only
    this folder's."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)
