"""The Hypothesis profiles (tests/support/profiles.py) decide how every property test draws.

Under ``ci`` (the default) a run is reproducible; under ``explore`` the counts scale up. A test
that pins ``max_examples=<number>``, ``derandomize``, ``database`` or a ``@seed`` would escape
one or the other, so this reads every test file and names such a setting as file:line.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from hypothesis import settings

from tests.support import profiles
from tests.support.tiers import ROOT

TESTS = ROOT / "tests"
_PROFILE_KEYS = {"derandomize", "database", "print_blob"}


def find_pinned(source: str, filename: str = "<test>") -> list[str]:
    """``settings(...)`` arguments that belong to the profile, and ``@seed``, as file:line: what."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name == "seed":
            found.append(f"{filename}:{node.lineno}: @seed (the ci profile derandomizes; explore must stay random)")
        if name not in ("settings", "register_profile"):
            continue
        for kw in node.keywords:
            if kw.arg == "max_examples" and isinstance(kw.value, ast.Constant):
                found.append(f"{filename}:{node.lineno}: max_examples={kw.value.value} (write examples(N))")
            elif kw.arg in _PROFILE_KEYS:
                found.append(f"{filename}:{node.lineno}: {kw.arg}= (the profile decides it)")
    return found


def test_no_test_pins_what_the_profile_decides() -> None:
    offenders: list[str] = []
    for path in sorted(TESTS.rglob("*.py")):
        if path == TESTS / "support" / "profiles.py":
            continue
        offenders += find_pinned(path.read_text(), str(path.relative_to(ROOT)))
    assert not offenders, "Hypothesis settings that bypass tests/support/profiles.py:\n" + "\n".join(offenders)


def test_the_scan_finds_pinned_settings() -> None:
    sample = """\
@settings(max_examples=300, deadline=None)
@settings(max_examples=examples(300))
@settings(derandomize=True)
@seed(1234)
def t(): pass
"""
    assert [int(f.split(":")[1]) for f in find_pinned(sample)] == [1, 3, 4]


def test_ci_is_reproducible_and_explore_scales() -> None:
    ci, explore = settings.get_profile("ci"), settings.get_profile("explore")
    assert ci.derandomize and ci.database is None and ci.deadline is None and ci.print_blob
    assert not explore.derandomize and explore.max_examples == ci.max_examples * profiles.EXPLORE_FACTOR
    assert profiles.examples(300, ci) == 300
    assert profiles.examples(300, explore) == 300 * profiles.EXPLORE_FACTOR


def test_a_plain_run_uses_ci() -> None:
    env = {k: v for k, v in os.environ.items() if k != profiles.PROFILE_ENV}
    out = subprocess.run(
        [sys.executable, "-c", "from tests.support import profiles; print(profiles.load())"],
        capture_output=True, text=True, cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "ci"
