"""FileBackend: inline reads (RWF_NOWAIT, page-cache hits) vs the thread pool, 4 KiB random I/O.

    .venv/bin/python -m bench.file_backend [--dir /tmp] [--runs 5]

Explains why the file backend tries reads inline first and keeps writes in the thread pool, and
why large reads (``readv``) fill pooled buffers that the server gives back once sent: a fresh
1 MiB buffer costs a new mapping and 256 page faults on every read. Writes
bench/results/file_backend.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from pathlib import Path

from bench.results import Result
from iscsikit.target.backends import FileBackend
from iscsikit.target.buffers import BufferPool

SIZE = 256 << 20


async def ops_per_second(path: Path, inline: bool, op: str, qd: int, n: int = 20_000) -> float:
    backend = FileBackend(str(path), size=SIZE, inline=inline)
    await backend.open()
    for off in range(0, SIZE, 1 << 20):  # warm the page cache
        await backend.write(off, os.urandom(1 << 20))
    buf = os.urandom(4096)
    offsets = [random.randrange(0, SIZE // 4096) * 4096 for _ in range(n)]

    async def worker(chunk: list[int]) -> None:
        for off in chunk:
            if op == "read":
                await backend.read(off, 4096)
            else:
                await backend.write(off, buf)

    started = time.perf_counter()
    await asyncio.gather(*(worker(offsets[i::qd]) for i in range(qd)))
    elapsed = time.perf_counter() - started
    await backend.close()
    return n / elapsed


async def large_reads_per_second(path: Path, pooled: bool, n: int = 2000) -> float:
    """1 MiB sequential reads (page cache hot): readv into pooled buffers vs read into fresh ones."""
    pool = BufferPool()
    backend = FileBackend(str(path), size=SIZE, buffers=pool)
    await backend.open()
    for off in range(0, SIZE, 1 << 20):
        await backend.write(off, os.urandom(1 << 20))
    started = time.perf_counter()
    for i in range(n):
        off = (i << 20) % SIZE
        if pooled:
            for piece in await backend.readv(off, 1 << 20):
                pool.give(piece)  # what the server does once the transport has sent it
        else:
            await backend.read(off, 1 << 20)
    elapsed = time.perf_counter() - started
    await backend.close()
    return n / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    result = Result("file_backend", vars(args))
    runs = range(args.runs)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.img"
        print("| op | QD | inline (RWF_NOWAIT) ops/s | thread pool ops/s |\n|---|---|---|---|")
        for op in ("read", "write"):
            for qd in (1, 8):
                case = f"4 KiB {op} QD{qd}"
                inline = result.add(
                    f"{case}, inline", [await ops_per_second(path, True, op, qd) for _ in runs], "ops/s"
                )
                pool = result.add(
                    f"{case}, thread pool", [await ops_per_second(path, False, op, qd) for _ in runs], "ops/s"
                )
                result.ratio(f"{case}, inline / thread pool", f"{case}, inline", f"{case}, thread pool")
                print(f"| {op} | {qd} | {inline:,.0f} | {pool:,.0f} |")
        print("\n| 1 MiB sequential read | reads/s |\n|---|---|")
        for label, pooled in (("readv, pooled buffers", True), ("read, fresh buffer each time", False)):
            rate = result.add(
                f"1 MiB read, {label}", [await large_reads_per_second(path, pooled) for _ in runs], "reads/s"
            )
            print(f"| {label} | {rate:,.0f} |")
        pooled_case, fresh_case = "1 MiB read, readv, pooled buffers", "1 MiB read, read, fresh buffer each time"
        result.ratio("1 MiB read, pooled / fresh", pooled_case, fresh_case)
    result.write()


if __name__ == "__main__":
    asyncio.run(main())
