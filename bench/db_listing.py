"""Benchmark: listing and showing 10,000 node records (2,000 targets), iscsikit vs iscsiadm.

Both tools run as whole processes (Python start-up included for iscsikit) inside the same
private mount namespace, against the same DB at /etc/iscsi, interleaved, ``--runs`` times:

* ``iscsikit node list --json`` vs ``iscsiadm -m node``        (goal: ratio <= 0.5)
* ``iscsikit node show --json`` vs ``iscsiadm -m node -o show`` (goal: ratio <= 1.0)

and the peak RSS of the iscsikit processes (goal: < 100 MB). iscsiadm parses every record
even to list them; iscsikit lists from directory names and parses only for ``show``.

Usage::

    .venv/bin/python -m bench.db_listing [--targets 2000] [--runs 7]

Writes bench/results/db_listing.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import table
from bench.db_common import ISCSIKIT, iscsiadm_version, median, new_sandbox, populate, run_in
from bench.results import Result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    result = Result("db_listing", vars(args))
    goals = {"list": 0.5, "show": 1.0}
    pairs = {
        "list": (["iscsiadm", "-m", "node"], [ISCSIKIT, "node", "list", "--json"]),
        "show": (["iscsiadm", "-m", "node", "-o", "show"], [ISCSIKIT, "node", "show", "--json"]),
    }
    with new_sandbox() as sandbox:
        records = populate(sandbox.db, args.targets)
        print(f"{records} node records over {args.targets} targets in {sandbox.db}")
        result.info(records=records, iscsiadm=iscsiadm_version(sandbox))
        rows = []
        for what, (theirs, mine) in pairs.items():
            t_theirs, t_mine, c_theirs, c_mine, rss = [], [], [], [], []
            for _ in range(2):  # warm the page cache and the interpreter's files
                run_in(sandbox, theirs)
                run_in(sandbox, mine)
            for _ in range(args.runs):
                a = run_in(sandbox, theirs)
                b = run_in(sandbox, mine)
                assert a.returncode == 0 and b.returncode == 0, (a, b)
                t_theirs.append(a.seconds)
                t_mine.append(b.seconds)
                c_theirs.append(a.cpu_seconds)
                c_mine.append(b.cpu_seconds)
                rss.append(b.maxrss_kb)
            mt, mm = median(t_theirs), median(t_mine)
            ct, cm = median(c_theirs), median(c_mine)
            result.add(f"{what}: iscsikit", t_mine, "s")
            result.add(f"{what}: iscsiadm", t_theirs, "s")
            result.add(f"{what}: iscsikit CPU", c_mine, "s")
            result.add(f"{what}: iscsiadm CPU", c_theirs, "s")
            result.add(f"{what}: iscsikit peak RSS", (kb / 1024 for kb in rss), "MB")
            result.ratio(f"{what}: wall", f"{what}: iscsikit", f"{what}: iscsiadm")
            result.ratio(f"{what}: CPU", f"{what}: iscsikit CPU", f"{what}: iscsiadm CPU")
            result.goal(f"{what}: wall ratio", f"{what}: wall", "<=", goals[what])
            result.goal(f"{what}: peak RSS", f"{what}: iscsikit peak RSS", "<", 100.0)
            rows.append(
                [
                    f"`{' '.join(mine[1:])}`",
                    f"`{' '.join(theirs)}`",
                    f"{mm:.3f}",
                    f"{mt:.3f}",
                    f"{mm / mt:.2f}",
                    f"{cm:.3f} / {ct:.3f}",
                    f"{cm / ct:.2f}",
                    f"{max(rss) / 1024:.0f}",
                ]
            )
        print(
            table(
                [
                    "iscsikit",
                    "iscsiadm 2.1.8",
                    "iscsikit s",
                    "iscsiadm s",
                    "wall ratio",
                    "CPU s (iscsikit / iscsiadm)",
                    "CPU ratio",
                    "iscsikit peak RSS MB",
                ],
                rows,
            )
        )
    result.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
