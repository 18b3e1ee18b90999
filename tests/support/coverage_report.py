"""Branch coverage of the unit and interop tiers per module, and the docs/testing.md section made from it.

``scripts/coverage`` runs both tiers under coverage.py (tests/coverage/coveragerc), combines the
data of every process and calls ``python -m tests.support.coverage_report write DATA_DIR``, which
turns coverage.py's JSON report into the result file, tests/coverage/report.json: per module the
statements, branches, partial branches, line % and branch %, and coverage.py's own combined
figure (covered lines + branches over statements + branches), with the commit, the date and the
command of the run. The Coverage section of docs/testing.md is rendered from that file only
(scripts/gen_docs.py), so it shows a run that happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
REPORT = ROOT / "tests/coverage/report.json"
GOAL_BRANCH_PERCENT = 90.0

# The safety-critical modules of issue 14, until pyproject.toml's [tool.mutmut] only_mutate (the
# mutation-tested list) exists; from then on that list is the one place that names them.
_SAFETY_CRITICAL_DEFAULT = [
    "iscsikit/replica/controller.py",
    "iscsikit/replica/server.py",
    "iscsikit/replica/store.py",
    "iscsikit/replica/rebuild.py",
    "iscsikit/clean/plan.py",
    "iscsikit/clean/apply.py",
    "iscsikit/target/proto/connection.py",
    "iscsikit/target/proto/login.py",
    "iscsikit/target/proto/chap.py",
    "iscsikit/target/proto/digest.py",
    "iscsikit/db/record.py",
    "iscsikit/db/lock.py",
    "iscsikit/db/fsutil.py",
    "iscsikit/connector/connector.py",
    "iscsikit/connector/state.py",
]


def safety_critical(root: Path = ROOT) -> list[str]:
    """The safety-critical modules, in order: [tool.mutmut] only_mutate when pyproject has it."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    listed = pyproject.get("tool", {}).get("mutmut", {}).get("only_mutate")
    return list(listed) if listed else list(_SAFETY_CRITICAL_DEFAULT)


def _percent(covered: int, total: int) -> float:
    # A module with nothing to cover (no statements, or no branches) is fully covered.
    return round(100.0 * covered / total, 1) if total else 100.0


def _ranges(numbers: Iterable[int]) -> list[str]:
    """[3, 4, 5, 9] -> ["3-5", "9"]."""
    out: list[str] = []
    start = prev = None
    for n in sorted(numbers):
        if start is None:
            start = prev = n
        elif prev is not None and n == prev + 1:
            prev = n
        else:
            out.append(f"{start}-{prev}" if start != prev else str(start))
            start = prev = n
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else str(start))
    return out


def _summary(s: dict[str, Any]) -> dict[str, Any]:
    statements, branches = s["num_statements"], s.get("num_branches", 0)
    covered_lines, covered_branches = s["covered_lines"], s.get("covered_branches", 0)
    return {
        "statements": statements,
        "missing_statements": s["missing_lines"],
        "branches": branches,
        "missing_branches": s.get("missing_branches", 0),
        "partial_branches": s.get("num_partial_branches", 0),
        "line_percent": _percent(covered_lines, statements),
        "branch_percent": _percent(covered_branches, branches),
        # coverage.py's "branch coverage" figure: lines and branches together.
        "combined_percent": _percent(covered_lines + covered_branches, statements + branches),
    }


def build(coverage_json: dict[str, Any], run: dict[str, Any], root: Path = ROOT) -> dict[str, Any]:
    """The result file's content from coverage.py's JSON report and the run's facts.

    Only modules of this checkout's iscsikit/ count (by path relative to ``root``); every such
    module is listed, measured or not, so a module no test imports shows as 0 %.
    """
    critical = safety_critical(root)
    files: dict[str, dict[str, Any]] = {}
    for name, data in coverage_json["files"].items():
        path = Path(name) if Path(name).is_absolute() else root / name
        try:
            rel = path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        if rel.startswith("iscsikit/"):
            files[rel] = data
    modules: dict[str, dict[str, Any]] = {}
    for rel in sorted(files):
        entry = _summary(files[rel]["summary"])
        if rel in critical:
            entry["uncovered_lines"] = _ranges(files[rel].get("missing_lines", []))
            # coverage.py writes an exit from the function as a negative line number.
            entry["uncovered_branches"] = [
                f"{a}->{b if b > 0 else 'exit'}" for a, b in files[rel].get("missing_branches", [])
            ]
        modules[rel] = entry
    # Summed over the modules kept (coverage.py's own totals would count any other file too).
    keys = ("num_statements", "covered_lines", "missing_lines", "num_branches", "covered_branches")
    keys += ("missing_branches", "num_partial_branches")
    totals = _summary({k: sum(f["summary"].get(k, 0) for f in files.values()) for k in keys})
    return {
        **run,
        "coverage_py": coverage_json.get("meta", {}).get("version", ""),
        "goal_branch_percent": GOAL_BRANCH_PERCENT,
        "safety_critical": critical,
        "not_measured": [
            "a process killed with SIGKILL: the deliberate kill -9 of a replica or the target (replica fault "
            "tests), the lock holder test_db_concurrency kills mid-write, a server ignoring SIGTERM for 5 s at "
            "teardown (tests/support/netns.end); exit, SIGTERM and os._exit save the data",
            "Python started with -S (no site, so no start-up hook: the VM agent); the kernel tier (not run)",
            "copies of iscsikit/ outside this checkout (scripts/mutation-regression's mutants)",
        ],
        "totals": totals,
        "modules": modules,
    }


def _tests(junit: Path) -> dict[str, Any]:
    """Counts and failed test ids from pytest's junit XML (empty when the run wrote none)."""
    if not junit.exists():
        return {}
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    failed = []
    for case in suite.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {**counts, "seconds": round(float(suite.get("time", "0"))), "failed": failed}


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def checkout_state() -> tuple[str, bool]:
    """The commit, and whether the code or the tests differ from it (then the commit is only
    an approximation of what ran, and the report says so)."""
    dirty = _git("status", "--porcelain", "--", "iscsikit", "tests/unit", "tests/interop", "tests/support")
    return _git("rev-parse", "HEAD"), bool(dirty)


def write(data_dir: Path, out: Path = REPORT) -> dict[str, Any]:
    """Make the result file from a scripts/coverage run's directory (coverage-report.json, run.json, junit.xml)."""
    run = json.loads((data_dir / "run.json").read_text())
    status_file = data_dir / "pytest-status"
    run["pytest_exit_status"] = int(status_file.read_text()) if status_file.exists() else None
    run["tests"] = _tests(data_dir / "junit.xml")
    processes = data_dir / "processes"
    # How many processes saved data (pytest, and each Python child that exited or got SIGTERM).
    run["processes_measured"] = int(processes.read_text()) if processes.exists() else None
    run["finished"] = (
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(status_file.stat().st_mtime))
        if (status_file.exists())
        else None
    )
    if "commit" not in run:  # scripts/coverage notes both when the run starts
        run["commit"], run["dirty"] = checkout_state()
    report = build(json.loads((data_dir / "coverage-report.json").read_text()), run)
    out.write_text(json.dumps(report, indent=1) + "\n")
    return report


# ------------------------------------------------------------------------------------------
# docs/testing.md


def _pct(x: float) -> str:
    return f"{x:.1f}"


def render(report: dict[str, Any] | None = None) -> str:
    """The markdown of docs/testing.md's coverage section, from the result file."""
    if report is None:
        if not REPORT.exists():
            return "No report yet: run `sudo bash scripts/coverage`."
        report = json.loads(REPORT.read_text())
    goal = report["goal_branch_percent"]
    modules: dict[str, dict[str, Any]] = report["modules"]
    t = report["totals"]
    tests = report.get("tests") or {}
    ran = (
        f"{tests['passed']} passed, {tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped"
        if tests
        else "no test counts"
    )
    dirty = " (with uncommitted changes)" if report.get("dirty") else ""
    if tests.get("seconds"):
        ran += f", in {round(tests['seconds'] / 60)} min"
    if report.get("processes_measured"):
        ran += f"; {report['processes_measured']} processes measured"
    note = f" {report['note']}" if report.get("note") else ""
    lines = [
        f"From tests/coverage/report.json: `{report['command']}` at commit {report['commit'][:10]}{dirty}, "
        f"{report.get('finished') or report['started']} (coverage.py {report['coverage_py']}, "
        f"Hypothesis profile `{report['hypothesis_profile']}`; tests: {ran}).{note}",
        "",
        f"All {len(modules)} modules: {t['statements']} statements, {t['branches']} branches "
        f"({t['partial_branches']} lines with a partial branch); line {_pct(t['line_percent'])} %, "
        f"branch {_pct(t['branch_percent'])} %, coverage.py's combined figure {_pct(t['combined_percent'])} %.",
        "",
        f"Safety-critical modules (goal: branch >= {goal:g} %):",
        "",
        "| module | statements | branches | partial | line % | branch % | combined % | goal |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    critical = report["safety_critical"]
    met = 0
    for name in critical:
        m = modules.get(name)
        if m is None:
            lines.append(f"| `{name}` | - | - | - | - | - | - | not measured |")
            continue
        ok = m["branch_percent"] >= goal
        met += ok
        lines.append(
            f"| `{name}` | {m['statements']} | {m['branches']} | {m['partial_branches']} | "
            f"{_pct(m['line_percent'])} | {_pct(m['branch_percent'])} | {_pct(m['combined_percent'])} | "
            f"{'met' if ok else '**below**'} |"
        )
    lines += [
        "",
        f"{met} of {len(critical)} meet the goal; report.json lists each one's uncovered lines and branches.",
        "",
        "Every other module (statements / branches, line %, branch %):",
        "",
        "| module | stmts / branches | line % | branch % |",
        "|---|---:|---:|---:|",
    ]
    for name, m in modules.items():
        if name not in critical:
            lines.append(
                f"| `{name.removeprefix('iscsikit/')}` | {m['statements']} / {m['branches']} | "
                f"{_pct(m['line_percent'])} | {_pct(m['branch_percent'])} |"
            )
    return "\n".join(lines) + "\n"


# NAME -> renderer of the markdown between <!-- generated: NAME --> markers (scripts/gen_docs.py).
DOC_SECTIONS: dict[str, Callable[[], str]] = {"coverage": render}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "write":
        sys.stderr.write("usage: python -m tests.support.coverage_report write DATA_DIR\n")
        return 2
    report = write(Path(argv[1]))
    t = report["totals"]
    print(
        f"{REPORT.relative_to(ROOT)}: {len(report['modules'])} modules, line {t['line_percent']} %, "
        f"branch {t['branch_percent']} %, combined {t['combined_percent']} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
