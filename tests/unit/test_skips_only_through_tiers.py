"""One place decides every skip: tests/support/tiers.py (loud, and a failure under ``CI=true``).

Any other way for a test not to run, or to pass while failing, bypasses that rule: ``pytest.skip``,
``pytest.importorskip``, ``@pytest.mark.skip``/``skipif``, ``xfail`` (marker or call), unittest's
``skip``/``skipIf``/``skipUnless``/``skipTest``/``SkipTest``. This test reads every Python file
under tests/ and names each use as file:line; use ``tiers.require``, ``tiers.require_root``,
``tiers.require_module`` or ``tiers.unavailable`` instead.
"""

from __future__ import annotations

import ast

from tests.support.tiers import ROOT

TESTS = ROOT / "tests"
ALLOWED = {TESTS / "support" / "tiers.py"}

#: Dotted names (as written) that skip, or accept a failure, outside tiers.py.
_FORBIDDEN_ATTRS = {
    "pytest.skip",
    "pytest.importorskip",
    "pytest.xfail",
    "pytest.mark.skip",
    "pytest.mark.skipif",
    "pytest.mark.xfail",
    "unittest.skip",
    "unittest.skipIf",
    "unittest.skipUnless",
    "unittest.SkipTest",
    "unittest.expectedFailure",
}
#: Names that skip however they were imported (``self.skipTest``, ``from unittest import SkipTest``).
_FORBIDDEN_TAILS = {"skipTest", "SkipTest", "importorskip", "expectedFailure"}
_FORBIDDEN_IMPORTS = {
    "pytest": {"skip", "importorskip", "xfail"},
    "unittest": {"skip", "skipIf", "skipUnless", "SkipTest", "expectedFailure"},
    "_pytest.outcomes": {"skip", "importorskip", "xfail", "Skipped", "XFailed"},
}


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def find_skips(source: str, filename: str = "<test>") -> list[str]:
    """Each skip mechanism in ``source`` other than tiers', as ``filename:line: what``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name in _FORBIDDEN_ATTRS or node.attr in _FORBIDDEN_TAILS:
                found.append((node.lineno, name or node.attr))
        elif isinstance(node, ast.Name) and node.id in _FORBIDDEN_TAILS:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.ImportFrom) and node.module in _FORBIDDEN_IMPORTS:
            for alias in node.names:
                if alias.name in _FORBIDDEN_IMPORTS[node.module]:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
    # "pytest.mark.skipif" also contains the attribute "pytest.mark": report each line once per name
    unique = sorted(set(found))
    return [f"{filename}:{line}: {what}" for line, what in unique]


def test_no_test_skips_except_through_tiers() -> None:
    offenders: list[str] = []
    for path in sorted(TESTS.rglob("*.py")):
        if path in ALLOWED or ".venv" in path.parts:
            continue
        offenders += find_skips(path.read_text(), str(path.relative_to(ROOT)))
    assert not offenders, "skips that bypass tests/support/tiers.py (use tiers.require*/unavailable):\n" + "\n".join(
        offenders
    )


def test_the_scan_finds_every_mechanism() -> None:
    """The scanner itself can fail: one sample of each mechanism, each found on its line."""
    sample = """\
import pytest, unittest
from unittest import SkipTest
from pytest import importorskip as imp
pytest.skip("x")
mod = pytest.importorskip("uvloop")
@pytest.mark.skipif(True, reason="r")
def a(): pass
@pytest.mark.skip
def b(): pass
@pytest.mark.xfail(reason="r")
def c(): pass
@unittest.skipUnless(False, "r")
def d(): pass
class T(unittest.TestCase):
    def test(self): self.skipTest("r")
raise SkipTest("r")
pytest.xfail("r")
tiers.unavailable(request, "fine")
"""
    lines = [int(entry.split(":")[1]) for entry in find_skips(sample)]
    assert sorted(set(lines)) == [2, 3, 4, 5, 6, 8, 10, 12, 15, 16, 17], find_skips(sample)
