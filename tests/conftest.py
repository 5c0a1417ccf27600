"""Two tiers: tests/unit runs in seconds with fakes and no servers; tests/integration starts the
real tritonserver, edge and clients, and needs `make export` and espeak-ng/sox."""

from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)
