"""Waiting for block devices by udev events, not by polling iscsiadm.

Peers poll ``iscsiadm -m session -P 3`` or ``/dev/disk/by-path`` once a second
(go-iscsi-helper, csi-lib-iscsi, Kubernetes). Here a udev monitor is opened *before* login
(so no event can be missed), and after each event the answer is read from sysfs, the
source of truth. With ``settled=True`` (the default) a device counts as ready once udev has
finished its rules for it (its by-path and by-id links exist), which ``is_initialized``
tells; with ``settled=False`` the kernel's own uevents are watched and the device is ready
as soon as it exists (its /dev node is made by devtmpfs before the uevent is sent), which
is what the connector uses: udev's rules (scsi_id, blkid probes) can take seconds on a
busy host and nothing the connector returns depends on them.

Where udev is not running (a container without ``/run/udev``, a recorded sysfs tree in
tests) the waiter falls back to re-reading sysfs every ``interval`` seconds; that needs no
udev at all (synology-csi#67) and still returns the device by its kernel name.

Example (the order matters: start the waiter, then log in)::

    with DeviceWaiter() as waiter:
        iscsiadm.login(target, portal)
        sid = ...  # from Sessions().find(target, portal)
        dev = waiter.wait_for_lun(sid, lun=1, timeout=30)
        print(dev.block.devnode)    # /dev/sdb
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from iscsikit.errors import DeviceTimeoutError, NoSuchSessionError
from iscsikit.session.sysfs import BlockDevices, ScsiDevice, ScsiDevices, Sessions, SysfsRoot

log = logging.getLogger("iscsikit.devices")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    action: str  # add, change, remove, bind...
    sys_path: str
    subsystem: str


class EventSource(Protocol):
    """Where the waiter's wake-ups come from (udev, or a timer)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def poll(self, timeout: float) -> DeviceEvent | None: ...
    def is_initialized(self, sys_path: Path) -> bool: ...


class PollingEventSource:
    """No events: wake up every ``interval`` seconds so the waiter re-reads sysfs."""

    def __init__(self, interval: float = 0.05, sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = interval
        self._sleep = sleep

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def poll(self, timeout: float) -> DeviceEvent | None:
        self._sleep(max(0.0, min(timeout, self.interval)))
        return None

    def is_initialized(self, sys_path: Path) -> bool:
        return True


class UdevEventSource:
    """pyudev netlink monitor filtered to block devices.

    ``source="udev"``: events udevd sends after its rules ran (by-path/by-id links exist);
    ``source="kernel"``: the kernel's own uevents, sent as soon as the device (and its
    devtmpfs node) exists, before any rule runs, and needing no udevd at all.
    """

    #: Wake up at least this often even without events (safety net; sysfs is re-read).
    recheck = 1.0

    def __init__(self, subsystems: Sequence[str] = ("block",), source: str = "udev") -> None:
        if source not in ("udev", "kernel"):
            raise ValueError(f"source must be 'udev' or 'kernel', got {source!r}")
        self.subsystems = tuple(subsystems)
        self.source = source
        self._context: Any = None
        self._monitor: Any = None

    @staticmethod
    def available() -> bool:
        """udevd runs here (its control socket exists) and pyudev can load libudev."""
        if not os.path.exists("/run/udev/control"):
            return False
        try:
            import pyudev  # noqa: F401
        except ImportError:
            return False
        return True

    def start(self) -> None:
        import pyudev

        self._context = pyudev.Context()
        monitor = pyudev.Monitor.from_netlink(self._context, source=self.source)
        for subsystem in self.subsystems:
            monitor.filter_by(subsystem)
        monitor.set_receive_buffer_size(4 * 1024 * 1024)
        monitor.start()
        self._monitor = monitor

    def stop(self) -> None:
        self._monitor = None
        self._context = None

    def poll(self, timeout: float) -> DeviceEvent | None:
        if self._monitor is None:
            raise RuntimeError("UdevEventSource.poll() before start()")
        device = self._monitor.poll(timeout=max(0.0, min(timeout, self.recheck)))
        if device is None:
            return None
        return DeviceEvent(device.action or "", device.sys_path, device.subsystem or "")

    def is_initialized(self, sys_path: Path) -> bool:
        if self.source == "kernel":
            return True  # not waiting for udev's rules
        import pyudev

        try:
            return bool(pyudev.Devices.from_sys_path(self._context, str(sys_path)).is_initialized)
        except Exception:  # DeviceNotFoundAtPathError: removed meanwhile
            return False


def default_source(sysfs_root: Path, *, settled: bool = True) -> EventSource:
    """Events on a real host, timer wake-ups elsewhere (a recorded tree, no pyudev).

    ``settled``: wait until udevd has processed the device (udev events, links exist);
    otherwise the kernel's uevents wake the waiter as soon as the device exists.
    """
    if os.path.realpath(sysfs_root) != "/sys":
        return PollingEventSource()
    if settled:
        return UdevEventSource() if UdevEventSource.available() else PollingEventSource()
    try:
        import pyudev  # noqa: F401
    except ImportError:
        return PollingEventSource()
    return UdevEventSource(source="kernel")


class DeviceWaiter:
    """Waits for LUN block devices, multipath maps, and removals; see the module docstring."""

    def __init__(
        self,
        sysfs_root: SysfsRoot | Path | str = Path("/sys"),
        *,
        source: EventSource | None = None,
        settled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = sysfs_root if isinstance(sysfs_root, SysfsRoot) else SysfsRoot(Path(sysfs_root))
        self.source = source if source is not None else default_source(self.root.path, settled=settled)
        self.sessions = Sessions(self.root)
        self.blocks = BlockDevices(self.root)
        self.scsi = ScsiDevices(self.root)
        self._clock = clock
        self._started = False

    def start(self) -> DeviceWaiter:
        if not self._started:
            self.source.start()
            self._started = True
        return self

    def stop(self) -> None:
        if self._started:
            self.source.stop()
            self._started = False

    def __enter__(self) -> DeviceWaiter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the core loop ----------------------------------------------------------------

    def wait_until(self, check: Callable[[], T | None], timeout: float, describe: Callable[[], str]) -> T:
        """Call ``check`` now and after every event until it returns non-None, or time out.

        ``describe`` builds the timeout message (what was expected, what was seen).
        """
        self.start()
        deadline = self._clock() + timeout
        while True:
            found = check()
            if found is not None:
                return found
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise DeviceTimeoutError(f"timed out after {timeout:g} s: {describe()}")
            event = self.source.poll(remaining)
            if event is not None:
                log.debug("udev %s %s", event.action, event.sys_path)

    # ---- what callers wait for ----------------------------------------------------------

    def lun_device(self, sid: int, lun: int) -> ScsiDevice | None:
        """The LUN's SCSI device if it has a block device that udev has finished with."""
        # Cheap on purpose (it runs after every event): one readlink for the session's
        # directory, one listdir per target directory, and only then the LUN's attributes.
        link = self.root / f"class/iscsi_session/session{sid}"
        try:
            session_dir = self.root.resolve(link).parent.parent
        except OSError:
            return None
        dev = None
        for tname in self.root.list(session_dir):
            if tname.startswith("target"):
                for lname in self.root.list(session_dir / tname):
                    if lname.rsplit(":", 1)[-1] == str(lun) and lname.count(":") == 3:
                        dev = self.scsi.from_sys_path(session_dir / tname / lname)
        if dev is None or dev.block is None:
            return None
        if not self.source.is_initialized(dev.block.sys_path):
            return None
        return dev

    def wait_for_lun(self, sid: int, lun: int, timeout: float) -> ScsiDevice:
        """Block until LUN ``lun`` of session ``sid`` has a ready block device; return it."""

        def describe() -> str:
            return self._describe_missing_lun(sid, lun)

        return self.wait_until(lambda: self.lun_device(sid, lun), timeout, describe)

    def _describe_missing_lun(self, sid: int, lun: int) -> str:
        try:
            session = self.sessions.from_sid(sid)
        except NoSuchSessionError:
            return f"expected a block device for LUN {lun} of session {sid}, but session {sid} is gone"
        where = f"LUN {lun} of session {sid} (target {session.target}, host{session.host.host_no})"
        dev = session.device(lun)
        luns = ", ".join(str(d.lun) for d in session.devices) or "none"
        if dev is None:
            return (
                f"expected {where} to appear under {session.sys_path}; the target has not reported "
                f"that LUN (LUNs seen: {luns}; session state {session.state})"
            )
        if dev.block is None:
            return f"{where} exists as SCSI device {dev.hctl} (state {dev.state}) but has no block device"
        return f"{where} is /dev/{dev.block.name} but udev has not finished processing it"

    def multipath_holder(self, paths: Sequence[str], *, require_all: bool = True) -> str | None:
        """The dm-multipath map (``dm-N``) holding the given path devices, once it holds them all."""
        maps: set[str] = set()
        for name in paths:
            dev = self.blocks.from_name(name)
            if dev is None:
                continue
            for holder in dev.holders:
                uuid = self.blocks.dm_uuid(holder) or ""
                if uuid.startswith("mpath-"):
                    maps.add(holder)
        if len(maps) != 1:
            return None
        (dm,) = maps
        if require_all and not set(paths) <= set(self.blocks.slaves(dm)):
            return None
        if not self.source.is_initialized(self.root.resolve(f"class/block/{dm}")):
            return None
        return dm

    def wait_for_multipath(self, paths: Sequence[str], timeout: float) -> str:
        """Block until one dm-multipath map holds every device in ``paths``; return ``dm-N``."""

        def describe() -> str:
            seen = {n: list(d.holders) if (d := self.blocks.from_name(n)) else None for n in paths}
            return (
                f"expected a dm-multipath map over {', '.join(paths)}; holders seen: {seen}. "
                "Is multipathd running, and does multipath.conf accept these devices (find_multipaths)?"
            )

        return self.wait_until(lambda: self.multipath_holder(paths), timeout, describe)

    def wait_gone(self, names: Sequence[str], timeout: float) -> None:
        """Block until none of the block devices ``names`` exists any more."""

        def check() -> bool | None:
            left = [n for n in names if os.path.lexists(self.root / f"class/block/{n}")]
            return True if not left else None

        def describe() -> str:
            left = [n for n in names if os.path.lexists(self.root / f"class/block/{n}")]
            return f"expected {', '.join(left)} to be removed, but still present"

        self.wait_until(check, timeout, describe)
