"""1 MiB sequential writes through the iSCSI target: a replicated LUN with 3 replicas vs 1, same run.

    .venv/bin/python -m bench.replica_write [--runs 5] [--count 400] [--depth 8] [--auth secret|tls]...

Everything on loopback on this 2-core machine: qemu-img (libiscsi) -> `iscsikit target serve` ->
N `iscsikit replica serve` processes. Also measured in the same run, as references: the same
target over a `memory:` LUN, and tgtd over a file. Goal: 3 replicas >= 0.7x the 1-replica rate.
Each `--auth` adds a 3-replica LUN whose replicas and target share a secret (`secret`), or also
use TLS (`tls`), measured in the same run (goal with a secret: >= 0.95x without).
Prints a markdown table (medians over --runs) and writes bench/results/replica_write.json.
"""

from __future__ import annotations

import argparse
import re
import subprocess

from bench._util import table
from bench.replica_common import AUTHS, MiB, Procs
from bench.results import Result

IQN = "iqn.2026-11.org.iscsikit:bench"


def qemu_bench(url: str, count: int, depth: int) -> float:
    """MB/s of one `qemu-img bench -w` run."""
    res = subprocess.run(
        ["qemu-img", "bench", "-w", "-t", "none", "-s", "1M", "-c", str(count), "-d", str(depth), "-f", "raw", url],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    seconds = float(re.search(r"Run completed in ([\d.]+) seconds", res.stdout).group(1))  # type: ignore[union-attr]
    return count * MiB / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--auth", action="append", choices=AUTHS[1:], default=[],
                        help="also a 3-replica LUN with this security set-up (repeatable)")  # fmt: skip
    args = parser.parse_args()
    result = Result("replica_write", vars(args))
    size = max(args.count, 64) * MiB
    results: dict[str, list[float]] = {}
    with Procs() as procs:
        urls = {}
        for n in (1, 3):
            addrs = [procs.replica(f"r{n}-{i}", size)[0] for i in range(n)]
            urls[f"replicated, {n} replica{'s' if n > 1 else ''}"] = procs.target(
                f"{IQN}{n}", "replicated:" + ",".join(addrs), f"t{n}"
            )[0]
        for auth in args.auth:
            addrs = [procs.replica(f"r3{auth}-{i}", size, auth)[0] for i in range(3)]
            spec = "replicated:" + ",".join(addrs) + procs.lun_options(auth)
            urls[f"replicated, 3 replicas, {auth}"] = procs.target(f"{IQN}3{auth}", spec, f"t3{auth}")[0]
        urls["memory: LUN (no replication)"] = procs.target(f"{IQN}m", f"memory:size={size}", "tm")[0]
        for url in urls.values():
            qemu_bench(url, args.count // 4, args.depth)  # warm-up: allocate the blocks
        for _ in range(args.runs):  # interleaved, so drift hits every case alike
            for label, url in urls.items():
                results.setdefault(label, []).append(qemu_bench(url, args.count, args.depth))
    medians = {label: result.add(label, v, "MB/s") for label, v in results.items()}
    one = medians["replicated, 1 replica"]
    rows = [(label, f"{m:.0f}", f"{m / one:.2f}") for label, m in medians.items()]
    print(table(["LUN", f"MB/s, 1 MiB writes QD{args.depth} (median of {args.runs})", "vs 1 replica"], rows))
    ratio = result.ratio("3 replicas / 1", "replicated, 3 replicas", "replicated, 1 replica")
    result.goal("3 replicas / 1", "3 replicas / 1", ">=", 0.7)
    print(f"\n3 replicas / 1 replica = {ratio:.2f} (goal >= 0.7)")
    for auth in args.auth:
        ratio = result.ratio(f"{auth} / none", f"replicated, 3 replicas, {auth}", "replicated, 3 replicas")
        if auth == "secret":
            result.goal("secret / none", "secret / none", ">=", 0.95)
        print(f"3 replicas with {auth} / without = {ratio:.2f}" + (" (goal >= 0.95)" if auth == "secret" else ""))
    result.write()


if __name__ == "__main__":
    main()
