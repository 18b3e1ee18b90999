"""FileBackend: inline reads (RWF_NOWAIT, page-cache hits) vs the thread pool, 4 KiB random I/O.

    .venv/bin/python -m bench.file_backend [--dir /tmp]

Explains why the file backend tries reads inline first and keeps writes in the thread pool.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from iscsikit.target.backends import FileBackend

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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "bench.img"
        print("| op | QD | inline (RWF_NOWAIT) ops/s | thread pool ops/s |\n|---|---|---|---|")
        for op in ("read", "write"):
            for qd in (1, 8):
                inline = statistics.median([await ops_per_second(path, True, op, qd) for _ in range(5)])
                pool = statistics.median([await ops_per_second(path, False, op, qd) for _ in range(5)])
                print(f"| {op} | {qd} | {inline:,.0f} | {pool:,.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
