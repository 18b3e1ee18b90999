"""SCSI device operations through sysfs: scan one LUN, rescan after growth, remove cleanly.

Every write goes through :meth:`Runner.write_file` (recorded, not written, in dry-run), and
every path is below the injected sysfs root, never a hard-coded ``/sys``.

* ``scan_lun`` writes ``"C T L"`` to ``scsi_host/hostH/scan``: only that LUN appears, not every
  LUN the target exports (kubernetes/kubernetes#90982).
* ``remove`` refuses a device that is mounted or held (dm, md), flushes its buffers, writes
  ``1`` to ``device/delete`` and waits for it to be gone: logging out with devices still
  present spins kernel workers (open-iscsi#90).
* ``rescan`` writes ``1`` to ``device/rescan`` so a grown LUN shows its new size.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from iscsikit.errors import DeviceBusyError, DeviceError
from iscsikit.runner import Runner
from iscsikit.session.sysfs import Attributes, BlockDevices, SysfsRoot

log = logging.getLogger("iscsikit.devices")


class ScsiOps:
    """SCSI-level operations on a host (see the module docstring)."""

    def __init__(
        self,
        runner: Runner,
        sysfs_root: SysfsRoot | Path | str = Path("/sys"),
        dev_root: Path | str = Path("/dev"),
    ) -> None:
        self.runner = runner
        self.root = sysfs_root if isinstance(sysfs_root, SysfsRoot) else SysfsRoot(Path(sysfs_root))
        self.dev_root = Path(dev_root)
        self.blocks = BlockDevices(self.root)

    def scan_lun(self, host: int, channel: int, target_id: int, lun: int) -> None:
        path = self.root / f"class/scsi_host/host{int(host)}/scan"
        if not self.runner.dry_run and not path.exists():
            raise DeviceError(f"cannot scan LUN {lun}: SCSI host {host} is gone ({path} missing)")
        self.runner.write_file(path, f"{int(channel)} {int(target_id)} {int(lun)}")

    def rescan(self, name: str) -> int:
        """Re-read a disk's capacity; returns the size in bytes seen afterwards."""
        path = self._device_attr(name, "rescan")
        self.runner.write_file(path, "1")
        dev = self.blocks.from_name(name)
        return dev.size_bytes if dev else 0

    def size_bytes(self, name: str) -> int | None:
        dev = self.blocks.from_name(name)
        return dev.size_bytes if dev else None

    def check_unused(self, name: str) -> None:
        """Raise DeviceBusyError if ``name`` is held by another device or mounted."""
        dev = self.blocks.from_name(name)
        if dev is None:
            return
        if dev.holders:
            raise DeviceBusyError(f"/dev/{name} is held by {', '.join(dev.holders)}; remove those first")
        node = self.dev_root / name
        if not node.exists():
            return  # no device node in this mount namespace; holders were the check we could do
        try:
            fd = os.open(node, os.O_RDONLY | os.O_EXCL | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise DeviceBusyError(
                    f"/dev/{name} is in use (mounted, or opened exclusively); unmount it first"
                ) from None
            log.debug("exclusive open of %s: %s", node, exc)
            return
        os.close(fd)

    def flush_buffers(self, name: str) -> None:
        # Runs where the runner runs (the host's namespaces with --host ns/chroot), so the
        # host's /dev path, not dev_root (which is where *this* process sees /dev).
        self.runner.run(["blockdev", "--flushbufs", f"/dev/{name}"], timeout=120, mutating=True)

    def delete(self, name: str) -> None:
        self.runner.write_file(self._device_attr(name, "delete"), "1")

    def state(self, name: str) -> str | None:
        return Attributes(self.root / f"class/block/{name}/device").get("state")

    def _device_attr(self, name: str, attr: str) -> Path:
        if "/" in name or not name:
            raise DeviceError(f"not a block device name: {name!r}")
        path = self.root / f"class/block/{name}/device/{attr}"
        if not self.runner.dry_run and not path.exists():
            raise DeviceError(f"/dev/{name} has no {path}: not a SCSI disk, or already removed")
        return path

    def remove(self, name: str, *, force: bool = False, flush: bool = True) -> None:
        """Flush and delete one SCSI disk. Already gone is success.

        Without ``force`` a mounted or held device raises DeviceBusyError and nothing is done.
        A flush failure (the LUN may be unreachable) does not stop the delete with ``force``.
        """
        if not os.path.lexists(self.root / f"class/block/{name}"):
            return
        if not force:
            self.check_unused(name)
        if flush and self.state(name) == "running":
            try:
                self.flush_buffers(name)
            except Exception as exc:
                if not force:
                    raise
                log.warning("flushing /dev/%s failed, deleting anyway: %s", name, exc)
        self.delete(name)
