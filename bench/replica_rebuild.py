"""Rebuild speed: a fresh replica of a 1 GiB volume that is half full, against `cp --sparse=always`.

    .venv/bin/python -m bench.replica_rebuild [--runs 3] [--size-mib 1024]

The controller (ReplicatedBackend, in this process, on uvloop when installed) fills every other
MiB of the volume on one replica server, then rebuilds a fresh replica server from it; both
servers are `iscsikit replica serve` processes on loopback. The reference, in the same run, is a
local `cp --sparse=always` of the source's data file (page cache hot, like the rebuild's reads),
and the same cp followed by an fsync of the copy (a rebuild must make its copy durable before the
replica may serve: it ends with a flush). Measured, each run in turn:

* a fresh replica rebuilt by pull (the replica copies straight from the source, the default);
* a fresh replica rebuilt by relay (through the controller: what replicas that cannot reach each
  other do, and the only way before protocol revision 2);
* a replica that returns with identical data (checksums match, nothing is copied).

Goal: fresh rebuild (pull) >= 0.5x the speed of cp. Prints a markdown table with medians, the
CPU seconds the processes used (controller + both replica servers; cp itself), and the load
average before each run: on a shared machine the figures move with it. Writes
bench/results/replica_rebuild.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._util import median, table
from bench.replica_common import AUTHS, MiB, Procs
from bench.results import Result


async def fill(addresses: list[str], size: int, credentials: Any = None) -> None:
    from iscsikit.replica.controller import ReplicatedBackend

    b = ReplicatedBackend(addresses, credentials=credentials)
    await b.open()
    data = os.urandom(MiB)
    sem = asyncio.Semaphore(8)

    async def one(off: int) -> None:
        async with sem:
            await b.write(off, data)

    await asyncio.gather(*(one(off) for off in range(0, size, 2 * MiB)))
    await b.close()


async def rebuild_time(
    source: str, target: str, pull: bool = True, credentials: Any = None
) -> tuple[float, dict[str, object]]:
    from iscsikit.replica.controller import Mode, ReplicatedBackend

    b = ReplicatedBackend([source], force_start=True, rebuild_pull=pull, credentials=credentials)
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


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a live process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Sample:
    """Wall seconds, CPU seconds and the 1-minute load average before, per run."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.load: list[float] = []

    def measure(self, fn: Callable[[], Any], pids: list[int], children: bool = False) -> Any:
        self.load.append(os.getloadavg()[0])
        before = sum(cpu_seconds(p) for p in pids) + (children_cpu() if children else 0.0)
        started = time.perf_counter()
        result = fn()
        self.wall.append(time.perf_counter() - started)
        self.cpu.append(sum(cpu_seconds(p) for p in pids) + (children_cpu() if children else 0.0) - before)
        return result


def cp_copy(image: Path, copy: Path, sync: bool) -> None:
    subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
    if sync:
        fd = os.open(copy, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument(
        "--auth", choices=AUTHS, default="none", help="replicas and controller share a secret / use TLS"
    )
    args = parser.parse_args()
    result = Result("replica_rebuild", vars(args))
    size = args.size_mib * MiB
    data_bytes = size // 2
    run: Callable[..., Any] = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    cp, cp_sync, pull, relay, same = Sample(), Sample(), Sample(), Sample(), Sample()
    me = os.getpid()
    with Procs() as procs:
        src, src_proc = procs.replica("source", size, args.auth)
        creds = procs.credentials(args.auth)
        run(fill([src], size, creds))
        image = procs.workdir / "source" / "volume.img"
        subprocess.run(["cat", str(image)], stdout=subprocess.DEVNULL, check=True)  # page cache hot
        for i in range(args.runs):
            for sample, sync in ((cp, False), (cp_sync, True)):
                copy = procs.workdir / f"copy{i}.img"
                sample.measure(lambda copy=copy, sync=sync: cp_copy(image, copy, sync), [], children=True)  # type: ignore[misc]
                copy.unlink()
            for sample, pulled in ((pull, True), (relay, False)):
                addr, proc = procs.replica(f"fresh{i}{'p' if pulled else 'r'}", size, args.auth)
                pids = [me, src_proc.pid, proc.pid]
                seconds, info = sample.measure(lambda a=addr, p=pulled: run(rebuild_time(src, a, p, creds)), pids)  # type: ignore[misc]
                assert info["copied_bytes"] == data_bytes, info
                assert info["via"] == ("pull" if pulled else "relay"), info
                sample.wall[-1] = seconds  # from add_replica to RW, without the controller's start
                if pulled:  # the same replica again: all checksums match
                    seconds, info = same.measure(lambda a=addr: run(rebuild_time(src, a, True, creds)), pids)  # type: ignore[misc]
                    assert info["copied_bytes"] == 0, info
                    same.wall[-1] = seconds
                procs.kill(proc)
                subprocess.run(["rm", "-rf", str(procs.workdir / f"fresh{i}{'p' if pulled else 'r'}")], check=True)
    mb = data_bytes / 1e6
    base = median(cp.wall)

    def row(name: str, s: Sample) -> tuple[str, ...]:
        w = median(s.wall)
        return (name, f"{w:.2f}", f"{mb / w:.0f}", f"{base / w:.2f}", f"{median(s.cpu):.2f}",
                " ".join(f"{x:.1f}" for x in s.load))  # fmt: skip

    cases = {
        "cp --sparse=always (local file)": cp,
        "cp --sparse=always + fsync of the copy": cp_sync,
        "rebuild of a fresh replica, by pull": pull,
        "rebuild of a fresh replica, by relay": relay,
        "rebuild of a returning identical replica": same,
    }
    result.info(data_mib=data_bytes // MiB, load_1min_before_each_run={k: v.load for k, v in cases.items()})
    for name, sample in cases.items():
        result.add(name, sample.wall, "s")
        result.add(f"{name}: CPU", sample.cpu, "s")
    pull_case = "rebuild of a fresh replica, by pull"
    result.ratio("pull vs cp, speed", "cp --sparse=always (local file)", pull_case)
    result.ratio("pull vs cp + fsync, speed", "cp --sparse=always + fsync of the copy", pull_case)
    result.goal("pull >= 0.5x cp", "pull vs cp, speed", ">=", 0.5)
    result.write()
    rows = [row(name, sample) for name, sample in cases.items()]
    print(table([f"{args.size_mib} MiB volume, {data_bytes // MiB} MiB of data", "seconds (median)", "MB/s",
                 "vs cp", "CPU s (median)", "load avg per run"], rows))  # fmt: skip
    print(f"\nfresh rebuild by pull / cp speed = {base / median(pull.wall):.2f} (goal >= 0.5); "
          f"per run: {' '.join(f'{c / p:.2f}' for c, p in zip(cp.wall, pull.wall, strict=True))}")  # fmt: skip


if __name__ == "__main__":
    main()
