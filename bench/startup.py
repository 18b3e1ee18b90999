"""CLI start-up: `iscsikit --help` and `--version` against a bare `python -c pass`.

    .venv/bin/python -m bench.startup [--runs 30]

Goal: under 150 ms median on these machines. Prints a markdown table and writes
bench/results/startup.json (bench/results.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench._util import table, time_command
from bench.results import Result

VENV_BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    result = Result("startup", vars(args))
    iscsikit = str(VENV_BIN / "iscsikit")
    cases = [
        ("python -c pass", [sys.executable, "-c", "pass"]),
        ("iscsikit --version", [iscsikit, "--version"]),
        ("iscsikit --help", [iscsikit, "--help"]),
        ("iscsikit doctor --help", [iscsikit, "doctor", "--help"]),
    ]
    base = None
    rows = []
    for label, argv in cases:
        m = result.add(label, (s * 1000 for s in time_command(argv, args.runs)), "ms")
        base = base or m
        rows.append((label, f"{m:.1f}", f"{m - base:+.1f}", "yes" if m < 150 else "NO"))
        if label != "python -c pass":
            result.goal(f"{label} < 150 ms", label, "<", 150.0)
    result.write()
    print(table(["command", "median ms", "over python", "< 150 ms"], rows))


if __name__ == "__main__":
    main()
