"""Every example in docs/cleanup.md runs, as written, on a simulated host of the scene it names.

Each ``sh`` block follows a ``<!-- scene: NAME -->`` comment; the scene is built on a synthetic
host (sysfs, /proc, DB, state dir; iscsiadm, multipath and blockdev simulated, see
synthetic.py), the block runs under ``bash -e`` with the real ``iscsikit`` on the PATH, and
what the recipe promises is then checked on the host. The same flows run against a real
kernel in tests/kernel/test_clean.py.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.tiers import ROOT
from tests.unit.clean.synthetic import KernelWatcher, SyntheticHost, T, fake_commands

DOC = ROOT / "docs" / "cleanup.md"
_BLOCK = re.compile(r"<!-- scene: (\w+) -->\n```sh\n(.*?)```", re.S)


def blocks() -> list[tuple[str, str]]:
    return [(scene, body) for scene, body in _BLOCK.findall(DOC.read_text())]


def test_every_shell_block_names_its_scene() -> None:
    text = DOC.read_text()
    assert text.count("```sh") == len(blocks()) >= 10


def sessions(host: SyntheticHost) -> list[str]:
    out = []
    for name in sorted(os.listdir(host.sys / "class/iscsi_session")):
        out.append((host.sys / "class/iscsi_session" / name / "targetname").read_text().strip())
    return sorted(out)


def targets(host: SyntheticHost) -> list[str]:
    return sorted({r.target for r in host.db.nodes()})


# ---- scenes: (setup, check after a block that carried something out) ----------------------------------


def stale(host: SyntheticHost) -> Callable[[str], None]:
    db = host.db
    db.new_node(f"{T}:live", "127.0.0.1:3260,1")
    host.session(f"{T}:live", "127.0.0.1:3260,1")
    db.new_discovery("127.0.0.1:3261")
    db.new_node(f"{T}:stale", "127.0.0.1:3261,1", discovery=db.discoveries()[0])
    host.session(f"{T}:stale", "127.0.0.1:3261,1", state="FAILED", conn_state="failed",
                 luns={1: "transport-offline"}, recovery_tmo=120)  # fmt: skip
    db.new_node(f"{T}:waiting", "127.0.0.1:3262,1")

    def check(block: str) -> None:
        assert sessions(host) == [f"{T}:live"]
        assert targets(host) == [f"{T}:live", f"{T}:waiting"]

    return check


def decommission(host: SyntheticHost) -> Callable[[str], None]:
    db = host.db
    (host.db_root / "iscsid.conf").write_text("node.startup = manual\n")
    (host.db_root / "initiatorname.iscsi").write_text("InitiatorName=iqn.1993-08.org.debian:01:cloned\n")
    db.new_discovery("127.0.0.1:3260")
    for name in ("pvc-1", "pvc-2", "boot-disk"):
        db.new_node(f"{T}:{name}", "127.0.0.1:3260,1", discovery=db.discoveries()[0])
        host.session(f"{T}:{name}", "127.0.0.1:3260,1")
    db.new_node(f"{T}:pvc-1", "127.0.0.2:3260,1")
    host.session(f"{T}:pvc-1", "127.0.0.2:3260,1")
    db.new_iface("csi-clone")
    host.attachment("pvc-1", f"{T}:pvc-1", ("127.0.0.1:3260", "127.0.0.2:3260"))

    def check(block: str) -> None:
        if "--reset" in block:
            assert sessions(host) == [] and targets(host) == []
            assert (host.db_root / "initiatorname.iscsi").exists() == ("--no-keep-config" not in block)
            left = sorted(os.listdir(host.db_root))
            assert left == ([] if "--no-keep-config" in block else ["initiatorname.iscsi", "iscsid.conf"])
        elif "--keep" in block:
            assert sessions(host) == targets(host) == [f"{T}:boot-disk"]
            assert not (host.state / "attachments/pvc-1.json").exists()
        else:  # --target pvc-* --portal 127.0.0.1:3260
            assert sessions(host) == [f"{T}:boot-disk", f"{T}:pvc-1"] and len(host.db.nodes()) == 2

    return check


def csi(host: SyntheticHost) -> Callable[[str], None]:
    db = host.db
    for name in ("pvc-1", "pvc-2", "pvc-3"):
        db.new_node(f"{T}:{name}", "127.0.0.1:3260,1")
        host.session(f"{T}:{name}", "127.0.0.1:3260,1", luns=[1, 2])
        host.attachment(name, f"{T}:{name}")
    pvc2_lun2 = host.disks_of(2)[1]

    def check(block: str) -> None:
        assert sessions(host) == targets(host) == [f"{T}:pvc-1", f"{T}:pvc-2"]
        assert pvc2_lun2 not in os.listdir(host.sys / "class/block") and len(host.disks_of(1)) == 2
        assert sorted(os.listdir(host.state / "attachments")) == ["pvc-1.json", "pvc-2.json"]

    return check


def unreachable(host: SyntheticHost) -> Callable[[str], None]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    down = probe.getsockname()[1]
    probe.close()
    host.db.new_node(f"{T}:up", f"127.0.0.1:{server.getsockname()[1]},1")
    host.db.new_node(f"{T}:down", f"127.0.0.1:{down},1")
    host.keepalive = server  # type: ignore[attr-defined]

    def check(block: str) -> None:
        assert targets(host) == [f"{T}:up"]

    return check


def cleaned(host: SyntheticHost) -> Callable[[str], None]:
    stale(host)
    before = host.tree()
    env = {**os.environ, **host.env(), "PATH": os.environ["PATH"]}
    fake_commands(host.base / "bin", host.sys)
    env["PATH"] = f"{host.base / 'bin'}:{Path(sys.executable).parent}:{env['PATH']}"
    subprocess.run(["iscsikit", "-q", "clean", "--stale-only", "--yes"], env=env, check=True, capture_output=True)
    assert targets(host) == [f"{T}:live", f"{T}:waiting"]

    def check(block: str) -> None:
        assert host.tree() == before  # every byte, mode and link is back

    return check


SCENES: dict[str, Callable[[SyntheticHost], Callable[[str], None]]] = {
    "stale": stale,
    "decommission": decommission,
    "csi": csi,
    "unreachable": unreachable,
    "cleaned": cleaned,
}


@pytest.fixture
def scene_host(tmp_path: Path) -> Iterator[SyntheticHost]:
    host = SyntheticHost(tmp_path / "host")
    yield host
    server = getattr(host, "keepalive", None)
    if server is not None:
        server.close()


@pytest.mark.parametrize("index", range(len(blocks())))
def test_shell_example(scene_host: SyntheticHost, tmp_path: Path, index: int) -> None:
    scene, body = blocks()[index]
    check = SCENES[scene](scene_host)
    script = (
        body.replace("/var/lib/iscsikit", str(scene_host.state))
        .replace("/etc/iscsi", str(scene_host.db_root))
        .replace("/run/csi-desired.txt", str(tmp_path / "desired.txt"))
    )
    fake_commands(tmp_path / "bin", scene_host.sys)
    env = {**os.environ, **scene_host.env()}
    env["PATH"] = f"{tmp_path / 'bin'}:{Path(sys.executable).parent}:{env['PATH']}"
    env["PYTHONPATH"] = str(ROOT)
    with KernelWatcher(scene_host.sys) as kernel:
        res = subprocess.run(["bash", "-e", "-c", script], capture_output=True, text=True, timeout=300, env=env,
                             cwd=tmp_path)  # fmt: skip
        kernel.settle()
    assert res.returncode == 0, f"example {index} ({scene}) failed:\n{script}\n--- stdout\n{res.stdout}\n" \
                                f"--- stderr\n{res.stderr}"  # fmt: skip
    if "--yes" in body or "restore" in body:
        check(body)
    else:
        assert "Run again with --yes" in res.stderr or "plan.json" in body


def test_the_library_example_runs(tmp_path: Path) -> None:
    host = SyntheticHost(tmp_path / "host")
    stale(host)
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert code is not None
    source = (
        code.group(1)
        .replace("Database()", f"Database({str(host.db_root)!r}, lock_dir={str(host.lock)!r})")
        .replace("collect(db, ", f"collect(db, sysfs_root={str(host.sys)!r}, proc_root={str(host.proc)!r}, ")
        .replace("Runner()", "SIMULATED")
        .replace("Executor(db, ", f"Executor(db, sysfs_root={str(host.sys)!r}, dev_root={str(host.dev)!r}, ")
        .replace("/var/lib/iscsikit", str(host.state))
    )
    source = source.replace("older_than=600", "older_than=60")  # the scene's LUNs went offline 120 s ago
    namespace: dict[str, object] = {"SIMULATED": host.runner()}
    exec(compile(source, str(DOC), "exec"), namespace)
    assert sessions(host) == [f"{T}:live"] and targets(host) == [f"{T}:live", f"{T}:waiting"]
