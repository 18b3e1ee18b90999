"""Carry out a :class:`~iscsikit.clean.plan.Plan`, phase by phase, re-checking as it goes.

1. **Journal**: the records about to be deleted are written to ``<state_dir>/clean/journal.json``
   first, so a run killed after a logout (when the session that made a record "stale" is
   gone) still finds them next time: a re-run converges.
2. **Runtime** (flush maps, remove devices, log out), each under the connector's per-target
   lock (so a CSI ``connect`` on this host cannot interleave). Users of every device are
   scanned again just before; a device that became busy is *blocked*, never removed
   (unless ``force``). Devices of a session that is not ``running`` are deleted without a
   flush or an exclusive open, which would hang on a blocked queue.
3. **Records**, under iscsiadm's own lock in one transaction: exact copies of everything
   to be deleted go into the backup tarball (written and fsynced first), then the
   deletions. A record still used by a live session is left (unless ``force``); a
   discovery record or iface that gained a node since the plan is left.
4. **Attachments** of the connector's state store.

Every step is idempotent: what is already gone counts as done. Node records are deleted in
bulk with the links the survey found for them (all links naming the record, not only the
one its contents point at), which keeps 10,000 deletions well under a second of CPU.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from iscsikit.clean.backup import EntryCollector, default_backup_path, write_backup
from iscsikit.clean.collect import clear_journal, write_journal
from iscsikit.clean.member import DB_PREFIX, UnsafeMemberError, check_member
from iscsikit.clean.model import RECORD_DIRS, AttachmentView, DeviceView, MapView, PendingItem, SessionView
from iscsikit.clean.plan import Action, Kind, Plan
from iscsikit.clean.usage import UsageScanner
from iscsikit.db.layout import DiscoveryRef, IfaceRef, LinkRef, NodeRef, parse_link_name
from iscsikit.errors import DeviceBusyError, IscsikitError, NoSuchSessionError
from iscsikit.names import Portal
from iscsikit.session.sysfs import BlockDevices, IscsiSession, Sessions, SysfsRoot

if TYPE_CHECKING:
    from iscsikit.db.database import Database
    from iscsikit.iscsiadm import Iscsiadm
    from iscsikit.runner import Runner

log = logging.getLogger("iscsikit.clean")

Status = Literal["done", "gone", "blocked", "failed"]
RUNTIME = (Kind.FLUSH_MAP, Kind.REMOVE_DEVICE, Kind.LOGOUT)
#: Longest hold of iscsiadm's DB lock while deleting, in seconds (iscsiadm waits 30).
LOCK_SLICE = 5.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one action: ``done``, ``gone`` (already), ``blocked`` or ``failed``."""

    action: Action
    status: Status
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("done", "gone")

    def to_json(self) -> dict[str, Any]:
        out = self.action.to_json()
        out.update(status=self.status, message=self.message)
        return out


@dataclass(slots=True)
class ApplyReport:
    outcomes: list[Outcome] = field(default_factory=list)
    backup: str | None = None

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def counts(self) -> dict[str, int]:
        out = {"done": 0, "gone": 0, "blocked": 0, "failed": 0}
        for o in self.outcomes:
            out[o.status] += 1
        return out


class Executor:
    """Applies plans on one host (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        *,
        runner: Runner,
        iscsiadm: Iscsiadm,
        sysfs_root: str | os.PathLike[str] = "/sys",
        dev_root: str | os.PathLike[str] = "/dev",
        proc_root: str | os.PathLike[str] = "/proc",
        state_dir: str | os.PathLike[str],
        force: bool = False,
        lock_timeout: float = 30.0,
        backup_path: str | os.PathLike[str] | None = None,
        argv: Sequence[str] = (),
    ) -> None:
        from iscsikit.devices.multipath import Multipath
        from iscsikit.devices.scsi import ScsiOps

        self.db = db
        self.runner = runner
        self.iscsiadm = iscsiadm
        self.root = SysfsRoot(Path(sysfs_root))
        self.proc_root = Path(proc_root)
        self.state_dir = Path(state_dir)
        self.force = force
        self.lock_timeout = lock_timeout
        self.backup_path = Path(backup_path) if backup_path is not None else None
        self.argv = list(argv)
        self.scsi = ScsiOps(runner, self.root, Path(dev_root))
        self.multipath = Multipath(runner, self.root)
        self.blocks = BlockDevices(self.root)
        self.sessions = Sessions(self.root)
        self._backed_up: dict[str, bytes] = {}

    # ---- the run ----------------------------------------------------------------------------

    def apply(self, plan: Plan, on_step: Callable[[Outcome], None] | None = None) -> ApplyReport:
        report = ApplyReport()

        def record(o: Outcome) -> None:
            report.outcomes.append(o)
            if o.status in ("blocked", "failed"):
                log.warning("%s: %s%s", o.action.kind, o.status, f": {o.message}" if o.message else "")
            if on_step is not None:
                on_step(o)

        for a in plan.blocked:
            record(Outcome(a, "blocked", "; ".join(a.blocked_by)))
        runnable = plan.runnable
        if not runnable:
            return report
        pending = [p for a in runnable if (p := _pending_item(a)) is not None]
        if pending:
            write_journal(self.state_dir, pending, self.argv)
        runtime = [a for a in runnable if a.kind in RUNTIME]
        self._runtime(runtime, record)
        db_actions = [a for a in runnable if a.kind not in RUNTIME and a.kind is not Kind.DELETE_ATTACHMENT]
        attachments = [a for a in runnable if a.kind is Kind.DELETE_ATTACHMENT]
        if db_actions or attachments:
            report.backup = self._records(plan, db_actions, attachments, record)
        clear_journal(self.state_dir)
        return report

    # ---- phase 2: maps, devices, sessions ---------------------------------------------------------

    def _runtime(self, actions: list[Action], record: Callable[[Outcome], None]) -> None:
        if not actions:
            return
        users = self._fresh_users(actions)
        failed_devices: dict[int, list[str]] = {}
        failed_maps: set[str] = set()
        for a in actions:
            with self._target_lock(a.target) as lock_error:
                if lock_error is not None:
                    outcome = Outcome(a, "failed", lock_error)
                elif a.kind is Kind.FLUSH_MAP:
                    outcome = self._flush_map(a, users)
                    if not outcome.ok:
                        failed_maps.add(a.subject.name)
                elif a.kind is Kind.REMOVE_DEVICE:
                    outcome = self._remove_device(a, users, failed_maps)
                    if not outcome.ok and a.sid is not None:
                        failed_devices.setdefault(a.sid, []).append(f"{a.device}: {outcome.message}")
                else:
                    outcome = self._logout(a, failed_devices.get(a.sid or -1, []))
            record(outcome)

    def _fresh_users(self, actions: list[Action]) -> dict[str, list[str]]:
        """Users of the plan's devices and maps right now (``major:minor`` -> reasons)."""
        wanted: dict[str, str] = {}
        for a in actions:
            view = a.subject
            if isinstance(view, DeviceView | MapView) and view.devnum and view.name:
                wanted[view.devnum] = view.name
        found = UsageScanner(self.proc_root).scan(wanted)
        return {devnum: [str(u) for u in us] for devnum, us in found.items()}

    @contextmanager
    def _target_lock(self, target: str | None) -> Iterator[str | None]:
        if target is None:
            yield None
            return
        from iscsikit.connector.locks import Locks
        from iscsikit.errors import LockTimeoutError

        try:
            hold = Locks(self.state_dir).target(target, timeout=self.lock_timeout)
            hold.__enter__()
        except (LockTimeoutError, OSError) as exc:
            yield f"could not take the connector's lock on {target}: {exc}"
            return
        try:
            yield None
        finally:
            hold.__exit__(None, None, None)

    def _flush_map(self, a: Action, users: dict[str, list[str]]) -> Outcome:
        m: MapView = a.subject
        if not (self.blocks.dm_uuid(m.name) or "").startswith("mpath-"):
            return Outcome(a, "gone")
        busy = users.get(m.devnum or "", [])
        if busy and not self.force:
            return Outcome(a, "blocked", f"{m.label} is {'; '.join(busy)}")
        try:
            self.multipath.flush(m.name)
        except DeviceBusyError as exc:
            return Outcome(a, "blocked", str(exc))
        except IscsikitError as exc:
            return Outcome(a, "failed", str(exc))
        return Outcome(a, "done")

    def _remove_device(self, a: Action, users: dict[str, list[str]], failed_maps: set[str]) -> Outcome:
        d: DeviceView = a.subject
        here = self.root / f"bus/scsi/devices/{d.hctl}"
        if not os.path.lexists(here):
            return Outcome(a, "gone")
        if d.sid is not None and f"/session{d.sid}/" not in str(self.root.resolve(here)) + "/":
            return Outcome(a, "gone", f"{d.hctl} now belongs to another session")
        if d.multipath in failed_maps and not self.force:
            return Outcome(a, "blocked", f"its multipath map {d.multipath} was not flushed")
        busy = users.get(d.devnum or "", [])
        if busy and not self.force:
            return Outcome(a, "blocked", f"{d.label} is {'; '.join(busy)}")
        try:
            if d.name is None:
                self.runner.write_file(Path(d.sys_path) / "delete", "1")
                return Outcome(a, "done")
            partial = d.multipath is not None and d.multipath not in failed_maps and self.blocks.from_name(d.multipath)
            if partial:
                self._drop_path(d.name)
            running = self.scsi.state(d.name) == "running"
            # A LUN that is not running (blocked, offline) would hang an exclusive open or a flush.
            self.scsi.remove(d.name, force=self.force or not running or bool(partial))
        except DeviceBusyError as exc:
            return Outcome(a, "blocked", str(exc))
        except (IscsikitError, OSError) as exc:
            return Outcome(a, "failed", str(exc))
        return Outcome(a, "done")

    def _drop_path(self, name: str) -> None:
        from iscsikit.errors import CommandError

        try:
            self.runner.run(["multipathd", "del", "path", name], timeout=30, check=False, mutating=True)
        except CommandError as exc:  # no multipathd here: the kernel drops the path on delete
            log.debug("multipathd del path %s: %s", name, exc)

    def _logout(self, a: Action, failed_devices: list[str]) -> Outcome:
        s: SessionView = a.subject
        try:
            live = self.sessions.from_sid(s.sid)
        except NoSuchSessionError:
            return Outcome(a, "gone")
        if live.target != s.target:
            return Outcome(a, "gone", f"SID {s.sid} is now a session of {live.target}")
        if failed_devices and not self.force:
            return Outcome(a, "blocked", "devices not removed: " + "; ".join(failed_devices))
        busy = self._busy_devices(live)
        if busy and not self.force:
            return Outcome(a, "blocked", "; ".join(busy))
        try:
            self.iscsiadm.logout_session(s.sid)
        except IscsikitError as exc:
            return Outcome(a, "failed", str(exc))
        return Outcome(a, "done")

    def _busy_devices(self, session: IscsiSession) -> list[str]:
        """Disks of the session that appeared or stayed and are in use (exclusive-open check)."""
        busy = []
        for dev in session.devices:
            if dev.block is None or dev.state != "running":
                continue
            try:
                self.scsi.check_unused(dev.block.name)
            except DeviceBusyError as exc:
                busy.append(str(exc))
        return busy

    # ---- phase 3 and 4: records -----------------------------------------------------------------

    def _records(
        self,
        plan: Plan,
        db_actions: list[Action],
        attachments: list[Action],
        record: Callable[[Outcome], None],
    ) -> str | None:
        db = self.db
        root = str(db.root)
        live = self._live_sessions()
        backup: str | None = None
        with db.transaction():
            todo: list[Action] = []
            for a in db_actions:
                reason = self._still_used(a, live)
                unrestorable = _unrestorable(root, a)
                if unrestorable:  # even forced: nothing is removed without a backup restore accepts
                    record(Outcome(a, "blocked", unrestorable))
                elif reason and not self.force:
                    record(Outcome(a, "blocked", reason))
                else:
                    todo.append(a)
            att_todo: list[tuple[Action, bytes]] = []
            for a in attachments:
                att: AttachmentView = a.subject
                reason = self._attachment_used(att, live)
                if reason and not self.force:
                    record(Outcome(a, "blocked", reason))
                    continue
                try:
                    att_todo.append((a, Path(att.path).read_bytes()))
                except FileNotFoundError:
                    record(Outcome(a, "gone"))
                except OSError as exc:
                    record(Outcome(a, "failed", f"cannot read {att.path}: {exc.strerror}"))
            collector = EntryCollector(root)
            for a in todo:
                recursive = a.kind in (Kind.DELETE_DISCOVERY, Kind.DELETE_ENTRY) and a.path not in _TOP_DIRS
                if a.kind is Kind.DELETE_DISCOVERY:
                    collector.add(a.subject.dir_relpath, recursive=True)
                else:
                    collector.add_all(a.paths, recursive=recursive)
            if len(collector) or att_todo:
                path = self.backup_path or default_backup_path(self.state_dir)
                manifest = {
                    "db_root": root,
                    "link_root": str(db.link_root),
                    "argv": self.argv,
                    "selection": plan.selection.to_json(),
                    "removed": [a.to_json() for a in todo] + [a.to_json() for a, _ in att_todo],
                }
                snapshot = collector.snapshot()
                saved = {a.subject.volume_id: b for a, b in att_todo}
                backup = str(write_backup(path, snapshot, saved, manifest))
                self._backed_up = {e.relpath: e.data for e in snapshot.entries if e.type == "file"}
        self._delete_records(todo, record)
        for a, _ in att_todo:
            record(self._delete_attachment(a))
        return backup

    def _live_sessions(self) -> dict[str, list[IscsiSession]]:
        out: dict[str, list[IscsiSession]] = {}
        for s in self.sessions.all():
            out.setdefault(s.target, []).append(s)
        return out

    def _still_used(self, a: Action, live: dict[str, list[IscsiSession]]) -> str | None:
        """Why a record must stay: a live session runs on it."""
        if a.kind is not Kind.DELETE_NODE:
            return None
        ref: NodeRef = a.subject
        for s in live.get(ref.target, ()):
            if (s.iface_name or "default") != ref.iface:
                continue
            if s.matches(portal=Portal(ref.address, ref.port, ref.tpgt)):
                return f"session {s.sid} is still logged in on it"
        return None

    def _attachment_used(self, att: AttachmentView, live: dict[str, list[IscsiSession]]) -> str | None:
        for s in live.get(att.target or "", ()):
            if att.iface is not None and (s.iface_name or "default") != att.iface:
                continue
            if any(s.matches(portal=p) for p in att.portals):
                return f"session {s.sid} of it is still logged in"
        return None

    def _delete_records(self, todo: list[Action], record: Callable[[Outcome], None]) -> None:
        """Delete under iscsiadm's lock, given back every ``LOCK_SLICE`` seconds.

        iscsiadm 2.1.8 waits 30 s for the lock and then goes on *without* it, so a long run
        (10,000 records on a slow disk) must not hold it throughout. Between slices a record
        may change: a node record whose bytes are no longer those in the backup is left.
        """
        import time

        root = str(self.db.root)
        dirty: set[str] = set()
        pending = iter(todo)
        left = len(todo)
        while left:
            with self.db.transaction():
                deadline = time.monotonic() + LOCK_SLICE
                while True:  # at least one deletion per hold
                    record(self._delete_one(next(pending), root, dirty))
                    left -= 1
                    if not left or time.monotonic() >= deadline:
                        break
        for path in sorted(dirty):
            _fsync_dir(path)

    def _delete_one(self, a: Action, root: str, dirty: set[str]) -> Outcome:
        try:
            if a.kind is Kind.DELETE_NODE:
                changed = self._changed_since_backup(a.subject.relpath, root)
                if changed:
                    return Outcome(a, "blocked", changed)
                return self._delete_node(a, root, dirty)
            if a.kind is Kind.DELETE_LINK:
                link: LinkRef = a.subject
                return Outcome(a, "done" if _unlink(f"{root}/{link.relpath}", dirty) else "gone")
            if a.kind is Kind.DELETE_DISCOVERY:
                return self._delete_discovery(a, root)
            if a.kind is Kind.DELETE_IFACE:
                return self._delete_iface(a, root, dirty)
            if a.kind is Kind.DELETE_ENTRY:
                return self._delete_entry(a, root, dirty)
            return Outcome(a, "done" if _unlink(f"{root}/{a.path}", dirty) else "gone")  # DELETE_CONFIG
        except OSError as exc:
            return Outcome(a, "failed", f"{exc.filename or a.path}: {exc.strerror}")
        except IscsikitError as exc:
            return Outcome(a, "failed", str(exc))

    def _changed_since_backup(self, rel: str, root: str) -> str | None:
        saved = self._backed_up.get(rel)
        if saved is None:
            return None
        try:
            with open(f"{root}/{rel}", "rb") as fh:
                now = fh.read()
        except OSError:
            return None  # gone: the delete will say so
        return None if now == saved else f"{rel} changed since the backup was taken; left"

    def _delete_node(self, a: Action, root: str, dirty: set[str]) -> Outcome:
        """``idbm_delete_node`` for a known ref: its links first, the record, then empty directories."""
        ref: NodeRef = a.subject
        for rel in a.paths[1:]:
            _unlink(f"{root}/{rel}", dirty)
        if not _unlink(f"{root}/{ref.relpath}", dirty):
            return Outcome(a, "gone")
        target_dir = f"{root}/{ref.target_relpath}"
        if not ref.old_style and _rmdir(f"{root}/{ref.portal_relpath}", dirty) is False:
            return Outcome(a, "done")  # other ifaces of this portal remain
        _rmdir(target_dir, dirty)
        return Outcome(a, "done")

    def _delete_discovery(self, a: Action, root: str) -> Outcome:
        ref: DiscoveryRef = a.subject
        if not os.path.lexists(f"{root}/{ref.relpath}"):
            return Outcome(a, "gone")
        if not ref.old_style:
            try:
                names = os.listdir(f"{root}/{ref.dir_relpath}")
            except OSError:
                names = []
            for name in names:
                node = parse_link_name(name)
                if node is not None and os.path.lexists(f"{root}/{node.relpath}"):
                    return Outcome(a, "blocked", f"node record {node} (linked from it) exists and is not in the plan")
        self.db.delete_discovery(ref, prune_dangling=True)
        return Outcome(a, "done")

    def _delete_iface(self, a: Action, root: str, dirty: set[str]) -> Outcome:
        ref: IfaceRef = a.subject
        if not os.path.lexists(f"{root}/{ref.relpath}"):
            return Outcome(a, "gone")
        bound = self.db.bound_nodes(ref.name)
        if bound:
            return Outcome(a, "blocked", f"node record {bound[0]} is bound to it and not in the plan")
        if any((s.iface_name or "default") == ref.name for s in self.sessions.all()):
            return Outcome(a, "blocked", "a session uses it")
        _unlink(f"{root}/{ref.relpath}", dirty)
        return Outcome(a, "done")

    def _delete_entry(self, a: Action, root: str, dirty: set[str]) -> Outcome:
        rel = a.path or ""
        path = f"{root}/{rel}"
        if not os.path.lexists(path):
            return Outcome(a, "gone")
        if rel in _TOP_DIRS:
            try:
                left = sorted(os.listdir(path))
            except OSError:
                left = []
            if left:
                return Outcome(a, "blocked", f"not empty: kept records remain ({', '.join(left[:3])})")
            _rmdir(path, dirty)
            return Outcome(a, "done")
        _remove_tree(path, dirty)
        parts = rel.split("/")
        if len(parts) > 2 and parts[0] == "nodes":  # junk was all that kept its target directory
            _rmdir(f"{root}/nodes/{parts[1]}", dirty)
        return Outcome(a, "done")

    def _delete_attachment(self, a: Action) -> Outcome:
        from iscsikit.connector.state import StateStore

        att: AttachmentView = a.subject
        with self._target_lock(att.target) as lock_error:
            if lock_error is not None:
                return Outcome(a, "failed", lock_error)
            if not os.path.lexists(att.path):
                return Outcome(a, "gone")
            try:
                if att.error is None:
                    StateStore(self.state_dir).delete(att.volume_id)
                else:  # unreadable, perhaps under a name the store refuses: the file itself
                    os.unlink(att.path)
            except OSError as exc:
                return Outcome(a, "failed", f"{att.path}: {exc.strerror}")
        return Outcome(a, "done")


_TOP_DIRS = frozenset(RECORD_DIRS)


def _unrestorable(root: str, a: Action) -> str | None:
    """Why junk cannot go: ``restore`` would refuse its copy (and with it the whole backup).

    Junk is whatever lies in the DB that iscsiadm did not write: a tree deeper than its layout
    or a link not of its form is removed by hand, not by ``clean``.
    """
    if a.kind is not Kind.DELETE_ENTRY or a.path in _TOP_DIRS:
        return None
    collector = EntryCollector(root)
    collector.add_all(a.paths, recursive=True)
    for e in collector.snapshot().entries:
        try:
            check_member(f"{DB_PREFIX}{e.relpath}", e.type, e.mode, e.target or "", include_config=True)
        except UnsafeMemberError as exc:
            return f"not backed up in a form restore accepts ({exc}); remove it by hand"
    return None


def _pending_item(a: Action) -> PendingItem | None:
    if a.kind is Kind.DELETE_NODE:
        return PendingItem("node", a.subject.relpath)
    if a.kind is Kind.DELETE_DISCOVERY:
        return PendingItem("discovery", a.subject.relpath)
    if a.kind is Kind.DELETE_IFACE:
        return PendingItem("iface", a.subject.name)
    if a.kind is Kind.DELETE_LINK:
        return PendingItem("link", a.subject.relpath)
    if a.kind is Kind.DELETE_ATTACHMENT and a.subject.error is None:
        return PendingItem("attachment", a.subject.volume_id)
    return None


def _unlink(path: str, dirty: set[str]) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    dirty.add(os.path.dirname(path))
    return True


def _rmdir(path: str, dirty: set[str]) -> bool | None:
    """True removed, False not empty, None already gone."""
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    dirty.add(os.path.dirname(path))
    return True


def _remove_tree(path: str, dirty: set[str]) -> None:
    if os.path.islink(path) or not os.path.isdir(path):
        _unlink(path, dirty)
        return
    for top, dirs, files in os.walk(path, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
        for name in dirs:
            full = os.path.join(top, name)
            if os.path.islink(full):
                os.unlink(full)
            else:
                os.rmdir(full)
    os.rmdir(path)
    dirty.add(os.path.dirname(path))


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["ApplyReport", "Executor", "Outcome"]
