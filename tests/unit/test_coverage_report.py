"""tests/coverage/report.json (scripts/coverage) says what coverage.py measured, and the doc shows it.

That docs/testing.md's Coverage section matches the committed file is gen_docs --check's job
(tests/unit/core/test_generated_docs.py); these tests check the file's shape and that the
figures in it are the ones coverage.py measured, on a small real program.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import coverage_report
from tests.support.tiers import ROOT

MODULE_KEYS = {
    "statements",
    "missing_statements",
    "branches",
    "missing_branches",
    "partial_branches",
    "line_percent",
    "branch_percent",
    "combined_percent",
}


def test_the_committed_report_has_every_figure_and_says_how_it_was_made() -> None:
    report = json.loads(coverage_report.REPORT.read_text())
    assert report["command"].startswith("bash scripts/coverage")
    assert re.fullmatch(r"[0-9a-f]{40}", report["commit"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", report["started"])
    assert report["tests"]["tests"] > 0 and isinstance(report["pytest_exit_status"], int)
    assert report["safety_critical"] == coverage_report.safety_critical()
    modules = report["modules"]
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "iscsikit").rglob("*.py")}
    # The whole package is listed (one no test imports shows as 0 %), only the package; a module
    # added or removed since the run is allowed: re-running takes root and half an hour.
    assert all(re.fullmatch(r"iscsikit/[\w/]+\.py", name) for name in modules)
    assert len(on_disk & set(modules)) >= 0.9 * len(on_disk)
    for name, m in [*modules.items(), ("totals", report["totals"])]:
        assert set(m) >= MODULE_KEYS, name
        assert 0 <= m["missing_statements"] <= m["statements"], name
        assert 0 <= m["partial_branches"] <= m["missing_branches"] <= m["branches"], name
        assert m["branch_percent"] == _pct(m["branches"] - m["missing_branches"], m["branches"]), name
        assert m["line_percent"] == _pct(m["statements"] - m["missing_statements"], m["statements"]), name
    for name in report["safety_critical"]:
        assert isinstance(modules[name]["uncovered_branches"], list), name
        assert len(modules[name]["uncovered_branches"]) == modules[name]["missing_branches"], name


def _pct(covered: int, total: int) -> float:
    return round(100.0 * covered / total, 1) if total else 100.0


PROGRAM = """\
def pick(x):
    if x:
        return 1
    return 2


def never(x):
    for i in range(x):
        x -= i
    return x


def maybe(x):
    if x:
        x += 1
"""


def _measure(tmp_path: Path) -> dict[str, Any]:
    """coverage.py's JSON report of a run that takes one side of pick()'s and maybe()'s branch and never
    calls never()."""
    (tmp_path / "iscsikit/db").mkdir(parents=True)
    (tmp_path / "iscsikit/__init__.py").write_text("")
    (tmp_path / "iscsikit/db/__init__.py").write_text("")
    (tmp_path / "iscsikit/db/lock.py").write_text(PROGRAM)
    (tmp_path / "iscsikit/unused.py").write_text("X = 1\n")
    (tmp_path / "main.py").write_text("from iscsikit.db.lock import maybe, pick\nassert pick(True) == 1\nmaybe(True)\n")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    # The run under scripts/coverage is itself measured: this child must not join that run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    cov = [sys.executable, "-m", "coverage"]
    subprocess.run([*cov, "run", "--branch", "--source=iscsikit", "main.py"], cwd=tmp_path, env=env, check=True)
    subprocess.run([*cov, "json", "-q", "-o", "cov.json"], cwd=tmp_path, env=env, check=True)
    return dict(json.loads((tmp_path / "cov.json").read_text()))


def test_the_figures_are_what_coverage_measured(tmp_path: Path) -> None:
    data = _measure(tmp_path)
    data["files"]["/elsewhere/iscsikit/db/lock.py"] = data["files"]["iscsikit/db/lock.py"]  # a mutant's copy
    report = coverage_report.build(data, {"command": "bash scripts/coverage"}, root=tmp_path)
    assert set(report["modules"]) == {
        "iscsikit/__init__.py",
        "iscsikit/db/__init__.py",
        "iscsikit/db/lock.py",
        "iscsikit/unused.py",
    }
    lock = report["modules"]["iscsikit/db/lock.py"]
    # pick: 4 statements run but `return 2`; never: the def runs, its 3 statements do not; maybe:
    # all 3 run. Branches: pick's if (2, one taken: partial), never's for (2, none taken), maybe's
    # if (2: into the body taken, out of the function not: partial).
    assert (lock["statements"], lock["missing_statements"]) == (11, 4)
    assert (lock["branches"], lock["missing_branches"], lock["partial_branches"]) == (6, 4, 2)
    assert (lock["line_percent"], lock["branch_percent"], lock["combined_percent"]) == (63.6, 33.3, 52.9)
    assert lock["uncovered_branches"] == ["2->4", "8->9", "8->10", "14->exit"]
    assert lock["uncovered_lines"] == ["4", "8-10"]
    assert report["modules"]["iscsikit/unused.py"]["line_percent"] == 0.0
    assert "uncovered_branches" not in report["modules"]["iscsikit/unused.py"]  # not safety-critical
    # The totals are this checkout's modules only: lock.py's figures and unused.py's one statement.
    assert report["totals"]["statements"] == 12 and report["totals"]["branches"] == 6


def test_the_safety_critical_list_is_mutmuts_once_it_exists(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert "iscsikit/replica/controller.py" in coverage_report.safety_critical(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[tool.mutmut]\nonly_mutate = ["iscsikit/db/lock.py"]\n')
    assert coverage_report.safety_critical(tmp_path) == ["iscsikit/db/lock.py"]


def test_the_doc_marks_each_safety_module_against_the_goal(tmp_path: Path) -> None:
    def module(branch_percent: float) -> dict[str, Any]:
        return {
            "statements": 10,
            "branches": 10,
            "partial_branches": 1,
            "line_percent": 95.0,
            "branch_percent": branch_percent,
            "combined_percent": 90.0,
        }

    report = {
        "command": "bash scripts/coverage",
        "commit": "0" * 40,
        "started": "2026-01-01T00:00:00Z",
        "coverage_py": "7",
        "hypothesis_profile": "ci",
        "goal_branch_percent": 90.0,
        "tests": {"passed": 3, "failures": 1, "errors": 0, "skipped": 2},
        "safety_critical": ["iscsikit/a.py", "iscsikit/b.py", "iscsikit/gone.py"],
        "totals": {**module(80.0), "statements": 30},
        "modules": {"iscsikit/a.py": module(89.9), "iscsikit/b.py": module(90.0), "iscsikit/other.py": module(5.0)},
    }
    text = coverage_report.render(report)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| `")}
    assert rows["`iscsikit/a.py`"].endswith("| **below** |")
    assert rows["`iscsikit/b.py`"].endswith("| met |")
    assert rows["`iscsikit/gone.py`"].endswith("| not measured |")
    assert "`other.py`" in rows and "1 of 3 meet the goal" in text
    assert "3 passed, 1 failed, 2 skipped" in text
