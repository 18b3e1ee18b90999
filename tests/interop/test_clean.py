"""``iscsikit clean`` and ``restore`` on records made by the real iscsiadm (private DB, real SendTargets
discovery against a private tgtd): cleaned as asked, restored byte for byte, and iscsiadm sees and
handles the restored records exactly as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.sandbox import IscsiadmSandbox
from tests.support.tgtd import Tgtd
from tests.support.tiers import require, require_root
from tests.unit.db.iscsiadm_harness import iscsiadm, private_sandbox, reset

A, B = "iqn.2026-11.test:clean-a", "iqn.2026-11.test:clean-b"
STATIC, OLD = "iqn.2026-11.test:clean-static", "iqn.2026-11.test:clean-oldstyle"
ISCSIKIT = str(Path(sys.executable).parent / "iscsikit")


@dataclass
class Scene:
    tgtd: Tgtd
    sbx: IscsiadmSandbox
    work: Path

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.tgtd.port}"

    def adm(self, *args: str, ok: tuple[int, ...] = (0,)) -> str:
        res = iscsiadm(self.sbx, None, *args)
        assert res.returncode in ok, f"iscsiadm {' '.join(args)}: {res.returncode}\n{res.stderr}"
        return res.stdout

    def populate(self) -> None:
        """Every kind of record, made by iscsiadm itself."""
        reset(self.sbx)
        self.adm("-m", "iface", "-I", "res1", "-o", "new")
        self.adm("-m", "iface", "-I", "res1", "-o", "update", "-n", "iface.initiatorname",
                 "-v", "iqn.2026-11.test:initiator1")  # fmt: skip
        self.adm("-m", "iface", "-I", "res1", "-o", "update", "-n", "iface.net_ifacename", "-v", "lo")
        found = self.adm("-m", "discovery", "-t", "st", "-p", self.portal, "-I", "res1")
        assert sorted(line.split()[1] for line in found.splitlines()) == [A, B]
        self.adm("-m", "node", "-o", "new", "-T", STATIC, "-p", "192.0.2.11:3260,1", "-I", "res1")
        node = ["-m", "node", "-T", STATIC, "-p", "192.0.2.11:3260,1", "-I", "res1", "-o", "update"]
        self.adm(*node, "-n", "node.session.auth.authmethod", "-v", "CHAP")
        self.adm(*node, "-n", "node.session.auth.password", "-v", "s3cret pass#1")
        self.adm("-m", "node", "-o", "new", "-T", OLD, "-p", "192.0.2.10:3260")  # old style, no tpgt
        self.adm("-m", "discoverydb", "-t", "isns", "-p", "192.0.2.25", "-o", "new")

    def seen(self) -> str:
        """What iscsiadm shows of the whole DB."""
        out = [self.adm("-m", "node", "-P", "1", ok=(0, 21)), self.adm("-m", "discovery", "-P", "1", ok=(0, 21))]
        out.append(self.adm("-m", "iface"))
        for target in (A, B, STATIC, OLD):
            out.append(self.adm("-m", "node", "-T", target, "-o", "show", ok=(0, 21)))
        return "\n".join(out)

    def iscsikit(self, *args: str, code: int = 0) -> Any:
        config = self.work / "config.toml"
        config.write_text(
            f'lock_dir = "{self.sbx.lock_dir}"\nstate_dir = "{self.work / "state"}"\n'
            f'sysfs_root = "{self.work / "sys"}"\n[timeouts]\nlock = 10\n'
        )
        (self.work / "sys").mkdir(exist_ok=True)
        env = {**os.environ, "ISCSIKIT_CONFIG": str(config), "ISCSIKIT_DB_ROOT": str(self.sbx.db)}
        res = subprocess.run([ISCSIKIT, "--json", *args], capture_output=True, text=True, env=env, timeout=120)
        assert res.returncode == code, f"iscsikit {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
        return json.loads(res.stdout)


@pytest.fixture(scope="module")
def scene(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    require_root(request)
    require(request, "iscsiadm", "tgtd", "tgtadm", "nsenter", "unshare")
    with Tgtd() as tgtd, private_sandbox(sysfs="transport") as sbx:
        for i, iqn in enumerate((A, B)):
            tgtd.add_target(iqn, luns={1: tgtd.backing_file(f"lun{i}.img", 1 << 20)})
        yield Scene(tgtd, sbx, tmp_path_factory.mktemp("clean"))


def test_decommission_removes_every_record_and_restore_is_byte_identical(scene: Scene) -> None:
    scene.populate()
    tree, seen = scene.sbx.tree(), scene.seen()
    plan = scene.iscsikit("clean")
    assert sorted({a["kind"] for a in plan["actions"]}) == [
        "delete-discovery", "delete-iface", "delete-node",
    ]  # fmt: skip
    assert tree == scene.sbx.tree(), "the plan changed something"
    done = scene.iscsikit("clean", "--yes")
    assert {a["status"] for a in done["actions"]} == {"done"}
    assert "No records found" in iscsiadm(scene.sbx, None, "-m", "node").stderr
    assert iscsiadm(scene.sbx, None, "-m", "discovery").returncode == 21
    assert scene.adm("-m", "iface").split("\n")[:2] == ["default tcp,<empty>,<empty>,<empty>,<empty>",
                                                        "iser iser,<empty>,<empty>,<empty>,<empty>"]  # fmt: skip
    restored = scene.iscsikit("restore", done["backup"])
    assert restored["restored"] and not restored["overwritten"]
    assert scene.sbx.tree() == tree
    assert scene.seen() == seen
    assert scene.iscsikit("restore", done["backup"])["restored"] == []


def test_one_target_goes_its_discovery_record_stays_and_iscsiadm_handles_the_restored_ones(scene: Scene) -> None:
    scene.populate()
    tree, seen = scene.sbx.tree(), scene.seen()
    done = scene.iscsikit("clean", "--target", A, "--yes")
    assert [(a["kind"], a["target"]) for a in done["actions"]] == [("delete-node", A)]
    assert sorted({line.split()[1] for line in scene.adm("-m", "node").splitlines()}) == sorted([B, OLD, STATIC])
    discovery = scene.adm("-m", "discovery").split()
    assert discovery == [scene.portal, "via", "sendtargets", "192.0.2.25:3205", "via", "isns"]
    scene.iscsikit("restore", done["backup"])
    assert scene.sbx.tree() == tree and scene.seen() == seen
    # iscsiadm works on the restored records: update one, then delete both targets' records
    scene.adm("-m", "node", "-T", A, "-p", scene.portal, "-o", "update", "-n", "node.startup", "-v", "automatic")
    scene.adm("-m", "discoverydb", "-t", "st", "-p", scene.portal, "-o", "delete")
    left = scene.sbx.tree()
    assert not [k for k in left if k.startswith(("send_targets/", "nodes/" + A, "nodes/" + B))]


def test_reset_leaves_the_config_files_and_iscsiadm_starts_afresh(scene: Scene) -> None:
    scene.populate()
    tree = scene.sbx.tree()
    done = scene.iscsikit("clean", "--reset", "--yes")
    assert {a["status"] for a in done["actions"]} == {"done"}
    assert sorted(os.listdir(scene.sbx.db)) == ["initiatorname.iscsi", "iscsid.conf"]
    assert iscsiadm(scene.sbx, None, "-m", "node").returncode == 21
    scene.adm("-m", "node", "-o", "new", "-T", "iqn.2026-11.test:fresh", "-p", "192.0.2.99:3260,1")
    scene.adm("-m", "node", "-T", "iqn.2026-11.test:fresh", "-o", "delete")
    scene.iscsikit("restore", done["backup"])
    assert scene.sbx.tree() == tree


def test_restore_refuses_a_record_iscsiadm_changed_since(scene: Scene) -> None:
    scene.populate()
    done = scene.iscsikit("clean", "--target", STATIC, "--yes")
    scene.adm("-m", "node", "-o", "new", "-T", STATIC, "-p", "192.0.2.11:3260,1", "-I", "res1")  # fresh, no CHAP
    doc = scene.iscsikit("restore", done["backup"], code=1)
    assert doc["error"]["conflicts"] == [f"nodes/{STATIC}/192.0.2.11,3260,1/res1: different content"]
    scene.iscsikit("restore", done["backup"], "--force")
    shown = scene.adm("-m", "node", "-T", STATIC, "-o", "show")
    assert "node.session.auth.authmethod = CHAP" in shown
