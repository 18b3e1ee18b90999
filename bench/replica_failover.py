"""Failover pause: the longest single write around the moment a replica dies or hangs.

    .venv/bin/python -m bench.replica_failover [--runs 3] [--timeout 2]

The controller (ReplicatedBackend, in this process) writes 64 KiB blocks at queue depth 4 to
three `iscsikit replica serve` processes on loopback. Two seconds in, one replica is killed with
SIGKILL (its connections reset at once) or frozen with SIGSTOP (like a pulled cable: nothing
answers, the request timeout has to notice). Reported per case, median over --runs: the longest
single write in the 3 s after the fault, and the median write latency before it. Goal for both:
<= 2 s. A hang costs about the request timeout (`timeout=` in the LUN spec, 2 s by default:
the default here too). Writes bench/results/replica_failover.json; whether each case meets
the goal is computed from its median there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time

from bench._util import table
from bench.replica_common import AUTHS, MiB, Procs
from bench.results import Result
from iscsikit.replica.client import DEFAULT_TIMEOUT

GOAL_MS = 2000.0
FAULTS = {"kill -9": signal.SIGKILL, "SIGSTOP (hung)": signal.SIGSTOP}


async def one_run(
    addresses: list[str], victim: object, sig: int, timeout: float, credentials: object = None
) -> tuple[float, float]:
    from iscsikit.replica.controller import ReplicatedBackend

    b = ReplicatedBackend(addresses, timeout=timeout, auto_rebuild=False, credentials=credentials)  # type: ignore[arg-type]
    await b.open()
    data = os.urandom(64 << 10)
    samples: list[tuple[float, float]] = []  # (start, latency)
    stop = time.monotonic() + 5.5
    fault_at = time.monotonic() + 2.0

    async def worker(k: int) -> None:
        off = k * 16 * MiB
        while time.monotonic() < stop:
            t0 = time.monotonic()
            await b.write(off, data)
            samples.append((t0, time.monotonic() - t0))
            off = k * 16 * MiB + (off + len(data)) % (16 * MiB)

    async def fault() -> None:
        await asyncio.sleep(max(0.0, fault_at - time.monotonic()))
        os.killpg(victim.pid, sig)  # type: ignore[attr-defined]

    await asyncio.gather(*(worker(k) for k in range(4)), fault())
    await b.close()
    before = [lat for t0, lat in samples if t0 < fault_at - 0.2]
    around = [lat for t0, lat in samples if fault_at - 1.0 <= t0 + lat and t0 <= fault_at + 3.0]
    return max(around), statistics.median(before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="the replicas' request timeout, s")
    parser.add_argument(
        "--auth", choices=AUTHS, default="none", help="replicas and controller share a secret / use TLS"
    )
    args = parser.parse_args()
    result = Result("replica_failover", vars(args))
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    rows = []
    for label, sig in FAULTS.items():
        pauses, medians = [], []
        for _ in range(args.runs):
            with Procs() as procs:
                reps = [procs.replica(f"r{i}", 64 * MiB, args.auth) for i in range(3)]
                creds = procs.credentials(args.auth)
                pause, med = run(one_run([a for a, _ in reps], reps[1][1], sig, args.timeout, creds))
                if sig == signal.SIGSTOP:
                    os.killpg(reps[1][1].pid, signal.SIGCONT)
                pauses.append(pause)
                medians.append(med)
        pause = result.add(f"{label}: longest write around it", (p * 1000 for p in pauses), "ms")
        before = result.add(f"{label}: median write before", (m * 1000 for m in medians), "ms")
        result.goal(f"{label}: <= 2 s", f"{label}: longest write around it", "<=", GOAL_MS)
        met = "yes" if pause <= GOAL_MS else "no"
        rows.append((label, f"{pause:.0f}", f"{before:.1f}", f"{args.timeout:g}", met))
    result.write()
    print(table(["fault", "longest write around it, ms", "median write before, ms", "timeout, s", "<= 2 s"], rows))


if __name__ == "__main__":
    main()
