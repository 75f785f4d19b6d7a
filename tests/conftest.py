"""Suite-wide pytest set-up: the shared harness on the path, and selecting slow tests.

``pytest -m "not slow"`` runs the quick tests (a few minutes); ``scripts/test`` runs
everything, as CI does. ``--quick`` is the same as ``-m "not slow"``.

``BTCHAT_UVLOOP=1 pytest ...`` runs the async tests on uvloop too (as ``btchat up`` does
when uvloop is installed, net/eventloop.py); daemons the tests start read the same switch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("BTCHAT_UVLOOP", "").strip().lower() in ("1", "true", "yes", "on"):
    import uvloop  # asked for by name: missing is an error, not a silent stdlib run

    def pytest_asyncio_loop_factories(
        config: pytest.Config, item: pytest.Item
    ) -> Mapping[str, Callable[[], object]]:
        """pytest-asyncio's hook: every async test runs on uvloop."""
        return {"uvloop": uvloop.new_event_loop}


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
