"""The executor on a synthetic host whose kernel and tools are simulated (see synthetic.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from iscsikit.clean.apply import ApplyReport, Executor
from iscsikit.clean.backup import read_backup, restore_backup
from iscsikit.clean.collect import JOURNAL_FILE
from iscsikit.clean.desired import parse_desired
from iscsikit.clean.model import Survey
from iscsikit.clean.plan import Kind, Plan, Selection, plan
from iscsikit.iscsiadm import Iscsiadm
from iscsikit.names import Portal
from tests.unit.clean.synthetic import SimulatedRunner, SyntheticHost, T, logout


class Run:
    def __init__(self, host: SyntheticHost) -> None:
        self.host = host
        self.runner = host.runner()

    def plan(self, sel: Selection) -> Plan:
        s = self.host.survey()
        assert isinstance(s, Survey)
        return plan(s, sel)

    def executor(self, force: bool = False, runner: SimulatedRunner | None = None) -> Executor:
        r = runner or self.runner
        return Executor(
            self.host.db,
            runner=r,
            iscsiadm=Iscsiadm(r, attempts=1),
            sysfs_root=self.host.sys,
            dev_root=self.host.dev,
            proc_root=self.host.proc,
            state_dir=self.host.state,
            force=force,
            lock_timeout=5,
            argv=["iscsikit", "clean", "--yes"],
        )

    def apply(self, sel: Selection, force: bool = False) -> ApplyReport:
        return self.executor(force or sel.force).apply(self.plan(sel))


@pytest.fixture
def run(host: SyntheticHost) -> Run:
    return Run(host)


def statuses(report: ApplyReport) -> list[tuple[str, str]]:
    return [(str(o.action.kind), o.status) for o in report.outcomes]


def sessions(host: SyntheticHost) -> list[str]:
    return sorted(os.listdir(host.sys / "class/iscsi_session"))


def stale_scene(host: SyntheticHost) -> tuple[int, int]:
    db = host.db
    db.new_node(f"{T}:healthy", "127.0.0.1:3260,1")
    healthy = host.session(f"{T}:healthy", "127.0.0.1:3260,1")
    db.new_discovery("127.0.0.1:3261")
    db.new_node(f"{T}:stale", "127.0.0.1:3261,1", discovery=db.discoveries()[0])
    db.update(db.nodes(f"{T}:stale")[0], {"node.session.auth.authmethod": "CHAP",
                                          "node.session.auth.password": "s3cret"})  # fmt: skip
    stale = host.session(f"{T}:stale", "127.0.0.1:3261,1", state="FAILED", conn_state="failed", luns={1: "blocked"})
    db.new_node(f"{T}:orphan-record", "127.0.0.1:3262,1")
    return healthy, stale


def test_stale_only_removes_the_stale_session_device_and_records_and_restore_undoes_it(
    run: Run, host: SyntheticHost
) -> None:
    healthy, stale = stale_scene(host)
    before = host.tree()
    stale_disk = host.disks_of(stale)[0]
    report = run.apply(Selection(stale_only=True))
    assert report.ok and statuses(report) == [
        ("remove-device", "done"),
        ("logout", "done"),
        ("delete-node", "done"),
        ("delete-discovery", "done"),
    ]
    # the LUN of a blocked session is deleted without a flush (which would hang), then the logout
    assert [c[0] for c in run.runner.calls] == ["iscsiadm"]
    assert run.runner.calls[0] == ["iscsiadm", "-m", "session", "-r", str(stale), "-u"]
    assert run.runner.writes[0][0].endswith("/delete") and stale_disk not in os.listdir(host.sys / "class/block")
    assert sessions(host) == [f"session{healthy}"]
    after = host.tree()
    assert {k for k in before if k not in after} == {
        f"nodes/{T}:stale",
        f"nodes/{T}:stale/127.0.0.1,3261,1",
        f"nodes/{T}:stale/127.0.0.1,3261,1/default",
        "send_targets/127.0.0.1,3261",
        "send_targets/127.0.0.1,3261/st_config",
        f"send_targets/127.0.0.1,3261/{T}:stale,127.0.0.1,3261,1,default",
    }
    assert {k: v for k, v in before.items() if k in after} == after, "nothing outside the plan changed"
    # the backup: 0600 (it holds the CHAP secret), exact copies, a manifest
    assert report.backup is not None
    assert stat.S_IMODE(os.stat(report.backup).st_mode) == 0o600
    backup = read_backup(report.backup)
    assert backup.manifest["db_root"] == str(host.db_root)
    assert [a["kind"] for a in backup.manifest["removed"]] == ["delete-node", "delete-discovery"]
    assert backup.manifest["argv"] == ["iscsikit", "clean", "--yes"]
    # idempotent: nothing left to do
    assert run.plan(Selection(stale_only=True)).actions == []
    assert not (host.state / JOURNAL_FILE).exists()
    # restore puts every byte, mode and link back
    restored = restore_backup(backup, host.db, host.state)
    assert host.tree() == before
    assert f"nodes/{T}:stale/127.0.0.1,3261,1/default" in restored.restored
    again = restore_backup(backup, host.db, host.state)
    assert again.restored == [] and host.tree() == before


def test_a_mounted_device_is_left_and_so_is_everything_depending_on_it(run: Run, host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:db", "127.0.0.1:3260,1")
    sid = host.session(f"{T}:db")
    host.mount(host.disks_of(sid)[0], "/mnt/db")
    before = host.tree()
    report = run.apply(Selection())
    assert not report.ok and [s for _, s in statuses(report)] == ["blocked"] * 3
    assert "mounted at /mnt/db" in report.outcomes[0].message
    assert host.tree() == before and sessions(host) == [f"session{sid}"]
    assert run.runner.calls == [] and run.runner.writes == [] and report.backup is None


def test_a_device_that_becomes_busy_after_planning_is_not_removed(run: Run, host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:db", "127.0.0.1:3260,1")
    sid = host.session(f"{T}:db")
    disk = host.disks_of(sid)[0]
    the_plan = run.plan(Selection())
    assert not the_plan.blocked
    host.open_fd(disk, 5150, "postgres")  # a process opens it between plan and apply
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("remove-device", "blocked"), ("logout", "blocked"), ("delete-node", "blocked")]
    assert report.outcomes[0].message == f"/dev/{disk} is open by pid 5150 (postgres)"
    assert report.outcomes[2].message == f"session {sid} is still logged in on it"
    assert sessions(host) == [f"session{sid}"] and host.db.nodes()


def test_a_multipath_map_that_becomes_busy_after_planning_is_not_flushed(run: Run, host: SyntheticHost) -> None:
    # The simulated `multipath -f` (like a map with queue_if_no_path) does not see an open file:
    # only the apply-time re-check of the map's users keeps the map and its paths.
    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    dm = host.multipath_map([host.disks_of(s1)[0], host.disks_of(s2)[0]])
    the_plan = run.plan(Selection())
    assert not the_plan.blocked
    host.open_fd(dm, 5150, "postgres")  # a process opens the map between plan and apply
    report = run.executor().apply(the_plan)
    assert not report.ok and statuses(report)[0] == ("flush-map", "blocked")
    assert "open by pid 5150 (postgres)" in report.outcomes[0].message
    assert not [c for c in run.runner.calls if c[:2] == ["multipath", "-f"]]
    assert (host.sys / f"class/block/{dm}").exists() and sessions(host) == sorted([f"session{s1}", f"session{s2}"])


def test_a_disk_that_appears_in_use_after_planning_blocks_the_logout(run: Run, host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:db", "127.0.0.1:3260,1")
    sid = host.session(f"{T}:db")
    the_plan = run.plan(Selection())
    assert not the_plan.blocked
    disk = host.lun(sid, 2)  # a LUN the plan never saw appears in the session, and LVM takes it
    lv = host.lvm([disk])
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("remove-device", "done"), ("logout", "blocked"), ("delete-node", "blocked")]
    assert report.outcomes[1].message == f"/dev/{disk} is held by {lv}; remove those first"
    assert sessions(host) == [f"session{sid}"] and not [c for c in run.runner.calls if c[0] == "iscsiadm"]
    assert host.db.nodes()


def test_a_sid_reused_by_another_target_is_not_logged_out(run: Run, host: SyntheticHost) -> None:
    sid = host.session(f"{T}:old", luns=())
    the_plan = run.plan(Selection())
    assert [a.kind for a in the_plan.actions if a.kind == Kind.LOGOUT] == [Kind.LOGOUT]
    logout(host.sys, sid)  # between plan and apply the session ends, and the kernel gives its SID
    host._next["sid"] = sid  # to a new session of another target
    assert host.session(f"{T}:new", luns=()) == sid
    report = run.executor().apply(the_plan)
    assert ("logout", "gone") in statuses(report)
    assert f"SID {sid} is now a session of {T}:new" in [o.message for o in report.outcomes]
    assert sessions(host) == [f"session{sid}"] and not [c for c in run.runner.calls if c[0] == "iscsiadm"]


def test_force_removes_a_mounted_device(run: Run, host: SyntheticHost) -> None:
    sid = host.session(f"{T}:db")
    host.mount(host.disks_of(sid)[0], "/mnt/db")
    report = run.apply(Selection(force=True))
    assert report.ok and sessions(host) == []


def test_multipath_map_flushed_then_paths_removed_then_logouts(run: Run, host: SyntheticHost) -> None:
    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    host.map_partition(host.multipath_map([host.disks_of(s1)[0], host.disks_of(s2)[0]]))
    report = run.apply(Selection())
    assert report.ok
    assert [c[:2] for c in run.runner.calls] == [
        ["multipath", "-f"],
        ["blockdev", "--flushbufs"],
        ["blockdev", "--flushbufs"],
        ["iscsiadm", "-m"],
        ["iscsiadm", "-m"],
    ]
    assert sessions(host) == [] and not [n for n in os.listdir(host.sys / "class/block") if n.startswith("dm-")]


def test_one_path_leaves_the_map_through_multipathd(run: Run, host: SyntheticHost) -> None:
    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    disks = [host.disks_of(s1)[0], host.disks_of(s2)[0]]
    dm = host.multipath_map(disks)
    host.mount(dm, "/data")
    report = run.apply(Selection(portals=(Portal.parse("127.0.0.1"),)))
    assert report.ok, statuses(report)
    assert ["multipathd", "del", "path", disks[0]] in run.runner.calls
    assert sorted(os.listdir(host.sys / f"class/block/{dm}/slaves")) == [disks[1]]
    assert sessions(host) == [f"session{s2}"]


def test_killed_after_the_logouts_a_rerun_converges(run: Run, host: SyntheticHost, monkeypatch: Any) -> None:
    _healthy, _stale = stale_scene(host)

    def killed(*_args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Executor, "_records", killed)
    with pytest.raises(KeyboardInterrupt):
        run.apply(Selection(stale_only=True))
    assert (host.state / JOURNAL_FILE).exists()
    monkeypatch.undo()
    the_plan = run.plan(Selection(stale_only=True))  # the session that made them stale is gone now
    assert [str(a.kind) for a in the_plan.actions] == ["delete-node", "delete-discovery"]
    assert all("interrupted" in a.detail for a in the_plan.actions if a.kind is Kind.DELETE_NODE)
    assert run.executor().apply(the_plan).ok
    assert run.plan(Selection(stale_only=True)).actions == []
    assert [r.target for r in host.db.nodes()] == [f"{T}:healthy", f"{T}:orphan-record"]


def test_killed_during_record_deletion_a_rerun_converges(run: Run, host: SyntheticHost, monkeypatch: Any) -> None:
    for i in range(20):
        host.db.new_node(f"{T}:v{i:02d}", f"10.0.0.{i}:3260,1")
    calls = {"n": 0}
    real_unlink = os.unlink

    def dying_unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", dying_unlink)
    with pytest.raises(KeyboardInterrupt):
        run.apply(Selection(targets=(f"{T}:v*",)))
    monkeypatch.undo()
    left = len(host.db.nodes())
    assert 0 < left < 20
    assert run.apply(Selection(targets=(f"{T}:v*",))).ok
    assert host.db.nodes() == [] and not os.listdir(host.db_root / "nodes") and not os.listdir(host.db_root / "static")


def test_a_discovery_record_that_found_a_new_node_since_the_plan_is_left(run: Run, host: SyntheticHost) -> None:
    db = host.db
    db.new_discovery("10.0.0.1:3260")
    db.new_node(f"{T}:a", "10.0.0.1:3260,1", discovery=db.discoveries()[0])
    the_plan = run.plan(Selection(targets=(f"{T}:a",)))
    assert [str(a.kind) for a in the_plan.actions] == ["delete-node", "delete-discovery"]
    db.new_node(f"{T}:b", "10.0.0.1:3260,1", discovery=db.discoveries()[0])
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("delete-node", "done"), ("delete-discovery", "blocked")]
    assert "not in the plan" in report.outcomes[1].message
    assert [r.target for r in db.nodes()] == [f"{T}:b"] and db.discoveries()


def test_an_iface_still_bound_by_a_record_is_left(run: Run, host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth9")
    db.new_node(f"{T}:old", "10.0.0.1:3260", iface="eth9")  # old style: bound by its contents, not its path
    the_plan = run.plan(Selection(desired=parse_desired(f"{T}:old\n")))
    assert [str(a.kind) for a in the_plan.actions] == ["delete-iface"]
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("delete-iface", "blocked")] and "bound to it" in report.outcomes[0].message
    assert db.ifaces(builtin=False)


def test_reset_keeps_a_directory_that_holds_kept_records(run: Run, host: SyntheticHost) -> None:
    (host.db_root / "iscsid.conf").write_text("# conf\n")
    host.db.new_node(f"{T}:live", "127.0.0.1:3260,1")
    host.session(f"{T}:live")
    host.db.new_node(f"{T}:old", "10.0.0.1:3260,1")
    host.db.new_discovery("10.0.0.9:3260")
    report = run.apply(Selection(reset=True, stale_only=True, keep_config=False))
    assert report.ok, statuses(report)
    got = dict((o.action.path, o.status) for o in report.outcomes)
    assert "static" not in got and "nodes" not in got and got["send_targets"] == "done"
    assert got["iscsid.conf"] == "done" and not (host.db_root / "iscsid.conf").exists()
    assert [r.target for r in host.db.nodes()] == [f"{T}:live"]
    backup = read_backup(report.backup or "")
    assert "iscsid.conf" in {e.relpath for e in backup.snapshot.entries}


def test_attachment_records_are_backed_up_and_restored_byte_for_byte(run: Run, host: SyntheticHost) -> None:
    host.attachment("pvc-stale", f"{T}:gone")
    path = host.state / "attachments/pvc-stale.json"
    original = path.read_bytes()
    report = run.apply(Selection(stale_only=True))
    assert statuses(report) == [("delete-attachment", "done")] and not path.exists()
    restore_backup(read_backup(report.backup or ""), host.db, host.state)
    assert path.read_bytes() == original


def test_what_is_already_gone_counts_as_done(run: Run, host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    sid = host.session(f"{T}:a", "10.0.0.1:3260,1")
    the_plan = run.plan(Selection())
    run.runner.run(["iscsiadm", "-m", "session", "-r", str(sid), "-u"])
    host.db.delete(host.db.nodes()[0])
    report = run.executor().apply(the_plan)
    assert report.ok and [s for _, s in statuses(report)] == ["gone", "gone", "gone"]


def test_an_explicit_backup_path_is_used_and_never_overwritten(run: Run, host: SyntheticHost, tmp_path: Path) -> None:
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    target = tmp_path / "b.tar.gz"
    ex = run.executor()
    ex.backup_path = target
    assert ex.apply(run.plan(Selection())).backup == str(target)
    host.db.new_node(f"{T}:b", "10.0.0.2:3260,1")
    from iscsikit.errors import BackupError

    with pytest.raises(BackupError, match="already exists"):
        ex.apply(run.plan(Selection()))
    assert [r.target for r in host.db.nodes()] == [f"{T}:b"], "nothing is removed without a backup"


def test_the_lock_is_given_back_between_slices_and_changed_records_are_left(
    run: Run, host: SyntheticHost, monkeypatch: Any
) -> None:
    import iscsikit.clean.apply as apply_module
    from iscsikit.db.lock import DbLock

    for i in range(5):
        host.db.new_node(f"{T}:v{i}", f"10.0.0.{i}:3260,1")
    the_plan = run.plan(Selection())
    real_write = apply_module.write_backup

    def write_then_someone_edits(*args: Any) -> Path:
        path = real_write(*args)
        host.db.update(host.db.nodes(f"{T}:v3")[0], {"node.startup": "automatic"})  # iscsiadm -o update, say
        return path

    acquired = []
    real_acquire = DbLock.acquire

    def counting_acquire(self: DbLock, timeout: float | None = None) -> None:
        acquired.append(self.held)
        real_acquire(self, timeout)

    monkeypatch.setattr(apply_module, "write_backup", write_then_someone_edits)
    monkeypatch.setattr(apply_module, "LOCK_SLICE", 0.0)
    monkeypatch.setattr(DbLock, "acquire", counting_acquire)
    report = run.executor().apply(the_plan)
    assert acquired.count(False) >= 6, "one hold for the backup, then one per slice"
    assert [o.status for o in report.outcomes] == ["done"] * 3 + ["blocked", "done"]
    assert "changed since the backup was taken" in report.outcomes[3].message
    assert [r.target for r in host.db.nodes()] == [f"{T}:v3"]


def test_an_unwritable_state_dir_stops_the_run_before_any_change(run: Run, host: SyntheticHost) -> None:
    from iscsikit.errors import BackupError

    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    sid = host.session(f"{T}:a", "10.0.0.1:3260,1")
    the_plan = run.plan(Selection())
    (host.state / "clean").write_text("a file where a directory belongs")
    with pytest.raises(BackupError, match=r"cannot write the journal .*nothing was changed"):
        run.executor().apply(the_plan)
    assert sessions(host) == [f"session{sid}"] and host.db.nodes() and run.runner.calls == []
