"""The connector: attach a LUN, detach it, grow it. The library a CSI node plugin calls.

``connect`` (NodeStage), ``disconnect`` (NodeUnstage) and ``expand`` (NodeExpandVolume) are
idempotent and safe to repeat after a crash at any step:

* the attachment record is written *before* anything changes (state ``connecting``) and
  replaced atomically as steps complete, so a retry knows what may exist;
* every iscsiadm call is idempotent (session exists / no objects are success);
* the LUN's device is looked up from sysfs through its session each time, never trusted
  from the record;
* a per-target cross-process lock covers login, scan and the "is this session still used?"
  decision, so concurrent calls for LUNs of one target cannot log out a session that
  another is about to use (kubernetes/kubernetes#41041, #74313).

Disconnect removes only this LUN's devices (flushing a multipath map first), and logs out
a session only when no other attachment record points at it and no other disk of that
session is present. Logout is by SID, which works when node records are missing
(fenio/tns-csi#209).

Example (what a NodeStage handler does; see docs/connector.md for the whole plugin)::

    from iscsikit.connector import Connector, VolumeSpec

    connector = Connector(state_dir="/var/lib/iscsikit")
    spec = VolumeSpec(volume_id="pvc-1", target="iqn.2026-11.org.example:vol1",
                      portals=("10.0.0.1:3260",), lun=1)
    attachment = connector.connect(spec, timeout=60)
    print(attachment.device)          # /dev/sdb  (or /dev/dm-0 with multipath=True)
    connector.disconnect("pvc-1")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from iscsikit.connector.locks import Locks
from iscsikit.connector.spec import Attachment, PathInfo, VolumeSpec
from iscsikit.connector.state import StateStore
from iscsikit.devices.multipath import Multipath
from iscsikit.devices.paths import WwnInfo, by_path_name
from iscsikit.devices.scsi import ScsiOps
from iscsikit.devices.udev import DeviceWaiter, EventSource
from iscsikit.errors import AttachmentError, DeviceTimeoutError, IscsiadmError, IscsikitError
from iscsikit.iscsiadm import Iscsiadm
from iscsikit.names import Portal
from iscsikit.runner import Runner
from iscsikit.session.sysfs import IscsiSession, ScsiDevice, Sessions, SysfsRoot

log = logging.getLogger("iscsikit.connector")

#: iface keys copied when cloning an iface for a custom initiator name.
_DEFAULT_TRANSPORT = ("iface.transport_name", "tcp")
_IFACE_CLONE_KEYS = ("iface.transport_name", "iface.hwaddress", "iface.ipaddress", "iface.net_ifacename")


class Connector:
    """Attach and detach iSCSI volumes on this host (see the module docstring).

    Nothing runs and nothing is read until a method is called, so constructing one needs
    no root. ``runner`` decides where iscsiadm/multipath run (``Runner("ns")`` from a CSI
    container); ``sysfs_root``/``dev_root`` say where the host's sysfs and /dev are mounted.
    ``wait_for_udev=True`` returns only once udev has made the device's links (by-path,
    by-id); by default the device is returned as soon as the kernel has created it.
    """

    def __init__(
        self,
        *,
        runner: Runner | None = None,
        sysfs_root: Path | str = Path("/sys"),
        dev_root: Path | str = Path("/dev"),
        state_dir: Path | str = Path("/var/lib/iscsikit"),
        iscsiadm: Iscsiadm | None = None,
        event_source: Callable[[], EventSource] | None = None,
        lock_timeout: float | None = None,
        wait_for_udev: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runner = runner if runner is not None else Runner()
        self.root = SysfsRoot(Path(sysfs_root))
        self.dev_root = Path(dev_root)
        self.iscsiadm = iscsiadm if iscsiadm is not None else Iscsiadm(self.runner)
        self.store = StateStore(state_dir)
        self.locks = Locks(state_dir)
        self.lock_timeout = lock_timeout
        self.wait_for_udev = wait_for_udev
        self.sessions = Sessions(self.root)
        self.scsi = ScsiOps(self.runner, self.root, self.dev_root)
        self.multipath = Multipath(self.runner, self.root)
        self._event_source = event_source
        self._clock = clock

    # ---- public API -------------------------------------------------------------------

    def attachments(self) -> list[Attachment]:
        """Every attachment record (any state); what ``clean`` checks for staleness."""
        return self.store.all()

    def get(self, volume_id: str) -> Attachment | None:
        return self.store.load(volume_id)

    def _save(self, attachment: Attachment) -> None:
        """Write an attachment record, except in a dry run (its commands only say what they would
        do; a record of steps not taken would mislead the next real call)."""
        if self.runner.dry_run:
            log.info("dry run: would record volume %s as %s", attachment.volume_id, attachment.state)
            return
        self.store.save(attachment)

    def _forget(self, volume_id: str) -> None:
        """Delete an attachment record, except in a dry run (see :meth:`_save`)."""
        if self.runner.dry_run:
            log.info("dry run: would delete the record of volume %s", volume_id)
            return
        self.store.delete(volume_id)

    def connect(self, spec: VolumeSpec, timeout: float = 120.0) -> Attachment:
        """Attach ``spec``'s LUN; return the device to use. Repeating it is harmless.

        Raises AttachmentError (with the step that failed), the IscsiadmError subclass of a
        failed login (e.g. LoginAuthFailedError), or DeviceTimeoutError naming what did not
        appear. After an error the record stays in state ``connecting``; call ``connect``
        again or ``disconnect`` to clean up.
        """
        deadline = self._clock() + timeout
        existing = self.store.load(spec.volume_id)
        if existing is not None and not existing.spec.same_volume(spec):
            raise AttachmentError(
                spec.volume_id,
                "check",
                f"already attached as LUN {existing.spec.lun} of {existing.spec.target}; "
                "disconnect it before attaching something else under this id",
            )
        if existing is not None and existing.state == "attached":
            current = self._resolve(spec, existing.warnings)
            complete = current is not None and (not spec.multipath or len(current.paths) == len(spec.portals))
            if current is not None and complete and current.device == existing.device:
                return current
        waiter = self._waiter()
        with waiter:  # the udev monitor runs before login: no event can be missed
            with self.locks.target(spec.target, timeout=self._lock_wait(deadline)):
                self._save(Attachment(spec.volume_id, spec, "connecting"))
                iface = self._prepare_iface(spec)
                live = {p: s for p in spec.portals if (s := self._session(spec.target, p, iface)) is not None}
                if spec.multipath:
                    todo = [p for p in spec.portals if p not in live]
                else:
                    todo = [] if live else list(spec.portals)
                if todo:
                    # A live session already has its node record and settings; only new
                    # logins need them (and the fewer iscsiadm calls under the lock, the better).
                    self._prepare_nodes(spec, iface, todo)
                sessions, warnings = self._login(spec, iface, live, todo)
                for session in sessions:
                    self._scan(session, spec.lun)
            devices, more = self._wait_devices(spec, sessions, waiter, deadline)
            warnings += more
            dm = None
            if spec.multipath:
                names = [d.block.name for d in devices if d.block]
                remaining = max(0.0, deadline - self._clock())
                try:
                    dm = waiter.wait_for_multipath(names, remaining)
                except DeviceTimeoutError as exc:
                    raise AttachmentError(spec.volume_id, "multipath", str(exc)) from None
        attachment = self._describe(spec, sessions, devices, dm, tuple(warnings))
        self._save(attachment)
        return attachment

    def disconnect(self, volume: str | VolumeSpec, *, timeout: float = 120.0, force: bool = False) -> None:
        """Detach a volume: remove its devices; log out sessions nothing else uses.

        ``volume`` is a volume id (its record says what to undo) or a spec (used when no
        record exists, e.g. the plugin's state was lost). Unknown volumes are success.
        ``force`` removes devices even when mounted or held and ignores flush failures;
        without it a busy device raises DeviceBusyError and nothing is logged out.
        """
        volume_id = volume.volume_id if isinstance(volume, VolumeSpec) else volume
        record = self.store.load(volume_id)
        spec = record.spec if record is not None else (volume if isinstance(volume, VolumeSpec) else None)
        if spec is None:
            log.info("volume %s: no attachment record, nothing to disconnect", volume_id)
            return
        deadline = self._clock() + timeout
        waiter = self._waiter()
        with waiter:
            base = record if record is not None else Attachment(volume_id, spec, "disconnecting")
            self._save(base.with_state("disconnecting"))
            # This LUN's devices are this volume's alone: removing them needs no target lock.
            self._remove_lun(spec, self._sessions_for(spec), waiter, deadline, force)
            with self.locks.target(spec.target, timeout=self._lock_wait(deadline)):
                self._logout_unused(spec, self._sessions_for(spec))
                self._cleanup_iface(spec)
                self._forget(volume_id)

    def expand(self, volume_id: str, *, new_size: int | None = None, timeout: float = 60.0) -> Attachment:
        """Make the host see a grown LUN: rescan every path, resize the multipath map.

        Every path must be running (growing with a path down leaves paths of different
        sizes, os-brick #2032177). With ``new_size`` it also waits until every path
        reports at least that many bytes. Returns the updated attachment.
        """
        record = self.store.load(volume_id)
        if record is None or record.state != "attached":
            raise AttachmentError(volume_id, "expand", "not attached on this host")
        spec = record.spec
        deadline = self._clock() + timeout
        waiter = self._waiter()
        with waiter, self.locks.target(spec.target, timeout=self._lock_wait(deadline)):
            sessions = self._sessions_for(spec)
            devices = [d for s in sessions if (d := s.device(spec.lun)) is not None and d.block is not None]
            if not devices:
                raise AttachmentError(volume_id, "expand", "no device of this LUN is present")
            down = [f"{d.block.name} ({d.state})" for d in devices if d.block and d.state != "running"]
            if down:
                raise AttachmentError(volume_id, "expand", f"paths not running: {', '.join(down)}")
            names = [d.block.name for d in devices if d.block]
            for name in names:
                self.scsi.rescan(name)
            want = new_size

            def sizes_agree() -> int | None:
                sizes = {self.scsi.size_bytes(n) for n in names}
                if len(sizes) != 1 or None in sizes:
                    return None
                (size,) = sizes
                assert size is not None
                return size if want is None or size >= want else None

            size = waiter.wait_until(
                sizes_agree,
                max(0.0, deadline - self._clock()),
                lambda: (
                    f"expected {', '.join(names)} to report "
                    + (f"at least {want} bytes" if want else "one size")
                    + f"; they report {[self.scsi.size_bytes(n) for n in names]}"
                ),
            )
            dm = self.multipath.map_of(names[0]) if spec.multipath else None
            if dm is not None:
                self.multipath.resize(dm)
                waiter.wait_until(
                    lambda: True if self.scsi.size_bytes(dm) == size else None,
                    max(0.0, deadline - self._clock()),
                    lambda: f"expected multipath map {dm} to grow to {size} bytes",
                )
            sessions = self._sessions_for(spec)  # re-read: the sizes changed
            devices = [d for s in sessions if (d := s.device(spec.lun)) is not None and d.block is not None]
            attachment = self._describe(spec, sessions, devices, dm, record.warnings)
            self._save(attachment)
            return attachment

    # ---- connect steps ------------------------------------------------------------------

    def _waiter(self) -> DeviceWaiter:
        source = self._event_source() if self._event_source is not None else None
        return DeviceWaiter(self.root, source=source, settled=self.wait_for_udev, clock=self._clock)

    def _prepare_iface(self, spec: VolumeSpec) -> str:
        """The iface to log in through; clones ``spec.iface`` with the custom initiator name."""
        name = spec.login_iface
        if spec.initiator_name is None:
            return name
        with self.locks.db():
            if self.iscsiadm.iface_exists(name):
                current = self.iscsiadm.iface_show(name)
                if current.get("iface.initiatorname") == spec.initiator_name:
                    return name
            else:
                base = self.iscsiadm.iface_show(spec.iface)
                self.iscsiadm.iface_new(name)
                # tcp is the default; setting it makes iscsiadm try to load the module.
                copied = {k: v for k in _IFACE_CLONE_KEYS if (v := base.get(k)) and (k, v) != _DEFAULT_TRANSPORT}
                self.iscsiadm.iface_update(name, copied)
            self.iscsiadm.iface_update(name, {"iface.initiatorname": spec.initiator_name})
        return name

    def _lock_wait(self, deadline: float) -> float | None:
        """How long to wait for a lock: ``lock_timeout`` if set, else what is left of the call."""
        if self.lock_timeout is not None:
            return self.lock_timeout
        return max(1.0, deadline - self._clock())

    def _prepare_nodes(self, spec: VolumeSpec, iface: str, portals: list[Portal]) -> None:
        with self.locks.db():
            if spec.discovery:
                for portal in portals:
                    try:
                        found = self.iscsiadm.discover_sendtargets(portal, iface=iface, chap=spec.discovery_chap)
                    except IscsiadmError as exc:
                        if len(spec.portals) == 1:
                            raise
                        log.warning("volume %s: discovery on %s failed: %s", spec.volume_id, portal, exc)
                        continue
                    if not any(t.target == spec.target for t in found):
                        log.warning("volume %s: %s does not list %s", spec.volume_id, portal, spec.target)
            for portal in portals:
                if not self.iscsiadm.node_exists(spec.target, portal, iface=iface):
                    self.iscsiadm.node_new(spec.target, portal, iface=iface)
                self.iscsiadm.node_update(spec.target, portal, spec.node_settings(), iface=iface)
                if spec.chap is not None:
                    self.iscsiadm.set_session_chap(spec.target, portal, spec.chap, iface=iface)

    def _login(
        self, spec: VolumeSpec, iface: str, live: dict[Portal, IscsiSession], todo: list[Portal]
    ) -> tuple[list[IscsiSession], list[str]]:
        """Sessions for the volume: the live ones (reused), plus logins to ``todo``."""
        warnings: list[str] = []
        sessions: list[IscsiSession] = list(live.values())[: None if spec.multipath else 1]
        errors: list[IscsiadmError] = []
        for portal in todo:
            try:
                self.iscsiadm.login(spec.target, portal, iface=iface)
            except IscsiadmError as exc:
                errors.append(exc)
                warnings.append(f"login to {portal} failed: {exc}")
                continue
            session = self._session(spec.target, portal, iface)
            if session is None:
                warnings.append(f"login to {portal} reported success but no session is in sysfs")
                continue
            sessions.append(session)
            if not spec.multipath:
                break
        if not sessions:
            if len(errors) == 1:
                raise errors[0]
            raise AttachmentError(spec.volume_id, "login", "; ".join(warnings) or "no portal logged in")
        return sessions, warnings

    def _session(self, target: str, portal: Portal, iface: str) -> IscsiSession | None:
        found = self.sessions.find(target, portal, iface)
        return min(found, key=lambda s: s.sid) if found else None

    def _scan(self, session: IscsiSession, lun: int) -> None:
        if session.device(lun) is not None:
            return
        target_id = session.target_id if session.target_id is not None else 0
        self.scsi.scan_lun(session.host.host_no, 0, target_id, lun)

    def _wait_devices(
        self, spec: VolumeSpec, sessions: list[IscsiSession], waiter: DeviceWaiter, deadline: float
    ) -> tuple[list[ScsiDevice], list[str]]:
        devices: list[ScsiDevice] = []
        warnings: list[str] = []
        errors: list[str] = []
        for session in sessions:
            remaining = max(0.0, deadline - self._clock())
            try:
                devices.append(waiter.wait_for_lun(session.sid, spec.lun, remaining))
            except DeviceTimeoutError as exc:
                errors.append(str(exc))
        if not devices:
            raise AttachmentError(spec.volume_id, "device", "; ".join(errors))
        warnings += [f"path missing: {e}" for e in errors]
        return devices, warnings

    def _describe(
        self,
        spec: VolumeSpec,
        sessions: list[IscsiSession],
        devices: list[ScsiDevice],
        dm: str | None,
        warnings: tuple[str, ...],
    ) -> Attachment:
        paths = []
        by_sid = {s.sid: s for s in sessions}
        for dev in devices:
            session = next((s for s in by_sid.values() if s.host.host_no == dev.host), None)
            if session is None or dev.block is None:
                continue
            portal = session.portal
            link = self.dev_root / "disk/by-path" / by_path_name(portal.address, portal.port, spec.target, dev.lun)
            paths.append(
                PathInfo(
                    sid=session.sid,
                    portal=str(portal),
                    iface=session.iface_name or "default",
                    host=session.host.host_no,
                    hctl=dev.hctl,
                    device=dev.block.devnode,
                    by_path=str(link),  # udev's name for it (made shortly after, unless wait_for_udev)
                )
            )
        wwn = next((WwnInfo.from_sysfs_wwid(d.wwid) for d in devices if d.wwid), None)
        first = next(d.block for d in devices if d.block is not None)
        size = first.size_bytes
        device = first.devnode
        name = None
        if dm is not None:
            device = f"/dev/{dm}"
            name = self.multipath.name(dm)
            size = self.scsi.size_bytes(dm) or size
        return Attachment(
            volume_id=spec.volume_id,
            spec=spec,
            state="attached",
            device=device,
            wwn=wwn.wwn if wwn else None,
            wwid=wwn.wwid if wwn else None,
            size_bytes=size,
            multipath=dm,
            multipath_name=f"/dev/mapper/{name}" if name else None,
            paths=tuple(paths),
            warnings=warnings,
        )

    def _resolve(self, spec: VolumeSpec, warnings: tuple[str, ...]) -> Attachment | None:
        """The attachment as sysfs shows it now, or None if something is missing."""
        sessions = self._sessions_for(spec)
        devices = [d for s in sessions if (d := s.device(spec.lun)) is not None and d.block is not None]
        if not devices:
            return None
        dm = None
        if spec.multipath:
            dm = self.multipath.map_of(devices[0].block.name) if devices[0].block else None
            if dm is None:
                return None
        return self._describe(spec, sessions, devices, dm, warnings)

    # ---- disconnect steps ---------------------------------------------------------------

    def _sessions_for(self, spec: VolumeSpec) -> list[IscsiSession]:
        iface = spec.login_iface
        return [s for s in self.sessions.find(spec.target, iface=iface) if _portal_in(s, spec.portals)]

    def _remove_lun(
        self, spec: VolumeSpec, sessions: list[IscsiSession], waiter: DeviceWaiter, deadline: float, force: bool
    ) -> None:
        devices = [d for s in sessions if (d := s.device(spec.lun)) is not None]
        names = [d.block.name for d in devices if d.block is not None]
        maps = sorted({dm for n in names if (dm := self.multipath.map_of(n)) is not None})
        for dm in maps:
            self.multipath.flush(dm)
            waiter.wait_gone([dm], max(0.0, deadline - self._clock()))
        for dev in devices:
            if dev.block is not None:
                self.scsi.remove(dev.block.name, force=force)
            else:
                self.runner.write_file(dev.sys_path / "delete", "1")
        if names and not self.runner.dry_run:
            try:
                waiter.wait_gone(names, max(0.0, deadline - self._clock()))
            except DeviceTimeoutError as exc:
                raise AttachmentError(spec.volume_id, "remove devices", str(exc)) from None

    def _logout_unused(self, spec: VolumeSpec, sessions: list[IscsiSession]) -> None:
        others = [a for a in self.store.all() if a.volume_id != spec.volume_id and a.spec.target == spec.target]
        failures: list[IscsikitError] = []
        for session in sessions:
            users = [a.volume_id for a in others if _uses_session(a.spec, session)]
            fresh = self._refresh(session)
            disks = [d for d in fresh.devices if d.lun != spec.lun and d.block is not None] if fresh else []
            if users or disks:
                log.info(
                    "volume %s: keeping session %d (used by %s)",
                    spec.volume_id,
                    session.sid,
                    ", ".join(users + [d.block.name for d in disks if d.block]),
                )
                continue
            try:
                self.iscsiadm.logout_session(session.sid)
            except IscsiadmError as exc:
                failures.append(exc)
                continue
        # Node records of portals nothing uses any more (including paths that were down).
        iface = spec.login_iface
        for portal in spec.portals:
            if any(_uses_portal(a.spec, portal) and a.spec.login_iface == iface for a in others):
                continue
            if self.sessions.find(spec.target, portal, iface):
                continue
            with self.locks.db():
                self.iscsiadm.node_delete(spec.target, portal, iface=iface)
        if failures:
            raise failures[0]

    def _refresh(self, session: IscsiSession) -> IscsiSession | None:
        try:
            return self.sessions.from_sid(session.sid)
        except IscsikitError:
            return None

    def _cleanup_iface(self, spec: VolumeSpec) -> None:
        if spec.initiator_name is None:
            return
        iface = spec.login_iface
        if any(a.spec.login_iface == iface for a in self.store.all() if a.volume_id != spec.volume_id):
            return
        if any((s.iface_name or "default") == iface for s in self.sessions.all()):
            return
        with self.locks.db():
            try:
                self.iscsiadm.iface_delete(iface)
            except IscsiadmError as exc:
                log.warning("could not delete iface %s: %s", iface, exc)


def _portal_in(session: IscsiSession, portals: tuple[Portal, ...]) -> bool:
    return any(session.matches(portal=p) for p in portals)


def _uses_session(spec: VolumeSpec, session: IscsiSession) -> bool:
    return (
        spec.target == session.target
        and spec.login_iface == (session.iface_name or "default")
        and _portal_in(session, spec.portals)
    )


def _uses_portal(spec: VolumeSpec, portal: Portal) -> bool:
    return any(p.matches(portal) for p in spec.portals)
