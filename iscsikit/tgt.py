"""tgt (tgtd) administration, typed: the target side of go-iscsi-helper, for users who run tgtd.

Every call is one ``tgtadm`` command run through :class:`~iscsikit.runner.Runner` (so it can
run in a namespace, be dry-run, and is killed with its process group on timeout). tgtd's
error messages become typed exceptions (:class:`~iscsikit.errors.TgtadmError` subclasses,
e.g. ``TgtNoTargetError``), and ``show`` output becomes dataclasses.

Example::

    tgt = Tgt()                                 # the default tgtd (control port 0)
    tid = tgt.create_target_auto("iqn.2019-10.io.longhorn:vol1")
    tgt.add_lun(tid, 1, "/var/lib/vol1.img", bstype="rdwr")
    tgt.set_lun_thin_provisioning(tid, 1)
    tgt.bind_initiator(tid, "ALL")
    ...
    tgt.teardown_target(tid)                    # idempotent: unbind, close conns, delete LUNs, delete

What go-iscsi-helper got wrong and this does not: ``UpdateLun`` params in random map order
(here sorted), ``ShutdownTgtd`` passing ``--tid 1:`` (here parsed ids), tolerated errors matched
by substring at the call site (here typed, and tolerated inside ``teardown_target`` only).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from iscsikit.errors import (
    CommandError,
    TgtAclNotFoundError,
    TgtadmError,
    TgtLunActiveError,
    TgtNoConnectionError,
    TgtNoLunError,
    TgtNoSessionError,
    TgtNoTargetError,
    TgtTargetExistsError,
    UsageError,
)
from iscsikit.names import validate_iscsi_name
from iscsikit.runner import Runner, mask, mask_argv

__all__ = [
    "DISABLE_WRITE_CACHE_MODE_PAGE",
    "MAX_TID",
    "Tgt",
    "TgtConnection",
    "TgtLun",
    "TgtTarget",
    "parse_connections",
    "parse_system",
    "parse_targets",
]

#: tgt accepts tids up to 4095; go-iscsi-helper allocates from 1..4094.
MAX_TID = 4095
#: Caching mode page 08h with WCE off (what go-iscsi-helper's DisableWriteCache sends).
DISABLE_WRITE_CACHE_MODE_PAGE = "8:0:18:0x10:0:0xff:0xff:0:0:0xff:0xff:0xff:0xff:0x80:0x14:0:0:0:0:0:0"

_TARGET_RE = re.compile(r"^Target (\d+): (\S+)\s*$")


@dataclass(slots=True)
class TgtLun:
    lun: int
    type: str = ""
    scsi_id: str = ""
    scsi_sn: str = ""
    size: str = ""
    block_size: int = 0
    online: bool = True
    readonly: bool = False
    thin_provisioning: bool = False
    backing_store_type: str = ""
    backing_store_path: str = ""


@dataclass(slots=True)
class TgtNexus:
    itn_id: int
    initiator: str = ""
    alias: str = ""
    connections: list[tuple[int, str]] = field(default_factory=list)  # (cid, address line)


@dataclass(slots=True)
class TgtTarget:
    tid: int
    name: str
    state: str = ""
    driver: str = ""
    nexuses: list[TgtNexus] = field(default_factory=list)
    luns: list[TgtLun] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    outgoing_account: str | None = None
    acls: list[str] = field(default_factory=list)  # addresses ("ALL", "10.0.0.0/8") and initiator names


@dataclass(frozen=True, slots=True)
class TgtConnection:
    sid: int
    cid: int
    initiator: str = ""
    address: str = ""


def _yes(value: str) -> bool:
    return value.strip().lower() == "yes"


def parse_targets(text: str) -> list[TgtTarget]:
    """Parse ``tgtadm --op show --mode target``."""
    targets: list[TgtTarget] = []
    target: TgtTarget | None = None
    section = ""
    lun: TgtLun | None = None
    nexus: TgtNexus | None = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        m = _TARGET_RE.match(raw)
        if m:
            target = TgtTarget(int(m.group(1)), m.group(2))
            targets.append(target)
            section, lun, nexus = "", None, None
            continue
        if target is None:
            continue
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        if indent <= 4 and line.endswith(":"):
            section = line[:-1]
            continue
        key, _, value = line.partition(":")
        value = value.strip()
        if section == "System information":
            if key == "Driver":
                target.driver = value
            elif key == "State":
                target.state = value
        elif section == "I_T nexus information":
            if key == "I_T nexus":
                nexus = TgtNexus(int(value))
                target.nexuses.append(nexus)
            elif nexus is not None and key == "Initiator":
                initiator, _, alias = value.partition(" alias: ")
                nexus.initiator, nexus.alias = initiator.strip(), alias.strip()
            elif nexus is not None and key == "Connection":
                nexus.connections.append((int(value), ""))
            elif nexus is not None and nexus.connections:
                cid, _ = nexus.connections[-1]
                nexus.connections[-1] = (cid, line)
        elif section == "LUN information":
            if key == "LUN":
                lun = TgtLun(int(value))
                target.luns.append(lun)
            elif lun is not None:
                _lun_field(lun, key, value)
        elif section == "Account information":
            if line.endswith(" (outgoing)"):
                target.outgoing_account = line.removesuffix(" (outgoing)")
            else:
                target.accounts.append(line)
        elif section == "ACL information":
            target.acls.append(line)
    return targets


def _lun_field(lun: TgtLun, key: str, value: str) -> None:
    if key == "Type":
        lun.type = value
    elif key == "SCSI ID":
        lun.scsi_id = value
    elif key == "SCSI SN":
        lun.scsi_sn = value
    elif key == "Size":
        size, _, block = value.partition(", Block size:")
        lun.size = size.strip()
        lun.block_size = int(block) if block.strip().isdigit() else 0
    elif key == "Online":
        lun.online = _yes(value)
    elif key == "Readonly":
        lun.readonly = _yes(value)
    elif key == "Thin-provisioning":
        lun.thin_provisioning = _yes(value)
    elif key == "Backing store type":
        lun.backing_store_type = value
    elif key == "Backing store path":
        lun.backing_store_path = "" if value == "None" else value


def parse_connections(text: str) -> list[TgtConnection]:
    """Parse ``tgtadm --op show --mode conn --tid N`` (Session is the TSIH)."""
    out: list[TgtConnection] = []
    sid: int | None = None
    cid: int | None = None
    initiator = ""
    for raw in text.splitlines():
        line = raw.strip()
        key, _, value = line.partition(":")
        if key == "Session":
            if sid is not None and cid is not None:
                out.append(TgtConnection(sid, cid, initiator))
            sid, cid, initiator = int(value), None, ""
        elif key == "Connection":
            cid = int(value)
        elif key == "Initiator":
            initiator = value.strip()
        elif line and sid is not None and cid is not None:
            out.append(TgtConnection(sid, cid, initiator, line))
            sid, cid = None, None
    if sid is not None and cid is not None:
        out.append(TgtConnection(sid, cid, initiator))
    return out


def parse_system(text: str) -> dict[str, list[str]]:
    """Parse ``tgtadm --op show --mode system`` into its sections (``Backing stores``, ``LLDs``...)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in text.splitlines():
        if not raw.strip():
            continue
        if not raw.startswith(" ") and raw.rstrip().endswith(":"):
            current = sections.setdefault(raw.strip()[:-1], [])
        elif current is not None:
            current.append(raw.strip())
    return sections


class Tgt:
    """tgtadm against one tgtd (``control_port`` is tgtd's ``-C``; None = tgtadm's default)."""

    def __init__(
        self,
        runner: Runner | None = None,
        *,
        control_port: int | None = None,
        lld: str = "iscsi",
        timeout: float = 60.0,
        tgtadm: str = "tgtadm",
    ) -> None:
        self.runner = runner or Runner("local")
        self.control_port = control_port
        self.lld = lld
        self.timeout = timeout
        self.tgtadm_path = tgtadm

    # ------------------------------------------------------------------ plumbing

    def argv(self, *args: str) -> list[str]:
        argv = [self.tgtadm_path]
        if self.control_port is not None:
            argv += ["-C", str(self.control_port)]
        return [*argv, "--lld", self.lld, *args]

    def run(self, *args: str, mutating: bool = True, redact: Sequence[str] = ()) -> str:
        """One tgtadm call; its stdout, or a typed :class:`TgtadmError`."""
        argv = self.argv(*args)
        result = self.runner.run(argv, timeout=self.timeout, check=False, mutating=mutating, redact=redact)
        if result.returncode != 0:
            raise TgtadmError.from_result(
                mask_argv(argv, redact), result.returncode, mask(result.stdout, redact), mask(result.stderr, redact)
            )
        return result.stdout

    @staticmethod
    def _tid(tid: int) -> str:
        if not 0 < tid <= MAX_TID:
            raise UsageError(f"tgt target id must be 1..{MAX_TID}, got {tid}")
        return str(tid)

    @staticmethod
    def _lun(lun: int) -> str:
        if not 0 <= lun < 1 << 14:
            raise UsageError(f"LUN must be 0..16383, got {lun}")
        return str(lun)

    @staticmethod
    def _value(value: str, what: str) -> str:
        if not value or any(c in value for c in "\x00\n"):
            raise UsageError(f"{what} {value!r} is empty or contains NUL/newline")
        return value

    # ------------------------------------------------------------------ targets

    def create_target(self, tid: int, name: str) -> None:
        validate_iscsi_name(name, "target")
        self.run("--op", "new", "--mode", "target", "--tid", self._tid(tid), "--targetname", name)

    def create_target_auto(self, name: str, *, attempts: int = 5, delay: float = 0.5) -> int:
        """Create ``name`` with the lowest free tid, retrying when another tgtadm user races us.

        Returns the tid. If a target with this name already exists, its tid is returned.
        """
        for attempt in range(attempts):
            existing = self.target_tid(name)
            if existing is not None:
                return existing
            tid = self.next_free_tid()
            try:
                self.create_target(tid, name)
                return tid
            except TgtTargetExistsError:
                if attempt == attempts - 1:
                    raise
                time.sleep(delay)
        raise AssertionError("unreachable")

    def delete_target(self, tid: int, *, force: bool = False) -> None:
        args = ["--op", "delete", "--mode", "target", "--tid", self._tid(tid)]
        if force:
            args.insert(4, "--force")
        self.run(*args)

    def targets(self) -> list[TgtTarget]:
        return parse_targets(self.run("--op", "show", "--mode", "target", mutating=False))

    def target(self, tid: int) -> TgtTarget:
        for target in self.targets():
            if target.tid == tid:
                return target
        raise TgtNoTargetError(self.argv("--op", "show", "--mode", "target"), 22, "", "tgtadm: can't find the target")

    def target_tid(self, name: str) -> int | None:
        """tid of the target called ``name``, or None (go-iscsi-helper's GetTargetTid, -1 -> None)."""
        for target in self.targets():
            if target.name == name:
                return target.tid
        return None

    def next_free_tid(self) -> int:
        """The lowest unused tid in 1..4094 (go-iscsi-helper's FindNextAvailableTargetID)."""
        used = {t.tid for t in self.targets()}
        for tid in range(1, MAX_TID):
            if tid not in used:
                return tid
        raise TgtadmError(self.argv(), 0, "", "cannot find an available target ID")

    # ------------------------------------------------------------------ LUNs

    def add_lun(
        self,
        tid: int,
        lun: int,
        backing_store: str,
        *,
        bstype: str | None = None,
        bsopts: str | None = None,
        bsoflags: str | None = None,
    ) -> None:
        """Add a LUN. With ``bstype``, first check tgtd has that backing store (go-iscsi-helper#41)."""
        if bstype is not None and not self.supports_backing_store(bstype):
            raise UsageError(f"backing-store {bstype} is not supported by this tgtd")
        args = ["--op", "new", "--mode", "logicalunit", "--tid", self._tid(tid), "--lun", self._lun(lun)]
        args += ["--backing-store", self._value(backing_store, "backing store")]
        if bstype is not None:
            args += ["--bstype", self._value(bstype, "bstype")]
        if bsopts is not None:
            args += ["--bsopts", self._value(bsopts, "bsopts")]
        if bsoflags is not None:
            args += ["--bsoflags", self._value(bsoflags, "bsoflags")]
        self.run(*args)

    def update_lun(self, tid: int, lun: int, params: Mapping[str, str]) -> None:
        """``--op update --params k=v,...`` with the keys in sorted order (deterministic)."""
        if not params:
            return
        for key, value in params.items():
            if not key or any(c in key for c in ",= \n\x00") or any(c in str(value) for c in ",\n\x00"):
                raise UsageError(f"tgt LUN parameter {key}={value!r}: keys are words, values have no ',' or newline")
        joined = ",".join(f"{k}={params[k]}" for k in sorted(params))
        self.run(
            "--op", "update", "--mode", "logicalunit", "--tid", self._tid(tid), "--lun", self._lun(lun),
            "--params", joined,
        )  # fmt: skip

    def set_lun_thin_provisioning(self, tid: int, lun: int, enabled: bool = True) -> None:
        self.update_lun(tid, lun, {"thin_provisioning": "1" if enabled else "0"})

    def disable_write_cache(self, tid: int, lun: int) -> None:
        self.update_lun(tid, lun, {"mode_page": DISABLE_WRITE_CACHE_MODE_PAGE})

    def expand_lun(self, tid: int, lun: int, size: int) -> None:
        """``--params bsopts=size=N``: only Longhorn's tgt fork understands it."""
        self.update_lun(tid, lun, {"bsopts": f"size={int(size)}"})

    def delete_lun(self, tid: int, lun: int) -> None:
        self.run("--op", "delete", "--mode", "logicalunit", "--tid", self._tid(tid), "--lun", self._lun(lun))

    # ------------------------------------------------------------------ access control

    def bind_initiator(self, tid: int, address: str = "ALL") -> None:
        """Allow initiators by address (``ALL``, an IP, a CIDR): ``--initiator-address``."""
        self.run("--op", "bind", "--mode", "target", "--tid", self._tid(tid),
                 "--initiator-address", self._value(address, "initiator address"))  # fmt: skip

    def unbind_initiator(self, tid: int, address: str = "ALL", *, missing_ok: bool = False) -> None:
        try:
            self.run("--op", "unbind", "--mode", "target", "--tid", self._tid(tid),
                     "--initiator-address", self._value(address, "initiator address"))  # fmt: skip
        except TgtAclNotFoundError:
            if not missing_ok:
                raise

    def bind_initiator_name(self, tid: int, name: str) -> None:
        """Allow an initiator by IQN: ``--initiator-name``."""
        validate_iscsi_name(name, "initiator")
        self.run("--op", "bind", "--mode", "target", "--tid", self._tid(tid), "--initiator-name", name)

    def unbind_initiator_name(self, tid: int, name: str, *, missing_ok: bool = False) -> None:
        try:
            self.run("--op", "unbind", "--mode", "target", "--tid", self._tid(tid), "--initiator-name", name)
        except TgtAclNotFoundError:
            if not missing_ok:
                raise

    def create_account(self, user: str, password: str) -> None:
        self.run(
            "--op", "new", "--mode", "account", "--user", self._value(user, "user"),
            "--password", self._value(password, "password"), redact=[password],
        )  # fmt: skip

    def delete_account(self, user: str) -> None:
        self.run("--op", "delete", "--mode", "account", "--user", self._value(user, "user"))

    def bind_account(self, tid: int, user: str, *, outgoing: bool = False) -> None:
        args = ["--op", "bind", "--mode", "account", "--tid", self._tid(tid), "--user", self._value(user, "user")]
        self.run(*args, *(["--outgoing"] if outgoing else []))

    def unbind_account(self, tid: int, user: str, *, outgoing: bool = False) -> None:
        args = ["--op", "unbind", "--mode", "account", "--tid", self._tid(tid), "--user", self._value(user, "user")]
        self.run(*args, *(["--outgoing"] if outgoing else []))

    def add_portal(self, portal: str) -> None:
        """Listen on another portal (``127.0.0.2:3260``), e.g. for multipath."""
        self.run("--op", "new", "--mode", "portal", "--param", f"portal={self._value(portal, 'portal')}")

    def delete_portal(self, portal: str) -> None:
        self.run("--op", "delete", "--mode", "portal", "--param", f"portal={self._value(portal, 'portal')}")

    # ------------------------------------------------------------------ connections

    def connections(self, tid: int) -> list[TgtConnection]:
        return parse_connections(self.run("--op", "show", "--mode", "conn", "--tid", self._tid(tid), mutating=False))

    def connection_map(self, tid: int) -> dict[int, list[int]]:
        """sid -> [cid, ...] (go-iscsi-helper's GetTargetConnections, with ints)."""
        out: dict[int, list[int]] = {}
        for conn in self.connections(tid):
            out.setdefault(conn.sid, []).append(conn.cid)
        return out

    def close_connection(self, tid: int, sid: int, cid: int) -> None:
        self.run("--op", "delete", "--mode", "conn", "--tid", self._tid(tid), "--sid", str(sid), "--cid", str(cid))

    # ------------------------------------------------------------------ daemon

    def system(self) -> dict[str, list[str]]:
        return parse_system(self.run("--op", "show", "--mode", "system", mutating=False))

    def backing_stores(self) -> list[str]:
        """Backing store types tgtd offers (``rdwr``, ``aio``...; flags stripped)."""
        return [line.split()[0] for line in self.system().get("Backing stores", []) if line.split()]

    def supports_backing_store(self, name: str) -> bool:
        return name in self.backing_stores()

    def is_running(self) -> bool:
        """Whether tgtd answers on the control port (go-iscsi-helper probes for ``rdwr``)."""
        try:
            self.run("--op", "show", "--mode", "system", mutating=False)
        except (TgtadmError, CommandError):
            return False
        return True

    # ------------------------------------------------------------------ composites

    def teardown_target(self, tid: int, *, luns: Sequence[int] | None = None) -> bool:
        """Remove a target completely and idempotently; False if it did not exist.

        Unbinds ``ALL`` (missing ACL is fine, longhorn#4959), closes every connection, deletes
        each LUN (a LUN tgtd still considers active is left to the target delete, longhorn#9141),
        then deletes the target (forced if sessions linger).
        """
        try:
            target = self.target(tid)
        except TgtNoTargetError:
            return False
        try:
            self.unbind_initiator(tid, "ALL", missing_ok=True)
            for conn in self.connections(tid):
                try:
                    self.close_connection(tid, conn.sid, conn.cid)
                except (TgtNoSessionError, TgtNoConnectionError):
                    pass
            for lun in luns if luns is not None else [lu.lun for lu in target.luns if lu.lun != 0]:
                try:
                    self.delete_lun(tid, lun)
                except (TgtNoLunError, TgtLunActiveError):
                    pass
            self.delete_target(tid, force=True)
        except TgtNoTargetError:
            return False
        return True

    def delete_all_targets(self) -> list[int]:
        """Tear down every target (go-iscsi-helper's ShutdownTgtd, without ``--tid 1:``); tgtd keeps running."""
        done = []
        for target in self.targets():
            if self.teardown_target(target.tid):
                done.append(target.tid)
        return done
