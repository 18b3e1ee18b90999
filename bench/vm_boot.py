"""Boot time and per-request overhead of iscsikit.vm.GuestVM (the kernel test tier's VM).

Usage::

    .venv/bin/python -m bench.vm_boot [--boots 3] [--requests 30] [--loglevel 4]

For each boot it reports: seconds from ``vng`` start until the guest agent is ready, the
guest's uptime at that moment, how long the agent's preparation took (modprobe, udev
settle, iscsid), then the round trip of ``vm.run("true")`` (a bash start in the guest), of
``/bin/true`` run directly (argv, no bash), and the agent's channel overhead (host round trip
minus the time the guest measured for the process itself), and the clean poweroff time.
Figures are medians. Under TCG everything in the guest is slow and the host's load shows
through: compare runs made back to back, not across machines. Writes
bench/results/vm_boot.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.results import Result
from iscsikit.vm import GuestVM


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boots", type=int, default=3)
    ap.add_argument("--requests", type=int, default=30)
    ap.add_argument("--loglevel", type=int, default=7, help="kernel console loglevel (7 = everything)")
    args = ap.parse_args()
    why = GuestVM.available()
    if why:
        print(f"cannot boot a VM here: {why}", file=sys.stderr)
        return 1
    result = Result("vm_boot", vars(args))
    boots, uptimes, preps, bash_rt, argv_rt, overhead, closes = [], [], [], [], [], [], []
    for n in range(args.boots):
        vm = GuestVM(console_loglevel=args.loglevel).start()
        try:
            assert vm.boot_seconds is not None
            boots.append(vm.boot_seconds)
            uptimes.append(float(vm.info["uptime"]))
            preps.append(float(vm.info["prepare_seconds"]))
            for _ in range(args.requests):
                t0 = time.monotonic()
                r = vm.run("true")
                rt = time.monotonic() - t0
                bash_rt.append(rt)
                overhead.append(rt - r.duration)
                t0 = time.monotonic()
                vm._request({"argv": ["/bin/true"]}, "/bin/true", 60, None, None, True)
                argv_rt.append(time.monotonic() - t0)
        finally:
            t0 = time.monotonic()
            vm.close()
            closes.append(time.monotonic() - t0)
        print(
            f"boot {n + 1}: ready after {boots[-1]:.1f} s (guest uptime {uptimes[-1]:.1f} s, prepare {preps[-1]:.1f} s)"
        )
    result.add("boot to ready (host wall clock)", boots, "s")
    result.add("guest uptime when ready", uptimes, "s")
    result.add("agent preparation", preps, "s")
    result.add("vm.run('true') round trip", (x * 1000 for x in bash_rt), "ms")
    result.add("argv /bin/true round trip", (x * 1000 for x in argv_rt), "ms")
    result.add("channel overhead (round trip - guest run)", (x * 1000 for x in overhead), "ms")
    result.add("clean poweroff", closes, "s")
    result.write()
    print(f"\n{args.boots} boots, {args.requests} requests each, console loglevel {args.loglevel}")
    print(f"  boot to ready (host wall clock)   median {_median(boots):6.2f} s")
    print(f"  guest uptime when ready           median {_median(uptimes):6.2f} s")
    print(f"  agent preparation                 median {_median(preps):6.2f} s")
    print(f"  vm.run('true') round trip         median {_median(bash_rt) * 1000:6.0f} ms")
    print(f"  argv /bin/true round trip         median {_median(argv_rt) * 1000:6.0f} ms")
    print(f"  channel overhead (rt - guest run) median {_median(overhead) * 1000:6.1f} ms")
    print(f"  clean poweroff                    median {_median(closes):6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
