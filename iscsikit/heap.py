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
process keeps once it has used it, so both are capped: only buffers up to a little over the
largest the hot path uses (4 MiB, the controller's largest replica I/O; the target's own are
1 MiB) come from the heap, and at most 32 MiB free at its top is kept. Anything larger (the
16 MiB answers a hostile peer may ask for) is mapped and unmapped as glibc does by default, and
after a burst the heap shrinks back, so the process returns near its baseline once an attacker's
connections close. For the same reason every thread allocates from the one main heap
(``M_ARENA_MAX`` 1, as ``MALLOC_ARENA_MAX=1``): glibc gives each new thread an arena of its own,
and each would keep up to the trim threshold of free memory at its top (an I/O thread's last
burst of reads), while a Python server's allocations run under the GIL anyway, one at a time.
On a C library without ``mallopt`` (musl) nothing happens.

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
_M_ARENA_MAX = -8
#: Allocations up to this size come from the heap: a 4 MiB payload and its object header, not
#: the 8-16 MiB of the largest commands and answers (glibc's default starts at 128 KiB).
MMAP_THRESHOLD = (4 << 20) + (64 << 10)
#: Free memory at the top of the heap is returned to the kernel beyond this much (the hot path
#: keeps well under it in flight: 8 x 1 MiB commands, or a controller's 16 MiB per replica).
TRIM_THRESHOLD = 32 << 20


def keep_large_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds (capped) and keep one arena for this process; True
    if the C library took them. Call it before the process starts threads."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter is linked with
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return (
        bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
        and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        and bool(mallopt(_M_ARENA_MAX, 1))
    )
