"""Benchmark: ``iscsikit session list --json`` vs ``iscsiadm -m session -P 3`` with 32 sessions.

Runs in the kernel-tier VM (the only place with real sessions and a running iscsid, which
``-P 3`` asks for every session's state: without iscsid, iscsiadm spends seconds retrying
its IPC, which would flatter iscsikit). tgtd exports 32 targets of one LUN each; all are
logged in; then both commands run back to back, interleaved, ``--runs`` times, as whole
processes (Python start-up included for iscsikit), and the medians are compared. The
in-process library call (``Sessions().all()`` plus JSON) is reported too.

The VM is emulated (TCG), so absolute times are slow; the ratio is what this measures.

Usage::

    .venv/bin/python -m bench.session_list [--sessions 32] [--runs 15]

Writes bench/results/session_list.json (goal: the whole process <= 1.0x iscsiadm).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import Result  # noqa: E402
from iscsikit.vm import GuestVM  # noqa: E402

SETUP = """
set -e
mkdir -p /run/isk-bench
setsid tgtd -f -C 77 --iscsi portal=127.0.0.1:3260 > /run/isk-bench/tgtd.log 2>&1 < /dev/null &
for i in $(seq 400); do tgtadm -C 77 --op show --mode sys >/dev/null 2>&1 && break; sleep 0.05; done
for n in $(seq 1 {n}); do
  truncate -s 4M /run/isk-bench/l$n.img
  tgtadm -C 77 --lld iscsi --op new --mode target --tid $n -T iqn.2026-11.io.iscsikit.bench:t$n
  tgtadm -C 77 --lld iscsi --op new --mode logicalunit --tid $n --lun 1 -b /run/isk-bench/l$n.img
  tgtadm -C 77 --lld iscsi --op bind --mode target --tid $n -I ALL
done
iscsiadm -m discovery -t st -p 127.0.0.1:3260 > /dev/null
iscsiadm -m node --loginall=all > /dev/null
udevadm settle
[ "$(ls /sys/class/iscsi_session | wc -l)" = {n} ]
"""

MEASURE = """
import json, subprocess, sys, time
from iscsikit.session.sysfs import Sessions
runs, n = int(sys.argv[1]), int(sys.argv[2])
adm = ["iscsiadm", "-m", "session", "-P", "3"]
import os
kit = [os.path.join(os.path.dirname(sys.executable), "iscsikit"), "session", "list", "--json"]
def timed(argv):
    t = time.perf_counter(); r = subprocess.run(argv, capture_output=True, text=True, check=True)
    return time.perf_counter() - t, r.stdout
_, out = timed(adm); assert out.count("SID:") == n
_, out = timed(kit); assert len(json.loads(out)) == n
a, k, lib = [], [], []
for _ in range(runs):
    a.append(timed(adm)[0]); k.append(timed(kit)[0])
    t = time.perf_counter(); json.dumps([s.to_json() for s in Sessions().all()]); lib.append(time.perf_counter() - t)
print(json.dumps({"iscsiadm": a, "iscsikit": k, "library": lib, "runs": runs, "sessions": n}))
"""


CASES = {
    "iscsiadm": "iscsiadm -m session -P 3",
    "iscsikit": "iscsikit session list --json (process)",
    "library": "Sessions().all() + JSON (library call)",
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    result = Result("session_list", vars(args))
    with GuestVM(memory="2G") as vm:
        vm.run(SETUP.format(n=args.sessions), timeout=900, check=True)
        out = vm.run_python(MEASURE, args=(str(args.runs), str(args.sessions)), timeout=1800, check=True)
        vm.run("iscsiadm -m session -u >/dev/null 2>&1; pkill tgtd", timeout=300)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    result.info(where="the kernel tier's VM (QEMU TCG)", sessions=r["sessions"])
    m = {key: result.add(case, (x * 1000 for x in r[key]), "ms") for key, case in CASES.items()}
    result.ratio("process", CASES["iscsikit"], CASES["iscsiadm"])
    result.ratio("library", CASES["library"], CASES["iscsiadm"])
    result.goal("process <= iscsiadm", "process", "<=", 1.0)
    result.write()
    print(f"sessions: {r['sessions']}, runs: {r['runs']}, in the VM (medians, ms)")
    for key, case in CASES.items():
        ratio = "" if key == "iscsiadm" else f"   ratio {m[key] / m['iscsiadm']:.2f}x"
        print(f"  {case + ':':44}{m[key]:8.1f}{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
