"""Which writes the replica server copies on its event loop and which it hands to its threads."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from iscsikit.replica.client import ReplicaClient
from iscsikit.replica.server import INLINE_MAX, INLINE_WRITE_MAX, ReplicaServer
from iscsikit.replica.store import ReplicaStore

MiB = 1 << 20


@pytest.mark.parametrize(
    ("offset", "length", "inline"),
    [
        (0, 512, True),  # small: inline whatever its alignment
        (0, MiB, True),  # whole pages, at the limit
        (8 * 4096, 64 * 4096, True),
        (512, MiB - 4096, False),  # a partial first page: the kernel may have to read it first
        (0, MiB + 512, False),  # a partial last page
        (0, 2 * MiB, False),  # over the limit
        (512, INLINE_MAX, True),  # small, at its limit
        (512, INLINE_MAX + 512, False),
        (512, 64 * 4096, False),  # whole pages in length, not in place
        (4096, MiB + 4096, False),  # whole pages over the limit
    ],
)
def test_small_or_whole_page_writes_are_inline(tmp_path: Path, offset: int, length: int, inline: bool) -> None:
    server = ReplicaServer(ReplicaStore.open(tmp_path / "r", 4 * MiB))
    assert server.write_inline(offset, length, fua=False) is inline
    assert server.write_inline(offset, length, fua=True) is False


def test_plain_page_writes_skip_the_pool_fua_and_larger_ones_use_it(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        server = ReplicaServer(ReplicaStore.open(tmp_path / "r", 8 * MiB))
        pooled: list[str] = []
        real = server.run_blocking

        def spy(fn: Any, *args: Any, pull: bool = False) -> asyncio.Future[Any]:
            pooled.append(getattr(fn, "__name__", repr(fn)))
            return real(fn, *args, pull=pull)

        server.run_blocking = spy  # type: ignore[method-assign]
        await server.start("127.0.0.1", 0)
        client = ReplicaClient(f"127.0.0.1:{server.port}")
        await client.connect()
        one = bytes(range(256)) * (INLINE_WRITE_MAX // 256)
        await client.write(0, one)
        assert pooled == [], "a plain 1 MiB page-aligned write went to the thread pool"
        await client.write(MiB, one, fua=True)
        assert len(pooled) == 1, "a FUA write must go to the pool (it waits for the disk)"
        await client.write(2 * MiB, one + one)
        assert len(pooled) == 2, "a 2 MiB write must go to the pool"
        assert await client.read(0, INLINE_MAX) == one[:INLINE_MAX]
        assert len(pooled) == 2, "a read of INLINE_MAX bytes must run on the event loop"
        assert await client.read(0, INLINE_MAX + 512) == one[: INLINE_MAX + 512]
        assert pooled[2:] == ["read"], "a larger read must go to the pool"
        assert await client.read(0, MiB) == one and await client.read(2 * MiB, 2 * MiB) == one + one
        client.close()
        await server.close()
        return pooled

    asyncio.run(scenario())
