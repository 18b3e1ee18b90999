"""The VM agent's process lookups (also used by the kernel tier's clean slate): /proc, not pidof."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from iscsikit._vm_agent import pids
from tests.support import tiers


@pytest.fixture(autouse=True)
def _linux_proc(request: pytest.FixtureRequest) -> None:
    if not Path("/proc/self/comm").exists():
        tiers.unavailable(request, "needs Linux /proc")


def test_pids_finds_processes_by_command_name_and_only_those() -> None:
    mine = Path("/proc/self/comm").read_text().strip()
    assert os.getpid() in pids(mine)
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; print('ready', flush=True); time.sleep(30)"], stdout=subprocess.PIPE
    )
    try:
        # Until the child has exec'd, its comm is still the parent's (a race, not the behaviour under test).
        assert sleeper.stdout is not None and sleeper.stdout.readline() == b"ready\n"
        assert sleeper.pid in pids(Path(f"/proc/{sleeper.pid}/comm").read_text().strip())
        assert sleeper.pid not in pids("no-such-command")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sleeper.pid not in pids(mine)
