"""The safety-mutant runner (tests/support/mutants.py): its list is current, and it can fail.

The full run is a check of ``scripts/test`` (``scripts/mutation-regression``); here, only that
every snippet of ``tests/mutants.toml`` is still found exactly once, that a list gone stale is an
error naming the mutant, and that a mutant a weak test cannot notice is reported as surviving.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.mutants import ListError, Mutant, load, main, run_one


def test_the_list_matches_the_code() -> None:
    mutants = load()
    assert len({m.id for m in mutants}) == len(mutants) >= 12
    assert all(m.tests and m.rule for m in mutants)


def _tree(root: Path) -> Path:
    (root / "iscsikit").mkdir(parents=True)
    (root / "iscsikit/__init__.py").write_text("")
    (root / "iscsikit/rule.py").write_text("def allowed(n: int) -> bool:\n    return n <= 8\n")
    (root / "tests").mkdir()
    (root / "tests/__init__.py").write_text("")
    (root / "tests/test_rule.py").write_text(
        "from iscsikit.rule import allowed\n\n\n"
        "def test_weak() -> None:\n    assert allowed(1)\n\n\n"
        "def test_strong() -> None:\n    assert allowed(8) and not allowed(9)\n"
    )
    (root / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n')
    return root


def _mutant(tests: tuple[str, ...], find: str = "    return n <= 8\n") -> Mutant:
    return Mutant("bound", "at most 8", "iscsikit/rule.py", find, "    return True\n", tests)


def _write_list(path: Path, m: Mutant) -> Path:
    path.write_text(
        f'[[mutant]]\nid = "{m.id}"\nrule = "{m.rule}"\nfile = "{m.file}"\n'
        f"find = {m.find!r}\nreplace = {m.replace!r}\ntests = {list(m.tests)!r}\n".replace("'", '"')
    )
    return path


def test_a_snippet_not_found_exactly_once_is_an_error_naming_the_mutant(tmp_path: Path) -> None:
    root = _tree(tmp_path / "repo")
    gone = _write_list(tmp_path / "gone.toml", _mutant(("tests/test_rule.py::test_strong",), "return n < 8\n"))
    with pytest.raises(ListError, match=r"mutant #1 \(bound\): the snippet occurs 0 times in iscsikit/rule.py"):
        load(gone, root)
    (root / "iscsikit/rule.py").write_text("def allowed(n: int) -> bool:\n    return n <= 8\n    return n <= 8\n")
    twice = _write_list(tmp_path / "twice.toml", _mutant(("tests/test_rule.py::test_strong",)))
    with pytest.raises(ListError, match="occurs 2 times"):
        load(twice, root)


def test_a_weak_test_lets_the_mutant_survive_and_a_strong_one_kills_it(tmp_path: Path) -> None:
    root = _tree(tmp_path / "repo")
    (tmp_path / "work").mkdir()
    weak = run_one(root, _mutant(("tests/test_rule.py::test_weak",)), tmp_path / "work")
    assert not weak.killed and weak.survivors == ("tests/test_rule.py::test_weak",)
    strong = run_one(root, _mutant(("tests/test_rule.py::test_strong",)), tmp_path / "work2")
    assert strong.killed
    assert (root / "iscsikit/rule.py").read_text().endswith("return n <= 8\n")  # the checkout is never changed


def test_an_unknown_id_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-mutant"]) == 2
    assert "unknown mutant id(s): no-such-mutant" in capsys.readouterr().err
