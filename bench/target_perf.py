"""The built-in target against tgtd, side by side on loopback in the same run.

Both serve a file-backed LUN of the same size, filled with the same random data and hot in the
page cache. Each workload alternates tgt / iscsikit, ``--runs`` times, and reports medians and
the ratio iscsikit/tgt:

* ``iscsi-perf -b 2048 -m QD -t T URL``           1 MiB sequential read, QD 1 and 8
* ``iscsi-perf -r -b 8 -m QD -t T URL``           4 KiB random read, QD 1, 8 and 32
* ``qemu-img bench -w -t none -s 1M -c N -d 8``   1 MiB sequential write, QD 8
* RSS of the target with 16 sessions of ``iscsi-perf -r -b 8 -m 32``

Usage: ``.venv/bin/python -m bench.target_perf [--runs 3] [--seconds 8] [--loop uvloop|asyncio]
[--only read1m,rand4k,write1m,rss] [--digests] [--baseline DIR]``. Run as root (tgtd). Prints a
markdown table and writes bench/results/target_perf.json (goals: reads >= 1.0x tgt at 1 MiB,
>= 0.5x at 4 KiB, 1 MiB writes >= 1.2x, RSS with 16 sessions < 150 MB).

``--baseline DIR`` also serves the target from another checkout of the repository (for example
``git archive <commit> iscsikit | tar -x -C DIR``), on its own LUN file, in the same rotation:
before/after figures of a change measured side by side in one run, each with its ratio to tgt.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._util import table  # noqa: E402
from bench.results import Result  # noqa: E402
from tests.support.tgtd import Tgtd, free_port, wait_for_port  # noqa: E402

IQN_TGT = "iqn.2026-11.org.iscsikit.bench:tgt"
IQN_ISK = "iqn.2026-11.org.iscsikit.bench:isk"
_IOPS = re.compile(r"iops average (\d+) \((\d+) MB/s\)")
_DONE = re.compile(r"Run completed in ([0-9.]+) seconds")


def fill(path: Path, size: int) -> None:
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        left = size
        while left:
            chunk = src.read(min(left, 8 << 20))
            dst.write(chunk)
            left -= len(chunk)
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # into the page cache


def iscsi_perf(url: str, *, block: int, qd: int, seconds: int, rand: bool) -> tuple[float, float]:
    argv = ["iscsi-perf", *(["-r"] if rand else []), "-b", str(block // 512), "-m", str(qd), "-t", str(seconds), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout.replace("\r", "\n")
    found = _IOPS.findall(out)
    if not found:
        raise RuntimeError(f"no result from {' '.join(argv)}: {out[-300:]}")
    iops, mbs = found[-1]
    return float(iops), float(mbs)


def qemu_write(url: str, *, count: int, qd: int = 8) -> float:
    argv = ["qemu-img", "bench", "-w", "-t", "none", "-s", "1M", "-c", str(count), "-d", str(qd), "-f", "raw", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    m = _DONE.search(out.stdout)
    if not m:
        raise RuntimeError(f"qemu-img bench failed: {out.stdout[-300:]} {out.stderr[-300:]}")
    return count * 1.048576 / float(m.group(1))  # MB/s


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def peak_rss_during(pid: int, fn: Callable[[], None]) -> int:
    peak = [rss_kib(pid)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    return peak[0]


def sixteen_sessions(url: str, seconds: int) -> None:
    procs = [
        subprocess.Popen(
            ["iscsi-perf", "-r", "-b", "8", "-m", "32", "-t", str(seconds), url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(16)
    ]
    for p in procs:
        p.wait(timeout=seconds + 60)


def _version(argv: list[str]) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (res.stdout or res.stderr).strip().splitlines()[0] if (res.stdout or res.stderr).strip() else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--loop", default="auto")
    ap.add_argument("--only", default="read1m,rand4k,write1m,rss")
    ap.add_argument("--baseline", type=Path, help="another checkout whose iscsikit target runs beside this one")
    ap.add_argument(
        "--digests",
        action="store_true",
        help="require CRC32C header digests on both targets (libiscsi 1.19: no data digest)",
    )
    args = ap.parse_args()
    result = Result("target_perf", vars(args))
    result.info(qemu_img=_version(["qemu-img", "--version"]))
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="isk-bench-"))
    img_tgt, img_isk, img_base = work / "tgt.img", work / "isk.img", work / "base.img"
    fill(img_tgt, args.size)
    fill(img_isk, args.size)
    if args.baseline:
        fill(img_base, args.size)

    tgt = Tgtd()
    tgt.add_target(IQN_TGT, luns={1: img_tgt})
    if args.digests:
        tid = "1"
        tgt.tgtadm("--op", "update", "--mode", "target", "--tid", tid, "--name", "HeaderDigest", "--value", "CRC32C")

    def serve(root: Path, img: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        argv = [sys.executable, "-m", "iscsikit", "-q", "target", "serve", "--portal", f"127.0.0.1:{port}",
                "--iqn", IQN_ISK, "--lun", f"1=file:{img}", "--control", str(work / f"{name}.sock"),
                "--loop", args.loop]  # fmt: skip
        if args.digests:
            argv += ["--header-digest", "crc32c"]
        proc = subprocess.Popen(argv, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        wait_for_port("127.0.0.1", port, timeout=30)
        return proc, f"iscsi://127.0.0.1:{port}/{IQN_ISK}/1"

    isk, isk_url = serve(ROOT, img_isk, "isk")
    urls = {"tgt": f"iscsi://127.0.0.1:{tgt.port}/{IQN_TGT}/1", "iscsikit": isk_url}
    base = None
    if args.baseline:
        base, urls["baseline"] = serve(args.baseline.resolve(), img_base, "base")
    rows: list[list[object]] = []
    s = args.seconds

    def compare(name: str, command: str, unit: str, fn: Callable[[str], float], goal: float) -> None:
        samples: dict[str, list[float]] = {who: [] for who in urls}
        whos = list(urls)
        for run in range(args.runs):
            k = run % len(whos)  # rotate who goes first
            for who in whos[k:] + whos[:k]:
                samples[who].append(fn(urls[who]))
        t, i = (result.add(f"{name}: {who}", samples[who], unit) for who in ("tgt", "iscsikit"))
        result.ratio(name, f"{name}: iscsikit", f"{name}: tgt")
        result.goal(name, name, ">=", goal)
        result.info(**{f"{name}: command": command})
        row: list[object] = [name, f"{t:,.0f} {unit}", f"{i:,.0f} {unit}", f"{i / t:.2f}"]
        if "baseline" in samples:
            b = result.add(f"{name}: baseline", samples["baseline"], unit)
            result.ratio(f"{name}: baseline", f"{name}: baseline", f"{name}: tgt")
            row += [f"{b:,.0f} {unit}", f"{b / t:.2f}"]
        rows.append([*row, f"`{command}`"])
        print(f"{name}: " + " ".join(f"{who} {v}" for who, v in samples.items()), file=sys.stderr, flush=True)

    try:
        if "read1m" in only:
            for qd in (1, 8):
                compare(f"1 MiB seq read QD{qd}", f"iscsi-perf -b 2048 -m {qd} -t {s} URL", "MB/s",
                        lambda u, qd=qd: iscsi_perf(u, block=1 << 20, qd=qd, seconds=s, rand=False)[1],
                        1.0)  # fmt: skip
        if "rand4k" in only:
            for qd in (1, 8, 32):
                compare(f"4 KiB rand read QD{qd}", f"iscsi-perf -r -b 8 -m {qd} -t {s} URL", "IOPS",
                        lambda u, qd=qd: iscsi_perf(u, block=4096, qd=qd, seconds=s, rand=True)[0], 0.5)  # fmt: skip
        if "write1m" in only:
            count = 1000
            compare("1 MiB seq write QD8", f"qemu-img bench -w -t none -s 1M -c {count} -d 8 -f raw URL", "MB/s",
                    lambda u: qemu_write(u, count=count), 1.2)  # fmt: skip
        if "rss" in only:
            before = rss_kib(isk.pid)
            peak = peak_rss_during(isk.pid, lambda: sixteen_sessions(urls["iscsikit"], s))
            result.add("RSS, 16 sessions QD32: iscsikit idle", [before / 1024], "MB")
            result.add("RSS, 16 sessions QD32: iscsikit peak", [peak / 1024], "MB")
            result.goal("RSS, 16 sessions QD32", "RSS, 16 sessions QD32: iscsikit peak", "<", 150.0)
            result.info(**{"RSS, 16 sessions QD32: command": f"16 x iscsi-perf -r -b 8 -m 32 -t {s} URL"})
            rss = f"{peak / 1024:.0f} MB (idle {before / 1024:.0f} MB)"
            row: list[object] = ["RSS, 16 sessions QD32", "-", rss, "-"]
            if base is not None:
                base_before = rss_kib(base.pid)
                base_peak = peak_rss_during(base.pid, lambda: sixteen_sessions(urls["baseline"], s))
                result.add("RSS, 16 sessions QD32: baseline idle", [base_before / 1024], "MB")
                result.add("RSS, 16 sessions QD32: baseline peak", [base_peak / 1024], "MB")
                row += [f"{base_peak / 1024:.0f} MB (idle {base_before / 1024:.0f} MB)", "-"]
            rows.append([*row, f"`16 x iscsi-perf -r -b 8 -m 32 -t {s} URL`"])
    finally:
        for proc in (isk, base):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)
        tgt.close()
        for p in (img_tgt, img_isk, img_base):
            p.unlink(missing_ok=True)
    result.write()
    load = os.getloadavg()
    print(f"\nloopback, {args.runs} runs each (median), {s} s per run, LUN {args.size >> 20} MiB file, "
          f"loop={args.loop}, hdigest={'CRC32C' if args.digests else 'off'}, load avg {load[0]:.1f}\n")  # fmt: skip
    header = ["workload", "tgt", "iscsikit", "ratio"]
    if base is not None:
        header += [f"baseline ({args.baseline})", "baseline ratio"]
    print(table([*header, "command"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
