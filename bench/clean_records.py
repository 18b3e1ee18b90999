"""Benchmark: clean 10,000 stale node records, ``iscsikit clean`` vs a loop of ``iscsiadm -o delete``.

Both run against the same kind of DB, in a private mount namespace where it is ``/etc/iscsi``
(tests/support/sandbox.py), one process tree per run, wall clock:

* **iscsikit**: ``iscsikit clean --target 'iqn...:*' --yes``: survey, plan, backup tarball of
  every record, deletion under iscsiadm's lock: the whole command, as a user runs it;
* **reference**: what people script today: ``iscsiadm -m node -T T -p P -o delete`` for each
  record, in one ``sh`` loop inside the namespace (no Python in the loop).

The records are what ``iscsiadm -m node -o new -T T -p P,1`` writes (one per target, with its
``static/`` link), written directly because 10,000 ``-o new`` calls take too long. So does the
reference loop: each ``iscsiadm -o delete`` walks the whole DB (measured: about 2 s per call with
10,000 records on this machine), so the loop is quadratic and 10,000 calls take hours. It is
timed on ``--ref-sample`` records (default 50) deleted from a DB of N/2 records, the average
size the DB has during a full loop, and scaled to N; its cost per call with all N records
present is printed too.

Where the DB lives decides a lot: this machine's disk is ext4 mounted with ``discard``, where
every unlink or rmdir costs about a millisecond whoever makes it (measured below as
``syscall floor``), so both filesystems are measured: tmpfs (``--fs tmpfs``, the CPU cost of
each tool) and the disk (``--fs disk``).

Usage::

    .venv/bin/python -m bench.clean_records [--records 10000] [--ref-sample 50] [--runs 3] [--fs tmpfs,disk]

Writes bench/results/clean_records.json (goals: under 5 s, and <= 0.1 of the loop).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import Result  # noqa: E402
from iscsikit.db.record import format_record, read_defaults  # noqa: E402
from iscsikit.db.schema import RecordKind  # noqa: E402
from tests.support.sandbox import IscsiadmSandbox  # noqa: E402

ISCSIKIT = str(Path(sys.executable).parent / "iscsikit")
PREFIX = "iqn.2026-11.io.iscsikit.bench:clean"


def target(i: int) -> str:
    return f"{PREFIX}{i:05d}"


def portal(i: int) -> str:
    return f"10.{i // 250 % 250}.{i % 250}.{1 + i // 62500}"


def populate(db: Path, n: int) -> list[tuple[str, str]]:
    """``n`` records as ``iscsiadm -m node -o new -T T -p P:3260,1`` leaves them, links included."""
    for sub in ("nodes", "static", "ifaces"):
        (db / sub).mkdir(mode=0o700, exist_ok=True)
    values = read_defaults(RecordKind.NODE, "default")
    values.update({"node.name": "@T@", "node.tpgt": "1", "node.conn[0].address": "@P@", "node.conn[0].port": "3260"})
    template = format_record(RecordKind.NODE, values)
    out = []
    for i in range(n):
        t, p = target(i), portal(i)
        pdir = db / "nodes" / t / f"{p},3260,1"
        pdir.mkdir(mode=0o700, parents=True)
        os.chmod(pdir.parent, 0o700)
        fd = os.open(pdir / "default", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, template.replace("@T@", t).replace("@P@", p).encode())
        os.close(fd)
        os.symlink(f"/etc/iscsi/nodes/{t}/{p},3260,1", db / "static" / f"{t},{p},3260,1,default")
        out.append((t, p))
    return out


def reset(sbx: IscsiadmSandbox) -> None:
    for entry in sbx.db.iterdir():
        if entry.name not in ("iscsid.conf", "initiatorname.iscsi"):
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


def in_ns(sbx: IscsiadmSandbox, argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    res = subprocess.run(
        ["nsenter", f"--mount=/proc/{sbx.pid}/ns/mnt", "--", *argv],
        capture_output=True,
        text=True,
        env=env,
    )
    elapsed = time.perf_counter() - started
    if res.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv[:4])}... failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        )
    return elapsed


def run_iscsikit(sbx: IscsiadmSandbox, work: Path) -> float:
    config = work / "config.toml"
    (work / "sys").mkdir(exist_ok=True)
    shutil.rmtree(work / "state", ignore_errors=True)
    config.write_text(f'state_dir = "{work / "state"}"\nsysfs_root = "{work / "sys"}"\n')
    # As installed: byte-compiled modules (the test harness may set PYTHONDONTWRITEBYTECODE).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(ISCSIKIT_CONFIG=str(config), ISCSIKIT_DB_ROOT="/etc/iscsi")
    return in_ns(sbx, [ISCSIKIT, "-q", "clean", "--target", f"{PREFIX}*", "--yes"], env)


def run_reference(sbx: IscsiadmSandbox, records: list[tuple[str, str]], work: Path) -> float:
    listing = work / "records.txt"
    listing.write_text("".join(f"{t} {p}\n" for t, p in records))
    script = f'while read t p; do iscsiadm -m node -T "$t" -p "$p:3260" -o delete || exit 1; done < {listing}'
    return in_ns(sbx, ["sh", "-c", script])


def syscall_floor(base: Path, n: int) -> float:
    """What the filesystem alone charges: unlink link + file, rmdir portal + target, per record."""
    d = base / "floor"
    for i in range(n):
        os.makedirs(d / f"t{i}" / "p")
        (d / f"t{i}" / "p" / "f").write_bytes(b"x" * 2100)
        os.symlink("/nowhere", d / f"l{i}")
    started = time.perf_counter()
    for i in range(n):
        os.unlink(d / f"l{i}")
        os.unlink(d / f"t{i}" / "p" / "f")
        os.rmdir(d / f"t{i}" / "p")
        os.rmdir(d / f"t{i}")
    elapsed = time.perf_counter() - started
    shutil.rmtree(d)
    return elapsed


def reference_per_call(sbx: IscsiadmSandbox, work: Path, size: int, sample: int) -> float:
    """Seconds per ``iscsiadm -o delete`` with ``size`` records in the DB."""
    reset(sbx)
    records = populate(sbx.db, size)
    step = max(1, size // sample)
    return run_reference(sbx, records[::step][:sample], work) / min(sample, len(records[::step]))


def measure(fs: str, n: int, sample: int, runs: int) -> dict[str, list[float]]:
    """Per run: iscsikit's seconds, the loop's estimate, one call at full size; the floor once."""
    base = Path(tempfile.mkdtemp(prefix="isk-bench-clean-", dir="/dev/shm" if fs == "tmpfs" else "/var/tmp"))
    try:
        sbx = IscsiadmSandbox(base / "sbx")
        work = base / "work"
        work.mkdir()
        try:
            ours, mid, full = [], [], []
            reset(sbx)
            run_iscsikit(sbx, work)  # warm-up: byte-compile, fill the page cache
            for _ in range(runs):
                reset(sbx)
                populate(sbx.db, n)
                ours.append(run_iscsikit(sbx, work))
                assert not os.listdir(sbx.db / "nodes"), "iscsikit left records behind"
                mid.append(reference_per_call(sbx, work, n // 2, sample))
                full.append(reference_per_call(sbx, work, n, sample))
            floor = syscall_floor(base, n)
        finally:
            sbx.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"iscsikit": ours, "reference": [m * n for m in mid], "per_call_full": full, "floor": [floor]}


CASES = {
    "iscsikit": "iscsikit clean --yes",
    "reference": "iscsiadm -o delete loop, est.",
    "per_call_full": "one iscsiadm -o delete at full size",
    "floor": "syscall floor",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--ref-sample", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fs", default="tmpfs,disk")
    args = ap.parse_args()
    result = Result("clean_records", vars(args))
    print(f"{args.records} stale node records; medians of {args.runs} runs; reference: {args.ref_sample} "
          f"iscsiadm calls timed in a DB of {args.records // 2} records, scaled to {args.records}")  # fmt: skip
    print("| filesystem | iscsikit clean --yes (s) | iscsiadm -o delete loop, est. (s) | ratio "
          "| one iscsiadm -o delete at full size (s) | syscall floor (s) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for fs in args.fs.split(","):
        samples = measure(fs, args.records, args.ref_sample, args.runs)
        r = {k: result.add(f"{fs}: {CASES[k]}", v, "s") for k, v in samples.items()}
        result.ratio(f"{fs}: clean", f"{fs}: {CASES['iscsikit']}", f"{fs}: {CASES['reference']}")
        result.goal(f"{fs}: ratio", f"{fs}: clean", "<=", 0.1)
        result.goal(f"{fs}: under 5 s", f"{fs}: {CASES['iscsikit']}", "<", 5.0)
        print(f"| {fs} | {r['iscsikit']:.2f} | {r['reference']:.0f} | {r['iscsikit'] / r['reference']:.4f}x "
              f"| {r['per_call_full']:.2f} | {r['floor']:.2f} |", flush=True)  # fmt: skip
    result.write()


if __name__ == "__main__":
    main()
