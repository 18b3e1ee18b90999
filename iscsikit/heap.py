"""Keep the C heap from handing megabyte buffers back to the kernel after every request.

The I/O servers (``target serve``, ``replica serve``) allocate and free buffers of up to a few
MiB for every large read or write: received payloads, joined frames, pooled reads. glibc
serves an allocation above its mmap threshold (128 KiB to start with) with a fresh ``mmap``
and gives it back with ``munmap`` on free, and trims the top of the heap when more than a
few hundred KiB there is free. Either way the next request faults every page in again and
the kernel zeroes it: measured with ``perf`` on a replica server taking 1 MiB writes, page
faults and page clearing were a fifth of its CPU time, and the whole server used 2.1 ms of
CPU per MiB written; with large buffers kept in the heap it used 0.9 ms.

:func:`keep_large_buffers` raises both thresholds, as ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` would, for the long-running servers only. The cost is memory the
process keeps once it has used it (bounded by what it had in flight at its busiest). On a C
library without ``mallopt`` (musl) nothing happens.

Example::

    from iscsikit.heap import keep_large_buffers

    keep_large_buffers()  # first thing in a server process
"""

from __future__ import annotations

import ctypes

__all__ = ["keep_large_buffers"]

# mallopt(3) parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations up to this size come from the heap (glibc's own upper limit is 32 MiB on 64-bit).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap is returned to the kernel only beyond this much.
TRIM_THRESHOLD = 256 << 20


def keep_large_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True if the C library took them."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
