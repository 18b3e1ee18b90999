"""Issue 13, files and secrets, against the real tools: crafted restores, --control, CHAP records.

* ``iscsikit restore`` runs (the real CLI) inside a sandbox's mount namespace, whose /etc/iscsi
  is a private directory: each crafted backup is refused by member name, nothing is written
  in the DB or outside it, nothing half-written; modes are stripped; iscsid.conf needs
  ``--include-config``.
* ``iscsikit target serve --control PATH`` leaves a regular file or a symlink at PATH alone.
* CHAP settings written into records by iscsikit's DB writer are byte for byte what
  ``iscsiadm -o update -v SECRET`` writes, and the real iscsiadm reads them back
  (``-o show -S``); no iscsiadm call made by discover or connect has the secret in its argv.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from iscsikit.connector import Chap, Connector, VolumeSpec
from iscsikit.errors import IscsikitError
from iscsikit.iscsiadm import DISCOVERY_CHAP_KEYS, SESSION_CHAP_KEYS, Iscsiadm
from iscsikit.names import Portal
from iscsikit.runner import CommandResult, Runner
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tgtd import Tgtd, free_port
from tests.support.tiers import require, require_root, unavailable
from tests.unit.db.iscsiadm_harness import db_tree, iscsiadm, parse_show, private_sandbox, reset, run_in

ISCSIKIT = str(Path(sys.executable).parent / "iscsikit")
T = "iqn.2026-11.test:files"
SECRET = "s3cret-files-#13"
SECRET_IN = "mutual-s3cret-#13"


@pytest.fixture
def sbx(request: pytest.FixtureRequest) -> Iterator[IscsiadmSandbox]:
    require_root(request)
    require(request, "iscsiadm", "nsenter", "unshare")
    if not Path(ISCSIKIT).exists():
        unavailable(request, "the iscsikit entry point is not installed in this venv (scripts/bootstrap installs it)")
    with private_sandbox() as s:
        reset(s)
        yield s


# ---- restore ------------------------------------------------------------------------------------

MANIFEST = {"format": "iscsikit-clean-backup", "version": 1, "db_root": "/etc/iscsi"}


def backup(path: Path, members: Sequence[tuple[str, str, int, bytes | str]]) -> Path:
    """A backup tarball with exactly these members: (name, dir|file|link, mode, data or link target)."""
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("manifest.json")
        data = json.dumps(MANIFEST).encode()
        info.size, info.mode = len(data), 0o600
        tar.addfile(info, io.BytesIO(data))
        for name, kind, mode, content in members:
            info = tarfile.TarInfo(name)
            info.mode = mode
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                tar.addfile(info)
            else:
                assert isinstance(content, bytes)
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def restore(s: IscsiadmSandbox, path: Path, *flags: str) -> CommandResult:
    return run_in(s, [ISCSIKIT, "--json", "restore", str(path), *flags])


def said(ran: CommandResult) -> str:
    """What the command told the user (--json errors go to stdout)."""
    return ran.stdout + ran.stderr


def everything_under(path: Path) -> dict[str, tuple[int, bytes | str]]:
    out: dict[str, tuple[int, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            content: bytes | str = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else ""
            out[str(p.relative_to(path))] = (st.st_mode, content)
    return out


def node_record(s: IscsiadmSandbox) -> bytes:
    """A real node record, as iscsiadm writes it."""
    assert iscsiadm(s, None, "-m", "node", "-o", "new", "-T", T, "-p", "10.0.0.1:3260,1").returncode == 0
    data = (s.db / f"nodes/{T}/10.0.0.1,3260,1/default").read_bytes()
    reset(s)
    return data


def test_planted_link_then_setuid_write_is_refused_and_nothing_lands_anywhere(sbx: IscsiadmSandbox) -> None:
    outside = sbx.base / "outside"
    (outside / "nodes").mkdir(parents=True)
    before_db, before_out = db_tree(sbx), everything_under(outside)
    link = f"{T},127.0.0.1,3260,1,default"
    # stage 1: a link whose target merely contains /nodes/ (the old check let it through)
    first = backup(sbx.base / "stage1.tar.gz", [
        ("db/send_targets/", "dir", 0o700, b""),
        ("db/send_targets/127.0.0.1,3260/", "dir", 0o700, b""),
        ("db/send_targets/127.0.0.1,3260/st_config", "file", 0o600, b"discovery.startup = manual\n"),
        (f"db/send_targets/127.0.0.1,3260/{link}", "link", 0o777, f"{outside}/nodes/x"),
    ])  # fmt: skip
    ran = restore(sbx, first)
    assert ran.returncode == 1, said(ran)
    assert f"db/send_targets/127.0.0.1,3260/{link}" in said(ran) and "not to <DB root>" in said(ran)
    # the same link with the right tail, under a root of the attacker's choosing
    sneaky = backup(sbx.base / "stage1b.tar.gz", [
        (f"db/send_targets/127.0.0.1,3260/{link}", "link", 0o777, f"{outside}/nodes/{T}/127.0.0.1,3260,1"),
    ])  # fmt: skip
    ran = restore(sbx, sneaky)
    assert ran.returncode == 1 and f"points into {outside}/nodes, not into this DB" in said(ran), said(ran)
    # stage 2: a setuid file through that link
    second = backup(sbx.base / "stage2.tar.gz", [
        (f"db/send_targets/127.0.0.1,3260/{link}/pwn", "file", 0o4755, b"#!/bin/sh\nid\n"),
    ])  # fmt: skip
    ran = restore(sbx, second)
    assert ran.returncode == 1 and "deeper than iscsiadm's layout" in said(ran), said(ran)
    assert db_tree(sbx) == before_db, "nothing half-written: the good members of stage 1 were not restored"
    assert everything_under(outside) == before_out


def test_a_link_already_in_the_db_is_never_written_through(sbx: IscsiadmSandbox) -> None:
    """A record directory that is a symlink (planted by anything) is not followed."""
    outside = sbx.base / "outside"
    outside.mkdir()
    (sbx.db / "send_targets").mkdir()
    (sbx.db / "send_targets/127.0.0.1,3260").symlink_to(outside)
    before_db, before_out = db_tree(sbx), everything_under(outside)
    ran = restore(sbx, backup(sbx.base / "b.tar.gz", [
        ("db/send_targets/127.0.0.1,3260/st_config", "file", 0o600, b"x\n"),
    ]))  # fmt: skip
    assert ran.returncode == 1 and "is a symlink, not a directory" in said(ran), said(ran)
    assert "send_targets/127.0.0.1,3260" in said(ran)
    assert db_tree(sbx) == before_db and everything_under(outside) == before_out


def test_a_link_to_another_db_root_and_a_bad_member_last_write_nothing(sbx: IscsiadmSandbox) -> None:
    record = node_record(sbx)
    before = db_tree(sbx)
    good = [
        ("db/nodes/", "dir", 0o700, b""),
        (f"db/nodes/{T}/", "dir", 0o700, b""),
        (f"db/nodes/{T}/10.0.0.1,3260,1/", "dir", 0o700, b""),
        (f"db/nodes/{T}/10.0.0.1,3260,1/default", "file", 0o600, record),
    ]
    elsewhere = (
        ("db/static/", "dir", 0o700, b""),
        (f"db/static/{T},10.0.0.1,3260,1,default", "link", 0o777, f"/srv/other/nodes/{T}/10.0.0.1,3260,1"),
    )
    ran = restore(sbx, backup(sbx.base / "a.tar.gz", [*good, *elsewhere]))
    assert ran.returncode == 1 and "points into /srv/other/nodes, not into this DB" in said(ran), said(ran)
    ran = restore(sbx, backup(sbx.base / "b.tar.gz", [*good, ("db/ifaces/x/y", "file", 0o600, b"")]))
    assert ran.returncode == 1 and "'db/ifaces/x/y'" in said(ran), said(ran)
    assert db_tree(sbx) == before
    # the same records with the link as iscsiadm makes it: restored, and iscsiadm reads them
    proper = (
        ("db/static/", "dir", 0o700, b""),
        (f"db/static/{T},10.0.0.1,3260,1,default", "link", 0o777, f"/etc/iscsi/nodes/{T}/10.0.0.1,3260,1"),
    )
    ran = restore(sbx, backup(sbx.base / "c.tar.gz", [*good, *proper]))
    assert ran.returncode == 0, said(ran)
    shown = iscsiadm(sbx, None, "-m", "node")
    assert shown.returncode == 0 and f"10.0.0.1:3260,1 {T}" in shown.stdout


def test_iscsid_conf_needs_include_config_and_modes_are_stripped(sbx: IscsiadmSandbox) -> None:
    conf = sbx.db / "iscsid.conf"
    original = conf.read_bytes()
    evil = b"iscsid.startup = /bin/sh -c 'touch /tmp/pwned'\n"
    members = [("db/iscsid.conf", "file", 0o4777, evil)]
    ran = restore(sbx, backup(sbx.base / "conf.tar.gz", members))
    assert ran.returncode == 2, said(ran)
    assert "'db/iscsid.conf'" in said(ran) and "--include-config" in said(ran)
    assert conf.read_bytes() == original
    ran = restore(sbx, backup(sbx.base / "conf.tar.gz", members), "--include-config", "--force")
    assert ran.returncode == 0, said(ran)
    assert conf.read_bytes() == evil and stat.S_IMODE(conf.stat().st_mode) == 0o775  # no setuid, no o+w
    record = node_record(sbx)
    ran = restore(sbx, backup(sbx.base / "modes.tar.gz", [
        ("db/nodes/", "dir", 0o1777, b""),
        (f"db/nodes/{T}/", "dir", 0o2777, b""),
        (f"db/nodes/{T}/10.0.0.1,3260,1/", "dir", 0o700, b""),
        (f"db/nodes/{T}/10.0.0.1,3260,1/default", "file", 0o6766, record),
    ]))  # fmt: skip
    assert ran.returncode == 0, said(ran)
    report = json.loads(ran.stdout)
    assert len(report["modes_stripped"]) == 3
    modes = {k: v[1] for k, v in db_tree(sbx).items() if k.startswith("nodes")}
    assert modes == {"nodes": 0o775, f"nodes/{T}": 0o775, f"nodes/{T}/10.0.0.1,3260,1": 0o700,
                     f"nodes/{T}/10.0.0.1,3260,1/default": 0o764}  # fmt: skip
    assert iscsiadm(sbx, None, "-m", "node", "-T", T).returncode == 0


# ---- --control ----------------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["file", "symlink"])
def test_control_path_that_is_not_a_socket_is_refused_and_left_alone(
    request: pytest.FixtureRequest, tmp_path: Path, what: str
) -> None:
    require_root(request)
    victim = tmp_path / "precious"
    victim.write_text("keep me\n")
    path = victim if what == "file" else tmp_path / "ctl.sock"
    if what == "symlink":
        path.symlink_to(victim)
    proc = subprocess.run(
        [ISCSIKIT, "target", "serve", "--portal", f"127.0.0.1:{free_port()}", "--iqn", T,
         "--lun", "1=memory:size=1M", "--control", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert str(path) in proc.stderr and ("is a symlink" if what == "symlink" else "is not a socket") in proc.stderr
    assert victim.read_text() == "keep me\n" and (what == "file" or path.is_symlink())


# ---- CHAP into records --------------------------------------------------------------------------


def test_chap_written_directly_is_what_iscsiadm_writes_and_reads(request: pytest.FixtureRequest) -> None:
    """The real iscsiadm is the oracle: same bytes as its -o update -v SECRET, and -o show -S reads them."""
    require_root(request)
    require(request, "iscsiadm", "nsenter", "unshare")
    chap = Chap("user13", SECRET, "target13", SECRET_IN)
    with private_sandbox() as theirs, private_sandbox() as mine:
        reset(theirs)
        reset(mine)
        for s in (theirs, mine):
            assert iscsiadm(s, None, "-m", "node", "-o", "new", "-T", T, "-p", "10.0.0.1:3260,1").returncode == 0
        for key, value in chap.settings(SESSION_CHAP_KEYS).items():
            done = iscsiadm(theirs, None, "-m", "node", "-T", T, "-o", "update", "-n", key, "-v", value)
            assert done.returncode == 0, done.stderr
        for key, value in chap.settings(DISCOVERY_CHAP_KEYS).items():
            if key.endswith("authmethod"):
                assert (
                    iscsiadm(theirs, None, "-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "new").returncode
                    == 0
                )
            done = iscsiadm(theirs, None, "-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "update",
                            "-n", key, "-v", value)  # fmt: skip
            assert done.returncode == 0, done.stderr
        spy = Spy(mine.runner)
        adm = Iscsiadm(spy)
        adm.set_session_chap(T, Portal("10.0.0.1"), chap)
        assert adm.write_discovery_settings(Portal("10.0.0.9"), chap.settings(DISCOVERY_CHAP_KEYS)) is None
        assert spy.argvs == []  # nothing ran: the writes are iscsikit's own
        assert db_tree(mine) == db_tree(theirs)
        node = parse_show(iscsiadm(mine, None, "-m", "node", "-T", T, "-o", "show", "-S").stdout)[0]
        disc = parse_show(iscsiadm(mine, None, "-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "show",
                                   "-S").stdout)[0]  # fmt: skip
        for keys, shown in ((SESSION_CHAP_KEYS, node), (DISCOVERY_CHAP_KEYS, disc)):
            assert {k: shown[k] for k in chap.settings(keys)} == chap.settings(keys)


class Spy(Runner):
    """The sandbox's runner, remembering the argv of every command it runs."""

    def __init__(self, inner: Runner) -> None:
        super().__init__("local")
        self.inner = inner
        self.argvs: list[list[str]] = []

    def run(self, argv: Sequence[str], **kw: Any) -> CommandResult:  # type: ignore[override]
        self.argvs.append([str(a) for a in argv])
        return self.inner.run(argv, **kw)

    def host_path(self, path: str) -> Path:
        return self.inner.host_path(path)

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return self.inner.wrap(argv)


@pytest.fixture
def chap_tgtd(request: pytest.FixtureRequest) -> Iterator[Tgtd]:
    require_root(request)
    require(request, "tgtd", "tgtadm")
    with Tgtd() as t:
        t.add_target(T, luns={1: t.backing_file("lun1.img", 8 << 20)}, chap=("user13", SECRET))
        yield t


def test_discover_and_connect_with_chap_put_no_secret_in_any_argv(
    request: pytest.FixtureRequest, chap_tgtd: Tgtd, tmp_path: Path
) -> None:
    """Real discovery (userspace SendTargets against tgtd), then the connector up to its login,
    which fails on this host (no iscsid/iscsi_tcp): every argv is checked, and the records
    carry the credentials."""
    require(request, "iscsiadm", "nsenter", "unshare")
    with IscsiadmSandbox(sysfs="transport") as s:
        spy = Spy(s.runner)
        adm = Iscsiadm(spy, attempts=1, sleep=lambda _: None)
        adm.iface_new("isk-disc")
        adm.iface_update("isk-disc", {"iface.initiatorname": "iqn.2026-11.test:initiator"})
        portal = Portal("127.0.0.1", chap_tgtd.port)
        found = adm.discover_sendtargets(portal, iface="isk-disc", chap=Chap("disc13", SECRET))
        assert [f.target for f in found] == [T]
        st_config = (s.db / f"send_targets/127.0.0.1,{chap_tgtd.port}/st_config").read_text()
        assert f"discovery.sendtargets.auth.password = {SECRET}" in st_config  # the record carries it
        chaps = {"chap": Chap("user13", SECRET), "discovery_chap": Chap("disc13", SECRET)}
        spec = VolumeSpec("v13", T, (portal,), 1, iface="isk-disc", discovery=True, **chaps)  # type: ignore[arg-type]
        connector = Connector(runner=spy, sysfs_root=s.sysfs or "/sys", state_dir=tmp_path / "state", iscsiadm=adm)
        with pytest.raises(IscsikitError):
            connector.connect(spec, timeout=30)  # login needs iscsid: fails here, after the records are written
        shown = parse_show(s.iscsiadm("-m", "node", "-T", T, "-o", "show", "-S").stdout)[0]
        assert shown["node.session.auth.password"] == SECRET and shown["node.session.auth.username"] == "user13"
        assert any("--login" in a for a in spy.argvs) and any("--discover" in a for a in spy.argvs)
    leaked = [a for a in spy.argvs if SECRET in " ".join(a)]
    assert leaked == []


def test_dry_run_records_no_secret_and_writes_nothing(sbx: IscsiadmSandbox) -> None:
    runner = Runner("ns", ns_pid=sbx.pid, dry_run=True)
    before = db_tree(sbx)
    adm = Iscsiadm(runner)
    adm.discover_sendtargets(Portal("10.0.0.9"), chap=Chap("disc13", SECRET))
    assert runner.recorded and not [r for r in runner.recorded if SECRET in r.describe()]
    assert db_tree(sbx) == before
