"""The runner's ns mode against real mount namespaces (needs root)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from iscsikit.runner import Runner
from tests.support import tiers


def test_ns_mode_enters_a_real_namespace_and_follows_a_restart(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two 'iscsid' processes in two private mount namespaces, one after the other."""
    tiers.require_root(request)
    tiers.require(request, "unshare", "nsenter")
    name = "isk-fake-iscsid"
    binary = tmp_path / name
    shutil.copy("/bin/sleep", binary)

    def start(tag: str) -> subprocess.Popen[bytes]:
        d = tmp_path / tag
        d.mkdir()
        (d / "which").write_text(tag)
        script = f"mount -t tmpfs none /mnt && cp {d}/which /mnt/which && exec {binary} 60"
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
        deadline = time.monotonic() + 10
        while Path(f"/proc/{proc.pid}/comm").read_text().strip() != name:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return proc

    first = start("first")
    try:
        r = Runner("ns", ns_process=name)
        assert r.run(["cat", "/mnt/which"]).stdout == "first"
        assert r.host_path("/mnt/which").read_text() == "first"
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = start("second")
        try:
            assert r.run(["cat", "/mnt/which"]).stdout == "second"
        finally:
            second.kill()
            second.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
