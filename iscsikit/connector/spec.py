"""What a CSI plugin asks for (:class:`VolumeSpec`) and what it gets back (:class:`Attachment`).

Both are frozen dataclasses that round-trip through plain dicts (JSON), so a node plugin can
keep the spec in its staging metadata and the connector can persist attachments. Secrets
(CHAP passwords) are never written by :meth:`VolumeSpec.to_dict` unless asked.

>>> spec = VolumeSpec(
...     volume_id="pvc-1", target="iqn.2026-11.org.example:vol1",
...     portals=("10.0.0.1:3260",), lun=1,
... )
>>> spec.portals[0]
Portal(address='10.0.0.1', port=3260, tpgt=None)
>>> VolumeSpec.from_dict(spec.to_dict()) == spec
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from iscsikit.errors import UsageError
from iscsikit.iscsiadm import NODE_TIMEOUT_KEYS, Chap
from iscsikit.names import Portal, check_path_component, validate_iface_name, validate_iscsi_name

State = Literal["connecting", "attached", "disconnecting"]
MAX_LUN = 65535


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-volume node timeouts (seconds); None leaves iscsid.conf's value.

    For multipath, a short ``replacement_timeout`` (e.g. 15) makes I/O fail over quickly
    instead of hanging for the default 120 s (longhorn/longhorn#8382).
    """

    replacement_timeout: int | None = None
    abort_timeout: int | None = None
    lu_reset_timeout: int | None = None
    tgt_reset_timeout: int | None = None
    host_reset_timeout: int | None = None
    login_timeout: int | None = None
    logout_timeout: int | None = None
    noop_out_interval: int | None = None
    noop_out_timeout: int | None = None
    initial_login_retry_max: int | None = None

    def __post_init__(self) -> None:
        for name in NODE_TIMEOUT_KEYS:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise UsageError(f"timeout {name} must be a whole number of seconds >= 0, got {value!r}")

    def settings(self) -> dict[str, str]:
        """open-iscsi node keys for the timeouts that are set."""
        return {
            NODE_TIMEOUT_KEYS[name]: str(getattr(self, name))
            for name in NODE_TIMEOUT_KEYS
            if getattr(self, name) is not None
        }

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in NODE_TIMEOUT_KEYS if getattr(self, name) is not None}


def _chap_to_dict(chap: Chap | None, secrets: bool) -> dict[str, Any] | None:
    if chap is None:
        return None
    out: dict[str, Any] = {"username": chap.username}
    if chap.username_in:
        out["username_in"] = chap.username_in
    if secrets:
        out["password"] = chap.password
        if chap.password_in:
            out["password_in"] = chap.password_in
    return out


def _chap_from_dict(data: Any, where: str) -> Chap | None:
    if data is None:
        return None
    if isinstance(data, Chap):
        return data
    if not isinstance(data, Mapping):
        raise UsageError(f"{where} must be a mapping with username and password")
    password = data.get("password")
    if password is None:
        # Persisted specs carry no secrets: keep the user name, mark the secret unknown.
        return _StoredChap(str(data["username"]), data.get("username_in"))
    return Chap(str(data["username"]), str(password), data.get("username_in"), data.get("password_in"))


class _StoredChap(Chap):
    """A CHAP entry read back from the state store: names only, no secrets."""

    def __init__(self, username: str, username_in: str | None = None) -> None:
        object.__setattr__(self, "username", username)
        object.__setattr__(self, "password", "")
        object.__setattr__(self, "username_in", username_in)
        object.__setattr__(self, "password_in", None)


@dataclass(frozen=True, slots=True)
class VolumeSpec:
    """One volume to attach: a LUN of a target, reached through one or more portals.

    ``volume_id`` names the attachment (the CSI volume id); it becomes a file name under
    the state dir, so it must be safe as one. ``iface`` is the open-iscsi iface to log in
    through; with ``initiator_name`` set, a clone of that iface carrying the name is used
    (as Kubernetes' in-tree plugin does). ``multipath=True`` logs in to every portal and
    returns the dm-multipath map; otherwise the first portal that logs in is used.
    ``discovery=True`` runs SendTargets discovery (with ``discovery_chap``) on each portal
    first; otherwise node records are created statically. ``scan="manual"`` (default) sets
    ``node.session.scan = manual`` and scans only this LUN (kubernetes/kubernetes#90982).
    ``settings`` are extra node keys (``node.session.cmds_max`` ...), applied last.
    """

    volume_id: str
    target: str
    portals: tuple[Portal, ...]
    lun: int
    iface: str = "default"
    initiator_name: str | None = None
    chap: Chap | None = None
    discovery: bool = False
    discovery_chap: Chap | None = None
    multipath: bool = False
    timeouts: Timeouts = field(default_factory=Timeouts)
    scan: Literal["manual", "auto"] = "manual"
    settings: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_path_component(self.volume_id, "volume id")
        validate_iscsi_name(self.target, "target name", strict=False)
        portals: Sequence[Any] = self.portals
        if isinstance(portals, (str, Portal)):
            portals = (portals,)
        parsed = tuple(p if isinstance(p, Portal) else Portal.parse(str(p)) for p in portals)
        if not parsed:
            raise UsageError(f"volume {self.volume_id}: at least one portal is needed")
        object.__setattr__(self, "portals", parsed)
        if isinstance(self.lun, bool) or not isinstance(self.lun, int) or not 0 <= self.lun <= MAX_LUN:
            raise UsageError(f"volume {self.volume_id}: LUN must be 0-{MAX_LUN}, got {self.lun!r}")
        validate_iface_name(self.iface)
        if self.initiator_name is not None:
            validate_iscsi_name(self.initiator_name, "initiator name")
        if self.scan not in ("manual", "auto"):
            raise UsageError(f"volume {self.volume_id}: scan must be 'manual' or 'auto', got {self.scan!r}")
        if isinstance(self.timeouts, Mapping):
            object.__setattr__(self, "timeouts", Timeouts(**self.timeouts))
        object.__setattr__(self, "settings", dict(self.settings))
        for key in self.settings:
            if not key.startswith("node."):
                raise UsageError(f"volume {self.volume_id}: setting {key!r} is not a node.* key")

    # ---- derived ----------------------------------------------------------------------

    @property
    def login_iface(self) -> str:
        """The iface logins go through: ``iface``, or its clone carrying ``initiator_name``."""
        if self.initiator_name is None:
            return self.iface
        digest = hashlib.sha256(f"{self.iface}\0{self.initiator_name}".encode()).hexdigest()[:12]
        return f"{self.iface[:40]}-isk-{digest}"

    def node_settings(self) -> dict[str, str]:
        """Node keys the connector sets before login (secrets excluded; see ``chap``)."""
        out: dict[str, str] = {"node.startup": "manual", "node.session.scan": self.scan}
        out.update(self.timeouts.settings())
        out.update(self.settings)
        return out

    def same_volume(self, other: VolumeSpec) -> bool:
        """Whether ``other`` asks for the same LUN through the same paths (secrets ignored)."""
        return (
            self.target == other.target
            and self.lun == other.lun
            and self.login_iface == other.login_iface
            and {p.host_port for p in self.portals} == {p.host_port for p in other.portals}
            and self.multipath == other.multipath
        )

    # ---- (de)serialisation ------------------------------------------------------------

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "volume_id": self.volume_id,
            "target": self.target,
            "portals": [str(p) for p in self.portals],
            "lun": self.lun,
            "iface": self.iface,
            "initiator_name": self.initiator_name,
            "chap": _chap_to_dict(self.chap, secrets),
            "discovery": self.discovery,
            "discovery_chap": _chap_to_dict(self.discovery_chap, secrets),
            "multipath": self.multipath,
            "timeouts": self.timeouts.to_dict(),
            "scan": self.scan,
            "settings": dict(self.settings),
        }
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VolumeSpec:
        known = {
            "volume_id",
            "target",
            "portals",
            "lun",
            "iface",
            "initiator_name",
            "chap",
            "discovery",
            "discovery_chap",
            "multipath",
            "timeouts",
            "scan",
            "settings",
        }
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"volume spec: unknown keys {sorted(unknown)}")
        for key in ("volume_id", "target", "portals", "lun"):
            if key not in data:
                raise UsageError(f"volume spec: {key!r} is required")
        portals = data["portals"]
        if isinstance(portals, str):
            portals = [portals]
        return cls(
            volume_id=str(data["volume_id"]),
            target=str(data["target"]),
            portals=tuple(Portal.parse(str(p)) for p in portals),
            lun=data["lun"],
            iface=str(data.get("iface") or "default"),
            initiator_name=data.get("initiator_name"),
            chap=_chap_from_dict(data.get("chap"), "chap"),
            discovery=bool(data.get("discovery", False)),
            discovery_chap=_chap_from_dict(data.get("discovery_chap"), "discovery_chap"),
            multipath=bool(data.get("multipath", False)),
            timeouts=Timeouts(**(data.get("timeouts") or {})),
            scan=data.get("scan", "manual"),
            settings=dict(data.get("settings") or {}),
        )


@dataclass(frozen=True, slots=True)
class PathInfo:
    """One path of an attachment: a session to one portal and the LUN's disk on it."""

    sid: int
    portal: str
    iface: str
    host: int
    hctl: str
    device: str  # /dev/sdX
    by_path: str | None = None  # the /dev/disk/by-path name udev gives this disk

    def to_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "portal": self.portal,
            "iface": self.iface,
            "host": self.host,
            "hctl": self.hctl,
            "device": self.device,
            "by_path": self.by_path,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PathInfo:
        return cls(
            sid=int(data["sid"]),
            portal=str(data["portal"]),
            iface=str(data["iface"]),
            host=int(data["host"]),
            hctl=str(data["hctl"]),
            device=str(data["device"]),
            by_path=data.get("by_path"),
        )


@dataclass(frozen=True, slots=True)
class Attachment:
    """A volume as attached (or being attached) on this host.

    ``device`` is what to format and mount: ``/dev/dm-N`` for multipath, ``/dev/sdX``
    otherwise. ``wwn`` is udev's ``0x...`` form (``/dev/disk/by-id/wwn-<wwn>``), ``wwid``
    multipath's. ``sessions`` are the SIDs the paths run on.
    """

    volume_id: str
    spec: VolumeSpec
    state: State
    device: str | None = None
    wwn: str | None = None
    wwid: str | None = None
    size_bytes: int | None = None
    multipath: str | None = None  # dm-N
    multipath_name: str | None = None  # /dev/mapper/<name>
    paths: tuple[PathInfo, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def sessions(self) -> list[int]:
        return sorted({p.sid for p in self.paths})

    def with_state(self, state: State) -> Attachment:
        return replace(self, state=state)

    def to_dict(self) -> dict[str, Any]:
        return {
            "volume_id": self.volume_id,
            "state": self.state,
            "device": self.device,
            "wwn": self.wwn,
            "wwid": self.wwid,
            "size_bytes": self.size_bytes,
            "multipath": self.multipath,
            "multipath_name": self.multipath_name,
            "paths": [p.to_dict() for p in self.paths],
            "sessions": self.sessions,
            "warnings": list(self.warnings),
            "spec": self.spec.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attachment:
        state = data.get("state")
        if state not in ("connecting", "attached", "disconnecting"):
            raise UsageError(f"attachment state {state!r} is not connecting/attached/disconnecting")
        return cls(
            volume_id=str(data["volume_id"]),
            spec=VolumeSpec.from_dict(data["spec"]),
            state=state,
            device=data.get("device"),
            wwn=data.get("wwn"),
            wwid=data.get("wwid"),
            size_bytes=data.get("size_bytes"),
            multipath=data.get("multipath"),
            multipath_name=data.get("multipath_name"),
            paths=tuple(PathInfo.from_dict(p) for p in data.get("paths", [])),
            warnings=tuple(data.get("warnings", [])),
        )
