"""Tier markers, the loud-skip summary and the Hypothesis profile; the helpers live in
tests/support/tiers.py and tests/support/profiles.py."""

from __future__ import annotations

import pytest

from tests.support import profiles, tiers

profiles.load()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tiers.mark_tiers(items)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tiers.write_summary(terminalreporter)
