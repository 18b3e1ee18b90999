"""The settings a *new* record starts from: compiled defaults, or iscsid.conf over them.

iscsiadm asks the running iscsid for the path of its config file (``MGMT_IPC_CONFIG_FILE``
on the abstract socket ``@ISCSIADM_ABSTRACT_NAMESPACE``) and overlays that file on the
compiled defaults. When iscsid does not answer, iscsid.conf is *not* applied: a new record
on a host without iscsid gets ``login_timeout = 30`` even if iscsid.conf says 15.

iscsikit does the same without speaking the IPC (its request size depends on the exact
iscsid build): ``mode="auto"`` uses iscsid.conf when something listens on iscsid's socket
(iscsid, or systemd's ``iscsid.socket``, which would start it), the compiled defaults
otherwise. ``"conf"`` and ``"compiled"`` force one or the other.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from iscsikit.db.record import idbm_values, parse_record, read_defaults
from iscsikit.db.schema import RecordKind

ISCSID_SOCKET: Final = b"\0ISCSIADM_ABSTRACT_NAMESPACE"
DEFAULT_CONF: Final = Path("/etc/iscsi/iscsid.conf")

DefaultsMode = Literal["auto", "conf", "compiled"]


def iscsid_listening(name: bytes = ISCSID_SOCKET, timeout: float = 1.0) -> bool:
    """True if something accepts connections on iscsid's abstract socket in this netns."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(name)
    except OSError:
        return False
    finally:
        sock.close()
    return True


@dataclass(frozen=True, slots=True)
class NewRecordDefaults:
    """Starting values for new node, SendTargets and iSNS records, and where they came from."""

    node: dict[str, str]
    sendtargets: dict[str, str]
    isns: dict[str, str]
    source: str  # "compiled" or the iscsid.conf path
    warnings: list[str] = field(default_factory=list)

    def for_kind(self, kind: RecordKind) -> dict[str, str]:
        if kind is RecordKind.NODE:
            return dict(self.node)
        if kind is RecordKind.SENDTARGETS:
            return dict(self.sendtargets)
        if kind is RecordKind.ISNS:
            return dict(self.isns)
        raise ValueError(f"no new-record defaults for {kind}")


def compiled_defaults() -> NewRecordDefaults:
    return NewRecordDefaults(
        read_defaults(RecordKind.NODE, "default"),
        read_defaults(RecordKind.SENDTARGETS, "default"),
        read_defaults(RecordKind.ISNS, "default"),
        "compiled",
    )


def conf_defaults(text: str, path: str = "iscsid.conf") -> NewRecordDefaults:
    """iscsid.conf applied as ``idbm_sync_config`` does (unknown lines silently ignored)."""
    out: dict[RecordKind, dict[str, str]] = {}
    for kind in (RecordKind.NODE, RecordKind.SENDTARGETS, RecordKind.ISNS):
        rec = parse_record(text, path, kind)
        out[kind], _ = idbm_values(kind, rec.entries, "default")
    return NewRecordDefaults(out[RecordKind.NODE], out[RecordKind.SENDTARGETS], out[RecordKind.ISNS], path)


def new_record_defaults(mode: DefaultsMode = "auto", conf: Path = DEFAULT_CONF) -> NewRecordDefaults:
    """The defaults iscsiadm would use right now for a new record (see the module doc)."""
    if mode == "compiled" or (mode == "auto" and not iscsid_listening()):
        return compiled_defaults()
    try:
        text = conf.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        # iscsiadm falls back to the compiled defaults when it cannot open the file.
        base = compiled_defaults()
        return NewRecordDefaults(
            base.node, base.sendtargets, base.isns, "compiled", [f"cannot read {conf}: {exc.strerror}"]
        )
    return conf_defaults(text, str(conf))
