from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.clean.synthetic import SyntheticHost


@pytest.fixture
def host(tmp_path: Path) -> SyntheticHost:
    return SyntheticHost(tmp_path / "host")
