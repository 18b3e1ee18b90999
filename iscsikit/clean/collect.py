"""Build a :class:`~iscsikit.clean.model.Survey`: everything ``clean`` could remove, read once.

Sources, all under injectable roots so tests run on synthetic trees:

* the open-iscsi DB: :meth:`Database.inventory` (directory names only, fast on 10,000
  records), plus empty ``nodes/<target>`` directories, record directories and config files;
* sysfs: sessions, their LUNs and block devices (:mod:`iscsikit.session.sysfs`), SCSI
  devices of iSCSI hosts whose session is gone, dm-multipath maps and their partitions;
* /proc: who uses each device (:mod:`iscsikit.clean.usage`);
* the state dir: the connector's attachment records, the journal of an interrupted
  ``clean``, and when each failing session was first seen failing (``clean/failing.json``:
  the kernel does not say how long a session has been in recovery, so iscsikit remembers).

Reachability of portals (``--unreachable``) is probed with a TCP connect, in parallel,
from iscsikit's own network namespace.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from iscsikit.clean.model import (
    CONFIG_FILES,
    RECORD_DIRS,
    AttachmentView,
    DeviceView,
    MapView,
    PendingItem,
    SessionView,
    Survey,
    Usage,
    portal_key,
)
from iscsikit.clean.usage import UsageScanner
from iscsikit.errors import IscsikitError
from iscsikit.names import Portal
from iscsikit.session.sysfs import Attributes, BlockDevices, ScsiDevice, ScsiDevices, Sessions, SysfsRoot

if TYPE_CHECKING:
    from iscsikit.db.database import Database

FAILING_FILE = "clean/failing.json"
JOURNAL_FILE = "clean/journal.json"
_HCTL_RE = re.compile(r"^\d+:\d+:\d+:\d+$")
_SESSION_IN_PATH = re.compile(r"/host(\d+)/session(\d+)/")

ProbeFilter = Callable[[str | None, Portal], bool]


def collect(
    db: Database,
    *,
    sysfs_root: str | os.PathLike[str] = "/sys",
    proc_root: str | os.PathLike[str] = "/proc",
    state_dir: str | os.PathLike[str] | None = None,
    probe_timeout: float | None = None,
    probe_filter: ProbeFilter | None = None,
    remember_failures: bool = True,
    now: float | None = None,
) -> Survey:
    """Survey the host. ``probe_timeout`` (seconds) turns on TCP probes of the portals that
    pass ``probe_filter(target, portal)``; ``remember_failures`` updates the failing-since
    file in ``state_dir`` (the only write a survey makes, and only to iscsikit's own file)."""
    taken = time.time() if now is None else now
    inv = db.inventory()
    survey = Survey(
        db_root=str(db.root),
        link_root=str(db.link_root),
        taken_at=taken,
        nodes=inv.nodes,
        discoveries=inv.discoveries,
        links=inv.links,
        dangling=inv.dangling,
        ifaces=inv.ifaces,
        problems=inv.problems,
    )
    _db_extras(db.root, survey)
    root = SysfsRoot(Path(sysfs_root))
    state = Path(state_dir) if state_dir is not None else None
    failing_since = _FailingSince(state, Path(proc_root)) if state is not None else None
    _sysfs(root, Path(proc_root), survey, failing_since, taken)
    if failing_since is not None and remember_failures:
        failing_since.save()
    if state is not None:
        survey.attachments = attachments(state)
        survey.pending = read_journal(state)
    if probe_timeout is not None:
        survey.unreachable = frozenset(_probe(survey, probe_timeout, probe_filter))
    return survey


# ---- the DB ---------------------------------------------------------------------------------


def _db_extras(root: Path, survey: Survey) -> None:
    survey.top_dirs = [d for d in RECORD_DIRS if (root / d).is_dir() and not (root / d).is_symlink()]
    survey.config_files = [f for f in CONFIG_FILES if os.path.lexists(root / f)]
    with_records = {ref.target for ref in survey.nodes}
    with_problems = {p.relpath.split("/")[1] for p in survey.problems if p.relpath.count("/") >= 1}
    try:
        names = sorted(os.listdir(root / "nodes"))
    except OSError:
        names = []
    for name in names:
        if name in with_records or name in with_problems:
            continue
        path = root / "nodes" / name
        if path.is_dir() and not path.is_symlink() and _hollow(path):
            survey.empty_targets.append(name)


def _hollow(path: Path) -> bool:
    """Empty, or holding only empty directories (what a killed delete leaves)."""
    try:
        with os.scandir(path) as it:
            for entry in it:
                if not entry.is_dir(follow_symlinks=False) or any(True for _ in os.scandir(entry.path)):
                    return False
    except OSError:
        return False
    return True


# ---- sysfs ----------------------------------------------------------------------------------


def _sysfs(root: SysfsRoot, proc: Path, survey: Survey, failing: _FailingSince | None, now: float) -> None:
    blocks = BlockDevices(root)
    sessions = Sessions(root).all()
    known = {s.sid for s in sessions}
    raw_devices: list[tuple[int | None, ScsiDevice]] = []
    for s in sessions:
        raw_devices += [(s.sid, d) for d in s.devices]
    scsi = ScsiDevices(root)
    for name in sorted(root.list("bus/scsi/devices")):
        if not _HCTL_RE.match(name):
            continue
        path = root.resolve(f"bus/scsi/devices/{name}")
        where = _SESSION_IN_PATH.search(str(path) + "/")
        if where is None or int(where.group(2)) in known:
            continue
        dev = scsi.from_sys_path(path)
        if dev is not None:
            raw_devices.append((None, dev))

    # Every device number whose users we want: disks, their partitions, maps and theirs.
    wanted: dict[str, str] = {}
    parts_of: dict[str, list[tuple[str, str]]] = {}
    for _sid, dev in raw_devices:
        if dev.block is None:
            continue
        wanted[dev.block.devnum] = dev.block.name
        parts_of[dev.block.name] = _partitions(root, dev.block.sys_path)
        for part, devnum in parts_of[dev.block.name]:
            wanted[devnum] = part
    maps = _maps(root, blocks)
    aliases: dict[str, str] = {}
    for m, parts in maps:
        if m.devnum:
            wanted[m.devnum] = m.name
            if m.map_name:
                aliases[m.map_name] = m.devnum
        for part, devnum, part_name in parts:
            wanted[devnum] = part
            if part_name:
                aliases[part_name] = devnum
    users = UsageScanner(proc).scan(wanted, aliases)

    def users_of(devnum: str | None, via: str = "") -> list[Usage]:
        if devnum is None:
            return []
        return [Usage(u.kind, u.what, via or u.via) for u in users.get(devnum, [])]

    for sid, dev in raw_devices:
        block = dev.block
        holders: list[str] = []
        found: list[Usage] = []
        multipath = None
        if block is not None:
            found += users_of(block.devnum)
            holders += block.holders
            for part, devnum in parts_of.get(block.name, []):
                found += users_of(devnum, part)
                part_dev = blocks.from_name(part)
                for h in part_dev.holders if part_dev else ():
                    holders.append(h)
                    found.append(Usage("holder", _describe_holder(blocks, h), part))
            for h in block.holders:
                if (blocks.dm_uuid(h) or "").startswith("mpath-"):
                    multipath = h
                else:
                    found.append(Usage("holder", _describe_holder(blocks, h)))
        survey.devices.append(
            DeviceView(
                hctl=dev.hctl,
                sid=sid,
                lun=dev.lun,
                name=block.name if block else None,
                devnum=block.devnum if block else None,
                state=dev.state,
                scsi_type=dev.type,
                sys_path=str(dev.sys_path),
                holders=tuple(holders),
                multipath=multipath,
                users=tuple(found),
            )
        )
    for m, parts in maps:
        found = users_of(m.devnum)
        for part, devnum, _ in parts:
            found += users_of(devnum, part)
        found += [Usage("holder", _describe_holder(blocks, h)) for h in m.holders]
        survey.maps.append(MapView(m.name, m.map_name, m.wwid, m.paths, m.devnum, m.holders, tuple(found)))

    offline_sids = {sid for sid, dev in raw_devices if sid is not None and dev.state == "transport-offline"}
    for s in sessions:
        conn = s.connection
        view = SessionView(
            sid=s.sid,
            target=s.target,
            address=conn.persistent_address if conn else None,
            port=conn.persistent_port if conn else None,
            tpgt=s.tpgt,
            iface=s.iface_name or "default",
            state=s.state,
            conn_state=conn.state if conn else None,
            recovery_tmo=s.timeouts.get("recovery"),
            host=s.host.host_no,
            flash=s.flash,
        )
        failed_for = None
        if view.failing:
            failed_for = failing.seen(view, now) if failing is not None else 0.0
            if s.sid in offline_sids and view.recovery_tmo and view.recovery_tmo > 0:
                failed_for = max(failed_for, float(view.recovery_tmo))
        survey.sessions.append(replace(view, failed_for=failed_for))


def _partitions(root: SysfsRoot, disk_path: Path) -> list[tuple[str, str]]:
    """(name, major:minor) of a disk's partitions (``sdb1``...)."""
    out = []
    for name in sorted(root.list(disk_path)):
        part = disk_path / name
        if (part / "partition").exists():
            dev = Attributes(part).get("dev")
            if dev:
                out.append((name, dev))
    return out


def _describe_holder(blocks: BlockDevices, name: str) -> str:
    dm = blocks.dm_name(name)
    return f"{name} ({dm})" if dm else name


def _maps(root: SysfsRoot, blocks: BlockDevices) -> list[tuple[MapView, list[tuple[str, str, str | None]]]]:
    """Multipath maps with their kpartx partitions (name, major:minor, dm name)."""
    out = []
    for name in sorted(root.list("class/block")):
        if not name.startswith("dm-"):
            continue
        uuid = blocks.dm_uuid(name) or ""
        if not uuid.startswith("mpath-"):
            continue
        dev = blocks.from_name(name)
        holders: list[str] = []
        parts: list[tuple[str, str, str | None]] = []
        for h in dev.holders if dev else ():
            h_uuid = blocks.dm_uuid(h) or ""
            h_dev = blocks.from_name(h)
            if h_uuid.startswith("part") and h_uuid.endswith(uuid) and h_dev is not None:
                parts.append((h, h_dev.devnum, blocks.dm_name(h)))
                holders += h_dev.holders
            else:
                holders.append(h)
        view = MapView(
            name=name,
            map_name=blocks.dm_name(name),
            wwid=uuid.removeprefix("mpath-") or None,
            paths=tuple(blocks.slaves(name)),
            devnum=dev.devnum if dev else None,
            holders=tuple(holders),
        )
        out.append((view, parts))
    return out


# ---- how long sessions have been failing ----------------------------------------------------


class _FailingSince:
    """``<state_dir>/clean/failing.json``: when each failing session was first seen failing.

    Keyed by boot id, SID and target, so a SID reused after a reboot starts afresh; entries
    of sessions that recovered or went away are dropped on save.
    """

    def __init__(self, state_dir: Path, proc: Path) -> None:
        self.path = state_dir / FAILING_FILE
        self.boot = _read(proc / "sys/kernel/random/boot_id") or "unknown-boot"
        try:
            data = json.loads(self.path.read_text())
            self.known: dict[str, float] = {str(k): float(v) for k, v in data.get("first_seen", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            self.known = {}
        self.current: dict[str, float] = {}

    def seen(self, s: SessionView, now: float) -> float:
        key = f"{self.boot}/{s.sid}/{s.target}"
        first = self.known.get(key, now)
        self.current[key] = first
        return max(0.0, now - first)

    def save(self) -> None:
        if self.current == self.known:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_json(self.path, {"first_seen": self.current})
        except OSError:
            pass  # a survey without root still works; durations then start at 0


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


# ---- connector state and the journal --------------------------------------------------------


def attachments(state_dir: Path) -> list[AttachmentView]:
    """Every attachment record file, readable or not."""
    from iscsikit.connector.state import StateStore

    store = StateStore(state_dir)
    out: list[AttachmentView] = []
    try:
        names = sorted(os.listdir(store.dir))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        volume_id = name[: -len(".json")]
        path = str(store.dir / name)
        try:
            att = store.load(volume_id)
        except IscsikitError as exc:
            out.append(AttachmentView(volume_id, path, error=str(exc)))
            continue
        if att is None:
            continue
        spec = att.spec
        out.append(
            AttachmentView(
                volume_id,
                path,
                target=spec.target,
                portals=tuple(spec.portals),
                iface=spec.login_iface,
                lun=spec.lun,
                state=att.state,
            )
        )
    return out


def read_journal(state_dir: Path) -> list[PendingItem]:
    """Records an interrupted ``clean --yes`` was about to delete (empty when none)."""
    try:
        data = json.loads((state_dir / JOURNAL_FILE).read_text())
        items = data["pending"]
        return [PendingItem(str(i["kind"]), str(i["key"])) for i in items]  # type: ignore[arg-type]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_journal(state_dir: Path, items: Iterable[PendingItem], argv: list[str]) -> None:
    """Record what is about to be deleted; an error here stops the run before anything changed."""
    from iscsikit.errors import BackupError

    path = state_dir / JOURNAL_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_json(path, {"started": time.time(), "argv": argv, "pending": [i.to_json() for i in items]})
    except OSError as exc:
        raise BackupError(f"cannot write the journal {path}: {exc.strerror}; nothing was changed") from None


def clear_journal(state_dir: Path) -> None:
    try:
        os.unlink(state_dir / JOURNAL_FILE)
    except FileNotFoundError:
        pass


# ---- reachability -----------------------------------------------------------------------------


def _probe(survey: Survey, timeout: float, only: ProbeFilter | None) -> set[str]:
    portals: dict[str, tuple[str, int]] = {}

    def add(target: str | None, address: str | None, port: int | None) -> None:
        if address is None or port is None:
            return
        if only is not None and not only(target, Portal(address, port)):
            return
        portals.setdefault(portal_key(address, port), (address, port))

    for s in survey.sessions:
        add(s.target, s.address, s.port)
    for ref in survey.nodes:
        add(ref.target, ref.address, ref.port)
    for d in survey.discoveries:
        add(None, d.address, d.port)
    for link in survey.dangling:
        if link.node is not None:
            add(link.node.target, link.node.address, link.node.port)
    if not portals:
        return set()

    def down(item: tuple[str, tuple[str, int]]) -> str | None:
        key, (address, port) = item
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return None
        except OSError:
            return key

    with ThreadPoolExecutor(max_workers=min(64, len(portals))) as pool:
        return {k for k in pool.map(down, portals.items()) if k is not None}


__all__ = ["attachments", "clear_journal", "collect", "read_journal", "write_journal"]
