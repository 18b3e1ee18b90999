"""CLI start-up: `iscsikit --help` and `--version` against a bare `python -c pass`.

    .venv/bin/python -m bench.startup [--runs 30]

Goal: under 150 ms median on these machines. Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench._util import median, table, time_command

VENV_BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
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
        m = median(time_command(argv, args.runs)) * 1000
        base = base or m
        rows.append((label, f"{m:.1f}", f"{m - base:+.1f}", "yes" if m < 150 else "NO"))
    print(table(["command", "median ms", "over python", "< 150 ms"], rows))


if __name__ == "__main__":
    main()
