"""Every iSCSI block device on the host, with where it comes from and what uses it.

Built from sysfs (sessions -> LUNs -> block devices -> holders) plus ``/dev/disk`` links and
``mountinfo``; nothing runs. This is what ``iscsikit device list`` prints and what the
connector uses to describe an attachment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iscsikit.devices.paths import WwnInfo, by_path_name, links_to
from iscsikit.session.sysfs import BlockDevices, IscsiSession, ScsiDevice, Sessions, SysfsRoot


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One iSCSI disk (``/dev/sdX``) and its context."""

    name: str
    sid: int
    target: str
    address: str | None
    port: int | None
    tpgt: int | None
    iface: str | None
    lun: int
    hctl: str
    state: str | None
    size_bytes: int
    read_only: bool
    wwn: str | None
    wwid: str | None
    by_path: str | None  # the link udev makes (None when it does not exist, e.g. no udev)
    by_id: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    multipath: str | None = None  # dm-N of a multipath map holding it
    multipath_name: str | None = None
    mountpoints: tuple[str, ...] = field(default_factory=tuple)

    @property
    def devnode(self) -> str:
        return f"/dev/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.devnode,
            "sid": self.sid,
            "target": self.target,
            "address": self.address,
            "port": self.port,
            "tpgt": self.tpgt,
            "iface": self.iface,
            "lun": self.lun,
            "hctl": self.hctl,
            "state": self.state,
            "size_bytes": self.size_bytes,
            "read_only": self.read_only,
            "wwn": self.wwn,
            "wwid": self.wwid,
            "by_path": self.by_path,
            "by_id": list(self.by_id),
            "holders": list(self.holders),
            "multipath": self.multipath,
            "multipath_name": self.multipath_name,
            "mountpoints": list(self.mountpoints),
        }


def read_mountinfo(path: Path) -> dict[str, list[str]]:
    """``major:minor`` -> mount points, from a ``mountinfo`` file (missing file: empty)."""
    out: dict[str, list[str]] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5:
            out.setdefault(parts[2], []).append(_unescape(parts[4]))
    return out


def _unescape(text: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


class Inventory:
    """Builds :class:`DeviceInfo` records (see module docstring)."""

    def __init__(
        self,
        sysfs_root: SysfsRoot | Path | str = Path("/sys"),
        dev_root: Path | str = Path("/dev"),
        mountinfo: Path | str = Path("/proc/self/mountinfo"),
    ) -> None:
        self.root = sysfs_root if isinstance(sysfs_root, SysfsRoot) else SysfsRoot(Path(sysfs_root))
        self.dev_root = Path(dev_root)
        self.mountinfo = Path(mountinfo)
        self.sessions = Sessions(self.root)
        self.blocks = BlockDevices(self.root)

    def describe(
        self, session: IscsiSession, dev: ScsiDevice, mounts: dict[str, list[str]] | None = None
    ) -> DeviceInfo | None:
        block = dev.block
        if block is None:
            return None
        if mounts is None:
            mounts = read_mountinfo(self.mountinfo)
        conn = session.connection
        address = conn.persistent_address if conn else None
        port = conn.persistent_port if conn else None
        by_path = None
        if address is not None and port is not None:
            candidate = self.dev_root / "disk/by-path" / by_path_name(address, port, session.target, dev.lun)
            if candidate.is_symlink() and Path(str(candidate)).resolve().name == block.name:
                by_path = str(candidate)
        wwn = WwnInfo.from_sysfs_wwid(dev.wwid) if dev.wwid else None
        multipath = None
        for holder in block.holders:
            if (self.blocks.dm_uuid(holder) or "").startswith("mpath-"):
                multipath = holder
        points = list(mounts.get(block.devnum, []))
        if multipath:
            mdev = self.blocks.from_name(multipath)
            if mdev:
                points += mounts.get(mdev.devnum, [])
        return DeviceInfo(
            name=block.name,
            sid=session.sid,
            target=session.target,
            address=address,
            port=port,
            tpgt=session.tpgt,
            iface=session.iface_name,
            lun=dev.lun,
            hctl=dev.hctl,
            state=dev.state,
            size_bytes=block.size_bytes,
            read_only=block.read_only,
            wwn=wwn.wwn if wwn else None,
            wwid=wwn.wwid if wwn else None,
            by_path=by_path,
            by_id=tuple(links_to(self.dev_root / "disk/by-id", block.name)),
            holders=block.holders,
            multipath=multipath,
            multipath_name=self.blocks.dm_name(multipath) if multipath else None,
            mountpoints=tuple(points),
        )

    def devices(self) -> list[DeviceInfo]:
        mounts = read_mountinfo(self.mountinfo)
        out = []
        for session in self.sessions.all():
            for dev in session.devices:
                info = self.describe(session, dev, mounts)
                if info is not None:
                    out.append(info)
        return out
