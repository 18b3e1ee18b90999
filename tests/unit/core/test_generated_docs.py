"""completions/ and man/ are generated from the app, committed, and actually work in each shell."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import tiers
from tests.support.tiers import ROOT

BASH = ROOT / "completions/iscsikit.bash"
ZSH = ROOT / "completions/_iscsikit"
FISH = ROOT / "completions/iscsikit.fish"


def test_committed_files_match_the_app() -> None:
    res = subprocess.run([sys.executable, "scripts/gen_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, f"regenerate with scripts/gen_docs.py:\n{res.stderr}"


def _bash_complete(words: list[str]) -> list[str]:
    script = f"""
source {BASH}
COMP_WORDS=({" ".join(repr(w) for w in words)})
COMP_CWORD={len(words) - 1}
_iscsikit
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return [line for line in res.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["iscsikit", "con"], ["config"]),
        (["iscsikit", "config", "s"], ["set", "show"]),
        (["iscsikit", "--db-root", "/x", "config", ""], ["get", "set", "show"]),
        (["iscsikit", "doctor", "--f"], ["--fix"]),
        (["iscsikit", "doctor", "--js"], ["--json"]),
        (["iscsikit", "--h"], ["--help", "--host"]),
    ],
)
def test_bash_completion(words: list[str], expected: list[str]) -> None:
    assert _bash_complete(words) == expected


def test_bash_completes_files_after_path_options(tmp_path: object) -> None:
    got = _bash_complete(["iscsikit", "--config", str(ROOT / "pyproj")])
    assert got == [str(ROOT / "pyproject.toml")]


def test_zsh_completion(request: pytest.FixtureRequest) -> None:
    tiers.require(request, "zsh")
    script = f"""
compadd() {{ shift $(( ${{@[(i)--]}} )); print -rl -- "$@"; }}
_describe() {{ local -a c; c=("${{(@P)${{@[-1]}}}}"); print -rl -- ${{c%%:*}}; }}
_files() {{ print FILES; }}
source {ZSH} >/dev/null 2>&1 || true
words=(iscsikit --json config s); CURRENT=4; _iscsikit
print -r -- SEP
words=(iscsikit doctor --f); CURRENT=3; _iscsikit
print -r -- SEP
words=(iscsikit --config x); CURRENT=3; _iscsikit
"""
    res = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, text=True, check=True)
    first, second, third = res.stdout.split("SEP\n")
    assert first.split() == ["get", "set", "show"]  # _describe gets every child; zsh filters by prefix itself
    assert "--fix" in second.split() and "--json" in second.split()
    assert third.split() == ["FILES"]


def test_fish_completion(request: pytest.FixtureRequest) -> None:
    tiers.require(request, "fish")
    script = f"source {FISH}; complete -C 'iscsikit config s'; echo ===; complete -C 'iscsikit doctor --f'"
    res = subprocess.run(["fish", "-c", script], capture_output=True, text=True, check=True)
    first, second = res.stdout.split("===\n")
    assert [line.split("\t")[0] for line in first.splitlines()] == ["set", "show"]
    assert [line.split("\t")[0] for line in second.splitlines()] == ["--fix"]


def test_man_pages_render_without_warnings(request: pytest.FixtureRequest) -> None:
    tiers.require(request, "groff")
    pages = sorted((ROOT / "man").glob("*.1"))
    assert {p.name for p in pages} >= {"iscsikit.1", "iscsikit-doctor.1", "iscsikit-config.1"}
    for page in pages:
        res = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0 and res.stderr == "", f"{page.name}: {res.stderr}"
    text = subprocess.run(
        ["groff", "-man", "-Tascii", "-P-bcou", str(ROOT / "man/iscsikit.1")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ISCSI_ERR_SESS_EXISTS" in text and "EXIT STATUS" in text
