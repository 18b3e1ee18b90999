"""Fuzz restore's member check (iscsikit/clean/member.py ``check_member``, and backup.py's use of it).

Input: byte 0 picks the member's kind (dir, file, link, or a tar type restore refuses) and
``include_config`` (bit 3); bytes 1-2 are the mode; the rest is ``name`` NUL ``linkname``
(UTF-8 with surrogate escapes, as tarfile decodes names).

The harness does not re-implement the rules; it checks what they exist for. For any member:

* only ``UnsafeMemberError`` (or its ``ConfigMemberError``) is raised, naming the member;
* an accepted member is written only inside the DB root or the attachment directory: its
  relative path has only safe components and, joined to a root, normalises to a path under it;
  DB entries only in a record directory, config files only with ``include_config``;
* no accepted mode (of a file or directory) has setuid, setgid, sticky or world-writable bits,
  and ``mode | stripped`` is the member's permission bits (nothing else changed); attachment
  records are 0600;
* a link is accepted only as iscsiadm makes them: in static/, fw/, isns/ or a discovery directory,
  pointing at an absolute, normalised ``<link_root>/nodes/<target>/<portal>``, with no ``..``;
* backup.py's ``_check`` of a ``tarfile.TarInfo`` with the same fields agrees.
"""

from __future__ import annotations

import posixpath
import stat
import sys
import tarfile

from fuzz._common import allocation_limit, fuzz_main, instrument

with instrument("iscsikit.clean.member", "iscsikit.clean.backup", "iscsikit.names", "iscsikit.db.layout"):
    from iscsikit.clean import backup
    from iscsikit.clean.member import DB_PREFIX, STATE_PREFIX, UnsafeMemberError, check_member
    from iscsikit.clean.model import CONFIG_FILES, RECORD_DIRS
    from iscsikit.errors import BackupError

#: Kinds as ``member_kind`` names them, with the tar type that makes each.
KINDS = (
    ("dir", tarfile.DIRTYPE),
    ("file", tarfile.REGTYPE),
    ("link", tarfile.SYMTYPE),
    ("hard link", tarfile.LNKTYPE),
    ("FIFO", tarfile.FIFOTYPE),
    ("character device", tarfile.CHRTYPE),
    ("block device", tarfile.BLKTYPE),
    ("link", tarfile.SYMTYPE),
)
ROOT = "/etc/iscsi"
UNSAFE = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH


def _inside(root: str, rel: str) -> bool:
    joined = posixpath.normpath(posixpath.join(root, rel))
    return joined.startswith(root + "/") and joined == posixpath.join(root, rel)


def _check_accepted(name: str, kind: str, mode: int, linkname: str, include_config: bool) -> None:
    try:
        m = check_member(name, kind, mode, linkname, include_config=include_config)
    except UnsafeMemberError as e:
        assert str(e).startswith(f"member {name!r}: "), str(e)
        raise
    assert m.kind == kind
    if m.kind != "link":  # a symlink's own mode means nothing (Linux has no lchmod)
        assert not m.mode & UNSAFE, f"mode {oct(m.mode)} restored with an unsafe bit"
    parts = m.relpath.split("/")
    for part in parts:
        assert part not in ("", ".", "..") and "\0" not in part, f"unsafe component {part!r} in {m.relpath!r}"
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in part)
    if m.area == "attachment":
        assert name.startswith(STATE_PREFIX) and kind == "file" and m.mode == 0o600 and len(parts) == 1
        assert name == f"{STATE_PREFIX}{m.relpath}.json"
        return
    assert name.startswith(DB_PREFIX) and name[len(DB_PREFIX) :].rstrip("/") == m.relpath
    assert _inside(ROOT, m.relpath), f"{m.relpath!r} leaves the DB root"
    if m.area == "config":
        assert include_config and m.relpath in CONFIG_FILES and m.kind == "file"
    else:
        assert parts[0] in RECORD_DIRS, f"{m.relpath!r} is outside the record directories"
    if m.kind == "link":
        assert m.linkname == linkname and m.link_root.startswith("/")
        assert posixpath.normpath(linkname) == linkname and ".." not in linkname.split("/")
        assert linkname.startswith(m.link_root + "/nodes/"), linkname
        node = linkname[len(m.link_root) + 1 :]
        assert len(node.split("/")) == 3 and _inside(m.link_root, node), f"the link points outside: {linkname!r}"
        assert parts[0] in ("static", "fw", "isns", "send_targets") and len(parts) in (2, 3)
    else:
        assert m.mode | m.stripped == mode & 0o7777 and not m.mode & m.stripped


def check(data: bytes) -> None:
    if len(data) < 3:
        return
    kind, tar_type = KINDS[data[0] & 7]
    include_config = bool(data[0] & 8)
    mode = int.from_bytes(data[1:3], "little") & 0o7777
    name_b, _, link_b = data[3:].partition(b"\0")
    name = name_b.decode("utf-8", "surrogateescape")
    linkname = link_b.decode("utf-8", "surrogateescape")
    with allocation_limit(64 * len(data) + (256 << 10), "check_member"):
        try:
            _check_accepted(name, kind, mode, linkname, include_config)
            accepted = True
        except UnsafeMemberError:
            accepted = False
        info = tarfile.TarInfo(name)
        info.type = tar_type
        info.mode = mode
        info.linkname = linkname
        assert backup.member_kind(info) == kind
        try:
            backup._check(info, "fuzz.tar.gz")
            via_tar = True
        except BackupError as e:
            assert str(e).startswith("fuzz.tar.gz: unsafe member"), str(e)
            via_tar = False
        if include_config:  # what backup._check asks for
            assert via_tar == accepted, "backup._check and check_member disagree"


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
    sys.exit(0)
