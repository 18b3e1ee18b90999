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
    assert backup.manifest["link_root"] == str(host.db.link_root)
    assert backup.manifest["selection"] == Selection(stale_only=True).to_json()
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
    host.open_fd(dm, 5150, "postgres")  # processes open the map between plan and apply
    host.open_fd(dm, 5151, "pg_dump")
    report = run.executor().apply(the_plan)
    assert not report.ok and statuses(report)[0] == ("flush-map", "blocked")
    assert report.outcomes[0].message == (f"mpatha ({dm}) is open by pid 5150 (postgres); open by pid 5151 (pg_dump)")
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
    assert (
        report.ok
        and statuses(report) == [("flush-map", "done")] + [("remove-device", "done")] * 2 + [("logout", "done")] * 2
    )
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


# ---- apply-time re-checks and every outcome a user reads (mutation testing, issue 14) ----------------


class FailingRunner(SimulatedRunner):
    """The synthetic host's tools, except that commands containing ``fail`` exit ``code`` with ``err``
    (iscsiadm 2.1.8's texts) and sysfs writes to ``fail_writes`` paths raise EACCES."""

    def __init__(self, sys_root: Path, fail: str = "", code: int = 8, err: str = "", fail_writes: str = "") -> None:
        super().__init__(sys_root)
        self.fail, self.code, self.err, self.fail_writes = fail, code, err, fail_writes

    def run(self, argv: Any, **kw: Any) -> Any:  # type: ignore[override]
        from iscsikit.errors import CommandError
        from iscsikit.runner import CommandResult

        argv = [str(a) for a in argv]
        if self.fail and self.fail in " ".join(argv):
            self.calls.append(argv)
            if kw.get("check", True) and self.code not in set(kw.get("ok_codes", (0,))):
                raise CommandError(argv, self.code, "", self.err)
            return CommandResult(argv, self.code, "", self.err)
        return super().run(argv, **kw)

    def write_file(self, path: Any, data: str) -> None:
        if self.fail_writes and self.fail_writes in str(path):
            self.writes.append((str(path), data))
            raise PermissionError(13, "Permission denied", str(path))
        super().write_file(path, data)


def test_the_connectors_lock_held_by_a_csi_call_fails_the_runtime_steps_and_changes_nothing(
    run: Run, host: SyntheticHost
) -> None:
    from iscsikit.connector.locks import Locks

    host.db.new_node(f"{T}:busy", "127.0.0.1:3260,1")
    sid = host.session(f"{T}:busy")
    host.attachment("pvc-gone", f"{T}:gone")
    the_plan = run.plan(Selection(targets=(f"{T}:busy", f"{T}:gone")))
    ex = run.executor()
    ex.lock_timeout = 0.05
    with Locks(host.state).target(f"{T}:busy"), Locks(host.state).target(f"{T}:gone"):
        report = ex.apply(the_plan)
    assert statuses(report) == [
        ("remove-device", "failed"),
        ("logout", "failed"),
        ("delete-node", "blocked"),
        ("delete-attachment", "failed"),
    ]
    for o in (report.outcomes[0], report.outcomes[1]):
        assert o.message.startswith(f"could not take the connector's lock on {T}:busy: ")
    assert report.outcomes[2].message == f"session {sid} is still logged in on it"
    assert report.outcomes[3].message.startswith(f"could not take the connector's lock on {T}:gone")
    assert not report.ok and report.counts() == {"done": 0, "gone": 0, "blocked": 1, "failed": 3}
    assert sessions(host) == [f"session{sid}"] and host.disks_of(sid) and host.db.nodes()
    assert (host.state / "attachments/pvc-gone.json").exists()
    assert run.runner.calls == [] and run.runner.writes == []
    # once the CSI call is done, the same plan goes through
    assert run.executor().apply(the_plan).ok and sessions(host) == []


def test_a_holder_that_appears_after_planning_blocks_the_removal_and_the_logout(run: Run, host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:db", "127.0.0.1:3260,1")
    sid = host.session(f"{T}:db")
    disk = host.disks_of(sid)[0]
    the_plan = run.plan(Selection())
    lv = host.lvm([disk])  # LVM activates a volume group on it between plan and apply
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("remove-device", "blocked"), ("logout", "blocked"), ("delete-node", "blocked")]
    assert report.outcomes[0].message == f"/dev/{disk} is held by {lv}; remove those first"
    assert report.outcomes[1].message == f"devices not removed: {disk}: /dev/{disk} is held by {lv}; remove those first"
    assert sessions(host) == [f"session{sid}"] and disk in os.listdir(host.sys / "class/block")
    # forced, the holder does not stop it
    assert run.executor(force=True).apply(the_plan).ok and sessions(host) == []


def test_a_map_that_gains_a_holder_after_planning_keeps_its_paths_and_sessions(run: Run, host: SyntheticHost) -> None:
    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    disks = [host.disks_of(s1)[0], host.disks_of(s2)[0]]
    dm = host.multipath_map(disks)
    the_plan = run.plan(Selection())
    lv = host.lvm([dm])
    report = run.executor().apply(the_plan)
    assert (
        statuses(report)
        == [("flush-map", "blocked")] + [("remove-device", "blocked")] * 2 + [("logout", "blocked")] * 2
    )
    assert report.outcomes[0].message == f"multipath map mpatha ({dm}) is held by {lv}"
    assert [o.message for o in report.outcomes[1:3]] == [f"its multipath map {dm} was not flushed"] * 2
    assert report.outcomes[3].message == f"devices not removed: {disks[0]}: its multipath map {dm} was not flushed"
    assert sessions(host) == sorted([f"session{s1}", f"session{s2}"]) and run.runner.calls == []


def test_a_map_already_gone_and_a_lun_reused_by_another_session_count_as_gone(run: Run, host: SyntheticHost) -> None:
    from tests.unit.clean.synthetic import flush_map

    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    host.multipath_map([host.disks_of(s1)[0], host.disks_of(s2)[0]])
    the_plan = run.plan(Selection())
    assert flush_map(host.sys, "mpatha")[0] == 0  # someone flushed it meanwhile
    report = run.executor().apply(the_plan)
    assert report.ok and statuses(report)[0] == ("flush-map", "gone")
    assert not [c for c in run.runner.calls if c[0] == "multipath"]


def test_a_device_whose_hctl_now_belongs_to_another_session_is_left(run: Run, host: SyntheticHost) -> None:
    sid = host.session(f"{T}:old", luns=[1])
    hctl = os.path.basename(os.path.realpath(host.sys / f"class/block/{host.disks_of(sid)[0]}/device"))
    the_plan = run.plan(Selection())
    logout(host.sys, sid)
    host._next["host"] = int(hctl.split(":")[0])  # the kernel reuses the SCSI host number
    new = host.session(f"{T}:new", luns=[1])
    ex = run.executor()
    report = ex.apply(Plan([a for a in the_plan.actions if a.kind is Kind.REMOVE_DEVICE], [], the_plan.selection))
    assert statuses(report) == [("remove-device", "gone")]
    assert report.outcomes[0].message == f"{hctl} now belongs to another session"
    assert host.disks_of(new) and run.runner.writes == []


def test_a_controller_lun_of_a_gone_session_is_deleted_through_sysfs(run: Run, host: SyntheticHost) -> None:
    sid = host.session(f"{T}:orphaned", luns=(), controller_lun0=True)
    os.unlink(host.sys / f"class/iscsi_session/session{sid}")
    os.unlink(host.sys / f"class/iscsi_connection/connection{sid}:0")
    the_plan = run.plan(Selection())
    assert [(str(a.kind), a.device) for a in the_plan.actions] == [("remove-device", f"{sid + 1}:0:0:0")]
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("remove-device", "done")]
    assert run.runner.writes == [(f"{the_plan.actions[0].subject.sys_path}/delete", "1")]
    assert not os.path.lexists(host.sys / f"bus/scsi/devices/{sid + 1}:0:0:0")


def test_a_failing_sysfs_delete_and_a_failing_logout_are_reported_as_failed(run: Run, host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:a", "127.0.0.1:3260,1")
    sid = host.session(f"{T}:a", luns={1: "blocked"})
    the_plan = run.plan(Selection())
    runner = FailingRunner(host.sys, fail_writes="/delete")
    report = run.executor(runner=runner).apply(the_plan)
    assert statuses(report) == [("remove-device", "failed"), ("logout", "blocked"), ("delete-node", "blocked")]
    assert "Permission denied" in report.outcomes[0].message and "/device/delete" in report.outcomes[0].message
    assert report.outcomes[1].message.startswith("devices not removed: ")
    err = "iscsiadm: Could not logout of [sid: 1]: initiator reported error (8 - connection timed out)\n"
    runner = FailingRunner(host.sys, fail="-u", code=8, err=err)
    report = run.executor(runner=runner).apply(the_plan)
    assert statuses(report) == [("remove-device", "done"), ("logout", "failed"), ("delete-node", "blocked")]
    assert "connection timed out" in report.outcomes[1].message
    assert report.outcomes[2].message == f"session {sid} is still logged in on it"
    assert sessions(host) == [f"session{sid}"] and host.db.nodes()


def test_a_session_that_logs_in_after_planning_keeps_its_record_and_attachment(run: Run, host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth1")
    db.new_node(f"{T}:a", "127.0.0.1:3260,1")
    db.new_node(f"{T}:a", "127.0.0.1:3260,1", iface="eth1")
    db.new_node(f"{T}:a", "127.0.0.2:3260,1")
    db.new_node(f"{T}:b", "127.0.0.1:3260,1")
    db.new_node(f"{T}:c", "127.0.0.1:3261,1")
    host.attachment("pvc-a", f"{T}:a")
    host.attachment("pvc-b", f"{T}:b", ("127.0.0.1:3260",))  # not the eth1 session's: another iface
    the_plan = run.plan(Selection(targets=(f"{T}:*",)))
    assert sorted(str(a.kind) for a in the_plan.actions) == ["delete-attachment"] * 2 + ["delete-node"] * 5
    sid = host.session(f"{T}:a", "127.0.0.1:3260,1")  # a CSI NodeStage logs in meanwhile
    host.session(f"{T}:b", "127.0.0.1:3260,1", iface="eth1")  # another iface: not b's record
    c_sid = host.session(f"{T}:c", "127.0.0.1:3261,1")
    report = run.executor().apply(the_plan)
    got = {(a.subject.volume_id if (a := o.action).kind is Kind.DELETE_ATTACHMENT else a.path): (o.status, o.message)
           for o in report.outcomes}  # fmt: skip
    assert got == {
        f"nodes/{T}:a/127.0.0.1,3260,1/default": ("blocked", f"session {sid} is still logged in on it"),
        f"nodes/{T}:a/127.0.0.1,3260,1/eth1": ("done", ""),
        f"nodes/{T}:a/127.0.0.2,3260,1/default": ("done", ""),
        f"nodes/{T}:b/127.0.0.1,3260,1/default": ("done", ""),
        f"nodes/{T}:c/127.0.0.1,3261,1/default": ("blocked", f"session {c_sid} is still logged in on it"),
        "pvc-a": ("blocked", f"session {sid} of it is still logged in"),
        "pvc-b": ("done", ""),
    }
    assert [(r.target, r.address, r.iface) for r in db.nodes()] == [
        (f"{T}:a", "127.0.0.1", "default"),
        (f"{T}:c", "127.0.0.1", "default"),
    ]
    assert (host.state / "attachments/pvc-a.json").exists() and not (host.state / "attachments/pvc-b.json").exists()
    manifest = read_backup(report.backup or "").manifest
    assert len(manifest["removed"]) == 4 and "pvc-a" not in str(manifest["removed"])
    # forced, the live session does not keep them
    report = run.executor(force=True).apply(the_plan)
    assert report.ok and db.nodes() == [] and not (host.state / "attachments/pvc-a.json").exists()


def test_an_attachment_record_gone_or_unreadable_at_apply_time(run: Run, host: SyntheticHost) -> None:
    host.attachment("pvc-1", f"{T}:gone")
    host.attachment("pvc-2", f"{T}:gone", lun=2)
    the_plan = run.plan(Selection())
    (host.state / "attachments/pvc-1.json").unlink()
    (host.state / "attachments/pvc-2.json").unlink()
    (host.state / "attachments/pvc-2.json").mkdir()  # cannot be read (root reads any file)
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("delete-attachment", "gone"), ("delete-attachment", "failed")]
    assert report.outcomes[1].message == f"cannot read {host.state}/attachments/pvc-2.json: Is a directory"
    assert report.backup is None and (host.state / "attachments/pvc-2.json").is_dir()


def test_an_unreadable_attachment_record_is_deleted_as_a_file(run: Run, host: SyntheticHost) -> None:
    (host.state / "attachments").mkdir()
    bad = host.state / "attachments/broken.json"
    bad.write_text("{not json")
    report = run.apply(Selection(stale_only=True))
    assert statuses(report) == [("delete-attachment", "done")] and not bad.exists()
    assert read_backup(report.backup or "").manifest["removed"][0]["kind"] == "delete-attachment"


def test_every_record_kind_is_deleted_and_the_empty_directories_go(run: Run, host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth9")
    db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    db.new_node(f"{T}:a", "10.0.0.1:3260,1", iface="eth9")
    db.new_node(f"{T}:old", "10.0.0.2:3260")  # old style: the record is a file in the target directory
    os.symlink(f"{host.db_root}/nodes/{T}:x/10.0.0.7,3260,1", host.db_root / f"static/{T}:x,10.0.0.7,3260,1,default")
    (host.db_root / f"nodes/{T}:junk").mkdir()
    (host.db_root / f"nodes/{T}:junk/not-a-portal").write_text("x")  # junk was all its target directory held
    report = run.apply(Selection(desired=parse_desired(f"{T}:a 10.0.0.1:3260 iface=eth9\n")))
    assert report.ok, statuses(report)
    assert sorted(statuses(report)) == [
        ("delete-entry", "done"),
        ("delete-link", "done"),
        ("delete-node", "done"),
        ("delete-node", "done"),
    ]
    tree = host.tree()
    assert f"nodes/{T}:a/10.0.0.1,3260,1/eth9" in tree and f"nodes/{T}:a/10.0.0.1,3260,1/default" not in tree
    assert f"nodes/{T}:old" not in tree and f"nodes/{T}:junk" not in tree
    assert os.listdir(host.db_root / "static") == [f"{T}:a,10.0.0.1,3260,1,eth9"]  # the kept record's link
    # the last record of the portal takes the portal and target directories with it
    report = run.apply(Selection())
    assert report.ok and [k for k in host.tree() if k.startswith("nodes/")] == []
    assert ("delete-iface", "done") in statuses(report) and not db.ifaces(builtin=False)


def test_reset_leaves_a_directory_that_gained_an_entry_and_removes_the_config(run: Run, host: SyntheticHost) -> None:
    (host.db_root / "iscsid.conf").write_text("# conf\n")
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    the_plan = run.plan(Selection(reset=True, keep_config=False))
    (host.db_root / "ifaces").mkdir(exist_ok=True)
    (host.db_root / "ifaces/new-iface").write_text("iface.iscsi_ifacename = new-iface\n")  # written meanwhile
    (host.db_root / "iscsid.conf").unlink()
    report = run.executor().apply(the_plan)
    got = {o.action.path: (o.status, o.message) for o in report.outcomes if o.action.kind is not Kind.DELETE_NODE}
    assert got["ifaces"] == ("blocked", "not empty: kept records remain (new-iface)")
    assert got["nodes"] == ("done", "") and got["iscsid.conf"] == ("gone", "")
    assert not (host.db_root / "nodes").exists() and (host.db_root / "ifaces/new-iface").exists()


def test_an_iface_a_session_started_using_is_left(run: Run, host: SyntheticHost) -> None:
    host.db.new_iface("eth9")
    host.db.new_iface("eth8")
    the_plan = run.plan(Selection())
    assert sorted(a.path for a in the_plan.actions) == ["ifaces/eth8", "ifaces/eth9"]
    host.session(f"{T}:a", iface="eth9")
    (host.db_root / "ifaces/eth8").unlink()
    report = run.executor().apply(the_plan)
    assert sorted((o.action.path, o.status, o.message) for o in report.outcomes) == [
        ("ifaces/eth8", "gone", ""),
        ("ifaces/eth9", "blocked", "a session uses it"),
    ]
    assert (host.db_root / "ifaces/eth9").exists()


def test_a_record_that_cannot_be_deleted_is_reported_failed_naming_it(run: Run, host: SyntheticHost) -> None:
    (host.db_root / "iscsid.conf").write_text("# conf\n")
    the_plan = run.plan(Selection(reset=True, keep_config=False))
    (host.db_root / "iscsid.conf").unlink()
    (host.db_root / "iscsid.conf").mkdir()  # replaced by a directory meanwhile: unlink fails
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("delete-config", "failed")]
    assert report.outcomes[0].message == f"{host.db_root}/iscsid.conf: Is a directory"
    assert (host.db_root / "iscsid.conf").is_dir()


def test_the_journal_lists_every_record_kind_before_anything_changes(
    run: Run, host: SyntheticHost, monkeypatch: Any
) -> None:
    from iscsikit.clean.collect import read_journal
    from iscsikit.clean.model import PendingItem

    db = host.db
    db.new_iface("eth9")
    db.new_discovery("10.0.0.1:3260")
    db.new_node(f"{T}:a", "10.0.0.1:3260,1", discovery=db.discoveries()[0])
    (host.db_root / "static").mkdir(exist_ok=True)
    link = f"static/{T}:x,10.0.0.7,3260,1,default"
    os.symlink(f"{host.db_root}/nodes/{T}:x/10.0.0.7,3260,1", host.db_root / link)
    host.attachment("pvc-1", f"{T}:gone")
    (host.state / "attachments/broken.json").write_text("{")  # unreadable: no key to journal it by
    (host.db_root / "iscsid.conf").write_text("# conf\n")

    def killed(*_args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Executor, "_records", killed)
    with pytest.raises(KeyboardInterrupt):
        run.apply(Selection(reset=True, keep_config=False))
    assert sorted(read_journal(host.state), key=lambda i: (i.kind, i.key)) == [
        PendingItem("attachment", "pvc-1"),
        PendingItem("discovery", db.discoveries()[0].relpath),
        PendingItem("iface", "eth9"),
        PendingItem("link", link),
        PendingItem("node", db.nodes()[0].relpath),
    ]


def test_junk_a_restore_would_refuse_is_left_and_the_rest_goes_restorably(
    run: Run, host: SyntheticHost, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "keep").mkdir(parents=True)
    (outside / "keep/data").write_text("precious")
    junk = host.db_root / f"nodes/{T}:j/junkdir"
    (junk / "sub").mkdir(parents=True)  # as deep as iscsiadm's layout goes: restorable
    (junk / "file").write_text("y")
    deep = host.db_root / f"nodes/{T}:k/junkdir/sub/deeper"
    deep.mkdir(parents=True)
    (deep / "file").write_text("x")
    os.symlink(outside / "keep", host.db_root / f"nodes/{T}:l")  # a link where a target directory belongs
    the_plan = run.plan(Selection(targets=(f"{T}:j", f"{T}:k", f"{T}:l")))
    assert sorted(a.path or "" for a in the_plan.actions) == [
        f"nodes/{T}:j/junkdir",
        f"nodes/{T}:k/junkdir",
        f"nodes/{T}:l/data",  # seen through the link: outside the DB
    ]
    before = host.tree()
    report = run.executor(force=True).apply(the_plan)
    got = {o.action.path: (o.status, o.message) for o in report.outcomes}
    assert got[f"nodes/{T}:j/junkdir"] == ("done", "")
    assert (
        got[f"nodes/{T}:k/junkdir"][0] == "blocked"
        and "deeper than iscsiadm's layout of nodes/" in (got[f"nodes/{T}:k/junkdir"][1])
    )
    assert got[f"nodes/{T}:l/data"][0] == "blocked" and got[f"nodes/{T}:l/data"][1].endswith("; remove it by hand")
    assert (outside / "keep/data").read_text() == "precious" and (deep / "file").exists()
    assert not (host.db_root / f"nodes/{T}:j").exists()
    backup = read_backup(report.backup or "")  # readable: restore accepts every member
    restore_backup(backup, host.db, host.state)
    assert host.tree() == before


def test_blocked_and_failed_steps_are_logged_with_their_reason(
    run: Run, host: SyntheticHost, caplog: pytest.LogCaptureFixture
) -> None:
    host.db.new_node(f"{T}:db", "127.0.0.1:3260,1")
    sid = host.session(f"{T}:db")
    disk = host.disks_of(sid)[0]
    host.mount(disk, "/mnt/db")
    seen: list[str] = []
    with caplog.at_level("WARNING", logger="iscsikit.clean"):
        run.executor().apply(run.plan(Selection()), on_step=lambda o: seen.append(o.status))
    assert caplog.messages == [
        f"remove-device: blocked: /dev/{disk} is mounted at /mnt/db",
        f"logout: blocked: /dev/{disk} is mounted at /mnt/db",
        f"delete-node: blocked: session {sid} stays logged in (/dev/{disk} is mounted at /mnt/db)",
    ]
    assert seen == ["blocked"] * 3
    caplog.clear()
    with caplog.at_level("WARNING", logger="iscsikit.clean"):
        report = run.executor(force=True).apply(run.plan(Selection(force=True)))
    assert report.ok and caplog.messages == []


def test_the_executor_looks_at_the_hosts_own_trees_by_default(host: SyntheticHost) -> None:
    runner = host.runner()
    ex = Executor(host.db, runner=runner, iscsiadm=Iscsiadm(runner), state_dir=host.state)
    assert (str(ex.root.path), str(ex.proc_root), str(ex.scsi.dev_root)) == ("/sys", "/proc", "/dev")
    assert ex.force is False and ex.lock_timeout == 30.0 and ex.backup_path is None and ex.argv == []


def test_a_lun_that_is_not_running_is_deleted_without_the_in_use_checks(run: Run, host: SyntheticHost) -> None:
    # An exclusive open or a flush of a LUN whose session is blocked would hang: it is deleted as it is.
    sid = host.session(f"{T}:dead", state="FAILED", luns={1: "blocked"})
    disk = host.disks_of(sid)[0]
    the_plan = run.plan(Selection(stale_only=True))
    host.lvm([disk])  # device-mapper grabs it between plan and apply
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("remove-device", "done"), ("logout", "done")]
    assert not [c for c in run.runner.calls if c[0] == "blockdev"] and sessions(host) == []


def test_a_discovery_record_goes_with_the_dangling_links_in_its_directory(run: Run, host: SyntheticHost) -> None:
    db = host.db
    db.new_discovery("10.0.0.1:3260")
    d = db.discoveries()[0]
    dangling = f"{d.dir_relpath}/{T}:x,10.0.0.5,3260,1,default"
    os.symlink(f"{host.db_root}/nodes/{T}:x/10.0.0.5,3260,1", host.db_root / dangling)
    the_plan = run.plan(Selection(portals=(Portal.parse("10.0.0.1"),)))
    assert [str(a.kind) for a in the_plan.actions] == ["delete-discovery"]
    report = run.executor().apply(the_plan)
    assert report.ok and not os.path.lexists(host.db_root / d.dir_relpath) and db.discoveries() == []


def test_records_are_deleted_in_one_hold_of_the_lock_when_it_is_quick(
    run: Run, host: SyntheticHost, monkeypatch: Any
) -> None:
    from iscsikit.db.lock import DbLock

    for i in range(5):
        host.db.new_node(f"{T}:v{i}", f"10.0.0.{i}:3260,1")
    acquired = []
    real_acquire = DbLock.acquire

    def counting_acquire(self: DbLock, timeout: float | None = None) -> None:
        acquired.append(self.held)
        real_acquire(self, timeout)

    monkeypatch.setattr(DbLock, "acquire", counting_acquire)
    report = run.apply(Selection())
    assert report.ok and [o.status for o in report.outcomes] == ["done"] * 5
    assert acquired.count(False) == 2, "one hold for the backup, one for the deletions"
    assert host.db.nodes() == []


def test_a_reset_directory_that_is_not_empty_names_what_is_left(run: Run, host: SyntheticHost) -> None:
    host.db.new_iface("eth1")
    the_plan = run.plan(Selection(reset=True))
    for name in ("d", "b", "a", "c"):
        (host.db_root / f"ifaces/new-{name}").write_text(f"iface.iscsi_ifacename = new-{name}\n")
    report = run.executor().apply(the_plan)
    got = {o.action.path: (o.status, o.message) for o in report.outcomes}
    assert got["ifaces/eth1"] == ("done", "")
    assert got["ifaces"] == ("blocked", "not empty: kept records remain (new-a, new-b, new-c)")


def test_every_command_has_a_timeout_and_is_marked_as_a_change(run: Run, host: SyntheticHost) -> None:
    # --dry-run relies on `mutating` (the Runner skips those); a hung multipathd or iscsiadm on `timeout`.
    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    host.mount(host.multipath_map([host.disks_of(s1)[0], host.disks_of(s2)[0]]), "/data")
    assert run.apply(Selection(portals=(Portal.parse("127.0.0.1"),))).ok
    assert [c[0] for c in run.runner.calls] == ["multipathd", "blockdev", "iscsiadm"]
    assert all(timeout is not None and mutating for timeout, mutating in run.runner.flags), run.runner.flags
    assert run.runner.flags[0] == (30, True)


def test_a_lun_not_running_does_not_hold_up_its_sessions_logout(run: Run, host: SyntheticHost) -> None:
    sid = host.session(f"{T}:a", luns=[1])
    the_plan = run.plan(Selection())
    dead = host.lun(sid, 2, state="offline")  # appears, already given up on, and something holds it
    host.lvm([dead])
    report = run.executor().apply(the_plan)
    assert statuses(report) == [("remove-device", "done"), ("logout", "done")] and sessions(host) == []


def test_what_goes_away_while_the_backup_is_written_counts_as_gone(
    run: Run, host: SyntheticHost, monkeypatch: Any
) -> None:
    import shutil

    import iscsikit.clean.apply as apply_module

    db = host.db
    db.new_discovery("10.0.0.1:3260")
    (host.db_root / f"nodes/{T}:j").mkdir(parents=True)
    (host.db_root / f"nodes/{T}:j/junk").write_text("x")
    host.attachment("pvc-1", f"{T}:gone")
    host.attachment("pvc-2", f"{T}:gone", lun=2)
    the_plan = run.plan(Selection())
    real_write = apply_module.write_backup

    def write_then_someone_cleans(*args: Any) -> Path:
        path = real_write(*args)
        shutil.rmtree(host.db_root / "send_targets/10.0.0.1,3260")
        (host.db_root / f"nodes/{T}:j/junk").unlink()
        (host.state / "attachments/pvc-1.json").unlink()
        (host.state / "attachments/pvc-2.json").unlink()
        (host.state / "attachments/pvc-2.json").mkdir()
        (host.state / "attachments/pvc-2.json/x").write_text("")
        return path

    monkeypatch.setattr(apply_module, "write_backup", write_then_someone_cleans)
    report = run.executor().apply(the_plan)
    got = {(str(o.action.kind), o.status) for o in report.outcomes}
    assert got >= {("delete-discovery", "gone"), ("delete-entry", "gone"), ("delete-attachment", "gone")}
    failed = [o for o in report.outcomes if o.status == "failed"]
    assert [(str(o.action.kind), o.message) for o in failed] == [
        ("delete-attachment", f"{host.state}/attachments/pvc-2.json: Is a directory")
    ]


def test_junk_elsewhere_never_takes_a_kept_target_directory(run: Run, host: SyntheticHost) -> None:
    (host.db_root / f"nodes/{T}:e").mkdir(parents=True)  # empty, but kept
    (host.db_root / f"send_targets/{T}:e").mkdir(parents=True)
    (host.db_root / f"send_targets/{T}:e/junk").write_text("x")
    report = run.apply(Selection(keep=(f"{T}:e",)))
    assert ("delete-entry", "done") in statuses(report)
    assert (host.db_root / f"nodes/{T}:e").is_dir() and not (host.db_root / f"send_targets/{T}:e/junk").exists()


def test_an_attachment_is_kept_for_any_live_session_on_its_portal_and_iface(run: Run, host: SyntheticHost) -> None:
    host.db.new_iface("eth1")
    host.attachment("pvc-a", f"{T}:a", ("127.0.0.1:3260",))
    host.attachment("pvc-b", f"{T}:b", ("127.0.0.1:3260",))
    the_plan = run.plan(Selection())
    host.session(f"{T}:a", "127.0.0.1:3260,1", iface="eth1")  # another iface, found first
    old_kernel = host.session(f"{T}:a", "127.0.0.1:3260,1")
    attrs = host.sys / f"class/iscsi_session/session{old_kernel}/ifacename"
    attrs.unlink()  # a kernel without the attribute: the session is on iface default
    host.session(f"{T}:b", "127.0.0.7:3260,1")  # another portal
    report = run.executor().apply(the_plan)
    got = {o.action.subject.volume_id: (o.status, o.message) for o in report.outcomes
           if o.action.kind is Kind.DELETE_ATTACHMENT}  # fmt: skip
    assert got == {
        "pvc-a": ("blocked", f"session {old_kernel} of it is still logged in"),
        "pvc-b": ("done", ""),
    }
