"""Every command example in docs/target.md runs, and its TOML example is a valid config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from iscsikit.target.config import config_from_mapping
from tests.support.tgtd import free_port
from tests.support.tiers import ROOT, require

DOC = ROOT / "docs" / "target.md"
_BLOCK = re.compile(r"```(sh|toml)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for k, body in _BLOCK.findall(DOC.read_text()) if k == kind]


def test_the_page_has_examples() -> None:
    assert len(blocks("sh")) >= 5 and len(blocks("toml")) == 1


@pytest.mark.parametrize("index", range(len(blocks("sh"))))
def test_shell_example(request: pytest.FixtureRequest, tmp_path: Path, index: int) -> None:
    require(request, "iscsi-ls", "iscsi-inq", "iscsi-readcapacity16")
    script = blocks("sh")[index].replace("3260", str(free_port())).replace("/tmp/isk", str(tmp_path / "isk"))
    # `! cmd` documents a command that must fail; bash -e does not stop on it, so check it here.
    script = re.sub(r"^! (.*)$", r"if \1; then echo 'expected to fail: \1'; exit 1; fi", script, flags=re.M)
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    res = subprocess.run(["bash", "-e", "-c", "set -m\n" + script], capture_output=True, text=True, timeout=120,
                         env=env, cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, f"example {index} failed:\n{script}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"


def test_toml_example_is_a_valid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomlkit

    text = blocks("toml")[0].replace("/tmp/isk", str(tmp_path))
    (tmp_path / "discovery.secret").write_text("discovery-secret\n")
    (tmp_path / "alice.secret").write_text("initiator-secret-1\n")
    (tmp_path / "host2.secret").write_text("host2-own-secret\n")
    (tmp_path / "host2-mutual.secret").write_text("disk1-for-host2-secret\n")
    monkeypatch.setenv("DISK1_MUTUAL_SECRET", "target-secret-22")
    cfg = config_from_mapping(tomlkit.parse(text).unwrap(), where="docs/target.md")
    assert [t.iqn for t in cfg.targets] == ["iqn.2026-11.org.example:disk1", "iqn.2026-11.org.example:scratch"]
    assert [lc.lun for lc in cfg.targets[0].luns] == [1, 2] and cfg.targets[0].luns[1].read_only
    assert cfg.limits.max_burst_length == 1048576 and len(cfg.portals) == 2
    acls = {a.initiator: a for a in cfg.targets[0].acls or ()}
    host2 = acls["iqn.1993-08.org.debian:01:host2"].auth
    assert host2 is not None and host2.mutual is not None and len(acls) == 3
