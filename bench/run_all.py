"""Run every benchmark with the parameters of the committed result files, one after another.

    .venv/bin/python -m bench.run_all [--only startup,db_listing] [--skip-vm] [--list]

Each script writes bench/results/NAME.json (bench/results.py); then regenerate the document with
``.venv/bin/python scripts/gen_docs.py`` (docs/benchmarks.md's tables are rendered from those
files). Run as root (tgtd, private mount namespaces), from the repository root, on a machine as
quiet as you can get: every result file records the load average it was measured under.

The parameters are modest (the whole set fits in about half an hour on 2 shared cores): medians
over 5 runs where a run is cheap, fewer where it is not (the VM scripts boot a guest under TCG),
and smaller data sets where the reference is quadratic (``db_delete``'s iscsiadm loop).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Every bench script and the arguments its committed result file was made with.
SCRIPTS: dict[str, list[str]] = {
    "startup": ["--runs", "20"],
    "scsi_layer": ["--runs", "5"],
    "file_backend": ["--runs", "5"],
    "target_core": ["--runs", "5"],
    "db_listing": ["--runs", "5"],
    "db_delete": ["--targets", "200", "--runs", "5", "--iscsiadm-runs", "3"],
    "clean_records": ["--records", "10000", "--ref-sample", "10", "--runs", "3", "--fs", "tmpfs,disk"],
    "target_perf": ["--runs", "3", "--seconds", "4", "--size", str(256 << 20)],
    "replica_write": ["--runs", "5", "--auth", "secret", "--auth", "tls"],
    "replica_cpu": ["--runs", "3"],
    "replica_failover": ["--runs", "5"],
    "replica_rebuild": ["--runs", "3"],
    "device_wait": ["--runs", "5"],
    "session_list": ["--sessions", "32", "--runs", "5"],
    "vm_boot": ["--boots", "1", "--requests", "10"],
}
#: Scripts that boot the kernel tier's VM.
VM = {"device_wait", "session_list", "vm_boot"}
#: Modules in bench/ that are not benchmarks (helpers, this runner, the doc renderer).
NOT_BENCHMARKS = {"__init__", "_util", "results", "report", "run_all", "db_common", "replica_common"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated script names")
    ap.add_argument("--skip-vm", action="store_true", help="leave out the scripts that boot a VM")
    ap.add_argument("--list", action="store_true", help="print the commands and exit")
    args = ap.parse_args()
    chosen = [n for n in SCRIPTS if not args.only or n in args.only.split(",")]
    unknown = set(args.only.split(",")) - set(SCRIPTS) - {""}
    if unknown:
        ap.error(f"--only: no bench script {', '.join(sorted(unknown))} (known: {', '.join(SCRIPTS)})")
    if args.skip_vm:
        chosen = [n for n in chosen if n not in VM]
    failed = []
    for name in chosen:
        argv = [sys.executable, "-m", f"bench.{name}", *SCRIPTS[name]]
        if args.list:
            print(" ".join(argv))
            continue
        print(f"== {name}: {' '.join(argv[1:])}", flush=True)
        started = time.monotonic()
        rc = subprocess.run(argv, cwd=ROOT, check=False).returncode
        print(f"== {name}: exit {rc} after {time.monotonic() - started:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
