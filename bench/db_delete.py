"""Benchmark: deleting 5,000 of 10,000 node records (1,000 of 2,000 targets) by target pattern.

* iscsikit: one ``iscsikit node delete 'iqn.2026-11.io.iscsikit.bench:t0*' --yes`` (a glob);
* iscsiadm 2.1.8 has no pattern: a loop of ``iscsiadm -m node -o delete -T TARGET`` over the
  1,000 targets (one call per target is the cheapest way; each call still reads every
  remaining record to find its matches).

Both run as whole processes inside the same private mount namespace, on freshly populated
DBs; both leave the same tree (checked). Goal: iscsikit / iscsiadm <= 0.1.

Usage::

    .venv/bin/python -m bench.db_delete [--targets 2000] [--runs 3] [--iscsiadm-runs 1]

A full loop over 2,000 targets runs for most of an hour (it is quadratic); ``--targets 200``
(1,000 records, 100 calls) shows the same ratio's order in seconds. Writes
bench/results/db_delete.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._util import table
from bench.db_common import ISCSIKIT, iscsiadm_version, median, new_sandbox, populate, run_in, target_name
from bench.results import Result
from tests.unit.db.iscsiadm_harness import db_tree, reset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iscsiadm-runs", type=int, default=1)
    args = ap.parse_args()
    result = Result("db_delete", vars(args))
    half = args.targets // 2
    if args.targets not in (20, 200, 2000):
        ap.error("--targets must be 20, 200 or 2000 (half of them must match one glob)")
    # ...:t0* is t0000..t0999 for 2,000 targets; ...:t00* is t0000..t0099 for 200
    pattern = target_name(0)[: -(len(str(half)) - 1)] + "*"
    victims = [target_name(i) for i in range(half)]
    assert all(v.startswith(pattern[:-1]) for v in victims) and not target_name(half).startswith(pattern[:-1])
    loop = "for t in " + " ".join(victims) + "; do iscsiadm -m node -o delete -T $t || exit 1; done"
    mine_s, theirs_s, rss = [], [], []
    with new_sandbox() as sandbox:
        result.info(iscsiadm=iscsiadm_version(sandbox))
        trees = {}
        for i in range(max(args.runs, args.iscsiadm_runs)):
            if i < args.runs:
                reset(sandbox)
                records = populate(sandbox.db, args.targets)
                started = time.perf_counter()
                run = run_in(sandbox, [ISCSIKIT, "node", "delete", pattern, "--yes", "--json"])
                assert run.returncode == 0, run
                mine_s.append(time.perf_counter() - started)
                rss.append(run.maxrss_kb)
                trees["iscsikit"] = db_tree(sandbox)
            if i < args.iscsiadm_runs:
                reset(sandbox)
                populate(sandbox.db, args.targets)
                run = run_in(sandbox, ["sh", "-c", loop])
                assert run.returncode == 0, run
                theirs_s.append(run.seconds)
                trees["iscsiadm"] = db_tree(sandbox)
        assert trees["iscsikit"] == trees["iscsiadm"], "the two tools left different trees"
        shutil.rmtree(sandbox.db / "nodes", ignore_errors=True)
    mm, mt = median(mine_s), median(theirs_s)
    print(f"deleted {records // 2} of {records} records ({half} targets of {args.targets})")
    result.info(records=records, deleted=records // 2, command=f"iscsikit node delete '{pattern}' --yes")
    result.add("iscsikit node delete PATTERN", mine_s, "s")
    result.add(f"loop of {half} iscsiadm -m node -o delete -T T", theirs_s, "s")
    result.add("iscsikit peak RSS", (kb / 1024 for kb in rss), "MB")
    result.ratio("delete", "iscsikit node delete PATTERN", f"loop of {half} iscsiadm -m node -o delete -T T")
    result.goal("delete ratio", "delete", "<=", 0.1)
    result.write()
    print(
        table(
            ["iscsikit", "iscsiadm 2.1.8", "iscsikit s", "iscsiadm s", "ratio", "iscsikit peak RSS MB"],
            [
                [
                    f"`iscsikit node delete '{pattern}' --yes`",
                    f"loop of {half} `iscsiadm -m node -o delete -T T`",
                    f"{mm:.2f}",
                    f"{mt:.1f}",
                    f"{mm / mt:.4f}",
                    f"{max(rss) / 1024:.0f}",
                ]
            ],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
