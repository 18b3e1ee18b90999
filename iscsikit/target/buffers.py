"""Reusable page-aligned buffers for large reads that go straight to the wire.

A 1 MiB READ used to cost a fresh ``bytearray``: calloc of a fresh anonymous mapping, 256 page
faults to zero it, then the copy from the page cache, then ``munmap``. On the dev machines that
was ~0.75 ms of CPU per MiB before the first byte was read, more than the read and the send
together. A :class:`BufferPool` keeps the mappings of recent reads and hands them out again, so
a steady stream of reads of the same size touches the same, already-faulted pages.

Ownership is explicit and narrow: :meth:`FileBackend.readv
<iscsikit.target.backends.file.FileBackend.readv>` returns a ``memoryview`` of a
:class:`PoolBuffer`; whoever sends it (the target server) gives it back to its pool
(``buf.pool.give(buf)``) once the transport no longer holds the bytes. Anyone else simply drops
the view: an unreturned buffer is unmapped by the garbage collector, as before. A buffer must
never be given back while anything may still read it; when in doubt, do not give it back.

Idle buffers are bounded (``max_idle_bytes``) and unmapped after ``idle_seconds`` without use
(:meth:`BufferPool.trim`, called by the server's housekeeping timer), so a burst of large reads
does not leave the process's RSS high.

Example::

    pool = BufferPool()
    view = pool.take(1 << 20)        # memoryview of a PoolBuffer, contents undefined
    os.preadv(fd, [view], offset)
    ...                              # send it
    pool.give(view)                  # when the bytes have left
"""

from __future__ import annotations

import mmap
import time

__all__ = ["READ_POOL", "BufferPool", "PoolBuffer", "WriteBudget", "pooled", "write_buffer"]


class PoolBuffer(mmap.mmap):
    """An anonymous private mapping owned by the :class:`BufferPool` in ``pool``."""

    __slots__ = ("pool",)
    pool: BufferPool


def pooled(piece: object) -> PoolBuffer | None:
    """The pool buffer under ``piece`` (a memoryview from :meth:`BufferPool.take`), else None."""
    if type(piece) is memoryview:
        obj = piece.obj
        if type(obj) is PoolBuffer:
            return obj
    return None


class BufferPool:
    """Free lists of :class:`PoolBuffer` by exact size, LIFO (the most recently used is warmest).

    ``min_size``: smaller requests get a plain ``bytearray`` (calloc of a few KiB is cheaper
    than the bookkeeping). ``max_idle_bytes`` bounds what is kept between uses.
    """

    def __init__(self, *, min_size: int = 64 << 10, max_idle_bytes: int = 16 << 20, idle_seconds: float = 2.0) -> None:
        self.min_size = min_size
        self.max_idle_bytes = max_idle_bytes
        self.idle_seconds = idle_seconds
        self._free: dict[int, list[tuple[PoolBuffer, float]]] = {}
        self.idle_bytes = 0
        #: Counters for status and tests: buffers mapped, reused, given back, dropped.
        self.created = 0
        self.reused = 0
        self.returned = 0
        self.dropped = 0

    def take(self, size: int) -> memoryview:
        """A writable view of exactly ``size`` bytes (contents undefined: fill it completely)."""
        if size < self.min_size:
            return memoryview(bytearray(size))
        free = self._free.get(size)
        if free:
            buf, _ = free.pop()
            self.idle_bytes -= size
            self.reused += 1
        else:
            buf = PoolBuffer(-1, size)
            buf.pool = self
            self.created += 1
        return memoryview(buf)

    def give(self, piece: object) -> None:
        """Return a buffer from :meth:`take` (a view or the buffer); anything else is ignored."""
        buf = piece if type(piece) is PoolBuffer else pooled(piece)
        if buf is None or buf.pool is not self:
            return
        size = len(buf)
        self.returned += 1
        if self.idle_bytes + size > self.max_idle_bytes:
            self.dropped += 1  # unmapped when the last reference goes
            return
        self._free.setdefault(size, []).append((buf, time.monotonic()))
        self.idle_bytes += size

    def trim(self, now: float | None = None) -> int:
        """Drop buffers idle for more than ``idle_seconds``; returns the bytes released."""
        if not self.idle_bytes:
            return 0
        limit = (time.monotonic() if now is None else now) - self.idle_seconds
        released = 0
        for size, free in list(self._free.items()):
            keep = [entry for entry in free if entry[1] >= limit]
            released += (len(free) - len(keep)) * size
            if keep:
                self._free[size] = keep
            else:
                del self._free[size]
        self.idle_bytes -= released
        return released

    def clear(self) -> None:
        """Drop every idle buffer."""
        self._free.clear()
        self.idle_bytes = 0

    def status(self) -> dict[str, int]:
        return {
            "idle_bytes": self.idle_bytes,
            "created": self.created,
            "reused": self.reused,
            "returned": self.returned,
            "dropped": self.dropped,
        }


#: The process-wide pool of read buffers (one event loop per process serves every LUN).
READ_POOL = BufferPool()

#: Write buffers up to this size come from the C heap (reused warm, see :mod:`iscsikit.heap`);
#: larger ones are anonymous mappings of their own (:func:`write_buffer`).
HEAP_WRITE_MAX = 1 << 20


def write_buffer(size: int) -> bytearray | mmap.mmap:
    """A zeroed buffer for ``size`` bytes of Data-Out.

    Up to :data:`HEAP_WRITE_MAX` (every write of the default MaxBurstLength) a ``bytearray``.
    Above it, an anonymous mapping: the kernel commits its pages only as Data-Out lands in them
    (a command whose data never comes costs address space, not memory), and the whole mapping
    goes back to the kernel when the command ends, whatever the heap tuning keeps.
    """
    if size <= HEAP_WRITE_MAX:
        return bytearray(size)
    return mmap.mmap(-1, size)


class WriteBudget:
    """Bytes of Data-Out buffers the whole process may hold at once (one instance per server).

    A write command is admitted only if its buffer fits (:meth:`take`); the protocol core
    answers TASK SET FULL otherwise and gives the bytes back (:meth:`give`) when the command
    ends or is aborted. Plain integers: the per-command cost is two compares and an add.
    """

    __slots__ = ("limit", "refused", "used")

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"the write buffer budget must be positive, got {limit}")
        self.limit = limit
        self.used = 0
        #: Commands refused because the budget was spent (status, tests).
        self.refused = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            self.refused += 1
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size

    def status(self) -> dict[str, int]:
        return {"limit": self.limit, "used": self.used, "refused": self.refused}
