"""CPU per MiB written, per process, for 1 MiB QD8 writes to a replicated LUN (1 and 3 replicas).

    .venv/bin/python -m bench.replica_cpu [--runs 3] [--count 400]

Where `bench.replica_write` gives throughput, this says where the CPU goes: for each process
(qemu-img as the initiator, the target with its controller, every replica server) the user +
system time it spent during one `qemu-img bench` run (from /proc/PID/stat and the children's
rusage), divided by the MiB written. Medians over --runs. On a machine where everything shares
a few cores, the 3-vs-1 throughput ratio cannot beat the inverse ratio of the totals. Writes
bench/results/replica_cpu.json.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench._util import table
from bench.replica_common import AUTHS, MiB, Procs
from bench.replica_write import qemu_bench
from bench.results import Result

IQN = "iqn.2026-11.org.iscsikit:cpu"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def children_seconds() -> float:
    t = os.times()
    return t.children_user + t.children_system


def measure(n: int, count: int, runs: int, auth: str = "none") -> dict[str, list[float]]:
    """Per run, ms of CPU per MiB for each process role, plus the run's MB/s."""
    samples: dict[str, list[float]] = {}
    with Procs() as procs:
        replicas = [procs.replica(f"r{i}", max(count, 64) * MiB, auth) for i in range(n)]
        spec = "replicated:" + ",".join(a for a, _ in replicas) + procs.lun_options(auth)
        url, target = procs.target(f"{IQN}{n}", spec, f"t{n}")
        qemu_bench(url, count // 4, 8)  # allocate the blocks first
        pids = {"target + controller": target.pid} | {f"replica {i}": p.pid for i, (_, p) in enumerate(replicas)}
        for _ in range(runs):
            before = {k: cpu_seconds(pid) for k, pid in pids.items()}
            kids = children_seconds()
            mbs = qemu_bench(url, count, 8)
            samples.setdefault("qemu-img (initiator)", []).append((children_seconds() - kids) * 1000 / count)
            for k, pid in pids.items():
                samples.setdefault(k, []).append((cpu_seconds(pid) - before[k]) * 1000 / count)
            samples.setdefault("MB/s", []).append(mbs)
            samples.setdefault("total", []).append(sum(samples[k][-1] for k in samples if k not in ("MB/s", "total")))
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument(
        "--auth", choices=AUTHS, default="none", help="replicas and controller share a secret / use TLS"
    )
    args = parser.parse_args()
    result = Result("replica_cpu", vars(args))
    med: dict[int, dict[str, float]] = {}
    for n in (1, 3):
        for role, samples in measure(n, args.count, args.runs, args.auth).items():
            unit = "MB/s" if role == "MB/s" else "ms CPU per MiB"
            med.setdefault(n, {})[role] = result.add(f"{n} replica{'s' if n > 1 else ''}: {role}", samples, unit)
    one, three = med[1], med[3]
    roles = ["qemu-img (initiator)", "target + controller", "replica 0", "replica 1", "replica 2", "total"]
    rows = [(r, f"{one[r]:.2f}" if r in one else "", f"{three[r]:.2f}") for r in roles]
    rows.append(("MB/s", f"{one['MB/s']:.0f}", f"{three['MB/s']:.0f}"))
    print(table(["process", "1 replica, ms CPU per MiB", "3 replicas, ms CPU per MiB"], rows))
    bound = result.ratio("CPU bound on 3/1", "1 replica: total", "3 replicas: total")
    result.ratio("3 replicas / 1, MB/s", "3 replicas: MB/s", "1 replica: MB/s")
    result.write()
    print(f"\nCPU-bound bound on the 3/1 throughput ratio: {bound:.2f}")


if __name__ == "__main__":
    main()
