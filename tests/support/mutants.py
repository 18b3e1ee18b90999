"""The safety-mutant regression set: each rule in ``tests/mutants.toml`` must have a test that kills it.

A mutant is one exact source snippet replaced by a broken version (the rule removed). For each,
the runner copies ``iscsikit/``, ``tests/`` and ``pyproject.toml`` into a temporary directory,
applies the replacement there (never in the checkout), runs the mutant's named tests with this
interpreter's pytest, and requires every one of them to FAIL. The same tests run once first on an
unmutated copy and must pass, so a kill means the rule broke, not the test. A snippet that is not
found exactly once is an error before anything runs: the list cannot rot silently when code moves.

Usage: ``scripts/mutation-regression [--list] [--jobs N] [ID...]``; exit 0 when every mutant is
killed, 1 when one survives (or the baseline fails), 2 for a bad list or unknown id.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIST = ROOT / "tests" / "mutants.toml"
COPIED = ("iscsikit", "tests", "pyproject.toml")
#: Seconds one pytest run may take; a mutant whose tests hang counts as killed (they did not pass).
TIMEOUT = 240
_PASSED = re.compile(r"^PASSED (\S+)", re.MULTILINE)


class ListError(Exception):
    """The mutant list is malformed or out of date with the code."""


@dataclass(frozen=True)
class Mutant:
    id: str
    rule: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    id: str
    killed: bool
    seconds: float
    survivors: tuple[str, ...]
    output: str


def load(path: Path = LIST, root: Path = ROOT) -> list[Mutant]:
    """Read and check the list: fields present, ids unique, each snippet found exactly once."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ListError(f"{path}: {exc}") from None
    mutants: list[Mutant] = []
    for n, entry in enumerate(raw.get("mutant", []), 1):
        where = f"{path.name} mutant #{n} ({entry.get('id', '?')})"
        missing = [k for k in ("id", "rule", "file", "find", "replace", "tests") if k not in entry]
        if missing:
            raise ListError(f"{where}: missing {', '.join(missing)}")
        m = Mutant(entry["id"], entry["rule"], entry["file"], entry["find"], entry["replace"], tuple(entry["tests"]))
        if not m.tests:
            raise ListError(f"{where}: no tests named to kill it")
        if m.find == m.replace:
            raise ListError(f"{where}: the replacement equals the snippet")
        try:
            source = (root / m.file).read_text()
        except OSError as exc:
            raise ListError(f"{where}: {exc}") from None
        count = source.count(m.find)
        if count != 1:
            raise ListError(f"{where}: the snippet occurs {count} times in {m.file}, not once: update the list")
        if any(x.id == m.id for x in mutants):
            raise ListError(f"{where}: duplicate id")
        mutants.append(m)
    if not mutants:
        raise ListError(f"{path}: no [[mutant]] entries")
    return mutants


def _copy(root: Path, into: Path) -> Path:
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=shutil.ignore_patterns("__pycache__", ".hypothesis"))
        else:
            shutil.copy2(src, into / name)
    return into


def _pytest(tree: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1", HYPOTHESIS_PROFILE="ci")
    # No -x: every named test must fail, so all of them run.
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]
    try:
        proc = subprocess.run(
            [*cmd, "--rootdir", str(tree), *tests],
            cwd=tree,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:  # a mutant that hangs its tests is caught too
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return -1, out + f"\n(timed out after {TIMEOUT} s)\n"
    return proc.returncode, proc.stdout


def _passed(output: str, tests: tuple[str, ...]) -> tuple[str, ...]:
    """The named tests (or any of their parametrized cases) that pytest reports as PASSED."""
    done = _PASSED.findall(output)
    return tuple(t for t in tests if any(p == t or p.startswith(t + "[") for p in done))


def baseline(root: Path, mutants: list[Mutant], work: Path) -> tuple[bool, str]:
    """Every named test passes on an unmutated copy, and that copy is what gets imported."""
    tree = _copy(root, work / "baseline")
    where = subprocess.run(
        [sys.executable, "-c", "import iscsikit, tests; print(iscsikit.__file__); print(tests.__file__)"],
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=str(tree)),
        capture_output=True,
        text=True,
        check=False,
    )
    if where.returncode or any(not Path(f).is_relative_to(tree) for f in where.stdout.split()):
        return False, f"the copy's packages are not the ones imported: {where.stdout}{where.stderr}"
    tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
    rc, out = _pytest(tree, tests)
    return rc == 0 and len(_passed(out, tests)) == len(tests), out


def run_one(root: Path, m: Mutant, work: Path) -> Result:
    start = time.monotonic()
    tree = _copy(root, work / m.id)
    target = tree / m.file
    target.write_text(target.read_text().replace(m.find, m.replace, 1))
    rc, out = _pytest(tree, m.tests)
    survivors = _passed(out, m.tests)
    collected = "no tests ran" not in out and rc not in (4, 5)  # 4: usage error, 5: nothing collected
    killed = rc != 0 and not survivors and collected
    return Result(m.id, killed, time.monotonic() - start, survivors, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mutation-regression", description=__doc__.split("\n\n")[0])
    ap.add_argument("ids", nargs="*", help="run only these mutants")
    ap.add_argument("--list", action="store_true", help="print the mutants and the rules they break, run nothing")
    ap.add_argument("--jobs", type=int, default=2, help="mutants run at once (default 2)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print pytest's output for survivors")
    args = ap.parse_args(argv)
    try:
        mutants = load()
    except ListError as exc:
        print(f"mutation-regression: {exc}", file=sys.stderr)
        return 2
    unknown = [i for i in args.ids if i not in {m.id for m in mutants}]
    if unknown:
        print(f"mutation-regression: unknown mutant id(s): {', '.join(unknown)} (see --list)", file=sys.stderr)
        return 2
    if args.ids:
        mutants = [m for m in mutants if m.id in args.ids]
    if args.list:
        for m in mutants:
            print(f"{m.id:32} {m.file}: {m.rule}")
            for t in m.tests:
                print(f"{'':32}   killed by {t}")
        return 0
    with tempfile.TemporaryDirectory(prefix="iscsikit-mutants-") as tmp:
        work = Path(tmp)
        start = time.monotonic()
        ok, out = baseline(ROOT, mutants, work)
        if not ok:
            print(out)
            print("mutation-regression: the named tests do not all pass on the unmutated code", file=sys.stderr)
            return 1
        print(f"baseline: {len(mutants)} mutants' tests pass unmutated ({time.monotonic() - start:.1f} s)")
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            results = list(pool.map(lambda m: run_one(ROOT, m, work), mutants))
    print(f"{'mutant':32} {'killed':6} {'seconds':>7}")
    for r in results:
        print(f"{r.id:32} {'yes' if r.killed else 'NO':6} {r.seconds:7.1f}")
        if not r.killed:
            print(f"{'':32}   survived: {', '.join(r.survivors) or '(no test failed or none ran)'}")
            if args.verbose:
                print(r.output)
    survived = [r.id for r in results if not r.killed]
    print(f"{len(results) - len(survived)} of {len(results)} killed in {time.monotonic() - start:.1f} s")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
