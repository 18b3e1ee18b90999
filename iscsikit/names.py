"""iSCSI names and portals: the one place they are parsed, checked and formatted.

Target and initiator names follow RFC 7143 section 4.2.7: ``iqn.`` (date plus reversed
domain), ``eui.`` (16 hex digits) and ``naa.`` (16 or 32 hex digits). Portals come in every
form users and open-iscsi write them::

    >>> Portal.parse("10.0.0.1")
    Portal(address='10.0.0.1', port=3260, tpgt=None)
    >>> str(Portal.parse("[fe80::1]:3260,1"))
    '[fe80::1]:3260,1'
    >>> Portal.from_db_name("fe80::1,3260,1").db_name      # open-iscsi's directory name
    'fe80::1,3260,1'

``tpgt`` is ``None`` when unknown. open-iscsi stores that as ``-1`` (old-style records, file
``nodes/<iqn>/<addr>,<port>``) and ``iscsiadm -m node`` prints it as ``4294967295``; both
parse to ``None`` here.

Any name that becomes a path component (target directory, iface file, portal directory) goes
through :func:`check_path_component` first, so ``/``, ``..``, NUL and control characters can
never walk out of the DB directory.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from typing import Final

from iscsikit.errors import InvalidNameError

DEFAULT_PORT: Final = 3260
#: open-iscsi's PORTAL_GROUP_TAG_UNKNOWN as stored in records, and as iscsiadm prints it.
TPGT_UNKNOWN_DB: Final = -1
TPGT_UNKNOWN_PRINTED: Final = 4294967295
#: RFC 7143 4.2.7.1: names are at most 223 bytes.
MAX_NAME_BYTES: Final = 223
#: open-iscsi ISCSI_MAX_IFACE_LEN is 65 including the NUL.
MAX_IFACE_NAME: Final = 64

_IQN_RE = re.compile(r"^iqn\.(\d{4})-(\d{2})\.([^:]+)(?::(.*))?$", re.IGNORECASE)
_HEX_RE = re.compile(r"^[0-9A-Fa-f]+$")
# RFC 3722 (the stringprep profile) leaves these ASCII characters in an iSCSI name.
_NAME_CHARS_RE = re.compile(r"^[A-Za-z0-9.:\-]+$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9\-]*[A-Za-z0-9])?$")
_HOSTNAME_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_\-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_\-]{0,62}))*\.?$")


# --------------------------------------------------------------------------------------
# Path safety


def check_path_component(value: str, kind: str) -> str:
    """Return ``value`` if it is safe as one path component, else raise InvalidNameError.

    Refused: empty, ``.``/``..``, ``/``, NUL, control characters, more than 255 bytes.
    """
    if not value:
        raise InvalidNameError(kind, value, "it is empty")
    if value in (".", ".."):
        raise InvalidNameError(kind, value, "it would name a directory, not an entry in it")
    if "/" in value:
        raise InvalidNameError(kind, value, "it contains '/', which would escape its directory")
    for ch in value:
        if ch == "\0":
            raise InvalidNameError(kind, value, "it contains a NUL byte")
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise InvalidNameError(kind, value, f"it contains the control character {ch!r}")
    if len(value.encode("utf-8", "surrogateescape")) > 255:
        raise InvalidNameError(kind, value, "it is longer than 255 bytes, too long for a file name")
    return value


# --------------------------------------------------------------------------------------
# Target / initiator names


def validate_iscsi_name(name: str, kind: str = "iSCSI name", *, strict: bool = True) -> str:
    """Check an iSCSI (target or initiator) name; return it unchanged.

    ``strict`` enforces RFC 7143 4.2.7 (type prefix, date, hex digits, allowed characters);
    without it only path safety is checked, for names read back from an existing DB that a
    user may have created with a lenient tool.

    >>> validate_iscsi_name("iqn.2026-11.org.example:disk1")
    'iqn.2026-11.org.example:disk1'
    >>> validate_iscsi_name("iqn.2026-13.org.example")
    Traceback (most recent call last):
    ...
    iscsikit.errors.InvalidNameError: invalid iSCSI name 'iqn.2026-13.org.example': month 13 ...
    """
    check_path_component(name, kind)
    if not strict:
        return name
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidNameError(kind, name, f"longer than {MAX_NAME_BYTES} bytes (RFC 7143 4.2.7.1)")
    if not _NAME_CHARS_RE.match(name):
        bad = sorted({c for c in name if not re.match(r"[A-Za-z0-9.:\-]", c)})
        raise InvalidNameError(
            kind,
            name,
            f"characters {''.join(bad)!r} are not allowed; use letters, digits, '-', '.' and ':'",
        )
    lower = name.lower()
    if lower.startswith("iqn."):
        _check_iqn(name, kind)
    elif lower.startswith("eui."):
        digits = name[4:]
        if len(digits) != 16 or not _HEX_RE.match(digits):
            raise InvalidNameError(kind, name, "an eui. name needs exactly 16 hex digits after 'eui.'")
    elif lower.startswith("naa."):
        digits = name[4:]
        if len(digits) not in (16, 32) or not _HEX_RE.match(digits):
            raise InvalidNameError(kind, name, "a naa. name needs 16 or 32 hex digits after 'naa.'")
    else:
        raise InvalidNameError(kind, name, "it must start with 'iqn.', 'eui.' or 'naa.' (RFC 7143 4.2.7)")
    return name


def _check_iqn(name: str, kind: str) -> None:
    m = _IQN_RE.match(name)
    if not m:
        raise InvalidNameError(kind, name, "an iqn. name looks like iqn.YYYY-MM.reversed.domain[:unique]")
    year, month, domain = int(m.group(1)), int(m.group(2)), m.group(3)
    if not 1 <= month <= 12:
        raise InvalidNameError(kind, name, f"month {month:02d} in the iqn.YYYY-MM date is not 01-12")
    if year < 1970:
        raise InvalidNameError(kind, name, f"year {year} in the iqn.YYYY-MM date is before 1970")
    for label in domain.split("."):
        if not _LABEL_RE.match(label):
            raise InvalidNameError(kind, name, f"{label!r} is not a valid label of the reversed domain name {domain!r}")
    if m.group(4) is not None and m.group(4) == "":
        raise InvalidNameError(kind, name, "nothing follows the ':' separator")


def validate_iface_name(name: str) -> str:
    """An open-iscsi iface record name: 1-64 characters, safe as a file name."""
    check_path_component(name, "iface name")
    if len(name) > MAX_IFACE_NAME:
        raise InvalidNameError("iface name", name, f"longer than {MAX_IFACE_NAME} characters")
    if "," in name:
        # Discovery link names are comma separated; iscsiadm would misparse them.
        raise InvalidNameError("iface name", name, "it contains ',', which open-iscsi uses as a separator")
    return name


# --------------------------------------------------------------------------------------
# Portals


def _parse_int(text: str, what: str, original: str, lo: int, hi: int) -> int:
    if not text.isdigit():
        raise InvalidNameError("portal", original, f"{what} {text!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise InvalidNameError("portal", original, f"{what} {value} is outside {lo}-{hi}")
    return value


def _parse_tpgt(text: str, original: str) -> int | None:
    if text in ("-1", str(TPGT_UNKNOWN_PRINTED)):
        return None
    return _parse_int(text, "portal group tag", original, 0, 65535)


def _check_address(address: str, original: str) -> str:
    if not address:
        raise InvalidNameError("portal", original, "the address is empty")
    try:
        check_path_component(address, "portal address")
    except InvalidNameError as exc:
        raise InvalidNameError("portal", original, f"the address {exc.reason}") from None
    if ":" in address:
        try:
            ipaddress.IPv6Address(address.split("%", 1)[0])
        except ValueError:
            raise InvalidNameError("portal", original, f"{address!r} is not a valid IPv6 address") from None
        return address
    if re.fullmatch(r"[\d.]+", address):
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise InvalidNameError("portal", original, f"{address!r} is not a valid IPv4 address") from None
        return address
    if not _HOSTNAME_RE.match(address):
        raise InvalidNameError("portal", original, f"{address!r} is not an IP address or a host name")
    return address


@dataclass(frozen=True, slots=True)
class Portal:
    """An iSCSI portal: address (IPv6 unbracketed), TCP port and optional portal group tag."""

    address: str
    port: int = DEFAULT_PORT
    tpgt: int | None = None

    # ---- parsing -------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, default_port: int = DEFAULT_PORT) -> Portal:
        """Parse any form a user or iscsiadm writes.

        ``ADDR``, ``ADDR:PORT``, ``ADDR:PORT,TPGT``, ``ADDR,TPGT``, ``[V6]``, ``[V6]:PORT,TPGT``,
        a bare IPv6 address, ``host.example:3260``, and open-iscsi's directory form
        ``ADDR,PORT,TPGT`` (IPv6 unbracketed, exactly two commas).
        """
        original = text
        text = text.strip()
        if not text:
            raise InvalidNameError("portal", original, "it is empty")
        if not text.startswith("[") and text.count(",") == 2:
            return cls.from_db_name(text)
        tpgt: int | None = None
        if "," in text:
            text, _, tpgt_text = text.rpartition(",")
            tpgt = _parse_tpgt(tpgt_text, original)
        port = default_port
        if text.startswith("["):
            end = text.find("]")
            if end < 0:
                raise InvalidNameError("portal", original, "'[' without a closing ']'")
            address, rest = text[1:end], text[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise InvalidNameError("portal", original, f"unexpected {rest!r} after ']'")
                port = _parse_int(rest[1:], "port", original, 1, 65535)
        elif text.count(":") >= 2:
            address = text  # bare IPv6 address, no port (as open-iscsi's str_to_ipport)
        elif ":" in text:
            address, _, port_text = text.partition(":")
            port = _parse_int(port_text, "port", original, 1, 65535)
        else:
            address = text
        return cls(_check_address(address, original), port, tpgt)

    @classmethod
    def from_db_name(cls, name: str) -> Portal:
        """Parse a node-DB directory or file name: ``ADDR,PORT,TPGT`` or old-style ``ADDR,PORT``."""
        parts = name.split(",")
        if len(parts) not in (2, 3):
            raise InvalidNameError("portal", name, "a DB portal name is ADDR,PORT or ADDR,PORT,TPGT")
        address = _check_address(parts[0], name)
        port = _parse_int(parts[1], "port", name, 1, 65535)
        tpgt = _parse_tpgt(parts[2], name) if len(parts) == 3 else None
        return cls(address, port, tpgt)

    # ---- formatting ----------------------------------------------------------------

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.address

    @property
    def host(self) -> str:
        """The address as it appears before ``:port``: bracketed when IPv6."""
        return f"[{self.address}]" if self.is_ipv6 else self.address

    @property
    def host_port(self) -> str:
        """``10.0.0.1:3260`` or ``[fe80::1]:3260``."""
        return f"{self.host}:{self.port}"

    @property
    def db_name(self) -> str:
        """open-iscsi's directory name ``ADDR,PORT,TPGT``, or the old-style file ``ADDR,PORT``."""
        base = f"{self.address},{self.port}"
        return base if self.tpgt is None else f"{base},{self.tpgt}"

    @property
    def db_tpgt(self) -> int:
        """tpgt as written in a record file (``node.tpgt = -1`` when unknown)."""
        return TPGT_UNKNOWN_DB if self.tpgt is None else self.tpgt

    @property
    def printed_tpgt(self) -> int:
        """tpgt as ``iscsiadm -m node`` prints it (4294967295 when unknown)."""
        return TPGT_UNKNOWN_PRINTED if self.tpgt is None else self.tpgt

    def __str__(self) -> str:
        return self.host_port if self.tpgt is None else f"{self.host_port},{self.tpgt}"

    def with_tpgt(self, tpgt: int | None) -> Portal:
        return replace(self, tpgt=tpgt)

    # ---- comparison ----------------------------------------------------------------

    def matches(self, other: Portal) -> bool:
        """Same endpoint: equal port, equal address (IPs compared as IPs), tpgt ignored if unknown."""
        if self.port != other.port:
            return False
        if self.tpgt is not None and other.tpgt is not None and self.tpgt != other.tpgt:
            return False
        return _normal_address(self.address) == _normal_address(other.address)


def _normal_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return address.lower().rstrip(".")


def is_loopback(address: str) -> bool:
    """127.0.0.0/8 and ::1 (a name or a wildcard is not loopback): what may listen without auth."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
