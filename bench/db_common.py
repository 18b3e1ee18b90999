"""Shared by the DB benchmarks: a sandboxed DB with many node records, and timed runs of
commands inside the sandbox's mount namespace (wall time and peak RSS per process)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iscsikit.db.record import format_record, read_defaults  # noqa: E402
from iscsikit.db.schema import RecordKind  # noqa: E402
from tests.support.sandbox import IscsiadmSandbox  # noqa: E402
from tests.unit.db.iscsiadm_harness import private_sandbox  # noqa: E402

ISCSIKIT = str(Path(sys.executable).parent / "iscsikit")
TARGET_FMT = "iqn.2026-11.io.iscsikit.bench:t{:04d}"


def target_name(i: int) -> str:
    return TARGET_FMT.format(i)


def populate(db: Path, targets: int = 2000) -> int:
    """5 records per target: 2 portals x (default, res1) new style, and one old-style record.

    Files are exactly what iscsiadm 2.1.8 writes for ``-o new`` (see tests/interop); written
    directly here because 10,000 ``iscsiadm -o new`` calls take too long to set up.
    """
    (db / "ifaces").mkdir(mode=0o700, exist_ok=True)
    (db / "ifaces/res1").write_text(
        "# BEGIN RECORD 2.1.8\niface.iscsi_ifacename = res1\niface.net_ifacename = lo\n"
        "iface.prefix_len = 0\niface.transport_name = tcp\n# END RECORD\n"
    )
    (db / "nodes").mkdir(mode=0o700, exist_ok=True)
    (db / "static").mkdir(mode=0o700, exist_ok=True)
    base = read_defaults(RecordKind.NODE, "default")
    count = 0
    for i in range(targets):
        target = target_name(i)
        tdir = db / "nodes" / target
        tdir.mkdir(mode=0o700)
        net = f"10.{i // 250}.{i % 250}"
        for portal in (f"{net}.1", f"{net}.2"):
            pdir = tdir / f"{portal},3260,1"
            pdir.mkdir(mode=0o700)
            for iface in ("default", "res1"):
                values = dict(base)
                values.update(
                    {
                        "node.name": target,
                        "node.tpgt": "1",
                        "node.conn[0].address": portal,
                        "iface.iscsi_ifacename": iface,
                        "node.session.auth.authmethod": "CHAP",
                        "node.session.auth.username": f"user{i}",
                        "node.session.auth.password": f"secret-{i}",
                    }
                )
                if iface == "res1":
                    values["iface.net_ifacename"] = "lo"
                path = pdir / iface
                path.write_text(format_record(RecordKind.NODE, values))
                os.chmod(path, 0o600)
                os.symlink(
                    f"/etc/iscsi/nodes/{target}/{portal},3260,1", db / f"static/{target},{portal},3260,1,{iface}"
                )
                count += 1
        values = dict(base)
        values.update({"node.name": target, "node.conn[0].address": f"{net}.3"})
        old = tdir / f"{net}.3,3260"
        old.write_text(format_record(RecordKind.NODE, values))
        os.chmod(old, 0o600)
        count += 1
    return count


@dataclass
class Run:
    seconds: float
    cpu_seconds: float  # user + system of the process (less disturbed by a loaded machine)
    maxrss_kb: int
    returncode: int
    stdout_bytes: int


def run_in(sandbox: IscsiadmSandbox, argv: Sequence[str], capture: bool = False) -> Run:
    """One process in the sandbox's mount namespace: wall time and its peak RSS."""
    full = ["nsenter", f"--mount=/proc/{sandbox.pid}/ns/mnt", "--", *argv]
    started = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    size = 0
    while chunk := proc.stdout.read(1 << 20):
        size += len(chunk)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, proc.returncode, size)


def iscsiadm_version(sandbox: IscsiadmSandbox) -> str:
    """``iscsiadm --version``'s output, e.g. ``iscsiadm version 2.1.8`` (for the result file)."""
    res = subprocess.run(
        ["nsenter", f"--mount=/proc/{sandbox.pid}/ns/mnt", "--", "iscsiadm", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def new_sandbox() -> IscsiadmSandbox:
    return private_sandbox()
