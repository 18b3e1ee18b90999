"""Names of a block device: by-path, by-id, WWN and WWID.

``by_path_name`` computes what udev's ``path_id`` builtin names an iSCSI disk
(``ip-<persistent address>:<persistent port>-iscsi-<target>-lun-<L>``, IPv6 unbracketed, LUNs
of 256 and up in the ``0x%04x%04x00000000`` form). ``links_to`` lists the symlinks under a
``/dev/disk`` directory that point at a device. The WWN comes from the kernel's own
``device/wwid`` (page 0x83), converted to udev's and multipath's spellings, so nothing here
needs udev or ``scsi_id``.

>>> by_path_name("2001:db8::11", 3260, "iqn.2026-11.org.ex:t1", 1)
'ip-2001:db8::11:3260-iscsi-iqn.2026-11.org.ex:t1-lun-1'
>>> by_path_name("10.0.0.1", 3260, "iqn.2026-11.org.ex:t1", 16384)
'ip-10.0.0.1:3260-iscsi-iqn.2026-11.org.ex:t1-lun-0x4000000000000000'
>>> WwnInfo.from_sysfs_wwid("naa.60000000000000000e00000000010001").wwid
'360000000000000000e00000000010001'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def format_lun(lun: int) -> str:
    """udev path_id's LUN part: ``lun-5``, or ``lun-0x%04x%04x00000000`` from 256 on."""
    if lun < 256:
        return f"lun-{lun}"
    return f"lun-0x{lun & 0xFFFF:04x}{(lun >> 16) & 0xFFFF:04x}00000000"


def by_path_name(address: str, port: int, target: str, lun: int) -> str:
    """The ``/dev/disk/by-path`` name udev gives an iSCSI disk (address as in sysfs, unbracketed)."""
    return f"ip-{address.strip('[]')}:{port}-iscsi-{target}-{format_lun(lun)}"


def links_to(directory: Path, devname: str) -> list[str]:
    """Full paths of symlinks in ``directory`` that resolve to ``/dev/<devname>`` (sorted)."""
    out = []
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    for entry in entries:
        path = directory / entry
        try:
            target = os.readlink(path)
        except OSError:
            continue
        if os.path.basename(target) == devname and not entry.endswith(tuple(f"-part{i}" for i in range(1, 10))):
            out.append(str(path))
    return sorted(out)


def resolve_link(path: str | Path) -> str | None:
    """The kernel name a ``/dev/disk/...`` link points at (``sdb``), or None if it dangles."""
    try:
        target = os.readlink(path)
    except OSError:
        return None
    return os.path.basename(target)


@dataclass(frozen=True, slots=True)
class WwnInfo:
    """One LUN identity in its three spellings.

    ``sysfs``: the kernel's ``device/wwid`` (``naa.6000...``); ``wwn``: udev's
    ``ID_WWN_WITH_EXTENSION`` and ``/dev/disk/by-id/wwn-*`` (``0x6000...``), None for T10
    vendor ids; ``wwid``: what multipath and ``scsi_id -g`` call it (``36000...``).
    """

    sysfs: str
    wwn: str | None
    wwid: str

    @classmethod
    def from_sysfs_wwid(cls, value: str) -> WwnInfo:
        value = " ".join(value.split())
        kind, _, ident = value.partition(".")
        kind = kind.lower()
        if kind == "naa":
            return cls(value, f"0x{ident.lower()}", f"3{ident.lower()}")
        if kind == "eui":
            return cls(value, f"0x{ident.lower()}", f"2{ident.lower()}")
        if kind == "t10":
            return cls(value, None, "1" + ident.replace(" ", "_"))
        return cls(value, None, "8" + value.replace(" ", "_"))
