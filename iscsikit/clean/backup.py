"""Backups of what ``clean`` removes, and ``restore``.

A backup is a gzip tarball, mode 0600 (node records hold CHAP secrets)::

    manifest.json                      what was removed, when, by what command, from which DB root
    db/<relpath>                       every removed DB entry: exact bytes, modes, link targets
    state/attachments/<volume>.json    removed connector attachment records, byte for byte

The DB entries are a :class:`~iscsikit.db.snapshot.Snapshot` (directories with their modes,
files, symlinks with their targets verbatim), laid out as :func:`~iscsikit.db.snapshot.add_to_tar`
lays them out and read back with :func:`~iscsikit.db.snapshot.from_tar`.
It is written (temp file, fsync, rename) *before* anything is deleted.

:func:`restore_backup` puts entries back through :meth:`Database.restore` under iscsiadm's
lock. It is idempotent (entries already present with the same bytes, mode or link target
are left alone) and refuses, writing nothing, when an entry exists with different content,
unless ``force``.

>>> collector = EntryCollector("/nonexistent")
>>> collector.add("nodes/x/1.2.3.4,3260,1/default"); len(collector.snapshot().entries)
0
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import socket
import stat
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iscsikit.clean.member import DB_PREFIX, STATE_PREFIX, Member, UnsafeMemberError, check_member
from iscsikit.db.snapshot import Snapshot, SnapshotEntry, from_tar
from iscsikit.errors import BackupError, NotABackupError, RestoreConflictError

if TYPE_CHECKING:
    from iscsikit.db.database import Database

FORMAT = "iscsikit-clean-backup"
VERSION = 1
MANIFEST = "manifest.json"
BACKUP_DIR = "backups"
ATTACHMENTS = "attachments"  # under the state dir (StateStore)


# ---- collecting exact copies --------------------------------------------------------------


class EntryCollector:
    """Exact copies of DB entries (and their parent directories) by relpath, deduplicated.

    Built for speed on 10,000 records: one ``lstat`` per entry, parent directories read
    once. Entries that do not exist are skipped (already gone is fine).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = str(root)
        self._entries: dict[str, SnapshotEntry] = {}
        self._expanded: set[str] = set()

    def _entry(self, rel: str) -> SnapshotEntry | None:
        path = f"{self.root}/{rel}"
        try:
            st = os.lstat(path)
        except OSError:
            return None
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            return SnapshotEntry(rel, "link", mode, target=os.readlink(path))
        if stat.S_ISDIR(st.st_mode):
            return SnapshotEntry(rel, "dir", mode)
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as fh:
                return SnapshotEntry(rel, "file", mode, fh.read())
        return None  # sockets, devices: nothing iscsiadm writes; never copied

    def add(self, rel: str, *, recursive: bool = False) -> None:
        """Copy ``rel`` and its parent directories (and with ``recursive``, what is below it)."""
        if rel in self._entries:
            if recursive and rel not in self._expanded and self._entries[rel].type == "dir":
                self._expand(rel)
            return
        parts = rel.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self._entries:
                entry = self._entry(parent)
                if entry is None:
                    return
                self._entries[parent] = entry
        entry = self._entry(rel)
        if entry is None:
            return
        self._entries[rel] = entry
        if recursive and entry.type == "dir":
            self._expand(rel)

    def _expand(self, rel: str) -> None:
        self._expanded.add(rel)
        try:
            names = sorted(os.listdir(f"{self.root}/{rel}"))
        except OSError:
            return
        for name in names:
            self.add(f"{rel}/{name}", recursive=True)

    def add_all(self, rels: Iterable[str], *, recursive: bool = False) -> None:
        for rel in rels:
            self.add(rel, recursive=recursive)

    def snapshot(self) -> Snapshot:
        return Snapshot(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)


# ---- writing ----------------------------------------------------------------------------


def default_backup_path(state_dir: str | os.PathLike[str], now: float | None = None) -> Path:
    """``<state_dir>/backups/clean-YYYYmmddTHHMMSSZ-<pid>[-N].tar.gz``, a name not yet taken."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    base = Path(state_dir) / BACKUP_DIR / f"clean-{stamp}-{os.getpid()}"
    path, n = base.with_name(base.name + ".tar.gz"), 1
    while os.path.lexists(path):
        n += 1
        path = base.with_name(f"{base.name}-{n}.tar.gz")
    return path


def write_backup(
    path: str | os.PathLike[str],
    snapshot: Snapshot,
    attachments: Mapping[str, bytes],
    manifest: Mapping[str, Any],
) -> Path:
    """Write the tarball atomically and durably; refuses to replace an existing file."""
    target = Path(path)
    if os.path.lexists(target):
        raise BackupError(f"backup file {target} already exists; choose another --backup")
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": socket.gethostname(),
        **manifest,
        "entries": len(snapshot.entries),
        "attachments": sorted(attachments),
    }
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as gz:
                out = _TarWriter(gz)
                out.add(MANIFEST, "file", 0o600, (json.dumps(doc, separators=(",", ":")) + "\n").encode())
                for entry in snapshot.ordered():
                    out.add(DB_PREFIX + entry.relpath, entry.type, entry.mode, entry.data, entry.target)
                for volume_id, data in sorted(attachments.items()):
                    out.add(f"{STATE_PREFIX}{volume_id}.json", "file", 0o600, data)
                out.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.rename(tmp, target)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise BackupError(f"cannot write the backup {target}: {exc.strerror}; nothing was removed") from None
    _fsync_dir(target.parent)
    return target


_TYPES = {"dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE, "file": tarfile.REGTYPE}


class _TarWriter:
    """A tar stream (GNU format: long names need no PAX records) written in large chunks.

    The same members :func:`~iscsikit.db.snapshot.add_to_tar` writes, without
    :meth:`tarfile.TarFile.addfile`'s per-member bookkeeping: 40,000 members (10,000 records
    with their links and directories) in well under a second.
    """

    _CHUNK = 1 << 20

    def __init__(self, out: Any) -> None:
        self.out = out
        self.buf = bytearray()
        self.mtime = int(time.time())

    def add(self, name: str, kind: str, mode: int, data: bytes = b"", linkname: str = "") -> None:
        raw_name = name.encode("utf-8", "surrogateescape")
        raw_link = linkname.encode("utf-8", "surrogateescape")
        size = len(data) if kind == "file" else 0
        if len(raw_name) < 100 and len(raw_link) < 100:
            self.buf += self._header(raw_name, mode, size, _TYPES[kind], raw_link)
        else:  # a long name: tarfile writes the GNU long-name records
            info = tarfile.TarInfo(name + ("/" if kind == "dir" else ""))
            info.mode, info.mtime, info.size, info.type, info.linkname = mode, self.mtime, size, _TYPES[kind], linkname
            self.buf += info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
        if kind == "file":
            self.buf += data
            self.buf += b"\0" * (-len(data) % tarfile.BLOCKSIZE)
        if len(self.buf) >= self._CHUNK:
            self.out.write(self.buf)
            self.buf.clear()

    def _header(self, name: bytes, mode: int, size: int, kind: bytes, link: bytes) -> bytes:
        """One 512-byte GNU tar header, as ``TarInfo.tobuf(GNU_FORMAT)`` makes it for short names."""
        h = bytearray(tarfile.BLOCKSIZE)
        if kind == tarfile.DIRTYPE:
            name += b"/"
        h[0 : len(name)] = name
        h[100:108] = b"%07o\0" % (mode & 0o7777)
        h[108:116] = h[116:124] = b"0000000\0"
        h[124:136] = b"%011o\0" % size
        h[136:148] = b"%011o\0" % self.mtime
        h[148:156] = b" " * 8
        h[156:157] = kind
        h[157 : 157 + len(link)] = link
        h[257:265] = tarfile.GNU_MAGIC
        h[265:269] = h[297:301] = b"root"
        h[148:156] = b"%06o\0 " % sum(h)
        return bytes(h)

    def close(self) -> None:
        self.buf += b"\0" * (2 * tarfile.BLOCKSIZE)
        self.out.write(self.buf)
        self.buf.clear()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- reading ----------------------------------------------------------------------------


@dataclass(slots=True)
class Backup:
    """A backup read back: its manifest, DB entries and attachment records."""

    path: str
    manifest: dict[str, Any]
    snapshot: Snapshot
    attachments: dict[str, bytes] = field(default_factory=dict)


def read_backup(path: str | os.PathLike[str]) -> Backup:
    """Read and check a backup; a BackupError names the file and the offending member."""
    where = str(path)
    try:
        tar = tarfile.open(where, mode="r:*")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise NotABackupError(f"no backup file {where}; give a tarball written by `iscsikit clean`") from None
    except (OSError, tarfile.TarError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0].rstrip(":")
        raise NotABackupError(
            f"{where}: not a clean backup tarball ({reason}); give a tarball written by `iscsikit clean`"
        ) from None
    with tar:
        try:
            members = tar.getmembers()
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise BackupError(f"{where}: damaged tarball ({exc})") from None
        by_name = {m.name: m for m in members}
        manifest = _manifest(tar, by_name.get(MANIFEST), where)
        attachments: dict[str, bytes] = {}
        for m in members:
            if m.name == MANIFEST:
                continue
            if not m.name.startswith((DB_PREFIX, STATE_PREFIX)):
                raise BackupError(f"{where}: unexpected member {m.name!r}")
            checked = _check(m, where)
            if checked.area == "attachment":
                attachments[checked.relpath] = _read_member(tar, m, where)
        try:
            snapshot = from_tar(tar, DB_PREFIX)
        except (OSError, tarfile.TarError) as exc:
            raise BackupError(f"{where}: damaged tarball ({exc})") from None
    return Backup(where, manifest, snapshot, attachments)


def _manifest(tar: tarfile.TarFile, member: tarfile.TarInfo | None, where: str) -> dict[str, Any]:
    if member is None:
        raise BackupError(f"{where}: no {MANIFEST}; not an iscsikit clean backup")
    try:
        doc = json.loads(_read_member(tar, member, where))
    except ValueError as exc:
        raise BackupError(f"{where}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BackupError(f"{where}: {MANIFEST} is not an iscsikit clean backup manifest")
    if doc.get("version") != VERSION:
        raise BackupError(f"{where}: backup format version {doc.get('version')!r}; this iscsikit reads {VERSION}")
    return doc


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str) -> bytes:
    if not member.isfile():
        raise BackupError(f"{where}: {member.name} is not a regular file")
    fh = tar.extractfile(member)
    if fh is None:
        raise BackupError(f"{where}: cannot read {member.name}")
    return fh.read()


def member_kind(m: tarfile.TarInfo) -> str:
    """A tar member's kind as :func:`~iscsikit.clean.member.check_member` takes it."""
    if m.isdir():
        return "dir"
    if m.issym():
        return "link"
    if m.isfile():
        return "file"
    return {tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
            tarfile.FIFOTYPE: "FIFO"}.get(m.type, f"member of tar type {m.type!r}")  # fmt: skip


def _check(m: tarfile.TarInfo, where: str) -> Member:
    """The structural rules (config files allowed here; ``restore`` asks for the flag)."""
    try:
        return check_member(m.name, member_kind(m), m.mode, m.linkname, include_config=True)
    except UnsafeMemberError as exc:
        raise BackupError(f"{where}: unsafe {exc}") from None


# ---- restoring --------------------------------------------------------------------------


@dataclass(slots=True)
class RestoreReport:
    """What a restore did (or, in dry-run, would do)."""

    restored: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)
    attachments_restored: list[str] = field(default_factory=list)
    attachments_unchanged: list[str] = field(default_factory=list)
    stripped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "restored": self.restored,
            "unchanged": self.unchanged,
            "overwritten": self.overwritten,
            "attachments_restored": self.attachments_restored,
            "attachments_unchanged": self.attachments_unchanged,
            "modes_stripped": self.stripped,
            "notes": self.notes,
        }


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _Tree:
    """Directories under one trusted root, opened component by component, never through a link.

    Every path below the root is reached with ``openat(parent_fd, name, O_NOFOLLOW)``: a
    symlink (or a file) where a directory belongs is an error naming it, not a way out of
    the root. Directories are created (``mkdirat``, 0700) only when ``create``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fds: dict[str, int] = {}
        self._dirty: set[str] = set()

    def __enter__(self) -> _Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        for rel in self._dirty:
            fd = self._fds.get(rel)
            if fd is not None:
                try:
                    os.fsync(fd)
                except OSError:
                    pass
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def dir_fd(self, rel: str, *, create: bool = False, mode: int = 0o700) -> int | None:
        """The fd of directory ``rel`` ("" = the root); None if absent and not ``create``."""
        fd = self._fds.get(rel)
        if fd is not None:
            return fd
        if not rel:  # the root itself is configuration (--db-root, state_dir): trusted
            try:
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                if not create:
                    return None
                os.makedirs(self.root, mode=0o700, exist_ok=True)
                fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        else:
            parent_rel, _, name = rel.rpartition("/")
            parent = self.dir_fd(parent_rel, create=create)
            if parent is None:
                return None
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(name, 0o700, dir_fd=parent)
                self._dirty.add(parent_rel)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
                os.fchmod(fd, mode)
            except (NotADirectoryError, OSError) as exc:
                if isinstance(exc, NotADirectoryError) or exc.errno == errno.ELOOP:
                    raise BackupError(
                        f"{self.root / rel} is {_what(parent, name)}, not a directory: refusing to write through it"
                    ) from None
                raise
        self._fds[rel] = fd
        return fd

    def lstat(self, rel: str) -> os.stat_result | None:
        parent_rel, _, name = rel.rpartition("/")
        parent = self.dir_fd(parent_rel)
        if parent is None:
            return None
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def read(self, rel: str) -> bytes:
        parent_rel, _, name = rel.rpartition("/")
        parent = self.dir_fd(parent_rel)
        assert parent is not None
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def readlink(self, rel: str) -> str:
        parent_rel, _, name = rel.rpartition("/")
        parent = self.dir_fd(parent_rel)
        assert parent is not None
        return os.readlink(name, dir_fd=parent)

    def write_file(self, rel: str, data: bytes, mode: int) -> None:
        """Atomically: a new file beside it (O_EXCL|O_NOFOLLOW), fsync, rename over it."""
        parent_rel, _, name = rel.rpartition("/")
        parent = self.dir_fd(parent_rel, create=True)
        assert parent is not None
        tmp = f".{name[:200]}.isk-restore.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=parent)
            except OSError:
                pass
            raise
        self._dirty.add(parent_rel)

    def symlink(self, rel: str, target: str) -> None:
        """Atomically: a new link beside it, renamed over whatever is there."""
        parent_rel, _, name = rel.rpartition("/")
        parent = self.dir_fd(parent_rel, create=True)
        assert parent is not None
        tmp = f".{name[:200]}.isk-restore.{os.getpid()}"
        os.symlink(target, tmp, dir_fd=parent)
        try:
            os.rename(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            os.unlink(tmp, dir_fd=parent)
            raise
        self._dirty.add(parent_rel)


def _what(parent: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return "unreadable"
    return "a symlink" if stat.S_ISLNK(st.st_mode) else "a file"


def _state(tree: _Tree, m: Member, data: bytes) -> str | None:
    """None if absent; "same" if present as in the backup; else what differs."""
    st = tree.lstat(m.relpath)
    if st is None:
        return None
    if m.kind == "dir":
        return "same" if stat.S_ISDIR(st.st_mode) else "not a directory"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    if m.kind == "link":
        if not stat.S_ISLNK(st.st_mode):
            return "not a symlink"
        current = tree.readlink(m.relpath)
        return "same" if current == m.linkname else f"points to {current}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if stat.S_IMODE(st.st_mode) != m.mode:
        return f"mode {oct(stat.S_IMODE(st.st_mode))} instead of {oct(m.mode)}"
    return "same" if tree.read(m.relpath) == data else "different content"


def _link_roots(db: Database) -> set[str]:
    """The names this DB goes by in iscsiadm's links: its path here, the root its existing
    links name (or ``link_root``), and the root compiled into this host's iscsiadm (when the
    DB is reached through another mount point, e.g. ``--db-root /host/etc/iscsi``)."""
    from iscsikit.db.locate import compiled_db_root

    roots = {str(db.link_root).rstrip("/"), str(db.root).rstrip("/")}
    compiled = compiled_db_root()
    if compiled is not None:
        roots.add(str(compiled[0]).rstrip("/"))
    return roots


def restore_backup(
    backup: Backup,
    db: Database,
    state_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    include_config: bool = False,
) -> RestoreReport:
    """Put the backup's records back; see :mod:`iscsikit.clean.member` for what is accepted.

    Everything is checked first (every member against the rules, links against this DB's
    root, every existing entry against the backup); only then is anything written, each file
    and link atomically, every path opened without following links. ``db.dry_run`` writes
    nothing. Raises BackupError naming the member (nothing written) or RestoreConflictError.
    """
    report = RestoreReport(dry_run=db.dry_run)
    root = Path(db.root)
    origin = backup.manifest.get("db_root")
    if origin and os.path.realpath(str(origin)) != os.path.realpath(str(root)):
        report.notes.append(f"the backup was taken from {origin}; restoring into {root}")
    where = backup.path
    roots = _link_roots(db)
    checked: list[tuple[Member, bytes]] = []
    for entry in backup.snapshot.ordered():
        name = DB_PREFIX + entry.relpath + ("/" if entry.type == "dir" else "")
        try:
            m = check_member(name, entry.type, entry.mode, entry.target, include_config=include_config)
        except UnsafeMemberError as exc:
            raise type(exc)(exc.member, f"{exc.reason} (in {where}); nothing was restored") from None
        if m.kind == "link" and m.link_root not in roots:
            raise UnsafeMemberError(
                name,
                f"points into {m.link_root}/nodes, not into this DB ({' or '.join(sorted(roots))}) "
                f"(in {where}); nothing was restored",
            )
        if m.stripped:
            report.stripped.append(f"{m.relpath}: {oct(m.stripped)} not restored")
        checked.append((m, entry.data))
    attachments = []
    for volume_id, data in sorted(backup.attachments.items()):
        try:
            attachments.append((check_member(f"{STATE_PREFIX}{volume_id}.json", "file", 0o600), data))
        except UnsafeMemberError as exc:
            raise UnsafeMemberError(exc.member, f"{exc.reason} (in {where}); nothing was restored") from None
    if report.stripped:
        report.notes.append(
            f"setuid/setgid/sticky/world-writable bits not restored on {len(report.stripped)} entr(ies)"
        )
    conflicts: list[str] = []
    att_base = Path(state_dir) if state_dir is not None else None
    with db.transaction(), _Tree(root) as tree, _Tree(att_base or Path("/nonexistent")) as att_tree:
        todo: list[tuple[Member, bytes]] = []
        for m, data in checked:
            state = _state(tree, m, data)
            if state is None:
                todo.append((m, data))
                report.restored.append(m.relpath)
            elif state == "same":
                report.unchanged.append(m.relpath)
            elif m.kind == "dir" or state == "a directory":
                raise BackupError(
                    f"{root / m.relpath} is {state}; the backup's {m.kind} cannot replace it (move it away first); "
                    "nothing was restored"
                )
            else:
                conflicts.append(f"{m.relpath}: {state}")
                if force:
                    todo.append((m, data))
                    report.overwritten.append(m.relpath)
        att_todo: list[tuple[Member, bytes]] = []
        for m, data in attachments:
            if att_base is None:
                report.notes.append(f"attachment record {m.relpath} not restored: no state dir given")
                continue
            path = f"{ATTACHMENTS}/{m.relpath}.json"
            saved = m.relpath, data
            st = att_tree.lstat(path)
            if st is None:
                att_todo.append((m, data))
                report.attachments_restored.append(m.relpath)
                continue
            if not stat.S_ISREG(st.st_mode):
                raise BackupError(f"{att_base / path} is not a regular file; nothing was restored")
            if att_tree.read(path) == saved[1]:
                report.attachments_unchanged.append(m.relpath)
                continue
            conflicts.append(f"{att_base / path}: different content")
            if force:
                att_todo.append((m, data))
                report.attachments_restored.append(m.relpath)
        if conflicts and not force:
            raise RestoreConflictError(
                f"{len(conflicts)} record(s) changed since the backup was taken; nothing was restored. "
                f"Use --force to overwrite them: {'; '.join(conflicts[:5])}" + (" ..." if len(conflicts) > 5 else ""),
                conflicts,
            )
        if db.dry_run:
            return report
        for m, data in todo:
            if m.kind == "dir":
                tree.dir_fd(m.relpath, create=True, mode=m.mode)
            elif m.kind == "link":
                tree.symlink(m.relpath, m.linkname)
            else:
                tree.write_file(m.relpath, data, m.mode)
        for m, data in att_todo:
            att_tree.write_file(f"{ATTACHMENTS}/{m.relpath}.json", data, m.mode)
    return report


__all__ = [
    "Backup",
    "EntryCollector",
    "RestoreReport",
    "default_backup_path",
    "read_backup",
    "restore_backup",
    "write_backup",
]
