"""What ``clean`` found on a host (:class:`Survey`), as plain immutable values.

:mod:`iscsikit.clean.collect` builds a Survey from the open-iscsi DB, sysfs, /proc and the
connector's state dir; :mod:`iscsikit.clean.plan` turns it into ordered actions without any
I/O. Keeping the two apart is what lets the unit tests cover every kind of leftover on
synthetic trees, and what makes the plan reproducible from a saved survey.

Every view here holds values read at survey time, never handles to re-read later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from iscsikit.db.layout import DiscoveryRef, IfaceRef, LayoutProblem, LinkRef, NodeRef
from iscsikit.names import Portal

UsageKind = Literal["mount", "open", "swap", "holder"]

#: Session states that mean "not logged in right now" (the kernel's ``state`` attribute).
FAILING_SESSION_STATES = frozenset({"FAILED"})
#: Connection states that mean the connection is down (recent kernels publish these).
FAILING_CONN_STATES = frozenset({"failed", "down"})
#: The DB's record directories, in the order ``--reset`` removes them once empty.
RECORD_DIRS = ("static", "fw", "isns", "send_targets", "slp", "nodes", "ifaces")
#: open-iscsi's config files; ``--reset`` keeps them unless told otherwise.
CONFIG_FILES = ("initiatorname.iscsi", "iscsid.conf")
#: SCSI device states of a LUN the kernel has given up on (I/O fails at once).
DEAD_DEVICE_STATES = frozenset({"offline", "transport-offline"})


@dataclass(frozen=True, slots=True)
class Usage:
    """One reason a block device is in use: mounted, open by a process, swap, or held by a device."""

    kind: UsageKind
    what: str  # "/mnt/data", "pid 1234 (qemu-system-x86)", "dm-3 (vg0-data)", "/dev/sdb"
    via: str = ""  # the device that is actually used when not the disk itself ("sdb1", "dm-3")

    def __str__(self) -> str:
        on = f" via {self.via}" if self.via else ""
        if self.kind == "mount":
            return f"mounted at {self.what}{on}"
        if self.kind == "open":
            return f"open by {self.what}{on}"
        if self.kind == "swap":
            return f"used as swap{on}"
        return f"held by {self.what}{on}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "what": self.what, "via": self.via}


@dataclass(frozen=True, slots=True)
class SessionView:
    """An iSCSI session as sysfs showed it, with how long it has been failing (if it is).

    ``failed_for`` is a lower bound in seconds: from iscsikit's own record of when it first
    saw the session failing, or the session's recovery timeout once its LUNs went
    ``transport-offline`` (the kernel only gives up after that long). None: not failing.
    """

    sid: int
    target: str
    address: str | None
    port: int | None
    tpgt: int | None
    iface: str
    state: str | None
    conn_state: str | None
    recovery_tmo: int | None
    host: int
    flash: bool = False
    failed_for: float | None = None

    @property
    def portal(self) -> Portal | None:
        if self.address is None:
            return None
        return Portal(self.address, self.port or 3260, self.tpgt)

    @property
    def failing(self) -> bool:
        return self.state in FAILING_SESSION_STATES or self.conn_state in FAILING_CONN_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "target": self.target,
            "address": self.address,
            "port": self.port,
            "tpgt": self.tpgt,
            "iface": self.iface,
            "state": self.state,
            "connection_state": self.conn_state,
            "recovery_tmo": self.recovery_tmo,
            "host": self.host,
            "flash": self.flash,
            "failed_for": self.failed_for,
        }


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A SCSI device (LUN) of an iSCSI host: its block device, state and users.

    ``sid`` is None for an orphan: a device left on an iSCSI host whose session is gone.
    ``holders`` are the block devices stacked on it or its partitions (dm, md);
    ``multipath`` the one that is a multipath map. ``users`` is everything that keeps it
    busy apart from that map: mounts (of it or its partitions), open file descriptors,
    swap, and the other holders (an LVM volume on it, say).
    """

    hctl: str
    sid: int | None
    lun: int
    name: str | None  # sdX; None when the LUN has no block device (a controller LUN 0)
    devnum: str | None
    state: str | None
    scsi_type: int | None
    sys_path: str
    holders: tuple[str, ...] = ()
    multipath: str | None = None
    users: tuple[Usage, ...] = ()

    @property
    def label(self) -> str:
        return f"/dev/{self.name}" if self.name else f"SCSI device {self.hctl}"

    @property
    def dead(self) -> bool:
        return self.state in DEAD_DEVICE_STATES

    def to_json(self) -> dict[str, Any]:
        return {
            "hctl": self.hctl,
            "sid": self.sid,
            "lun": self.lun,
            "device": self.name,
            "devnum": self.devnum,
            "state": self.state,
            "type": self.scsi_type,
            "holders": list(self.holders),
            "multipath": self.multipath,
            "users": [u.to_json() for u in self.users],
        }


@dataclass(frozen=True, slots=True)
class MapView:
    """A dm-multipath map (``dm-N``, uuid ``mpath-...``): its paths, holders and users.

    ``users`` include what is stacked on the map (as ``holder`` usages) and the users of
    its kpartx partitions, which ``multipath -f`` removes with it.
    """

    name: str  # dm-N
    map_name: str | None  # mpatha or the WWID: /dev/mapper/<map_name>
    wwid: str | None
    paths: tuple[str, ...]
    devnum: str | None
    holders: tuple[str, ...] = ()
    users: tuple[Usage, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.map_name} ({self.name})" if self.map_name else self.name

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.name,
            "name": self.map_name,
            "wwid": self.wwid,
            "paths": list(self.paths),
            "holders": list(self.holders),
            "users": [u.to_json() for u in self.users],
        }


@dataclass(frozen=True, slots=True)
class AttachmentView:
    """One connector attachment record (``<state_dir>/attachments/<id>.json``).

    ``error`` is set (and the spec fields are None) when the file cannot be read or parsed.
    """

    volume_id: str
    path: str
    target: str | None = None
    portals: tuple[Portal, ...] = ()
    iface: str | None = None
    lun: int | None = None
    state: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "volume_id": self.volume_id,
            "path": self.path,
            "target": self.target,
            "portals": [str(p) for p in self.portals],
            "iface": self.iface,
            "lun": self.lun,
            "state": self.state,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class PendingItem:
    """A record an interrupted ``clean --yes`` had planned to delete (from its journal)."""

    kind: Literal["node", "discovery", "iface", "link", "attachment"]
    key: str  # NodeRef/DiscoveryRef relpath, iface name, link relpath or volume id

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key}


@dataclass(slots=True)
class Survey:
    """Everything ``clean`` looks at, read at ``taken_at`` (seconds since the epoch).

    The DB part comes from :meth:`iscsikit.db.database.Database.inventory`; ``empty_targets``
    are ``nodes/<target>`` directories holding no record (what a killed delete leaves);
    ``config_files`` are ``initiatorname.iscsi``/``iscsid.conf`` when they sit in the DB
    root; ``top_dirs`` the record directories present (``nodes``, ``send_targets``...);
    ``unreachable`` is the set of ``ADDR:PORT`` portals that refused or timed out
    (None when not probed); ``pending`` lists records of an interrupted run.
    """

    db_root: str
    link_root: str = ""
    taken_at: float = 0.0
    nodes: list[NodeRef] = field(default_factory=list)
    discoveries: list[DiscoveryRef] = field(default_factory=list)
    links: list[LinkRef] = field(default_factory=list)
    dangling: list[LinkRef] = field(default_factory=list)
    ifaces: list[IfaceRef] = field(default_factory=list)
    problems: list[LayoutProblem] = field(default_factory=list)
    empty_targets: list[str] = field(default_factory=list)
    config_files: list[str] = field(default_factory=list)
    top_dirs: list[str] = field(default_factory=list)
    sessions: list[SessionView] = field(default_factory=list)
    devices: list[DeviceView] = field(default_factory=list)
    maps: list[MapView] = field(default_factory=list)
    attachments: list[AttachmentView] = field(default_factory=list)
    unreachable: frozenset[str] | None = None
    pending: list[PendingItem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "db_root": self.db_root,
            "link_root": self.link_root,
            "taken_at": self.taken_at,
            "nodes": [n.to_json() for n in self.nodes],
            "discoveries": [d.to_json() for d in self.discoveries],
            "links": [link.to_json() for link in self.links],
            "dangling": [link.to_json() for link in self.dangling],
            "ifaces": [i.to_json() for i in self.ifaces],
            "problems": [p.to_json() for p in self.problems],
            "empty_targets": list(self.empty_targets),
            "config_files": list(self.config_files),
            "top_dirs": list(self.top_dirs),
            "sessions": [s.to_json() for s in self.sessions],
            "devices": [d.to_json() for d in self.devices],
            "maps": [m.to_json() for m in self.maps],
            "attachments": [a.to_json() for a in self.attachments],
            "unreachable": None if self.unreachable is None else sorted(self.unreachable),
            "pending": [p.to_json() for p in self.pending],
        }


def portal_key(address: str, port: int) -> str:
    """``ADDR:PORT`` (IPv6 bracketed): the key of :attr:`Survey.unreachable`."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


__all__ = [
    "CONFIG_FILES",
    "DEAD_DEVICE_STATES",
    "RECORD_DIRS",
    "AttachmentView",
    "DeviceView",
    "MapView",
    "PendingItem",
    "SessionView",
    "Survey",
    "Usage",
    "portal_key",
]
