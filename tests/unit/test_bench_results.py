"""Every bench script has a result file behind docs/benchmarks.md, and every result file is whole.

A figure in the document is rendered from bench/results/NAME.json (bench/report.py); these tests
keep those files honest: the shape of each (bench.results.problems: command, commit, date, load,
machine, medians that are the medians of the recorded samples, ratios of those medians), one file
per bench script made with the command bench/run_all.py lists, and a goal's "met" that follows
from the medians.
"""

from __future__ import annotations

import ast
import copy
import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench.results import RESULTS, Result, command_line, goal_met, problems
from bench.run_all import NOT_BENCHMARKS, SCRIPTS
from tests.support.tiers import ROOT

FILES = sorted(RESULTS.glob("*.json"))


def _has_main(path: Path) -> bool:
    """Whether the module runs as a script (an ``if __name__ == "__main__":`` block)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            return True
    return False


def test_every_bench_script_is_run_and_has_its_result_file() -> None:
    scripts = {p.stem for p in (ROOT / "bench").glob("*.py") if p.stem not in NOT_BENCHMARKS and _has_main(p)}
    assert scripts == set(SCRIPTS), "bench/run_all.py's SCRIPTS must list every bench script (and no other)"
    lacking = sorted(n for n in scripts if not (RESULTS / f"{n}.json").exists())
    assert not lacking, (
        f"no result file for {lacking}: run .venv/bin/python -m bench.run_all --only {','.join(lacking)}"
    )
    strays = sorted(p.stem for p in FILES if p.stem not in SCRIPTS)
    assert not strays, f"result files without a bench script: {strays}"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_result_file_shape(path: Path) -> None:
    data = json.loads(path.read_text())
    assert problems(data, path.stem) == []


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_result_file_was_made_by_the_listed_command(path: Path) -> None:
    """So that `bench.run_all` (the re-run the document tells of) repeats the committed run."""
    data = json.loads(path.read_text())
    assert shlex.split(data["command"])[1:] == ["-m", f"bench.{path.stem}", *SCRIPTS[path.stem]]


def _sample(tmp_path: Path) -> dict[str, Any]:
    result = Result("startup", {"runs": 3}, argv=["--runs", "3"])
    result.add("ours", [0.30, 0.10, 0.20], "s")
    result.add("theirs", [0.50, 0.40, 0.60], "s")
    result.ratio("ours / theirs", "ours", "theirs")
    result.goal("fast", "ours", "<", 0.15)
    result.goal("half", "ours / theirs", "<=", 0.5)
    return json.loads(result.write(tmp_path).read_text())  # type: ignore[no-any-return]


def test_a_written_file_passes_and_goals_follow_the_medians(tmp_path: Path) -> None:
    data = _sample(tmp_path)
    assert problems(data, "startup") == []
    assert data["cases"]["ours"]["median"] == 0.20
    assert data["ratios"]["ours / theirs"]["value"] == pytest.approx(0.4)
    assert not goal_met(data, "fast")  # median 0.20 s is not < 0.15 s
    assert goal_met(data, "half")


@pytest.mark.parametrize(
    ("damage", "complaint"),
    [
        (lambda d: d.pop("load"), "missing key 'load'"),
        (lambda d: d["cases"]["ours"].update(median=0.10), "is not the median of its samples"),
        (lambda d: d["cases"]["ours"]["samples"].append(9.0), "is not the median of its samples"),
        (lambda d: d["ratios"]["ours / theirs"].update(value=0.2), "the ratio of the medians"),
        (lambda d: d["goals"]["fast"].update(met=True), "computed from the medians"),
        (lambda d: d.update(commit="main"), "is not a short sha"),
        (lambda d: d.update(command=".venv/bin/python -m bench.vm_boot"), "does not run bench.startup"),
        (lambda d: d["load"].update(end=[1.0]), "load at the end"),
    ],
    ids=["no-load", "median-edited", "sample-added", "ratio-edited", "met-recorded", "commit", "command", "load"],
)
def test_a_damaged_file_is_reported(tmp_path: Path, damage: Any, complaint: str) -> None:
    data = copy.deepcopy(_sample(tmp_path))
    damage(data)
    assert any(complaint in p for p in problems(data, "startup")), problems(data, "startup")


def test_a_missed_goal_shows_in_the_document(tmp_path: Path) -> None:
    _sample(tmp_path)
    text = report.section("startup", tmp_path)
    assert "| ours | 0.200 s | 0.100 - 0.300 | 3 | < 0.15 s | **no** |" in text
    assert "| ours / theirs | ours / theirs | 0.400 | <= 0.5 | yes |" in text
    assert f"`{command_line('startup', ['--runs', '3'])}`" in text
