"""The kernel tier's clean slate, run in the guest before every test (``python -S clean_slate.py SCRATCH``).

Brings the guest back to its state after ``prepare_vm``: every iSCSI session logged out,
multipathd stopped and its maps flushed, every tgtd gone, open-iscsi's DB and config back to the
boot snapshot, scratch LUN files and loopback aliases removed, iscsid running. Prints what it
could not fix and exits 1.

Why Python and not a shell script: under TCG each process start costs 0.1-0.6 s, and a shell
version needed about twenty of them (pidof, ls, grep, rm, cp...) for what /proc, /sys and
shutil answer in-process. Only the standard library: it runs with ``-S`` (no site).

Why tgtd gets SIGKILL at once: tgtd ignores SIGTERM while it has targets configured, and by the
time this runs every session to it has been logged out, so there is nothing left to lose.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # -S: no site, so no editable install
from iscsikit._vm_agent import iscsid_listening, pids  # stdlib-only, like this script


def run(*argv: str, timeout: float = 60) -> int:
    try:
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout
        ).returncode
    except (OSError, subprocess.TimeoutExpired):
        return -1


def wait(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_all(name: str, sig: int) -> None:
    for pid in pids(name):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def sessions() -> list[str]:
    try:
        return sorted(os.listdir("/sys/class/iscsi_session"))
    except FileNotFoundError:
        return []


def loopback_aliases() -> list[str]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True).stdout
    addrs = [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]
    return [a for a in addrs if not a.startswith("127.0.0.1/")]


def main(scratch: Path) -> int:
    udev_events = False
    # 1. Log out while the targets still answer (a logout against a dead target waits for timeouts).
    if sessions():
        run("iscsiadm", "-m", "session", "-u")
        udev_events = True
    # 2. multipath maps and daemon, if a test started them.
    if pids("multipathd"):
        run("multipath", "-F")
        kill_all("multipathd", signal.SIGTERM)
    if any(p.name.startswith("dm-") for p in Path("/sys/block").iterdir()):
        run("dmsetup", "remove_all")
        udev_events = True
    # 3. Every tgtd (the whole guest is ours).
    kill_all("tgtd", signal.SIGKILL)
    for pidfile in (scratch / "tgtd").glob("*.pid"):
        pidfile.unlink()
    wait(lambda: not pids("tgtd"), 10)
    # 4. open-iscsi DB and config back to the boot snapshot; scratch files and aliases away.
    shutil.rmtree("/etc/iscsi", ignore_errors=True)
    shutil.copytree(scratch / "etc-iscsi", "/etc/iscsi", symlinks=True)
    if not (scratch / "had-multipath-conf").exists():
        Path("/etc/multipath.conf").unlink(missing_ok=True)
    for lun in (scratch / "luns").iterdir():
        lun.unlink()
    for alias in loopback_aliases():
        run("ip", "addr", "del", alias, "dev", "lo")
    # 5. iscsid must be running (a test may have stopped it).
    if not pids("iscsid"):
        with open(Path(os.environ["ISCSIKIT_VM_SHARED"], "iscsid.log"), "ab") as log:
            subprocess.Popen(["iscsid", "-f"], stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        wait(iscsid_listening, 30)
    if udev_events:
        run("udevadm", "settle", "--timeout=30", timeout=40)
    # 6. Verify.
    problems = []
    if left := sessions():
        problems.append(f"sessions left: {' '.join(left)}")
    by_path = Path("/dev/disk/by-path")
    if by_path.is_dir() and any("-iscsi-" in p.name for p in by_path.iterdir()):
        problems.append("iSCSI by-path links left")
    if left_tgtd := pids("tgtd"):
        problems.append(f"tgtd still running: {left_tgtd}")
    if not pids("iscsid"):
        problems.append("iscsid is not running")
    elif not iscsid_listening():
        problems.append("iscsid does not listen")
    if problems:
        print("\n".join(problems))
        subprocess.run(["iscsiadm", "-m", "session", "-P", "1"], stderr=subprocess.STDOUT)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
