"""Rebuild speed: a fresh replica of a 1 GiB volume that is half full, against `cp --sparse=always`.

    .venv/bin/python -m bench.replica_rebuild [--runs 3] [--size-mib 1024]

The controller (ReplicatedBackend, in this process, on uvloop when installed) fills every other
MiB of the volume on one replica server, then rebuilds a fresh replica server from it; both
servers are `iscsikit replica serve` processes on loopback. The reference, in the same run, is a
local `cp --sparse=always` of the source's data file (page cache hot, like the rebuild's reads).
Also measured: the rebuild of a replica that returns with identical data (checksums match,
nothing is copied). Goal: fresh rebuild >= 0.5x the speed of cp. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time

from bench._util import median, table
from bench.replica_common import MiB, Procs


async def fill(addresses: list[str], size: int) -> None:
    from iscsikit.replica.controller import ReplicatedBackend

    b = ReplicatedBackend(addresses)
    await b.open()
    data = os.urandom(MiB)
    sem = asyncio.Semaphore(8)

    async def one(off: int) -> None:
        async with sem:
            await b.write(off, data)

    await asyncio.gather(*(one(off) for off in range(0, size, 2 * MiB)))
    await b.close()


async def rebuild_time(source: str, target: str) -> tuple[float, dict[str, object]]:
    from iscsikit.replica.controller import Mode, ReplicatedBackend

    b = ReplicatedBackend([source], force_start=True)
    await b.open()
    started = time.perf_counter()
    r = await b.add_replica(target)
    while r.mode != Mode.RW:
        if r.mode == Mode.ERR:
            raise RuntimeError(f"rebuild failed: {r.last_error}")
        await asyncio.sleep(0.005)
    seconds = time.perf_counter() - started
    assert r.rebuild is not None
    info = r.rebuild.to_json()
    await b.remove_replica(target)
    await b.close()
    return seconds, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * MiB
    data_bytes = size // 2
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    cp_s: list[float] = []
    fresh_s: list[float] = []
    same_s: list[float] = []
    with Procs() as procs:
        src, _ = procs.replica("source", size)
        run(fill([src], size))
        image = procs.workdir / "source" / "volume.img"
        subprocess.run(["cat", str(image)], stdout=subprocess.DEVNULL, check=True)  # page cache hot
        for i in range(args.runs):
            copy = procs.workdir / f"copy{i}.img"
            started = time.perf_counter()
            subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
            cp_s.append(time.perf_counter() - started)
            copy.unlink()
            addr, proc = procs.replica(f"fresh{i}", size)
            seconds, info = run(rebuild_time(src, addr))
            assert info["copied_bytes"] == data_bytes, info
            fresh_s.append(seconds)
            seconds, info = run(rebuild_time(src, addr))  # the same replica again: all checksums match
            assert info["copied_bytes"] == 0, info
            same_s.append(seconds)
            procs.kill(proc)
            subprocess.run(["rm", "-rf", str(procs.workdir / f"fresh{i}")], check=True)
    mb = data_bytes / 1e6
    cp_rate = mb / median(cp_s)
    rows = [
        ("cp --sparse=always (local file)", f"{median(cp_s):.2f}", f"{cp_rate:.0f}", "1.00"),
        ("rebuild of a fresh replica", f"{median(fresh_s):.2f}", f"{mb / median(fresh_s):.0f}",
         f"{median(cp_s) / median(fresh_s):.2f}"),
        ("rebuild of a returning identical replica", f"{median(same_s):.2f}", f"{mb / median(same_s):.0f}",
         f"{median(cp_s) / median(same_s):.2f}"),
    ]  # fmt: skip
    print(table([f"{args.size_mib} MiB volume, {data_bytes // MiB} MiB of data", "seconds (median)", "MB/s",
                 "vs cp"], rows))  # fmt: skip
    print(f"\nfresh rebuild / cp speed = {median(cp_s) / median(fresh_s):.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
