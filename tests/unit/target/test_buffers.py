"""The read-buffer pool, and FileBackend.readv filling reused (dirty) buffers."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from iscsikit.target.backends import FileBackend
from iscsikit.target.buffers import BufferPool, PoolBuffer, pooled

MiB = 1 << 20


def test_small_requests_are_plain_zeroed_bytearrays() -> None:
    pool = BufferPool(min_size=64 << 10)
    view = pool.take(4096)
    assert pooled(view) is None and bytes(view) == bytes(4096)
    pool.give(view)
    assert pool.status()["returned"] == 0 and pool.idle_bytes == 0


def test_a_returned_buffer_is_handed_out_again() -> None:
    pool = BufferPool()
    first = pool.take(MiB)
    buf = pooled(first)
    assert isinstance(buf, PoolBuffer) and len(first) == MiB
    first[:3] = b"abc"
    pool.give(first)
    assert pool.idle_bytes == MiB
    again = pool.take(MiB)
    assert pooled(again) is buf and bytes(again[:3]) == b"abc"  # contents are not cleared
    other = pool.take(MiB)
    assert pooled(other) is not buf  # nothing idle: a new mapping
    assert pool.status() == {"idle_bytes": 0, "created": 2, "reused": 1, "returned": 1, "dropped": 0}


def test_foreign_buffers_are_ignored() -> None:
    pool, other = BufferPool(), BufferPool()
    pool.give(b"x" * MiB)
    pool.give(memoryview(bytearray(MiB)))
    pool.give(other.take(MiB))
    assert pool.idle_bytes == 0 and pool.status()["returned"] == 0


def test_idle_bytes_are_bounded_and_trimmed() -> None:
    pool = BufferPool(max_idle_bytes=3 * MiB, idle_seconds=5.0)
    views = [pool.take(MiB) for _ in range(5)]
    for v in views:
        pool.give(v)
    assert pool.idle_bytes == 3 * MiB and pool.status()["dropped"] == 2
    assert pool.trim() == 0  # fresh
    assert pool.trim(now=1e12) == 3 * MiB
    assert pool.idle_bytes == 0
    assert pooled(pool.take(MiB)) is not None and pool.status()["created"] == 6


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "thread-pool"])
def test_readv_overwrites_every_byte_of_a_reused_buffer(tmp_path: Path, inline: bool) -> None:
    async def main() -> None:
        pool = BufferPool()
        b = FileBackend(tmp_path / "d.img", size=8 * MiB, inline=inline, buffers=pool)
        await b.open()
        try:
            a, c = os.urandom(MiB), os.urandom(MiB)
            await b.write(0, a)
            await b.write(3 * MiB, c)
            (first,) = await b.readv(0, MiB)
            assert bytes(first) == a
            pool.give(first)
            (second,) = await b.readv(3 * MiB, MiB)
            assert pooled(second) is pooled(first) and bytes(second) == c
            pool.give(second)
            (zeros,) = await b.readv(5 * MiB, MiB)  # never written: a hole
            assert pooled(zeros) is pooled(first) and bytes(zeros) == bytes(MiB)
        finally:
            await b.close()

    asyncio.run(main())


def test_readv_past_a_truncated_end_gives_zeros_in_a_dirty_buffer(tmp_path: Path) -> None:
    async def main() -> None:
        pool = BufferPool()
        path = tmp_path / "t.img"
        b = FileBackend(path, size=4 * MiB, buffers=pool)
        await b.open()
        try:
            await b.write(0, b"\xff" * (4 * MiB))
            (dirty,) = await b.readv(MiB, MiB)
            pool.give(dirty)
            os.truncate(path, MiB + 4096)  # shrunk under the target
            (view,) = await b.readv(MiB, MiB)
            assert pooled(view) is pooled(dirty)
            assert bytes(view[:4096]) == b"\xff" * 4096 and bytes(view[4096:]) == bytes(MiB - 4096)
        finally:
            await b.close()

    asyncio.run(main())


def test_read_is_never_pooled(tmp_path: Path) -> None:
    """read() serves VERIFY, COMPARE AND WRITE...: its buffers are the caller's to keep."""

    async def main() -> None:
        pool = BufferPool()
        b = FileBackend(tmp_path / "r.img", size=4 * MiB, buffers=pool)
        await b.open()
        try:
            data = await b.read(0, 2 * MiB)
            assert isinstance(data, bytearray) and pool.status()["created"] == 0
        finally:
            await b.close()

    asyncio.run(main())


def test_write_buffers_above_1_mib_are_lazily_committed_mappings() -> None:
    import mmap

    from iscsikit.target.buffers import HEAP_WRITE_MAX, WriteBudget, write_buffer

    assert isinstance(write_buffer(HEAP_WRITE_MAX), bytearray)
    big = write_buffer(HEAP_WRITE_MAX + 4096)
    assert isinstance(big, mmap.mmap) and len(big) == HEAP_WRITE_MAX + 4096 and big[:16] == bytes(16)
    budget = WriteBudget(10)
    assert budget.take(6) and not budget.take(5) and budget.refused == 1
    budget.give(6)
    assert budget.take(10) and budget.status() == {"limit": 10, "used": 10, "refused": 1}
