"""iSCSI sessions, connections, hosts, LUNs and block devices, read from sysfs.

No iscsiadm and no iscsid are needed to list sessions: the kernel publishes everything
under ``/sys/class/iscsi_session`` and friends (open-iscsi-format.md section 5). The shape
follows pyudev: *factories* (:class:`Sessions`, :class:`ScsiDevices`, :class:`BlockDevices`)
look things up under an injected :class:`SysfsRoot`; what they return are immutable typed
*views* (:class:`IscsiSession`, :class:`ScsiDevice`, :class:`BlockDevice`...) holding the
values read at lookup time. Nothing is read at import or construction.

The device for a LUN is found through the session's own SCSI host and target directory
(``<host>/session<S>/target<H>:0:<T>/<H>:0:<T>:<L>/block/<sdX>``), the way iscsiadm does, never
by guessing from names or by-path links (longhorn/longhorn#1223).

>>> from pathlib import Path
>>> sessions = Sessions(SysfsRoot(Path("/nonexistent")))
>>> sessions.all()
[]
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iscsikit.errors import NoSuchSessionError, SysfsError
from iscsikit.names import Portal

_NULL = "(null)"
_HOST_RE = re.compile(r"/host(\d+)/session(\d+)(?:/|$)")
_TARGET_RE = re.compile(r"^target(\d+):(\d+):(\d+)$")
_HCTL_RE = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")
_SESSION_RE = re.compile(r"^session(\d+)$")
_CONN_RE = re.compile(r"^connection(\d+):(\d+)$")
_BLOCK_PATH_RE = re.compile(r"/host(\d+)/session(\d+)/target\d+:\d+:\d+/(\d+):(\d+):(\d+):(\d+)/block/([^/]+)$")

# Negotiated session parameters worth reporting, as the kernel names them.
_SESSION_PARAMS = (
    "initial_r2t",
    "immediate_data",
    "first_burst_len",
    "max_burst_len",
    "max_outstanding_r2t",
    "erl",
    "data_pdu_in_order",
    "data_seq_in_order",
    "def_time2wait",
    "def_time2retain",
)
_CONN_PARAMS = ("max_recv_dlength", "max_xmit_dlength", "header_digest", "data_digest")


# --------------------------------------------------------------------------------------
# Reading attributes


@dataclass(frozen=True, slots=True)
class SysfsRoot:
    """Where sysfs is mounted: ``/sys`` on a host, a recorded tree in tests, a bind mount in a container."""

    path: Path = Path("/sys")

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel.lstrip("/")

    def resolve(self, rel: str | Path) -> Path:
        """Resolve the symlinks of a path below the root (kernfs links are relative, so they stay inside)."""
        p = rel if isinstance(rel, Path) and rel.is_absolute() else self / str(rel)
        return Path(os.path.realpath(p))

    def list(self, rel: str | Path) -> list[str]:
        p = rel if isinstance(rel, Path) and rel.is_absolute() else self / str(rel)
        try:
            return os.listdir(p)
        except OSError:
            return []


def read_attr(path: Path) -> str | None:
    """One sysfs attribute, stripped; None when missing, unreadable (ENOTCONN, EACCES) or ``(null)``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        if exc.errno in (
            errno.ENOENT,
            errno.ENOTDIR,
            errno.ENOTCONN,
            errno.EACCES,
            errno.EPERM,
            errno.EINVAL,
            errno.EIO,
            errno.ENODEV,
            errno.ENXIO,
            errno.EOPNOTSUPP,
        ):
            return None
        raise SysfsError(f"cannot read {path}: {exc.strerror}") from None
    text = data.decode("utf-8", "replace").rstrip("\n")
    return None if text == _NULL else text


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    try:
        return int(value, 0) if value.lower().startswith("0x") else int(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Attributes:
    """Typed reads of one sysfs directory (pyudev's ``Attributes`` with types)."""

    path: Path

    def get(self, name: str, default: str | None = None) -> str | None:
        value = read_attr(self.path / name)
        return default if value is None else value

    def asint(self, name: str) -> int | None:
        return _int(read_attr(self.path / name))

    def asbool(self, name: str) -> bool | None:
        value = read_attr(self.path / name)
        if value is None:
            return None
        value = value.strip()
        if value in ("0", "1"):
            return value == "1"
        return None


# --------------------------------------------------------------------------------------
# Views


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """A whole-disk block device (``sdX`` or ``dm-N``) as sysfs showed it."""

    name: str
    major: int
    minor: int
    size_bytes: int
    read_only: bool
    holders: tuple[str, ...]
    sys_path: Path

    @property
    def devnode(self) -> str:
        return f"/dev/{self.name}"

    @property
    def devnum(self) -> str:
        return f"{self.major}:{self.minor}"


@dataclass(frozen=True, slots=True)
class ScsiDevice:
    """One LUN of a session (``H:C:T:L``) and its block device, if it has one."""

    host: int
    channel: int
    target_id: int
    lun: int
    state: str | None
    type: int | None  # 0 disk, 12 storage-array controller (tgt's LUN 0)
    vendor: str | None
    model: str | None
    wwid: str | None
    block: BlockDevice | None
    sys_path: Path

    @property
    def hctl(self) -> str:
        return f"{self.host}:{self.channel}:{self.target_id}:{self.lun}"

    def to_json(self) -> dict[str, Any]:
        return {
            "hctl": self.hctl,
            "lun": self.lun,
            "state": self.state,
            "type": self.type,
            "vendor": self.vendor,
            "model": self.model,
            "wwid": self.wwid,
            "device": self.block.devnode if self.block else None,
            "size_bytes": self.block.size_bytes if self.block else None,
            "holders": list(self.block.holders) if self.block else [],
        }


@dataclass(frozen=True, slots=True)
class IscsiConnection:
    """``connection<S>:<C>``: where the session's (only) connection goes."""

    cid: int
    persistent_address: str | None
    persistent_port: int | None
    address: str | None  # current endpoint; None while the connection is down (ENOTCONN)
    port: int | None
    state: str | None  # up, down, failed, bound (recent kernels)
    params: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IscsiHost:
    """The SCSI host a session runs on (one per session with iscsi_tcp)."""

    host_no: int
    state: str | None
    transport: str | None  # proc_name without its "iscsi_" prefix: tcp, iser, bnx2i...
    initiator_name: str | None
    ip_address: str | None
    netdev: str | None
    hw_address: str | None


@dataclass(frozen=True, slots=True)
class IscsiSession:
    """One iSCSI session and everything below it, read at one moment."""

    sid: int
    target: str
    tpgt: int | None
    state: str | None  # LOGGED_IN, FAILED, FREE
    target_state: str | None  # SCANNED, ... (recent kernels)
    creator: int | None  # -1 for firmware/offload-created ("flash") sessions
    target_id: int | None
    iface_name: str | None
    initiator_name: str | None
    username: str | None
    timeouts: dict[str, int | None]
    params: dict[str, int | None]
    connection: IscsiConnection | None
    host: IscsiHost
    devices: tuple[ScsiDevice, ...]
    sys_path: Path

    @property
    def portal(self) -> Portal:
        """The persistent portal: the one logged into, the session's identity."""
        conn = self.connection
        if conn is None or conn.persistent_address is None:
            raise SysfsError(f"session {self.sid} has no connection, so no portal")
        return Portal(conn.persistent_address, conn.persistent_port or 3260, self.tpgt)

    @property
    def current_portal(self) -> Portal | None:
        conn = self.connection
        if conn is None or conn.address is None:
            return None
        return Portal(conn.address, conn.port or 3260, self.tpgt)

    @property
    def transport(self) -> str | None:
        return self.host.transport

    @property
    def flash(self) -> bool:
        return self.creator == -1

    def device(self, lun: int) -> ScsiDevice | None:
        for dev in self.devices:
            if dev.lun == lun:
                return dev
        return None

    def matches(self, target: str | None = None, portal: Portal | None = None, iface: str | None = None) -> bool:
        """Whether this session is for ``target`` (and ``portal``, ``iface`` when given).

        A portal without tpgt matches any tpgt; the persistent and current portals both count.
        """
        if target is not None and self.target != target:
            return False
        if iface is not None and (self.iface_name or "default") != iface:
            return False
        if portal is not None:
            candidates = [p for p in (self._portal_or_none(), self.current_portal) if p is not None]
            if not any(portal.matches(p) for p in candidates):
                return False
        return True

    def _portal_or_none(self) -> Portal | None:
        try:
            return self.portal
        except SysfsError:
            return None

    def to_json(self) -> dict[str, Any]:
        portal = self._portal_or_none()
        current = self.current_portal
        return {
            "sid": self.sid,
            "target": self.target,
            "address": portal.address if portal else None,
            "port": portal.port if portal else None,
            "tpgt": self.tpgt,
            "current_address": current.address if current else None,
            "current_port": current.port if current else None,
            "iface": self.iface_name,
            "initiator_name": self.initiator_name,
            "transport": self.transport,
            "state": self.state,
            "connection_state": self.connection.state if self.connection else None,
            "host": self.host.host_no,
            "host_state": self.host.state,
            "timeouts": dict(self.timeouts),
            "devices": [d.to_json() for d in self.devices],
        }


# --------------------------------------------------------------------------------------
# Factories


class BlockDevices:
    """Look up block devices by name (``sdb``, ``dm-3``)."""

    def __init__(self, root: SysfsRoot | Path | str = Path("/sys")) -> None:
        self.root = root if isinstance(root, SysfsRoot) else SysfsRoot(Path(root))

    def from_name(self, name: str) -> BlockDevice | None:
        if "/" in name or name in (".", ".."):
            return None
        link = self.root / f"class/block/{name}"
        if not os.path.lexists(link):
            return None
        return self.from_sys_path(self.root.resolve(link))

    def from_sys_path(self, path: Path) -> BlockDevice | None:
        attrs = Attributes(path)
        dev = attrs.get("dev")
        if dev is None or ":" not in dev:
            return None
        major, _, minor = dev.partition(":")
        sectors = attrs.asint("size") or 0
        return BlockDevice(
            name=path.name,
            major=int(major),
            minor=int(minor),
            size_bytes=sectors * 512,
            read_only=attrs.asbool("ro") or False,
            holders=tuple(sorted(self.root.list(path / "holders"))),
            sys_path=path,
        )

    def slaves(self, name: str) -> list[str]:
        """The devices below a dm device (``dm-3`` -> ``["sdb", "sdc"]``)."""
        return sorted(self.root.list(self.root / f"class/block/{name}/slaves"))

    def dm_name(self, name: str) -> str | None:
        return Attributes(self.root / f"class/block/{name}/dm").get("name")

    def dm_uuid(self, name: str) -> str | None:
        return Attributes(self.root / f"class/block/{name}/dm").get("uuid")

    def iscsi_location(self, name: str) -> tuple[int, int, int, int, int, int] | None:
        """(host, sid, H, C, T, L) when ``name`` is a disk of an iSCSI session, else None."""
        link = self.root / f"class/block/{name}"
        if not os.path.lexists(link):
            return None
        m = _BLOCK_PATH_RE.search(str(self.root.resolve(link)))
        if not m:
            return None
        host, sid, h, c, t, lun, _ = m.groups()
        return int(host), int(sid), int(h), int(c), int(t), int(lun)


class ScsiDevices:
    """Look up SCSI devices (LUNs) by ``H:C:T:L``."""

    def __init__(self, root: SysfsRoot | Path | str = Path("/sys")) -> None:
        self.root = root if isinstance(root, SysfsRoot) else SysfsRoot(Path(root))
        self._blocks = BlockDevices(self.root)

    def from_hctl(self, host: int, channel: int, target_id: int, lun: int) -> ScsiDevice | None:
        link = self.root / f"bus/scsi/devices/{host}:{channel}:{target_id}:{lun}"
        if not os.path.lexists(link):
            return None
        return self.from_sys_path(self.root.resolve(link))

    def from_sys_path(self, path: Path) -> ScsiDevice | None:
        m = _HCTL_RE.match(path.name)
        if not m or not path.is_dir():
            return None
        h, c, t, lun = (int(x) for x in m.groups())
        attrs = Attributes(path)
        block = None
        for entry in sorted(self.root.list(path)):
            if entry == "block":
                for name in sorted(self.root.list(path / "block")):
                    block = self._blocks.from_sys_path(path / "block" / name)
                    break
                break
            if entry.startswith("block:"):  # kernels before 2.6.25
                block = self._blocks.from_name(entry.split(":", 1)[1])
                break
        vendor, model = attrs.get("vendor"), attrs.get("model")
        return ScsiDevice(
            host=h,
            channel=c,
            target_id=t,
            lun=lun,
            state=attrs.get("state"),
            type=attrs.asint("type"),
            vendor=vendor.strip() if vendor else None,
            model=model.strip() if model else None,
            wwid=_clean_wwid(attrs.get("wwid")),
            block=block,
            sys_path=path,
        )


def _clean_wwid(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())  # t10 ids are padded with runs of spaces
    return value or None


class Sessions:
    """Look up iSCSI sessions under a sysfs root.

    >>> Sessions("/sys").sids()  # doctest: +SKIP
    [1, 2]
    """

    def __init__(self, root: SysfsRoot | Path | str = Path("/sys")) -> None:
        self.root = root if isinstance(root, SysfsRoot) else SysfsRoot(Path(root))
        self._scsi = ScsiDevices(self.root)

    def sids(self) -> list[int]:
        """SIDs in numeric order (iscsiadm prints them in text order: 1, 10, 2)."""
        out = []
        for name in self.root.list("class/iscsi_session"):
            m = _SESSION_RE.match(name)
            if m:
                out.append(int(m.group(1)))
        return sorted(out)

    def all(self) -> list[IscsiSession]:
        out = []
        for sid in self.sids():
            try:
                out.append(self.from_sid(sid))
            except NoSuchSessionError:
                continue  # logged out while we listed
        return out

    def __iter__(self) -> Iterator[IscsiSession]:
        return iter(self.all())

    def find(
        self, target: str | None = None, portal: Portal | None = None, iface: str | None = None
    ) -> list[IscsiSession]:
        return [s for s in self.all() if s.matches(target, portal, iface)]

    def from_sid(self, sid: int) -> IscsiSession:
        link = self.root / f"class/iscsi_session/session{sid}"
        if not os.path.lexists(link):
            raise NoSuchSessionError(sid, str(self.root.path))
        sess_attr_dir = self.root.resolve(link)
        if not sess_attr_dir.is_dir():
            raise NoSuchSessionError(sid, str(self.root.path))
        # .../hostH/sessionS/iscsi_session/sessionS -> .../hostH/sessionS
        session_dir = sess_attr_dir.parent.parent
        m = _HOST_RE.search(str(session_dir))
        if not m:
            raise SysfsError(f"session {sid}: cannot find its SCSI host in {session_dir}")
        host_no = int(m.group(1))
        host_dir = session_dir.parent
        a = Attributes(sess_attr_dir)
        target = a.get("targetname")
        if target is None:
            if not sess_attr_dir.exists():
                raise NoSuchSessionError(sid, str(self.root.path))
            raise SysfsError(f"session {sid}: cannot read {sess_attr_dir}/targetname")
        recovery = a.get("recovery_tmo")
        timeouts = {
            "recovery": -1 if recovery == "off" else _int(recovery),
            "abort": a.asint("abort_tmo"),
            "lun_reset": a.asint("lu_reset_tmo"),
            "target_reset": a.asint("tgt_reset_tmo"),
        }
        initiator = a.get("initiatorname")
        return IscsiSession(
            sid=sid,
            target=target,
            tpgt=a.asint("tpgt"),
            state=a.get("state"),
            target_state=a.get("target_state"),
            creator=a.asint("creator"),
            target_id=a.asint("target_id"),
            iface_name=a.get("ifacename"),
            initiator_name=initiator,
            username=a.get("username"),
            timeouts=timeouts,
            params={k: a.asint(k) for k in _SESSION_PARAMS},
            connection=self._connection(session_dir, sid),
            host=self._host(host_dir, host_no, initiator),
            devices=tuple(self._devices(session_dir)),
            sys_path=session_dir,
        )

    def _connection(self, session_dir: Path, sid: int) -> IscsiConnection | None:
        conns = []
        for name in self.root.list(session_dir):
            m = _CONN_RE.match(name)
            if m and int(m.group(1)) == sid:
                conns.append((int(m.group(2)), name))
        if not conns:
            return None
        cid, name = min(conns)  # open-iscsi and udev use cid 0
        a = Attributes(session_dir / name / "iscsi_connection" / name)
        paddr, addr = a.get("persistent_address"), a.get("address")
        pport, port = a.asint("persistent_port"), a.asint("port")
        # libopeniscsiusr: each pair falls back to the other when unreadable.
        return IscsiConnection(
            cid=cid,
            persistent_address=paddr if paddr is not None else addr,
            persistent_port=pport if pport is not None else port,
            address=addr,
            port=port,
            state=a.get("state"),
            params={k: a.asint(k) for k in _CONN_PARAMS},
        )

    def _host(self, host_dir: Path, host_no: int, session_initiator: str | None = None) -> IscsiHost:
        # A software transport (iscsi_tcp) leaves the host's initiatorname "(null)": iscsid sets
        # the name on the session only. iscsiadm's "Iface Initiatorname" then shows the
        # session's, and so do we.
        ih = Attributes(host_dir / "iscsi_host" / f"host{host_no}")
        sh = Attributes(host_dir / "scsi_host" / f"host{host_no}")
        proc = sh.get("proc_name")
        return IscsiHost(
            host_no=host_no,
            state=sh.get("state"),
            transport=proc.removeprefix("iscsi_") if proc else None,
            initiator_name=ih.get("initiatorname") or session_initiator,
            ip_address=ih.get("ipaddress"),
            netdev=ih.get("netdev"),
            hw_address=ih.get("hwaddress"),
        )

    def _devices(self, session_dir: Path) -> Iterator[ScsiDevice]:
        found: list[ScsiDevice] = []
        for tname in self.root.list(session_dir):
            if not _TARGET_RE.match(tname):
                continue
            tdir = session_dir / tname
            for lname in self.root.list(tdir):
                if _HCTL_RE.match(lname):
                    dev = self._scsi.from_sys_path(tdir / lname)
                    if dev is not None:
                        found.append(dev)
        found.sort(key=lambda d: (d.host, d.channel, d.target_id, d.lun))
        return iter(found)


def scsi_host_of_session(root: SysfsRoot, sid: int) -> int:
    """The SCSI host number of session ``sid`` (cheap: one readlink)."""
    link = root / f"class/iscsi_session/session{sid}"
    if not os.path.lexists(link):
        raise NoSuchSessionError(sid, str(root.path))
    m = _HOST_RE.search(str(root.resolve(link)))
    if not m:
        raise SysfsError(f"session {sid}: cannot find its SCSI host")
    return int(m.group(1))
