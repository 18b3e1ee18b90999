"""Docs cannot rot: every example in README.md and docs/*.md is run by some test.

Every fenced block carries a language tag. ``console``, ``sh`` and ``python`` blocks are
examples and must be run: for each Markdown file and each of those kinds, a test module under
tests/ names the file and extracts that kind (``transcripts`` for console blocks, a
```` ```sh ```` / ```` ```python ```` pattern otherwise); those modules also check that they run
every block of their kind (a count), so a new example that nothing runs fails there. ``text``,
``json``, ``toml``, ``ini`` and ``yaml`` blocks are samples (output, layouts, config) and must
not hide a command transcript. docs/benchmarks.md is the exception: its commands are the
benchmarks, run by hand on a quiet machine, so it has no fenced examples at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.tiers import ROOT

EXAMPLES = {"console", "sh", "python"}
SAMPLES = {"text", "json", "toml", "ini", "yaml"}
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
THIS = Path(__file__).resolve()


def fences(path: Path) -> list[tuple[int, str, str]]:
    """(line, language, body) of every fenced block; an unclosed fence is an error."""
    out: list[tuple[int, str, str]] = []
    lines = path.read_text().split("\n")
    i = 0
    while i < len(lines):
        if lines[i].startswith("```"):
            lang, start = lines[i][3:].strip(), i
            i += 1
            while i < len(lines) and lines[i].rstrip() != "```":
                i += 1
            assert i < len(lines), f"{path.name}:{start + 1}: fence never closed"
            out.append((start + 1, lang, "\n".join(lines[start + 1 : i])))
        i += 1
    return out


def test_there_are_docs_to_check() -> None:
    names = {p.name for p in DOCS}
    assert {"README.md", "cleanup.md", "connector.md", "database.md", "target.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_block_says_what_it_is(doc: Path) -> None:
    for line, lang, body in fences(doc):
        where = f"{doc.relative_to(ROOT)}:{line}"
        assert lang in EXAMPLES | SAMPLES, f"{where}: fence tagged {lang!r}; use one of {sorted(EXAMPLES | SAMPLES)}"
        if lang in SAMPLES:
            prompts = [s for s in body.splitlines() if s.startswith("$ ")]
            assert not prompts, f"{where}: a {lang} block with commands ({prompts[0]!r}): make it a console block"


def _test_sources() -> dict[Path, str]:
    return {p: p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.resolve() != THIS}


def _runs(source: str, lang: str) -> bool:
    if lang == "console":
        return "transcripts" in source
    return bool(re.search(rf"```{lang}\\?n|```\({lang}\||\|{lang}\)|\b{lang}_blocks\b", source))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_kind_of_example_is_run_by_a_test(doc: Path) -> None:
    kinds = {lang for _, lang, _ in fences(doc) if lang in EXAMPLES}
    if doc.name == "benchmarks.md":
        assert not kinds, "docs/benchmarks.md: benchmark commands are not fenced examples (see this module)"
        return
    sources = _test_sources()
    for lang in sorted(kinds):
        runners = [p for p, src in sources.items() if doc.name in src and _runs(src, lang)]
        assert runners, f"{doc.relative_to(ROOT)}: its {lang} blocks are run by no test under tests/"
