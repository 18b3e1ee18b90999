"""Parsers for what ``iscsiadm`` prints about sessions, discovery, login and logout.

Pure functions from text to frozen records: no I/O, no iscsiadm. iscsikit itself reads
sessions from sysfs (:mod:`iscsikit.session.sysfs`); these parsers exist for the output
that only iscsiadm has (discovery results, login/logout outcomes) and for users who hand us
captured ``-m session -P 3`` text.

The quirks handled (open-iscsi-format.md, section 7 item 8): sessions are not grouped by
target and print in *text* order of SID (1, 10, 11, 2); ``Target:`` lines repeat; an empty
line replaces the two portal lines when a session shares the previous one's portal; tpgt
may print as 4294967295; HWaddress/Netdev are ``default`` or ``<empty>``; states are
``Unknown`` without iscsid; ``(non-flash)`` is absent before 2.0.874; ``(multiple)`` is
optional; and text pasted by users may have had its TABs turned into spaces, so nothing
here depends on indentation.

>>> [s.sid for s in parse_session_flat("tcp: [2] [2001:db8::11]:3260,2 iqn.2026-11.org.ex:t1 (non-flash)")]
[2]
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from iscsikit.errors import InvalidNameError, OutputParseError
from iscsikit.names import Portal

EMPTY = "<empty>"


def _none_if_empty(value: str) -> str | None:
    value = value.strip()
    return None if value in ("", EMPTY, "(null)") else value


def _portal(text: str, what: str, line_no: int, line: str) -> Portal:
    try:
        return Portal.parse(text)
    except InvalidNameError as exc:
        raise OutputParseError(what, line_no, line, exc.reason) from None


# --------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class IfaceInfo:
    """The ``Interface:`` block of a session (``-P 1`` and up)."""

    name: str
    transport: str | None = None
    initiator_name: str | None = None
    ip_address: str | None = None
    hw_address: str | None = None  # None for "default" / "<empty>"
    netdev: str | None = None


@dataclass(frozen=True, slots=True)
class LunInfo:
    """One ``scsiH Channel 00 Id T Lun: L`` line and its ``Attached scsi disk`` line."""

    host: int
    channel: int
    target_id: int
    lun: int
    disk: str | None = None  # "sdb"; None for a LUN without a block device (tgt's controller)
    state: str | None = None  # scsi_device state ("running", "blocked", ...)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One session as iscsiadm printed it. Fields beyond the flat line are None below ``-P 1``.

    ``portal`` is the persistent portal (the session's identity); ``current_portal`` is where
    the connection really goes, which differs after a target redirect.
    """

    sid: int
    target: str
    portal: Portal
    transport: str | None = None
    current_portal: Portal | None = None
    flash: bool | None = None  # None: the iscsiadm version does not say
    iface: IfaceInfo | None = None
    connection_state: str | None = None  # "LOGGED IN", or "Unknown" without iscsid
    session_state: str | None = None  # sysfs state: LOGGED_IN, FAILED, FREE
    internal_state: str | None = None  # "NO CHANGE", ...
    timeouts: dict[str, int | None] = field(default_factory=dict)
    chap: dict[str, str | None] = field(default_factory=dict)
    negotiated: dict[str, str] = field(default_factory=dict)
    host: int | None = None
    host_state: str | None = None
    luns: tuple[LunInfo, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "target": self.target,
            "address": self.portal.address,
            "port": self.portal.port,
            "tpgt": self.portal.tpgt,
            "transport": self.transport,
            "iface": self.iface.name if self.iface else None,
            "state": self.session_state,
            "host": self.host,
            "luns": [{"lun": u.lun, "disk": u.disk, "state": u.state} for u in self.luns],
        }


@dataclass(frozen=True, slots=True)
class DiscoveredTarget:
    """One target portal found by discovery (``<portal>,<tpgt> <target>``)."""

    target: str
    portal: Portal
    iface: str | None = None  # only ``-P 1`` output names it

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "address": self.portal.address,
            "port": self.portal.port,
            "tpgt": self.portal.tpgt,
        }


@dataclass(frozen=True, slots=True)
class PortalOutcome:
    """The result iscsiadm printed for one portal of a login or logout."""

    action: str  # "login" or "logout"
    target: str
    address: str
    port: int
    ok: bool
    iface: str | None = None  # login lines name the iface
    sid: int | None = None  # logout lines name the session
    already: bool = False  # "session requested, but 1 already present" (login only)


# --------------------------------------------------------------------------------------
# -m session (flat)

_FLAT_RE = re.compile(
    r"^(?P<transport>[\w.-]+):\s+\[(?P<sid>\d+)\]\s+(?P<portal>\S+)\s+(?P<target>\S+)"
    r"(?:\s+\((?P<flash>non-flash|flash)\))?\s*$"
)


def parse_session_flat(text: str) -> list[SessionInfo]:
    """``iscsiadm -m session`` / ``-P 0``: ``tcp: [1] 192.0.2.11:3260,1 iqn... (non-flash)``."""
    out: list[SessionInfo] = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _FLAT_RE.match(line.strip())
        if not m:
            raise OutputParseError("iscsiadm -m session", no, line, "not a '<transport>: [SID] ...' line")
        flash = m.group("flash")
        out.append(
            SessionInfo(
                sid=int(m.group("sid")),
                target=m.group("target"),
                portal=_portal(m.group("portal"), "iscsiadm -m session", no, line),
                transport=m.group("transport"),
                flash=None if flash is None else flash == "flash",
            )
        )
    return out


# --------------------------------------------------------------------------------------
# -m session -P 1/2/3 (tree)

_KV_RE = re.compile(r"^(?P<key>[^:]+?):\s?(?P<value>.*)$")
_HOST_RE = re.compile(r"^Host Number:\s*(?P<host>\d+)\s+State:\s*(?P<state>.+?)\s*$")
_LUN_RE = re.compile(r"^scsi(?P<host>\d+)\s+Channel\s+(?P<ch>\d+)\s+Id\s+(?P<id>\d+)\s+Lun:\s*(?P<lun>\d+)\s*$")
_DISK_RE = re.compile(r"^Attached scsi disk\s+(?P<disk>\S+)\s+State:\s*(?P<state>.+?)\s*$")
_TARGET_RE = re.compile(r"^Target:\s*(?P<target>\S+)(?:\s+\((?P<flash>non-flash|flash)\))?\s*$")
_SECTIONS = {
    "Interface:": "iface",
    "Timeouts:": "timeouts",
    "CHAP:": "chap",
    "Negotiated iSCSI params:": "negotiated",
    "Attached SCSI devices:": "devices",
}
_TIMEOUT_KEYS = {
    "Recovery Timeout": "recovery",
    "Target Reset Timeout": "target_reset",
    "LUN Reset Timeout": "lun_reset",
    "Abort Timeout": "abort",
}
_IFACE_KEYS = {
    "Iface Transport": "transport",
    "Iface Initiatorname": "initiator_name",
    "Iface IPaddress": "ip_address",
    "Iface HWaddress": "hw_address",
    "Iface Netdev": "netdev",
}


class _TreeBuilder:
    """Accumulates one session at a time; ``Iface Name:`` starts each session."""

    def __init__(self) -> None:
        self.sessions: list[SessionInfo] = []
        self.target: str | None = None
        self.flash: bool | None = None
        self.current: Portal | None = None
        self.persistent: Portal | None = None
        self.section = ""
        self.cur: dict[str, Any] | None = None
        self.luns: list[LunInfo] = []

    def flush(self, no: int, line: str) -> None:
        cur = self.cur
        if cur is None:
            return
        if "sid" not in cur:
            raise OutputParseError("iscsiadm -m session -P N", no, line, "a session block has no 'SID:' line")
        iface = IfaceInfo(name=cur.pop("iface_name"), **cur.pop("iface", {}))
        self.sessions.append(SessionInfo(iface=iface, luns=tuple(self.luns), **cur))
        self.cur = None
        self.luns = []

    def start(self, name: str, no: int, line: str) -> None:
        self.flush(no, line)
        if self.target is None or self.persistent is None:
            raise OutputParseError(
                "iscsiadm -m session -P N", no, line, "'Iface Name:' before any Target:/Portal: line"
            )
        self.cur = {
            "target": self.target,
            "flash": self.flash,
            "portal": self.persistent,
            "current_portal": self.current,
            "iface_name": name,
            "iface": {},
            "timeouts": {},
            "chap": {},
            "negotiated": {},
        }
        self.section = "iface"


def parse_session_tree(text: str) -> list[SessionInfo]:
    """``iscsiadm -m session -P 1``, ``-P 2`` or ``-P 3`` (also ``-r SID -P N``)."""
    what = "iscsiadm -m session -P N"
    b = _TreeBuilder()
    lines = text.splitlines()
    for no, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue  # the "same portal as before" marker: portals are simply kept
        if line.startswith("*") and set(line) == {"*"}:
            continue
        if line in _SECTIONS:
            b.section = _SECTIONS[line]
            continue
        if line.startswith("iSCSI Transport Class version") or re.fullmatch(r"version \S+", line):
            continue
        m = _TARGET_RE.match(line)
        if m:
            b.flush(no, raw)
            b.target = m.group("target")
            flash = m.group("flash")
            b.flash = None if flash is None else flash == "flash"
            b.current = b.persistent = None
            continue
        if line.startswith("Current Portal:"):
            b.flush(no, raw)
            b.current = _portal(line.split(":", 1)[1].strip(), what, no, raw)
            continue
        if line.startswith("Persistent Portal:"):
            b.flush(no, raw)
            b.persistent = _portal(line.split(":", 1)[1].strip(), what, no, raw)
            if b.current is None:
                b.current = b.persistent
            continue
        if line.startswith("Iface Name:"):
            b.start(line.split(":", 1)[1].strip(), no, raw)
            continue
        if b.cur is None:
            raise OutputParseError(what, no, raw, "a session field before any 'Iface Name:' line")
        _tree_field(b, line, no, raw)
    b.flush(len(lines), lines[-1] if lines else "")
    return b.sessions


def _tree_field(b: _TreeBuilder, line: str, no: int, raw: str) -> None:
    what = "iscsiadm -m session -P N"
    cur = b.cur
    assert cur is not None
    if line == "Unavailable":
        return
    m = _HOST_RE.match(line)
    if m:
        cur["host"] = int(m.group("host"))
        cur["host_state"] = m.group("state")
        return
    m = _LUN_RE.match(line)
    if m:
        b.luns.append(LunInfo(int(m.group("host")), int(m.group("ch")), int(m.group("id")), int(m.group("lun"))))
        return
    m = _DISK_RE.match(line)
    if m:
        if not b.luns:
            raise OutputParseError(what, no, raw, "'Attached scsi disk' before any 'scsiH Channel' line")
        b.luns[-1] = replace(b.luns[-1], disk=m.group("disk"), state=m.group("state"))
        return
    m = _KV_RE.match(line)
    if not m:
        raise OutputParseError(what, no, raw, "expected 'Key: value'")
    key, value = m.group("key").strip(), m.group("value").strip()
    if key == "SID":
        if not value.isdigit():
            raise OutputParseError(what, no, raw, "SID is not a number")
        cur["sid"] = int(value)
    elif key == "iSCSI Connection State":
        cur["connection_state"] = value
    elif key == "iSCSI Session State":
        cur["session_state"] = value
    elif key == "Internal iscsid Session State":
        cur["internal_state"] = value
    elif key in _IFACE_KEYS:
        field_name = _IFACE_KEYS[key]
        if field_name == "transport":
            cur["transport"] = value
        shown = _none_if_empty(value)
        if field_name in ("hw_address", "netdev") and shown == "default":
            shown = None
        if field_name == "ip_address" and shown and shown.startswith("["):
            shown = shown.strip("[]")
        cur["iface"][field_name] = shown
    elif b.section == "timeouts" and key in _TIMEOUT_KEYS:
        v = _none_if_empty(value)
        cur["timeouts"][_TIMEOUT_KEYS[key]] = int(v) if v is not None and v.lstrip("-").isdigit() else None
    elif b.section == "chap":
        cur["chap"][key] = _none_if_empty(value)
    elif b.section == "negotiated":
        cur["negotiated"][key] = value
    # Unknown keys from newer iscsiadm versions are ignored on purpose.


def parse_sessions(text: str) -> list[SessionInfo]:
    """Either form: tree output starts with a header or ``Target:``, flat with ``<transport>:``."""
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if _FLAT_RE.match(s):
            return parse_session_flat(text)
        return parse_session_tree(text)
    return []


# --------------------------------------------------------------------------------------
# Discovery

_DISC_FLAT_RE = re.compile(r"^(?P<portal>\S+,-?\d+)\s+(?P<target>\S+)\s*$")
_DISC_SKIP = ("SENDTARGETS:", "iSNS:", "STATIC:", "FIRMWARE:", "No targets found.")


def parse_discovery(text: str) -> list[DiscoveredTarget]:
    """Discovery results, flat (``127.0.0.1:3260,1 iqn...``) or ``-P 1`` tree.

    Duplicates (the same target and portal on several ifaces) are kept in order, once each
    per iface, as iscsiadm lists them.
    """
    what = "iscsiadm discovery output"
    out: list[DiscoveredTarget] = []
    target: str | None = None
    portal: Portal | None = None
    pending_portal = False
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line in _DISC_SKIP or line.startswith("DiscoveryAddress:"):
            continue
        if line.startswith("Target:"):
            if pending_portal and target and portal:
                out.append(DiscoveredTarget(target, portal))
            target, portal, pending_portal = line.split(":", 1)[1].strip(), None, False
            continue
        if line.startswith("Portal:"):
            if target is None:
                raise OutputParseError(what, no, raw, "'Portal:' before any 'Target:'")
            if pending_portal and portal:
                out.append(DiscoveredTarget(target, portal))
            portal = _portal(line.split(":", 1)[1].strip(), what, no, raw)
            pending_portal = True
            continue
        if line.startswith("Iface Name:"):
            if target is None or portal is None:
                raise OutputParseError(what, no, raw, "'Iface Name:' before any 'Portal:'")
            out.append(DiscoveredTarget(target, portal, line.split(":", 1)[1].strip()))
            pending_portal = False
            continue
        m = _DISC_FLAT_RE.match(line)
        if not m:
            raise OutputParseError(what, no, raw, "not '<address>:<port>,<tpgt> <target>'")
        out.append(DiscoveredTarget(m.group("target"), _portal(m.group("portal"), what, no, raw)))
    if pending_portal and target and portal:
        out.append(DiscoveredTarget(target, portal))
    return out


# --------------------------------------------------------------------------------------
# Login / logout messages

_BRACKET = r"\[(?P<body>[^\]]*)\]"
_LOGIN_OK_RE = re.compile(r"^Login to " + _BRACKET + r":? successful\.?$")
_LOGIN_FAIL_RE = re.compile(r"^(?:iscsiadm: )?Could not login to " + _BRACKET + r"\.?$")
_LOGOUT_OK_RE = re.compile(r"^Logout of " + _BRACKET + r":? successful\.?$")
_LOGOUT_FAIL_RE = re.compile(r"^(?:iscsiadm: )?Could not logout of " + _BRACKET + r"\.?$")
_EXISTS_RE = re.compile(r"^(?:iscsiadm: )?(?P<iface>\S+): \d+ sessions? requested, but \d+ already present\.?$")


def _fields(body: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in re.split(r",\s+(?=\w+:)", body):
        key, _, value = part.partition(":")
        out[key.strip()] = value.strip()
    return out


def _split_addr_port(text: str) -> tuple[str, int]:
    addr, _, port = text.rpartition(",")
    return addr.strip("[]"), int(port) if port.isdigit() else 0


def parse_portal_outcomes(stdout: str, stderr: str = "") -> list[PortalOutcome]:
    """Per-portal results of ``--login`` / ``--logout`` (both streams; order as printed)."""
    out: list[PortalOutcome] = []
    for line in _lines(stdout, stderr):
        for regex, action, ok in (
            (_LOGIN_OK_RE, "login", True),
            (_LOGIN_FAIL_RE, "login", False),
            (_LOGOUT_OK_RE, "logout", True),
            (_LOGOUT_FAIL_RE, "logout", False),
        ):
            m = regex.match(line)
            if m:
                f = _fields(m.group("body"))
                addr, port = _split_addr_port(f.get("portal", ""))
                sid = f.get("sid")
                out.append(
                    PortalOutcome(
                        action,
                        f.get("target", ""),
                        addr,
                        port,
                        ok,
                        iface=f.get("iface"),
                        sid=int(sid) if sid and sid.isdigit() else None,
                    )
                )
                break
        else:
            m = _EXISTS_RE.match(line)
            if m:
                out.append(PortalOutcome("login", "", "", 0, True, iface=m.group("iface"), already=True))
    return out


def _lines(*texts: str) -> Iterator[str]:
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                yield line.strip()


# --------------------------------------------------------------------------------------
# iface records (-m iface -I NAME -o show)


def parse_record(text: str) -> dict[str, str | None]:
    """``key = value`` lines of ``-o show`` output (``<empty>`` becomes None; comments skipped).

    Used for iface records, which the connector clones; node records are the DB library's.
    """
    out: dict[str, str | None] = {}
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition(" = ")
        if not sep:
            raise OutputParseError("iscsiadm -o show", no, raw, "expected 'key = value'")
        out[key.strip()] = _none_if_empty(value)
    return out
