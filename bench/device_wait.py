"""Benchmark: time from ``iscsiadm --login`` returning to the LUN's device path being known.

Two approaches, interleaved in the same VM, ``--runs`` logins each (logout between):

* iscsikit: a uevent monitor (:class:`iscsikit.devices.udev.DeviceWaiter` with
  ``settled=False``, as the connector uses it) started before the login; after the login
  returns, the device is read from sysfs after each kernel uevent;
* reference (go-iscsi-helper, csi-lib-iscsi style): after the login returns, run
  ``iscsiadm -m session -P 3`` and look for ``Attached scsi disk`` of the LUN; if absent,
  sleep one second and try again.

Both use the session's automatic LUN scan, so the kernel work is the same; only the way of
noticing differs. Runs in the kernel-tier VM (a real initiator is needed); absolute times
are emulated, the ratio is the figure.

Usage::

    .venv/bin/python -m bench.device_wait [--runs 15]

Writes bench/results/device_wait.json (goal: ratio <= 0.1).
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

IQN = "iqn.2026-11.io.iscsikit.bench:wait"
UEVENTS = "iscsikit (kernel uevents + sysfs)"
POLLING = "polling iscsiadm -m session -P 3 every 1 s"

SETUP = f"""
set -e
mkdir -p /run/isk-bench
setsid tgtd -f -C 78 --iscsi portal=127.0.0.1:3260 > /run/isk-bench/tgtd.log 2>&1 < /dev/null &
for i in $(seq 400); do tgtadm -C 78 --op show --mode sys >/dev/null 2>&1 && break; sleep 0.05; done
truncate -s 16M /run/isk-bench/w.img
tgtadm -C 78 --lld iscsi --op new --mode target --tid 1 -T {IQN}
tgtadm -C 78 --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b /run/isk-bench/w.img
tgtadm -C 78 --lld iscsi --op bind --mode target --tid 1 -I ALL
iscsiadm -m discovery -t st -p 127.0.0.1:3260 > /dev/null
"""

MEASURE = f"""
import json, re, statistics, subprocess, sys, time
from iscsikit.devices.udev import DeviceWaiter
from iscsikit.session.sysfs import Sessions
runs = int(sys.argv[1])
node = ["iscsiadm", "-m", "node", "-T", "{IQN}", "-p", "127.0.0.1:3260"]

def logout():
    subprocess.run([*node, "--logout"], capture_output=True, check=True)
    subprocess.run(["udevadm", "settle"], check=True)

def iscsikit_way():
    with DeviceWaiter(settled=False) as w:  # what the connector does
        subprocess.run([*node, "--login"], capture_output=True, check=True)
        t = time.perf_counter()
        sid = Sessions().find("{IQN}")[0].sid
        dev = w.wait_for_lun(sid, 1, timeout=60)
        took = time.perf_counter() - t
    assert dev.block is not None
    return took

def polling_way():
    subprocess.run([*node, "--login"], capture_output=True, check=True)
    t = time.perf_counter()
    for _ in range(60):
        out = subprocess.run(["iscsiadm", "-m", "session", "-P", "3"], capture_output=True, text=True).stdout
        m = re.search(r"Lun: 1\\n\\s+Attached scsi disk (\\S+)", out)
        if m:
            return time.perf_counter() - t
        time.sleep(1)
    raise RuntimeError("no device")

k, p = [], []
for _ in range(runs):
    k.append(iscsikit_way()); logout()
    p.append(polling_way()); logout()
print(json.dumps({{"iscsikit": statistics.median(k), "polling": statistics.median(p), "runs": runs,
                  "iscsikit_all": k, "polling_all": p}}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    result = Result("device_wait", vars(args))
    with GuestVM() as vm:
        vm.run(SETUP, timeout=300, check=True)
        out = vm.run_python(MEASURE, args=(str(args.runs),), timeout=3600, check=True)
        vm.run("iscsiadm -m session -u >/dev/null 2>&1; pkill tgtd", timeout=300)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    result.info(where="the kernel tier's VM (QEMU TCG)")
    result.add(UEVENTS, (x * 1000 for x in r["iscsikit_all"]), "ms")
    result.add(POLLING, (x * 1000 for x in r["polling_all"]), "ms")
    result.ratio("uevents / polling", UEVENTS, POLLING)
    result.goal("uevents / polling", "uevents / polling", "<=", 0.1)
    result.write()
    print(f"device wait after login, runs: {r['runs']}, in the VM (medians, ms)")
    print(f"  iscsikit (kernel uevents + sysfs):      {r['iscsikit'] * 1000:8.1f}")
    print(f"  polling iscsiadm -m session -P 3 at 1 s: {r['polling'] * 1000:8.1f}")
    print(f"  ratio: {r['iscsikit'] / r['polling']:.3f}x")
    print(f"  all iscsikit: {[round(x * 1000) for x in r['iscsikit_all']]}")
    print(f"  all polling:  {[round(x * 1000) for x in r['polling_all']]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
