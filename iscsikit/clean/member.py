"""What ``iscsikit restore`` accepts from a backup tarball: :func:`check_member`, a pure function.

A backup is a file anyone may hand to ``restore``, which runs as root and writes into the
directory whose records iscsiadm (also root) reads and follows. So each member is judged on
its own, before anything is written, by the rules below; the restore then writes what passed
without following any link (see :mod:`iscsikit.clean.backup`).

1. **Names.** ``db/<relpath>`` (a DB entry) or ``state/attachments/<volume>.json`` (a
   connector attachment record), nothing else. Every component is one safe path component
   (no ``..``, ``.``, empty component, NUL, control character or ``/``; at most 255 bytes).
2. **Kinds.** A directory, a regular file or a symbolic link (no hard link, device, FIFO).
3. **Where.** DB entries only inside the record directories ``clean`` backs up
   (:data:`~iscsikit.clean.model.RECORD_DIRS`: ``nodes``, ``send_targets``, ``isns``,
   ``static``, ``fw``, ``ifaces``, ``slp``), no deeper than iscsiadm's layout goes there
   (``nodes/<target>/<portal>/<iface>``: 4 levels; ``send_targets/<portal>/<link>``: 3; ...).
   ``iscsid.conf`` and ``initiatorname.iscsi`` (at the DB root, regular files) only with
   ``include_config``: iscsid.conf's ``iscsid.startup`` is a command iscsiadm runs as root.
4. **Links** only of the form iscsiadm makes (``idbm_add_node``): named
   ``TARGET,ADDR,PORT,TPGT,IFACE``, directly in ``static/``, ``fw/``, ``isns/`` or a discovery
   directory ``send_targets|isns/<ADDR,PORT>/``, pointing at exactly
   ``<DB root>/nodes/TARGET/ADDR,PORT,TPGT``: an absolute, normalised path (no ``.``, ``..``,
   ``//``) whose tail is the node portal directory the link's own name designates. Which DB
   root that is (it must be the one restored into) is for the caller to compare:
   :attr:`Member.link_root`.
5. **Modes.** setuid, setgid, sticky and world-writable bits are never restored: they are
   stripped (:attr:`Member.stripped` says which). Attachment records are always 0600.

>>> check_member("db/nodes/iqn.2026-11.org.example:a/10.0.0.1,3260,1/default", "file", 0o4755).mode == 0o755
True
>>> try:
...     check_member("db/iscsid.conf", "file", 0o644)
... except ConfigMemberError as exc:
...     print(exc)
member 'db/iscsid.conf': iscsid.conf is restored only with --include-config
"""

from __future__ import annotations

import posixpath
import stat
from dataclasses import dataclass
from typing import Final, Literal

from iscsikit.clean.model import CONFIG_FILES, RECORD_DIRS
from iscsikit.db import layout
from iscsikit.errors import BackupError, InvalidNameError
from iscsikit.names import check_path_component

DB_PREFIX: Final = "db/"
STATE_PREFIX: Final = "state/attachments/"
#: How deep each record directory goes in iscsiadm's layout (the directory itself is 1).
MAX_DEPTH: Final = {
    layout.NODES: 4,  # nodes/<target>/<addr,port,tpgt>/<iface>
    layout.SEND_TARGETS: 3,  # send_targets/<addr,port>/{st_config,<link>}
    layout.ISNS_DIR: 3,  # isns/<addr,port>/{isns_config,<link>}, isns/<link> (pre-872)
    layout.STATIC: 2,
    layout.FW: 2,
    layout.IFACES: 2,
    "slp": 1,  # defined by open-iscsi, never written into
}
#: Mode bits a restore never sets.
UNSAFE_BITS: Final = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH
ATTACHMENT_MODE: Final = 0o600

Area = Literal["db", "config", "attachment"]


class UnsafeMemberError(BackupError):
    """A backup member breaks a restore rule; ``member`` and ``reason`` say which and how."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        self.reason = reason
        super().__init__(f"member {member!r}: {reason}")


class ConfigMemberError(UnsafeMemberError):
    """iscsid.conf or initiatorname.iscsi without ``--include-config``: a usage error."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Member:
    """A member that passed: where it goes, and how to write it.

    ``relpath``: under the DB root (``area`` db or config), or the volume id (attachment).
    ``mode``: the mode to write (unsafe bits gone); ``stripped``: the bits removed.
    ``link_root``: for a link, the DB root its target names (``/etc/iscsi``).
    """

    area: Area
    relpath: str
    kind: Literal["dir", "file", "link"]
    mode: int
    stripped: int = 0
    linkname: str = ""
    link_root: str = ""


def check_member(name: str, kind: str, mode: int, linkname: str = "", *, include_config: bool = False) -> Member:
    """Judge one tarball member (``kind``: dir, file, link, or anything else); see the module docstring.

    Raises :class:`UnsafeMemberError` (:class:`ConfigMemberError` for a config file without
    ``include_config``) naming the member and the rule it breaks; never touches the filesystem.
    """
    if name.startswith(STATE_PREFIX):
        return _attachment(name, kind)
    if not name.startswith(DB_PREFIX):
        raise UnsafeMemberError(name, f"not under {DB_PREFIX} or {STATE_PREFIX}; not part of a clean backup")
    rel = name[len(DB_PREFIX) :]
    if kind == "dir":
        rel = rel.removesuffix("/")
    parts = _components(name, rel)
    if kind not in ("dir", "file", "link"):
        raise UnsafeMemberError(name, f"a {kind}: only directories, regular files and symlinks are restored")
    top = parts[0]
    if top in CONFIG_FILES:
        if len(parts) != 1 or kind != "file":
            raise UnsafeMemberError(name, f"{top} must be a regular file at the DB root")
        if not include_config:
            raise ConfigMemberError(name, f"{top} is restored only with --include-config")
        return _with_mode(name, "config", rel, "file", mode)
    if top not in RECORD_DIRS:
        raise UnsafeMemberError(name, f"{top!r} is not a record directory restore writes ({', '.join(RECORD_DIRS)})")
    if len(parts) > MAX_DEPTH[top]:
        raise UnsafeMemberError(name, f"deeper than iscsiadm's layout of {top}/ ({MAX_DEPTH[top]} levels)")
    if len(parts) == 1 and kind != "dir":
        raise UnsafeMemberError(name, f"{top} must be a directory")
    if kind == "link":
        root = _link_root(name, parts, linkname)
        return Member("db", rel, "link", 0o777, linkname=linkname, link_root=root)
    return _with_mode(name, "db", rel, "dir" if kind == "dir" else "file", mode)


def _components(name: str, rel: str) -> list[str]:
    parts = rel.split("/")
    try:
        for part in parts:
            check_path_component(part, "path component")
    except InvalidNameError as exc:
        raise UnsafeMemberError(name, f"unsafe path: {exc.reason}") from None
    return parts


def _with_mode(name: str, area: Area, rel: str, kind: Literal["dir", "file"], mode: int) -> Member:
    perm = mode & 0o7777
    return Member(area, rel, kind, perm & ~UNSAFE_BITS, stripped=perm & UNSAFE_BITS)


def _attachment(name: str, kind: str) -> Member:
    rest = name[len(STATE_PREFIX) :]
    if kind != "file":
        raise UnsafeMemberError(name, "an attachment record must be a regular file")
    if not rest.endswith(".json") or rest.startswith("."):
        raise UnsafeMemberError(name, "an attachment record is named <volume id>.json")
    volume_id = rest.removesuffix(".json")
    try:
        check_path_component(volume_id, "volume id")
    except InvalidNameError as exc:
        raise UnsafeMemberError(name, f"unsafe volume id: {exc.reason}") from None
    return Member("attachment", volume_id, "file", ATTACHMENT_MODE)


def _link_root(name: str, parts: list[str], linkname: str) -> str:
    """The DB root a link of iscsiadm's form names; UnsafeMemberError for any other link."""
    top = parts[0]
    placed = (len(parts) == 2 and top in (layout.STATIC, layout.FW, layout.ISNS_DIR)) or (
        len(parts) == 3
        and top in (layout.SEND_TARGETS, layout.ISNS_DIR)
        and layout.parse_discovery_entry(parts[1]) is not None
    )
    if not placed:
        raise UnsafeMemberError(
            name, "a symlink where iscsiadm keeps none (only static/, fw/, isns/ and send_targets|isns/<ADDR,PORT>/)"
        )
    node = layout.parse_link_name(parts[-1])
    if node is None or node.old_style:
        raise UnsafeMemberError(name, "a symlink not named TARGET,ADDR,PORT,TPGT,IFACE as iscsiadm names its links")
    try:
        check_path_component(node.target, "target name")
        check_path_component(node.portal_entry, "portal")
    except InvalidNameError as exc:
        raise UnsafeMemberError(name, f"a symlink whose name holds an {exc.kind} that is not a safe name") from None
    suffix = f"/{layout.NODES}/{node.target}/{node.portal_entry}"
    if not linkname.startswith("/") or posixpath.normpath(linkname) != linkname or "//" in linkname:
        raise UnsafeMemberError(name, f"points to {linkname!r}: not an absolute, normalised path")
    root = linkname[: -len(suffix)] if linkname.endswith(suffix) else ""
    if not root:
        raise UnsafeMemberError(name, f"points to {linkname!r}, not to <DB root>{suffix}, the node its name designates")
    return root


__all__ = [
    "ConfigMemberError",
    "Member",
    "UnsafeMemberError",
    "check_member",
]
