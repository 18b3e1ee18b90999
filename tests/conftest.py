"""Tier markers and the loud-skip summary; the helpers live in tests/support/tiers.py."""

from __future__ import annotations

import pytest

from tests.support import tiers


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tiers.mark_tiers(items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tiers.write_summary(terminalreporter)
