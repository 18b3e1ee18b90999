"""Every input that once broke a fuzz harness's invariants (fuzz/regressions/NAME/), and every seed
(fuzz/corpus/NAME/), replayed through the same ``check`` the harness runs under libFuzzer."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fuzz._common import CORPUS, HARNESSES, REGRESSIONS


def _inputs(root: Path) -> list[tuple[str, Path]]:
    out = []
    for name in HARNESSES:
        out += [(name, p) for p in sorted((root / name).glob("*")) if p.is_file() and not p.name.startswith(".")]
    return out


def _id(item: object) -> str:
    return f"{item.parent.name}/{item.name}" if isinstance(item, Path) else str(item)


@pytest.mark.parametrize(("name", "path"), _inputs(REGRESSIONS), ids=_id)
def test_regression_input_keeps_every_invariant(name: str, path: Path) -> None:
    importlib.import_module(f"fuzz.fuzz_{name}").check(path.read_bytes())


@pytest.mark.parametrize(("name", "path"), _inputs(CORPUS), ids=_id)
def test_seed_keeps_every_invariant(name: str, path: Path) -> None:
    importlib.import_module(f"fuzz.fuzz_{name}").check(path.read_bytes())


def test_every_harness_has_seeds_and_a_regression_folder() -> None:
    for name in HARNESSES:
        assert any((CORPUS / name).iterdir()), name
        assert (REGRESSIONS / name).is_dir(), name
