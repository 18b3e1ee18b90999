"""The wheel users install: what it carries besides the package (man pages, shell completions)
and its metadata. Built offline from a copy of the tree (the venv's setuptools, no index)."""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Where each generated file must land under the install prefix.
DATA_DIRS = {
    "man": ("share/man/man1", "*.1"),
    "completions/iscsikit.bash": ("share/bash-completion/completions", None),
    "completions/_iscsikit": ("share/zsh/site-functions", None),
    "completions/iscsikit.fish": ("share/fish/vendor_completions.d", None),
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[zipfile.ZipFile, str]:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("iscsikit", "man", "completions"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), "."],
        cwd=src, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    # The table form of the license made setuptools warn at every install.
    assert "License" not in res.stderr and "Deprecat" not in res.stderr, res.stderr
    (path,) = out.glob("iscsikit-*.whl")
    return zipfile.ZipFile(path), path.name.split("-")[1]


def test_the_wheel_installs_the_man_pages_and_completions_where_tools_look(wheel: tuple[zipfile.ZipFile, str]) -> None:
    zf, version = wheel
    data = f"iscsikit-{version}.data/data/"
    shipped = {n.removeprefix(data) for n in zf.namelist() if n.startswith(data)}
    want = set()
    for source, (target, pattern) in DATA_DIRS.items():
        files = sorted((ROOT / source).glob(pattern)) if pattern else [ROOT / source]
        assert files, source
        want |= {f"{target}/{f.name}" for f in files}
    assert shipped == want
    for name in want:  # the generated files as committed, byte for byte
        source = ROOT / ("man" if name.startswith("share/man/") else "completions") / Path(name).name
        assert zf.read(data + name) == source.read_bytes(), name


def test_the_wheel_says_its_license_as_an_spdx_expression(wheel: tuple[zipfile.ZipFile, str]) -> None:
    zf, version = wheel
    meta = email.parser.Parser().parsestr(zf.read(f"iscsikit-{version}.dist-info/METADATA").decode())
    assert meta["License-Expression"] == "Apache-2.0" and meta["License"] is None
    assert meta["Name"] == "iscsikit" and "iscsikit/py.typed" in zf.namelist()
