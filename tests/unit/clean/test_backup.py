"""Backup tarballs: exact round trips, refusing what is not one of ours, restore conflicts."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iscsikit.clean.backup import (
    EntryCollector,
    default_backup_path,
    read_backup,
    restore_backup,
    write_backup,
)
from iscsikit.db.database import Database
from iscsikit.db.snapshot import Snapshot, SnapshotEntry
from iscsikit.errors import BackupError, RestoreConflictError
from tests.support.profiles import examples
from tests.unit.clean.synthetic import SyntheticHost, T


def backup_of(host: SyntheticHost, rels: list[str], path: Path, recursive: bool = False) -> Path:
    c = EntryCollector(host.db_root)
    c.add_all(rels, recursive=recursive)
    return write_backup(path, c.snapshot(), {}, {"db_root": str(host.db_root)})


def test_collector_copies_parents_once_and_skips_what_is_gone(host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    host.db.new_node(f"{T}:a", "10.0.0.2:3260,1")
    c = EntryCollector(host.db_root)
    c.add_all([r.relpath for r in host.db.nodes()] + ["nodes/nope/x", f"nodes/{T}:a/10.0.0.1,3260,1/gone"])
    paths = [e.relpath for e in c.snapshot().ordered()]
    assert paths == [
        "nodes",
        f"nodes/{T}:a",
        f"nodes/{T}:a/10.0.0.1,3260,1",
        f"nodes/{T}:a/10.0.0.2,3260,1",
        f"nodes/{T}:a/10.0.0.1,3260,1/default",
        f"nodes/{T}:a/10.0.0.2,3260,1/default",
    ]


def test_round_trip_is_exact_and_the_file_is_private(host: SyntheticHost, tmp_path: Path) -> None:
    db = host.db
    db.new_discovery("10.0.0.1:3260")
    db.new_node(f"{T}:a", "10.0.0.1:3260,1", discovery=db.discoveries()[0])
    db.new_node(f"{T}:b", "[2001:db8::1]:3260")
    os.chmod(host.db_root / f"nodes/{T}:b/2001:db8::1,3260", 0o640)
    before = host.tree()
    path = backup_of(host, ["nodes", "send_targets"], tmp_path / "b.tar.gz", recursive=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with tarfile.open(path) as tar:
        assert tar.getnames()[0] == "manifest.json"
    for top in ("nodes", "send_targets"):
        import shutil

        shutil.rmtree(host.db_root / top)
    report = restore_backup(read_backup(path), db)
    assert host.tree() == before
    assert report.unchanged == []
    assert sorted(report.restored) == sorted(k for k in before if k.split("/")[0] in ("nodes", "send_targets"))


def test_default_backup_paths_never_collide(tmp_path: Path) -> None:
    first = default_backup_path(tmp_path, now=0)
    first.parent.mkdir(parents=True)
    first.write_text("")
    second = default_backup_path(tmp_path, now=0)
    assert first.name.startswith("clean-19700101T000000Z-") and second != first and second.name.endswith("-2.tar.gz")


_names = st.text(alphabet="abcdefgh.:-0123456789", min_size=1, max_size=12).filter(lambda s: s not in (".", ".."))
_modes = st.sampled_from([0o600, 0o644, 0o640])


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    """DB entries laid out as iscsiadm lays them out (what a clean backup holds)."""
    snap = Snapshot()
    for _ in range(draw(st.integers(1, 6))):
        target, address = draw(_names), draw(_names)
        port, tpgt, iface = draw(st.integers(1, 65535)), draw(st.integers(0, 65535)), draw(_names)
        portal = f"{address},{port},{tpgt}"
        for rel in ("nodes", f"nodes/{target}", f"nodes/{target}/{portal}"):
            snap.add(SnapshotEntry(rel, "dir", draw(st.sampled_from([0o700, 0o755]))))
        snap.add(SnapshotEntry(f"nodes/{target}/{portal}/{iface}", "file", draw(_modes), draw(st.binary(max_size=300))))
        where = draw(st.sampled_from(["static", "send_targets", None]))
        link = f"{target},{address},{port},{tpgt},{iface}"
        if where == "static":
            snap.add(SnapshotEntry("static", "dir", 0o700))
        elif where == "send_targets":
            disc = f"{draw(_names)},{port}"
            for rel in ("send_targets", f"send_targets/{disc}"):
                snap.add(SnapshotEntry(rel, "dir", 0o700))
            snap.add(SnapshotEntry(f"send_targets/{disc}/st_config", "file", 0o600, draw(st.binary(max_size=100))))
            link = f"{disc}/{link}"
        if where is not None:
            snap.add(SnapshotEntry(f"{where}/{link}", "link", 0o777, target=f"/etc/iscsi/nodes/{target}/{portal}"))
    return snap


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    snap=snapshots(),
    attachments=st.dictionaries(_names.filter(lambda s: not s.startswith(".")), st.binary(max_size=100), max_size=3),
)
def test_any_snapshot_round_trips_through_a_backup(
    tmp_path: Path, snap: Snapshot, attachments: dict[str, bytes]
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        path = write_backup(Path(d) / "b.tar.gz", snap, attachments, {"db_root": "/x"})
        back = read_backup(path)
        assert sorted(back.snapshot.entries, key=lambda e: e.relpath) == sorted(snap.entries, key=lambda e: e.relpath)
        assert back.attachments == attachments
        root = Path(d) / "db"
        root.mkdir()
        db = Database(root, lock_dir=Path(d) / "lock", link_root="/etc/iscsi")
        restore_backup(back, db, Path(d) / "state")
        for e in snap.entries:
            p = root / e.relpath
            if e.type == "link":
                assert os.readlink(p) == e.target
            elif e.type == "file":
                assert p.read_bytes() == e.data and stat.S_IMODE(p.stat().st_mode) == e.mode
            else:
                assert p.is_dir() and stat.S_IMODE(p.stat().st_mode) == e.mode
        for name, data in attachments.items():
            assert (Path(d) / "state/attachments" / f"{name}.json").read_bytes() == data


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


MANIFEST = json.dumps({"format": "iscsikit-clean-backup", "version": 1}).encode()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([_file("db/nodes/x", b"x")], "no manifest.json"),
        ([_file("manifest.json", b"{]")], "not valid JSON"),
        ([_file("manifest.json", b'{"format": "other"}')], "not an iscsikit clean backup manifest"),
        ([_file("manifest.json", json.dumps({"format": "iscsikit-clean-backup", "version": 9}).encode())],
         "version 9"),
        ([_file("manifest.json", MANIFEST), _file("db/../../etc/passwd", b"x")], "unsafe member 'db/../../etc/passwd'"),
        ([_file("manifest.json", MANIFEST), _file("etc/passwd", b"x")], "unexpected member 'etc/passwd'"),
        ([_file("manifest.json", MANIFEST), _file("state/attachments/../x.json", b"x")], "unsafe member"),
    ],
    ids=["no-manifest", "bad-json", "other-format", "version", "dotdot", "outside", "state-dotdot"],
)  # fmt: skip
def test_what_is_not_a_backup_is_refused_by_name(tmp_path: Path, members: list, message: str) -> None:  # type: ignore[type-arg]
    path = _tarball(tmp_path / "bad.tar.gz", members)
    with pytest.raises(BackupError, match=message.replace("(", r"\(").replace(".", r"\.")) as exc:
        read_backup(path)
    assert str(path) in str(exc.value)


def test_links_and_special_members_are_checked(tmp_path: Path) -> None:
    evil = tarfile.TarInfo("db/static/x")
    evil.type, evil.linkname = tarfile.SYMTYPE, "/etc/shadow"
    with pytest.raises(BackupError, match="not named TARGET,ADDR,PORT,TPGT,IFACE"):
        read_backup(_tarball(tmp_path / "a.tar.gz", [_file("manifest.json", MANIFEST), (evil, None)]))
    hard = tarfile.TarInfo("db/nodes/x")
    hard.type, hard.linkname = tarfile.LNKTYPE, "db/nodes/y"
    with pytest.raises(BackupError, match="a hard link: only directories, regular files and symlinks"):
        read_backup(_tarball(tmp_path / "b.tar.gz", [_file("manifest.json", MANIFEST), (hard, None)]))
    (tmp_path / "c.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(BackupError, match="not a clean backup tarball"):
        read_backup(tmp_path / "c.tar.gz")
    with pytest.raises(BackupError, match="no backup file"):
        read_backup(tmp_path / "missing.tar.gz")


def test_restore_refuses_changed_records_unless_forced(host: SyntheticHost, tmp_path: Path) -> None:
    db = host.db
    db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    db.new_node(f"{T}:b", "10.0.0.2:3260,1")
    path = backup_of(host, [r.relpath for r in db.nodes()] + db.links_to(db.nodes()[0]), tmp_path / "b.tar.gz")
    a, b = db.nodes()
    original = (host.db_root / a.relpath).read_bytes()
    db.delete(b)
    db.update(a, {"node.startup": "automatic"})
    with pytest.raises(RestoreConflictError) as exc:
        restore_backup(read_backup(path), db)
    assert exc.value.conflicts == [f"{a.relpath}: different content"]
    assert [r.target for r in db.nodes()] == [f"{T}:a"], "nothing is restored when something conflicts"
    report = restore_backup(read_backup(path), db, force=True)
    assert report.overwritten == [a.relpath]
    assert (host.db_root / a.relpath).read_bytes() == original and len(db.nodes()) == 2


def test_restore_dry_run_writes_nothing(host: SyntheticHost, tmp_path: Path) -> None:
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    ref = host.db.nodes()[0]
    path = backup_of(host, [ref.relpath], tmp_path / "b.tar.gz")
    host.db.delete(ref)
    dry = Database(host.db_root, lock_dir=host.lock, dry_run=True)
    report = restore_backup(read_backup(path), dry)
    assert report.dry_run and ref.relpath in report.restored and host.db.nodes() == []


def test_a_restore_elsewhere_is_noted(host: SyntheticHost, tmp_path: Path) -> None:
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    path = backup_of(host, [host.db.nodes()[0].relpath], tmp_path / "b.tar.gz")
    other = Database(tmp_path / "other", lock_dir=host.lock)
    report = restore_backup(read_backup(path), other)
    assert report.notes == [f"the backup was taken from {host.db_root}; restoring into {tmp_path / 'other'}"]
    assert [r.target for r in other.nodes()] == [f"{T}:a"]


def test_headers_are_those_tarfile_writes_and_long_names_survive(tmp_path: Path) -> None:
    from iscsikit.clean.backup import _TarWriter

    class Sink:
        def write(self, data: bytes) -> None:
            pass

    writer = _TarWriter(Sink())
    kinds = {"dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE, "file": tarfile.REGTYPE}
    for name, kind, link, size in [
        ("db/nodes/x", "dir", "", 0),
        ("db/static/t,a,3260,1,default", "link", "/etc/iscsi/nodes/t/a,3260,1", 0),
        ("db/nodes/t/a,3260,1/default", "file", "", 2100),
    ]:
        info = tarfile.TarInfo(name + ("/" if kind == "dir" else ""))
        info.mode, info.mtime, info.size, info.type, info.linkname = 0o640, writer.mtime, size, kinds[kind], link
        info.uname = info.gname = "root"
        ref = info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        assert writer._header(name.encode(), 0o640, size, kinds[kind], link.encode()) == ref
    long_target = "iqn.2026-11.org.example:" + "v" * 150
    snap = Snapshot()
    snap.add(SnapshotEntry(f"nodes/{long_target}", "dir", 0o700))
    snap.add(SnapshotEntry(f"nodes/{long_target}/10.0.0.1,3260", "file", 0o600, b"node.name = x\n"))
    snap.add(SnapshotEntry(f"static/{long_target},10.0.0.1,3260,1,default", "link", 0o777,
                           target=f"/etc/iscsi/nodes/{long_target}/10.0.0.1,3260,1"))  # fmt: skip
    back = read_backup(write_backup(tmp_path / "long.tar.gz", snap, {}, {}))
    assert sorted(back.snapshot.entries, key=lambda e: e.relpath) == sorted(snap.entries, key=lambda e: e.relpath)
