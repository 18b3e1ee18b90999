"""Every code block of docs/connector.md runs, on the simulated host (see fakehost.py).

The same blocks run for real in the VM in tests/kernel/test_connector_docs.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

from iscsikit.connector import Connector
from tests.support.tiers import ROOT
from tests.unit.connector.fakehost import FakeHost, FakeTarget, connector_on

DOC = ROOT / "docs" / "connector.md"
IQN = "iqn.2026-11.org.example:storage.pvc-3f1c"


def python_blocks(path: Path = DOC) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def test_the_doc_has_the_worked_example():
    blocks = python_blocks()
    assert len(blocks) >= 5
    text = "".join(blocks)
    for name in ("def node_stage", "def node_unstage", "def node_expand", "connector.connect", "disconnect"):
        assert name in text


def test_every_block_runs(tmp_path):
    host = FakeHost(tmp_path / "sys", [FakeTarget(IQN, {1: 64 << 20})])
    commands: list[tuple[str, ...]] = []

    def fake_connector(**kw: Any) -> Connector:
        return connector_on(host, tmp_path, state_dir=kw.get("state_dir"), instant=True)

    def fake_run(*argv: str) -> str:
        commands.append(argv)
        if argv[0] == "blkid":
            raise subprocess.CalledProcessError(2, argv)
        return ""

    ns: dict[str, Any] = {
        "__name__": "connector_doc",
        "STATE_DIR": str(tmp_path / "state"),
        "STAGING_DIR": str(tmp_path / "staging"),
        "TARGET_IQN": IQN,
        "SYSFS_ROOT": str(host.sys),
    }
    for block in python_blocks():
        if "connector = Connector(state_dir=STATE_DIR)" in block:
            ns["Connector"] = fake_connector
        exec(compile(block, str(DOC), "exec"), ns)
        if "def run(" in block:
            ns["run"] = fake_run
    assert commands[1][:2] == ("mkfs.ext4", "-q")
    assert commands[2][0] == "mount"
    assert host.sessions() == [] and host.disks() == [] and host.nodes == {}
