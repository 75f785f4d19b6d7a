"""Suite-wide pytest set-up: the shared harness on the path, and selecting slow tests.

``pytest -m "not slow"`` runs the quick tests (a few minutes); ``scripts/test`` runs
everything, as CI does. ``--quick`` is the same as ``-m "not slow"``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick", action="store_true", help="skip tests marked slow (CI runs them all)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--quick"):
        return
    skip = pytest.mark.skip(reason="slow test left out by --quick")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
