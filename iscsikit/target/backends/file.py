"""A LUN stored in a file (or a block device): sparse, created at the given size.

I/O runs with ``os.preadv``/``os.pwritev``. A page-cache hit costs a few microseconds, far
less than a hop to a worker thread, so each call is first tried inline with ``RWF_NOWAIT``
(Linux >= 4.14): the kernel returns EAGAIN instead of blocking when the data is not cached or
the write would have to wait, and only then does the call go to the thread pool. Nothing that
may block ever runs on the event loop. ``inline=False`` always uses the pool.

Measured on the 2-core dev machines (ext4, 4 KiB random I/O through FileBackend, page cache hot,
median of 5 runs): reads 318k/s inline vs 15.5k/s through the pool at QD1. ext4 on this
kernel refuses ``RWF_NOWAIT`` for buffered writes (EOPNOTSUPP), so writes use the pool; a plain
inline ``pwritev`` is 5 us at the median but 3.5 ms at p99.9 and 76 ms at worst (writeback
throttling), which would stall every session on the loop.

Durability: FUA writes use ``RWF_DSYNC``; flush is ``fdatasync``. UNMAP punches holes
(``fallocate(PUNCH_HOLE|KEEP_SIZE)``), so unmapped ranges read back as zeros (LBPRZ) and give
the space back; GET LBA STATUS reads the holes back with ``SEEK_DATA``/``SEEK_HOLE``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import stat
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from iscsikit.target.backend import Backend, BackendError, Buffer, ErrorKind
from iscsikit.target.buffers import READ_POOL, BufferPool

__all__ = ["FileBackend"]

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_RWF_NOWAIT: int = getattr(os, "RWF_NOWAIT", 0)
_RWF_DSYNC: int = getattr(os, "RWF_DSYNC", 0)
#: Largest piece handed to one preadv/pwritev (Linux caps a single call near 2 GiB anyway).
_MAX_IO = 64 << 20

_libc: ctypes.CDLL | None = None


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    if _libc.fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _kind_of(exc: OSError) -> ErrorKind:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "space"
    if exc.errno in (errno.ENODEV, errno.ENXIO, errno.ESTALE, errno.EBADF):
        return "unavailable"
    return "medium"


class FileBackend(Backend):
    """A file-backed LUN.

    ``size`` creates the file (sparse) when it does not exist; an existing file keeps its size
    and ``size``, if given, must match it. ``thin`` enables UNMAP (hole punching).

    Example::

        backend = FileBackend(Path("/var/lib/iscsikit/disk.img"), size=1 << 30)
        await backend.open()
    """

    kind = "file"

    def __init__(
        self,
        path: Path | str,
        *,
        size: int | None = None,
        block_size: int = 512,
        thin: bool = True,
        inline: bool = True,
        workers: int = 4,
        buffers: BufferPool | None = None,
    ) -> None:
        if block_size not in (512, 1024, 2048, 4096):
            raise ValueError(f"block size must be 512, 1024, 2048 or 4096, not {block_size}")
        if size is not None and (size <= 0 or size % block_size):
            raise ValueError(f"size {size} must be a positive multiple of the block size {block_size}")
        self.path = Path(path)
        self.size = size or 0
        self._requested_size = size
        self.block_size = block_size
        self.thin = thin
        # Tried separately: ext4 takes RWF_NOWAIT for buffered reads but (before Linux 6.x) not writes.
        self.inline_reads = inline and bool(_RWF_NOWAIT)
        self.inline_writes = inline and bool(_RWF_NOWAIT)
        self._workers = workers
        self._fd: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._punch_ok = True
        #: Where :meth:`readv` takes its buffers from.
        self.buffers = buffers if buffers is not None else READ_POOL

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = self._open_or_create()
        except OSError as exc:
            raise BackendError(f"{self.path}: {exc.strerror}", "unavailable") from None
        self._fd = fd
        self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix=f"lun-{self.path.name}")

    def _open_or_create(self) -> int:
        flags = os.O_RDWR | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags)
            created = False
        except FileNotFoundError:
            if self._requested_size is None:
                raise
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        try:
            st = os.fstat(fd)
            if created:
                os.ftruncate(fd, self._requested_size or 0)
                actual = self._requested_size or 0
            elif stat.S_ISBLK(st.st_mode):
                actual = os.lseek(fd, 0, os.SEEK_END)
            else:
                actual = st.st_size
            if actual == 0:
                raise OSError(errno.EINVAL, "the backing file is empty; give a size to create it")
            if self._requested_size is not None and actual != self._requested_size:
                raise OSError(
                    errno.EINVAL,
                    f"the backing store is {actual} bytes but the configured size is "
                    f"{self._requested_size}; resize it explicitly",
                )
            if actual % self.block_size:
                raise OSError(errno.EINVAL, f"size {actual} is not a multiple of the block size {self.block_size}")
            self.size = actual
            return fd
        except BaseException:
            os.close(fd)
            if created:
                try:
                    self.path.unlink()
                except OSError:
                    pass
            raise

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        pool, self._pool = self._pool, None
        if fd is None:
            return
        try:
            if pool is not None:
                await asyncio.get_running_loop().run_in_executor(pool, os.fdatasync, fd)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            os.close(fd)

    # ------------------------------------------------------------------ helpers

    def _need_fd(self) -> int:
        if self._fd is None:
            raise BackendError(f"{self.path}: not open", "unavailable")
        return self._fd

    async def _in_pool(self, fn: Any, *args: Any) -> Any:
        assert self._pool is not None
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise BackendError(f"{self.path}: range {offset}+{length} is outside 0..{self.size}", "medium")

    # ------------------------------------------------------------------ I/O

    @staticmethod
    def _read_blocking(fd: int, view: memoryview, offset: int) -> None:
        """Fill ``view`` from ``offset``, blocking (in the pool)."""
        length = len(view)
        done = 0
        while done < length:
            n = os.preadv(fd, [view[done : done + min(length - done, _MAX_IO)]], offset + done)
            if n == 0:  # a file shorter than its recorded size (truncated under us): zeros
                view[done:] = bytes(length - done)
                break
            done += n

    async def _read_into(self, fd: int, view: memoryview, offset: int) -> None:
        """Fill ``view``: inline from the page cache when possible, else in the thread pool."""
        try:
            if self.inline_reads:
                try:
                    n = os.preadv(fd, [view], offset, _RWF_NOWAIT)
                    if n == len(view):
                        return
                    if n > 0:
                        view, offset = view[n:], offset + n
                except BlockingIOError:
                    pass
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    self.inline_reads = False
            await self._in_pool(self._read_blocking, fd, view, offset)
        except OSError as exc:
            raise BackendError(f"{self.path}: read at {offset}: {exc.strerror}", _kind_of(exc)) from None

    async def read(self, offset: int, length: int) -> Buffer:
        fd = self._need_fd()
        self._check(offset, length)
        buf = bytearray(length)
        if self.inline_reads:
            try:
                if os.preadv(fd, [buf], offset, _RWF_NOWAIT) == length:
                    return buf
            except OSError:
                pass  # _read_into tells EAGAIN from errors
        await self._read_into(fd, memoryview(buf), offset)
        return buf

    async def readv(self, offset: int, length: int) -> Sequence[Buffer]:
        """Like :meth:`read`; large reads land in a :data:`~iscsikit.target.buffers.READ_POOL` buffer.

        The caller may give that buffer back (``buf.pool.give(buf)``) once nothing reads it any
        more; the target server does so when the transport has sent it.
        """
        # The hot path of every READ: a page-cache hit is one preadv and no further call.
        fd = self._fd
        if fd is None:
            fd = self._need_fd()  # raises
        if offset < 0 or length < 0 or offset + length > self.size:
            self._check(offset, length)  # raises
        buffers = self.buffers
        buf: bytearray | memoryview = buffers.take(length) if length >= buffers.min_size else bytearray(length)
        if self.inline_reads:
            try:
                if os.preadv(fd, [buf], offset, _RWF_NOWAIT) == length:
                    return [buf]
            except OSError:
                pass  # _read_into tells EAGAIN from errors
        await self._read_into(fd, memoryview(buf), offset)
        return [buf]

    def read_now(self, offset: int, length: int) -> Sequence[Buffer] | None:
        """:meth:`readv` when the page cache has every byte (one ``RWF_NOWAIT`` preadv); else None."""
        fd = self._fd
        if fd is None or not self.inline_reads or offset < 0 or length < 0 or offset + length > self.size:
            return None
        buffers = self.buffers
        if length >= buffers.min_size:
            view = buffers.take(length)
            try:
                if os.preadv(fd, [view], offset, _RWF_NOWAIT) == length:
                    return [view]
            except OSError:
                pass
            buffers.give(view)  # nobody else has seen it
            return None
        buf = bytearray(length)
        try:
            if os.preadv(fd, [buf], offset, _RWF_NOWAIT) == length:
                return [buf]
        except OSError:
            pass
        return None

    @staticmethod
    def _write_blocking(fd: int, offset: int, data: memoryview, flags: int) -> None:
        done = 0
        while done < len(data):
            piece = data[done : done + _MAX_IO]
            done += os.pwritev(fd, [piece], offset + done, flags)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        fd = self._need_fd()
        view = memoryview(data).cast("B")
        self._check(offset, len(view))
        try:
            if fua:
                if _RWF_DSYNC:
                    await self._in_pool(self._write_blocking, fd, offset, view, _RWF_DSYNC)
                else:
                    await self._in_pool(self._write_blocking, fd, offset, view, 0)
                    await self._in_pool(os.fdatasync, fd)
                return
            if self.inline_writes:
                try:
                    n = os.pwritev(fd, [view], offset, _RWF_NOWAIT)
                    if n == len(view):
                        return
                    view, offset = view[n:], offset + n
                except BlockingIOError:
                    pass
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    self.inline_writes = False
            await self._in_pool(self._write_blocking, fd, offset, view, 0)
        except OSError as exc:
            raise BackendError(f"{self.path}: write at {offset}: {exc.strerror}", _kind_of(exc)) from None

    async def flush(self) -> None:
        fd = self._need_fd()
        try:
            await self._in_pool(os.fdatasync, fd)
        except OSError as exc:
            raise BackendError(f"{self.path}: fdatasync: {exc.strerror}", _kind_of(exc)) from None

    async def unmap(self, offset: int, length: int) -> None:
        fd = self._need_fd()
        self._check(offset, length)
        if not length:
            return
        if self._punch_ok:
            try:
                await self._in_pool(_fallocate, fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length)
                return
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                    raise BackendError(f"{self.path}: punch hole: {exc.strerror}", _kind_of(exc)) from None
                self._punch_ok = False  # filesystem without holes: zeros still read back as zeros
        await super().unmap(offset, length)

    async def allocation_status(self, offset: int, length: int) -> tuple[int, bool]:
        """(run length, mapped) from ``offset``, via SEEK_DATA / SEEK_HOLE."""
        fd = self._need_fd()
        self._check(offset, length)
        end = offset + length
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after offset: hole to the end
                return length, False
            return length, True  # SEEK_DATA unsupported: everything is mapped
        if data > offset:
            return min(data, end) - offset, False
        hole = os.lseek(fd, offset, os.SEEK_HOLE)
        return min(max(hole, offset + 1), end) - offset, True

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "path": str(self.path), "thin": self.thin}
        if self._fd is not None:
            try:
                out["allocated_bytes"] = os.fstat(self._fd).st_blocks * 512
            except OSError:
                pass
        return out
