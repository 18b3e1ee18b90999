"""Fixtures shared by the session, devices and connector unit tests: recorded iscsiadm
output (../shared/fixtures/iscsiadm-2.1.8) and the synthetic sysfs tree, unpacked."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest

from tests.support import tiers

SHARED = Path(os.environ.get("ISCSIKIT_SHARED", str(tiers.ROOT.parent / "shared")))
ISCSIADM_FIXTURES = SHARED / "fixtures" / "iscsiadm-2.1.8"
SYSFS_TARBALL = SHARED / "fixtures" / "sysfs" / "sys-multi.tar.gz"


class Capture:
    """One recorded iscsiadm run: ``.cmd``, ``.stdout``, ``.stderr``, ``.rc``."""

    def __init__(self, name: str) -> None:
        base = ISCSIADM_FIXTURES / name
        self.name = name
        self.cmd = (base.with_suffix(".cmd")).read_text().strip()
        self.stdout = (ISCSIADM_FIXTURES / f"{name}.stdout").read_text()
        self.stderr = (ISCSIADM_FIXTURES / f"{name}.stderr").read_text()
        self.rc = int((ISCSIADM_FIXTURES / f"{name}.rc").read_text().strip())


@pytest.fixture
def capture(request: pytest.FixtureRequest) -> type[Capture]:
    if not ISCSIADM_FIXTURES.is_dir():
        tiers.unavailable(request, f"recorded iscsiadm output not found at {ISCSIADM_FIXTURES} (set ISCSIKIT_SHARED)")
    return Capture


def unpack_sysfs(tarball: Path, dest: Path) -> Path:
    with tarfile.open(tarball) as tar:
        for member in tar.getmembers():
            if member.name.startswith("/") or ".." in Path(member.name).parts:
                raise ValueError(f"{tarball}: unsafe member {member.name!r}")
        tar.extractall(dest)
    entries = [p for p in dest.iterdir()]
    # The tarball may hold the tree at its top level or under one directory.
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / "class").is_dir():
        return entries[0]
    return dest


@pytest.fixture
def synthetic_sysfs(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The synthetic /sys of fixtures/README.md (sessions 1, 2, 10, 11)."""
    if not SYSFS_TARBALL.is_file():
        tiers.unavailable(request, f"synthetic sysfs not found at {SYSFS_TARBALL} (set ISCSIKIT_SHARED)")
    return unpack_sysfs(SYSFS_TARBALL, tmp_path / "sys")
