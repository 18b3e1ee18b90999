"""``iscsikit replica info``: a replica directory's metadata, including who owns it and who was fenced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from iscsikit.replica.store import ReplicaStore

MiB = 1 << 20


def _info(directory: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISCSIKIT_")}
    return subprocess.run(
        [sys.executable, "-m", "iscsikit", *flags, "replica", "info", str(directory)],
        capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip


def test_info_shows_the_owning_controller_and_the_fenced_ones(tmp_path: Path) -> None:
    store = ReplicaStore.open(tmp_path / "r", MiB)
    store.record_claim("c3", ["c1", "c2"])
    store.close()
    res = _info(tmp_path / "r", "--json")
    assert res.returncode == 0, res
    data = json.loads(res.stdout)
    assert (data["controller"], data["fenced_controllers"]) == ("c3", ["c1", "c2"])
    res = _info(tmp_path / "r")
    assert res.returncode == 0, res
    lines = dict(line.split(" = ", 1) for line in res.stdout.splitlines() if " = " in line)
    assert (lines["controller"], lines["fenced_controllers"]) == ("c3", "c1, c2"), res.stdout
