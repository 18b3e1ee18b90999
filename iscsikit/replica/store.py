"""A replica's storage in one directory: a sparse data file and a small metadata file.

Layout of ``DIR``::

    volume.img     the volume's bytes, a sparse file exactly ``size`` long (holes read as zeros)
    replica.json   ReplicaMeta as JSON, replaced atomically (write temp, fsync, rename, fsync dir)
    lock           flock()ed by the one server that owns DIR

Every file of DIR is opened with ``O_NOFOLLOW``: a symbolic link planted in DIR (say
``volume.img -> /etc/passwd``) is refused with an error naming it and its target is never
opened, truncated or replaced; a new data file or metadata temporary with other hard links is
refused too.

The metadata is what lets a controller recognise a replica that missed writes (see
``docs/replica-protocol.md``, "Consistency"): ``volume_id`` ties the replica to one volume,
``epoch`` and ``members`` say which replicas held every acknowledged write at the last
membership change, ``state`` is ``rebuilding`` while a rebuild has not finished, ``clean`` is
false from the first write after an open until a clean close, and ``revision`` counts the
writes applied (persisted at every flush, not per write).

All methods block; the server calls them from its event loop or a thread pool.
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import json
import mmap
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from crc32c import crc32c as _crc32c

from iscsikit.errors import ReplicaError, UsageError

DATA_FILE = "volume.img"
META_FILE = "replica.json"
LOCK_FILE = "lock"
META_FORMAT = 1
STATES = ("fresh", "rw", "rebuilding")
#: Fields a controller may set with SET_META.
SETTABLE = frozenset({"volume_id", "epoch", "members", "state", "clean", "revision"})

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_ZERO_CHUNK = 1 << 20
_DIRECT_ALIGN = 4096
#: Most of a range mapped at once while checksumming it, so a CHECKSUM of gigabytes does not
#: map (and count in the server's RSS) all of its page cache at once.
_CRC_WINDOW = 64 << 20
#: Distinct CRCs of zero runs remembered (granule sizes seen; a hostile peer could vary them).
_ZERO_CRCS = 64


def _open(path: Path, flags: int, mode: int = 0o600) -> int:
    """Open a file of a replica directory, never through a symbolic link (``O_NOFOLLOW``)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ReplicaError(
                f"{path} is a symbolic link: a replica's files are never opened through links (remove it)"
            ) from None
        raise


def _check_regular(fd: int, path: Path, *, single_link: bool = False) -> os.stat_result:
    """Close ``fd`` and raise unless it is a regular file (with no other hard link, if asked)."""
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file"
    elif single_link and st.st_nlink != 1:
        problem = f"has {st.st_nlink} hard links; refusing to overwrite a file linked elsewhere"
    if problem is not None:
        os.close(fd)
        raise ReplicaError(f"{path} {problem}")
    return st


@dataclass(slots=True)
class ReplicaMeta:
    """What a replica knows about itself and its volume (``replica.json``)."""

    replica_id: str
    size: int
    volume_id: str | None = None
    epoch: int = 0
    #: Replicas holding every acknowledged write as of ``epoch``: [{"id": ..., "address": ...}].
    members: list[dict[str, str]] = field(default_factory=list)
    state: str = "fresh"
    clean: bool = True
    revision: int = 0
    format: int = META_FORMAT
    #: The controller (its HELLO ``controller`` id) that claimed the replica last, and the ones it
    #: and its predecessors fenced, oldest first: they may not claim it again (server.py, fencing).
    controller: str | None = None
    fenced_controllers: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> ReplicaMeta:
        try:
            meta = cls(
                replica_id=str(data["replica_id"]),
                size=int(data["size"]),
                volume_id=None if data.get("volume_id") is None else str(data["volume_id"]),
                epoch=int(data.get("epoch", 0)),
                members=[{"id": str(m["id"]), "address": str(m.get("address", ""))} for m in data["members"]],
                state=str(data.get("state", "fresh")),
                clean=bool(data.get("clean", True)),
                revision=int(data.get("revision", 0)),
                format=int(data.get("format", META_FORMAT)),
                controller=None if data.get("controller") is None else str(data["controller"]),
                fenced_controllers=[str(c) for c in data.get("fenced_controllers", [])],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplicaError(f"{where}: malformed replica metadata ({type(exc).__name__}: {exc})") from None
        if meta.state not in STATES:
            raise ReplicaError(f"{where}: unknown state {meta.state!r} (expected one of {', '.join(STATES)})")
        if meta.format != META_FORMAT:
            raise ReplicaError(f"{where}: metadata format {meta.format} is not supported (want {META_FORMAT})")
        return meta


def read_meta(directory: Path) -> ReplicaMeta:
    """The metadata of the replica in ``directory`` without opening it for serving (no lock), read
    as the server reads it (never through a link); :class:`ReplicaError` if there is none."""
    path = Path(directory) / META_FILE
    if not os.path.lexists(path):
        raise ReplicaError(f"{directory} holds no replica ({META_FILE} is missing)")
    return ReplicaMeta.from_json(ReplicaStore._load(path), str(path))


def _libc_fallocate() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _libc_fallocate()


def _libc_sync_file_range() -> Any:
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 0x2


class ReplicaStore:
    """The data file and metadata of one replica directory.

    Example::

        store = ReplicaStore.open(Path("/var/lib/replica0"), size=1 << 30)
        store.write(0, b"x" * 4096)
        assert store.read(0, 4096) == b"x" * 4096
        store.close()
    """

    def __init__(self, directory: Path, meta: ReplicaMeta, data_fd: int, lock_fd: int) -> None:
        self.directory = directory
        self.meta = meta
        self._fd = data_fd
        self._lock_fd = lock_fd
        self._meta_lock = threading.Lock()
        self._revision = meta.revision
        self._persisted_revision = meta.revision
        self._zero_crc: dict[int, int] = {}
        self._direct_fd: int | None = None  # O_DIRECT descriptor for bulk writes, opened on first use
        self._direct_ok = hasattr(os, "O_DIRECT")

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, directory: Path, size: int | None = None) -> ReplicaStore:
        """Open DIR, creating it with ``size`` bytes if it has no replica yet.

        Raises :class:`UsageError` when DIR holds a replica of another size, and
        :class:`ReplicaError` when another server already owns DIR.
        """
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not os.path.lexists(meta_path):  # a symbolic link there is refused when it is opened
            if size is None:
                raise UsageError(f"{directory} holds no replica; give --size to create one")
            if size <= 0 or size % 512:
                raise UsageError(f"replica size {size} must be a positive multiple of 512 bytes")
            directory.mkdir(parents=True, exist_ok=True)
        lock_fd = _open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise ReplicaError(f"{directory} is in use by another replica server (lock held)") from None
        try:
            if os.path.lexists(meta_path):
                meta = ReplicaMeta.from_json(cls._load(meta_path), str(meta_path))
                if size is not None and size != meta.size:
                    raise UsageError(
                        f"{directory} holds a replica of {meta.size} bytes, not the --size {size} asked for"
                    )
                fd = _open(directory / DATA_FILE, os.O_RDWR)
                if _check_regular(fd, directory / DATA_FILE).st_size != meta.size:
                    os.close(fd)
                    raise ReplicaError(f"{directory / DATA_FILE} is not {meta.size} bytes long as {META_FILE} says")
            else:
                assert size is not None
                meta = ReplicaMeta(replica_id=str(uuid.uuid4()), size=size)
                # No O_TRUNC: what is there (a leftover of an interrupted creation) is checked first.
                fd = _open(directory / DATA_FILE, os.O_RDWR | os.O_CREAT)
                _check_regular(fd, directory / DATA_FILE, single_link=True)
                os.ftruncate(fd, 0)
                os.ftruncate(fd, size)
                os.fsync(fd)
                cls._save(directory, meta)
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(directory, meta, fd, lock_fd)

    @staticmethod
    def _load(path: Path) -> dict[str, Any]:
        try:
            fd = _open(path, os.O_RDONLY | os.O_NONBLOCK)  # NONBLOCK: a FIFO there must not hang us
            _check_regular(fd, path)
            with os.fdopen(fd, "rb") as fh:
                data = json.loads(fh.read())
        except (OSError, ValueError) as exc:
            raise ReplicaError(f"{path}: cannot read replica metadata: {exc}") from None
        if not isinstance(data, dict):
            raise ReplicaError(f"{path}: replica metadata is not a JSON object")
        return data

    @staticmethod
    def _save(directory: Path, meta: ReplicaMeta) -> None:
        tmp = directory / (META_FILE + ".tmp")
        try:
            fd = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            # A leftover of an interrupted save is removed; anything else there is refused by name
            # (rename replaces a link at META_FILE itself, never its target).
            st = os.lstat(tmp)
            if stat.S_ISLNK(st.st_mode):
                raise ReplicaError(
                    f"{tmp} is a symbolic link: a replica's files are never opened through links (remove it)"
                ) from None
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise ReplicaError(f"{tmp} is not a plain file left by an interrupted save (remove it)") from None
            os.unlink(tmp)
            fd = _open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, json.dumps(meta.to_json(), indent=1, sort_keys=True).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, directory / META_FILE)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def close(self, clean: bool = False) -> None:
        """Flush and release DIR; with ``clean`` record a clean shutdown."""
        if self._fd < 0:
            return
        self.flush()
        if clean and not self.meta.clean:
            self.update_meta({"clean": True})
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
        os.close(self._fd)
        self._fd = -1
        os.close(self._lock_fd)

    # ------------------------------------------------------------------ data

    @property
    def size(self) -> int:
        return self.meta.size

    def check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.meta.size:
            raise ValueError(f"range {offset}+{length} is outside the volume of {self.meta.size} bytes")

    def read(self, offset: int, length: int) -> bytes:
        self.check_range(offset, length)
        data = os.pread(self._fd, length, offset)
        if len(data) < length:  # cannot happen for a file of the right size, but never return short data
            data += bytes(length - len(data))
        return data

    def _mark_dirty(self) -> None:
        if self.meta.clean:
            self.update_meta({"clean": False})

    def write(self, offset: int, data: bytes | bytearray | memoryview, fua: bool = False) -> None:
        self.check_range(offset, len(data))
        self._mark_dirty()
        view = memoryview(data)
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, view[done:], offset + done)
        with self._meta_lock:
            self._revision += 1
        if fua:
            os.fdatasync(self._fd)

    def write_bulk(self, offset: int, data: memoryview) -> None:
        """Write a large piece of a rebuild, bypassing the page cache (``O_DIRECT``) when it can.

        A rebuild writes hundreds of megabytes that nobody reads soon: through the page cache
        that costs a copy into freshly allocated pages and the whole writeback later; with
        ``O_DIRECT`` the disk takes the data straight from ``data``, which must then start at a
        page-aligned address (an ``mmap`` buffer). Pieces not aligned to 4 KiB, and filesystems
        without ``O_DIRECT`` (tmpfs), go through :meth:`write`. The kernel keeps cached pages of
        the range coherent; durability still comes from :meth:`flush`.
        """
        n = len(data)
        fd = self._direct() if offset % _DIRECT_ALIGN == 0 and n % _DIRECT_ALIGN == 0 and n else None
        if fd is None:
            self.write(offset, data)
            return
        self.check_range(offset, n)
        self._mark_dirty()
        done = 0
        try:
            while done < n:
                done += os.pwrite(fd, data[done:], offset + done)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP) or done:
                raise
            self._direct_ok = False  # alignment rules of this device/filesystem differ: stay buffered
            self.write(offset, data)
            return
        with self._meta_lock:
            self._revision += 1

    def _direct(self) -> int | None:
        if self._direct_fd is None and self._direct_ok:
            try:
                fd = _open(self.directory / DATA_FILE, os.O_RDWR | os.O_DIRECT)
            except (OSError, ReplicaError):
                self._direct_ok = False
            else:
                a, b = os.fstat(fd), os.fstat(self._fd)
                if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
                    self._direct_fd = fd
                else:  # the name no longer leads to the file opened at start: never write elsewhere
                    os.close(fd)
                    self._direct_ok = False
        return self._direct_fd if self._direct_ok else None

    @property
    def direct_writes(self) -> bool:
        """:meth:`write_bulk` bypasses the page cache (so starting writeback is pointless)."""
        return self._direct() is not None

    def unmap(self, offset: int, length: int) -> None:
        """Deallocate (punch a hole); the range reads back as zeros."""
        self.check_range(offset, length)
        if length == 0:
            return
        self._mark_dirty()
        with self._meta_lock:
            self._revision += 1
        if _fallocate is not None:
            rc = _fallocate(self._fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
            if rc == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise OSError(err, os.strerror(err))
        done = 0
        while done < length:
            n = min(_ZERO_CHUNK, length - done)
            os.pwrite(self._fd, bytes(n), offset + done)
            done += n

    def start_writeback(self, offset: int, length: int) -> None:
        """Start writing a range's dirty pages to disk without waiting (``sync_file_range``).

        A rebuild calls it after each range it copied, so the flush at its end finds the disk
        work mostly done instead of starting it all then. Durability still comes from :meth:`flush`.
        """
        if _sync_file_range is not None and length > 0:
            _sync_file_range(self._fd, offset, length, _SYNC_FILE_RANGE_WRITE)

    def flush(self) -> None:
        """Make every completed write durable, and the revision counter with it."""
        os.fdatasync(self._fd)
        if self._revision != self._persisted_revision:
            self.update_meta({})

    @property
    def revision(self) -> int:
        """Writes and unmaps applied since the replica was created (or last set by a rebuild)."""
        return self._revision

    def extents(self, offset: int, length: int) -> list[tuple[int, int]]:
        """Allocated (data) extents within [offset, offset+length), clipped to the range."""
        return list(self.iter_extents(offset, length))

    def iter_extents(self, offset: int, length: int) -> Iterator[tuple[int, int]]:
        """:meth:`extents` found one at a time (the range is checked now, not on first use)."""
        self.check_range(offset, length)
        return _data_extents(self._fd, offset, offset + length)

    def checksums(self, offset: int, length: int, granule: int) -> list[int]:
        """CRC32C of each ``granule`` bytes of the range (the last one may be shorter)."""
        return self.checksum_array(offset, length, granule).tolist()

    def checksum_array(self, offset: int, length: int, granule: int) -> array.array[int]:
        """:meth:`checksums` as 4 bytes per granule (what a CHECKSUM answer carries).

        Granules entirely inside a hole are not read: their CRC is that of zeros. The extents
        are walked as they are found and the range is mapped a window at a time, so the memory
        used is the 4 bytes per granule, whatever the range holds.
        """
        self.check_range(offset, length)
        if granule <= 0:
            raise ValueError(f"checksum granule {granule} must be positive")
        end = offset + length
        out = array.array("I")
        extents = _data_extents(self._fd, offset, end)
        ext = next(extents, None)
        window = _Window(self._fd, end)
        try:
            pos = offset
            while pos < end:
                n = min(granule, end - pos)
                while ext is not None and ext[0] + ext[1] <= pos:
                    ext = next(extents, None)
                out.append(window.crc(pos, n) if ext is not None and ext[0] < pos + n else self._zeros_crc(n))
                pos += n
        finally:
            window.close()
        return out

    def fileno(self) -> int:
        """The data file's descriptor (for ``os.sendfile`` of READ payloads to a pulling peer)."""
        return self._fd

    def crc(self, offset: int, length: int) -> int:
        """CRC32C of a range, computed on a read-only mapping of the page cache (no copy)."""
        self.check_range(offset, length)
        if length == 0:
            return 0
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        m = mmap.mmap(self._fd, offset + length - base, prot=mmap.PROT_READ, offset=base)
        try:
            with memoryview(m) as view, view[offset - base :] as part:
                return int(_crc32c(part))
        finally:
            m.close()

    def _zeros_crc(self, n: int) -> int:
        crc = self._zero_crc.get(n)
        if crc is None:
            if len(self._zero_crc) >= _ZERO_CRCS:
                self._zero_crc.clear()
            zeros = bytes(min(n, _ZERO_CHUNK))
            crc = 0
            for pos in range(0, n, _ZERO_CHUNK):
                crc = _crc32c(zeros[: min(_ZERO_CHUNK, n - pos)], crc)
            self._zero_crc[n] = crc
        return crc

    def allocated_bytes(self) -> int:
        return os.fstat(self._fd).st_blocks * 512

    # ------------------------------------------------------------------ metadata

    def update_meta(self, fields: dict[str, Any]) -> ReplicaMeta:
        """Set metadata fields (only those in :data:`SETTABLE`) and persist them atomically."""
        unknown = set(fields) - SETTABLE
        if unknown:
            raise ValueError(f"metadata fields {sorted(unknown)} cannot be set (settable: {sorted(SETTABLE)})")
        with self._meta_lock:
            data = self.meta.to_json()
            data["revision"] = self._revision
            data.update(fields)
            new = ReplicaMeta.from_json(data, "SET_META")
            if self.meta.volume_id is not None and new.volume_id != self.meta.volume_id:
                raise ReplicaError(f"replica belongs to volume {self.meta.volume_id}, not {new.volume_id}")
            self._save(self.directory, new)
            self.meta = new
            self._revision = self._persisted_revision = new.revision
            return new

    def record_claim(self, controller: str | None, fenced: list[str]) -> None:
        """Persist who owns the replica now and which controllers were fenced (the server's fencing
        rules; not settable by SET_META), so that a restarted replica still refuses them."""
        with self._meta_lock:
            data = self.meta.to_json()  # its revision stays the last one flushed: no data is synced here
            data["controller"], data["fenced_controllers"] = controller, list(fenced)
            new = ReplicaMeta.from_json(data, "claim")
            self._save(self.directory, new)
            self.meta = new


class _Window:
    """A read-only mapping of at most ``_CRC_WINDOW`` bytes of a file, moved along as CRCs of
    increasing ranges before ``end`` are asked for: granules are checksummed in the page cache,
    no copy; WILLNEED starts reading what is not cached yet (a replica rebuilt with O_DIRECT)."""

    def __init__(self, fd: int, end: int) -> None:
        self._fd = fd
        self._end = end
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None
        self._base = 0

    def crc(self, pos: int, n: int) -> int:
        crc = 0
        while n:
            if self._view is None or not self._base <= pos < self._base + len(self._view):
                self._move(pos)
            assert self._view is not None
            take = min(n, self._base + len(self._view) - pos)
            with self._view[pos - self._base : pos - self._base + take] as part:
                crc = _crc32c(part, crc)
            pos += take
            n -= take
        return int(crc)

    def _move(self, pos: int) -> None:
        self.close()
        self._base = pos - pos % mmap.ALLOCATIONGRANULARITY
        self._map = mmap.mmap(self._fd, min(_CRC_WINDOW, self._end - self._base), prot=mmap.PROT_READ,
                              offset=self._base)  # fmt: skip
        self._map.madvise(mmap.MADV_WILLNEED)
        self._view = memoryview(self._map)

    def close(self) -> None:
        if self._view is not None:
            self._view.release()
            self._view = None
        if self._map is not None:
            self._map.close()
            self._map = None


def _data_extents(fd: int, start: int, end: int) -> Iterator[tuple[int, int]]:
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                return
            raise
        if data >= end:
            return
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        hole = min(hole, end)
        yield (data, hole - data)
        pos = hole
