"""Mutation testing of the safety-critical modules with mutmut, and its report.

    scripts/mutation [MODULE...]          # mutate (all listed modules, or these), test, report
    scripts/mutation --all MODULE         # re-test every mutant of MODULE, not only those without a result
    scripts/mutation --retry-survivors MODULE  # also re-test its survivors (after adding tests)
    scripts/mutation --report             # only recompute the report from the last run's results
    scripts/mutation --survivors MODULE   # the survivors nobody has excused yet, as diffs
    scripts/mutation --template MODULE    # the same, as entries to paste into equivalent.toml

The modules are pyproject's [tool.mutmut] only_mutate list. mutmut keeps its results in mutants/
(git-ignored) and re-tests only the mutants of functions that changed since, so a second run is
incremental (with modules named: the mutants without a result; mutants of a function changed
since appear after the run that regenerates them, as not checked, and run the next time).
The report (tests/mutation/report.json, rendered into docs/testing.md by
scripts/gen_docs.py) counts per module: mutants, killed (a test failed or timed out), survived,
and equivalent (survivors listed in tests/mutation/equivalent.toml with a reason). The score is
killed / (mutants - equivalent - log text); the goal is >= 90% on every module.

Log text: a survivor whose only change is inside the arguments of a logging call statement
(``log.warning("could not delete iface %s", iface)`` -> ``log.warning(None, iface)``) is counted
apart, by this one rule, instead of one equivalent.toml entry each: the call still happens at the
same place and level, and what the program does does not change. Logging is no safety rule; the
errors users act on are exceptions and CLI output, which are tested. Anything else in the same
mutant (the level, a statement around it) makes it an ordinary survivor.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "tests" / "mutation" / "report.json"
EQUIVALENT = ROOT / "tests" / "mutation" / "equivalent.toml"
GOAL = 90.0
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def modules() -> list[str]:
    """The modules under mutation, from pyproject.toml (one place for the list)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data["tool"]["mutmut"]["only_mutate"])


def _module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


@dataclass(frozen=True)
class Excuse:
    mutant: str
    line: str
    reason: str


def load_equivalents(path: Path = EQUIVALENT) -> dict[str, dict[str, Excuse]]:
    """Per module, mutant name -> its excuse. Bad entries stop with the file and entry named."""
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    out: dict[str, dict[str, Excuse]] = {}
    for module, entries in data.items():
        if module not in modules():
            raise SystemExit(f"{path}: [[{module!r}]] is not a module under mutation (pyproject only_mutate)")
        for i, entry in enumerate(entries):
            missing = {"mutant", "line", "reason"} - set(entry)
            if missing or not str(entry.get("reason", "")).strip():
                raise SystemExit(f"{path}: [[{module!r}]] entry {i + 1} needs mutant, line and a non-empty reason")
            out.setdefault(module, {})[entry["mutant"]] = Excuse(entry["mutant"], entry["line"], entry["reason"])
    return out


def _statuses(module: str) -> dict[str, str] | None:
    from mutmut.stats import status_by_exit_code

    meta = ROOT / "mutants" / f"{module}.meta"
    if not meta.exists():
        return None
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return {name: status_by_exit_code[code] for name, code in codes.items()}


def _mutated_lines(module: str, mutant: str) -> list[str]:
    """The '+' lines of the mutant's diff (what the mutation wrote)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        diff = get_diff_for_mutant(mutant, path=Path(module))
    finally:
        os.chdir(cwd)
    return [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]


def _diff(module: str, mutant: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return get_diff_for_mutant(mutant, path=Path(module))
    finally:
        os.chdir(cwd)


_LOG_NAMES = {"log", "logger", "_log"}
_LOG_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def _functions(module: str, mutant: str) -> tuple[str, str]:
    """The source of the mutated function, unmutated and mutated (as mutmut's diff reads them)."""
    import libcst as cst
    from mutmut.mutation.diff_apply import (
        read_functions_from_index,
        read_mutant_function,
        read_mutants_module,
        read_original_function,
    )

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        functions = read_functions_from_index(mutant, Path(module))
        if functions is None:
            tree = read_mutants_module(Path(module))
            functions = (read_original_function(tree, mutant), read_mutant_function(tree, mutant))
    finally:
        os.chdir(cwd)
    orig, mutated = (cst.Module([f]).code for f in functions)
    return orig, mutated


class _LogArgsBlanked(ast.NodeTransformer):
    """Drops the arguments of every logging call statement (``log.LEVEL(...)`` as a statement)."""

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        call = node.value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id in _LOG_NAMES
            and call.func.attr in _LOG_LEVELS
        ):
            call.args, call.keywords = [], []
            return node
        return self.generic_visit(node)


def is_log_text_only(orig: str, mutated: str) -> bool:
    """Whether two versions of a function differ only inside logging calls' arguments."""
    before, after = (ast.parse(textwrap.dedent(code)) for code in (orig, mutated))
    if ast.dump(before) == ast.dump(after):
        return False  # no change (or one in formatting only) is no mutant
    blank = _LogArgsBlanked()
    return ast.dump(blank.visit(before)) == ast.dump(blank.visit(after))


@dataclass
class ModuleResult:
    module: str
    mutants: int
    killed: int
    survived: list[str]  # unexcused survivors (survived, no tests, suspicious)
    not_run: int  # mutants without a result yet (they count as not killed)
    equivalent: int
    stale: list[str]  # excuses that no longer match a surviving mutant
    log_text: int = 0  # survivors that change only a logging call's arguments (module docstring)

    @property
    def score(self) -> float:
        judged = self.mutants - self.equivalent - self.log_text
        return 100.0 * self.killed / judged if judged else 100.0


def evaluate(module: str, excuses: dict[str, Excuse]) -> ModuleResult | None:
    statuses = _statuses(module)
    if statuses is None:
        return None
    killed = sum(1 for s in statuses.values() if s in KILLED)
    not_run = sum(1 for s in statuses.values() if s == "not checked")
    survivors = sorted(n for n, s in statuses.items() if s not in KILLED and s not in ("skipped", "not checked"))
    excused, stale = 0, []
    for name, excuse in excuses.items():
        if statuses.get(name) == "not checked":
            continue  # not run (yet) since its function changed: judged after the next run
        if name in survivors and excuse.line.strip() in _mutated_lines(module, name):
            excused += 1
        else:
            stale.append(name)
    unexcused = [n for n in survivors if n not in excuses or n in stale]
    log_text = [n for n in unexcused if is_log_text_only(*_functions(module, n))]
    unexcused = [n for n in unexcused if n not in log_text]
    total = sum(1 for s in statuses.values() if s != "skipped")
    return ModuleResult(
        module, mutants=total, killed=killed, survived=unexcused, not_run=not_run, equivalent=excused, stale=stale,
        log_text=len(log_text),
    )  # fmt: skip


def _commit() -> str:
    res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "iscsikit", "tests"], cwd=ROOT, capture_output=True)
    return res.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def report(write: bool = True) -> int:
    """Recompute every module's result from mutants/; write report.json; 1 if a goal is missed."""
    import mutmut

    excuses = load_equivalents()
    old = json.loads(REPORT.read_text()) if REPORT.exists() else {"modules": {}}
    entries: dict[str, Any] = {}
    failed = False
    for module in modules():
        result = evaluate(module, excuses.get(module, {}))
        if result is None:
            if module in old["modules"]:
                entries[module] = old["modules"][module]
            print(f"{module}: not run yet (scripts/mutation {module})")
            continue
        entries[module] = {
            "mutants": result.mutants,
            "killed": result.killed,
            "survived": len(result.survived),
            "not_run": result.not_run,
            "equivalent": result.equivalent,
            "log_text": result.log_text,
            "score": round(result.score, 1),
            "commit": _commit(),
            "date": dt.date.today().isoformat(),
        }
        mark = "ok " if result.score >= GOAL else "LOW"
        print(
            f"{mark} {module}: {result.score:.1f}% killed"
            f" ({result.killed}/{result.mutants - result.equivalent - result.log_text}),"
            f" {len(result.survived)} survived, {result.equivalent} equivalent, {result.log_text} log text,"
            f" {result.not_run} not run"
        )
        for name in result.stale:
            print(f"    stale excuse in equivalent.toml: {name} (no longer a survivor with that line)")
        failed |= result.score < GOAL or bool(result.stale)
    if write:
        REPORT.write_text(
            json.dumps({"tool": f"mutmut {mutmut.__version__}", "goal": GOAL, "modules": entries}, indent=2) + "\n"
        )
    return 1 if failed else 0


def survivors(module: str, template: bool) -> int:
    result = evaluate(module, load_equivalents().get(module, {}))
    if result is None:
        print(f"{module}: not run yet (scripts/mutation {module})", file=sys.stderr)
        return 2
    for name in result.survived:
        if template:
            line = next(iter(_mutated_lines(module, name)), "")
            print(f'[["{module}"]]\nmutant = {json.dumps(name)}\nline = {json.dumps(line)}\nreason = ""\n')
        else:
            print(_diff(module, name) + "\n")
    print(f"# {len(result.survived)} unexcused survivors in {module}", file=sys.stderr)
    return 0


def _pending(module: str) -> list[str] | None:
    """The module's mutants without a result yet, or None when it has never been run."""
    meta = ROOT / "mutants" / f"{module}.meta"
    if not meta.exists():
        return None
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    return sorted(name for name, code in codes.items() if code is None)


def run(selected: list[str], everything: bool = False, retry: bool = False) -> int:
    known = modules()
    for m in selected:
        if m not in known:
            print(f"scripts/mutation: {m} is not under mutation; choose from pyproject's only_mutate:", file=sys.stderr)
            print("  " + "\n  ".join(known), file=sys.stderr)
            return 2
    # mutmut re-tests every mutant named on its command line, so naming a module's glob would
    # re-run all of it: name only the mutants without a result (a function that changed since
    # has its mutants reset to none), unless --all. With no module, mutmut itself is incremental.
    names: list[str] = []
    for m in selected:
        pending = None if everything else _pending(m)
        if pending is None:
            names.append(f"{_module_name(m)}.*")
        else:
            names += pending
            print(f"{m}: {len(pending)} mutants without a result", file=sys.stderr)
            if retry:  # tests were added since: try the unexcused survivors again
                result = evaluate(m, load_equivalents().get(m, {}))
                again = [] if result is None else result.survived
                names += again
                print(f"{m}: {len(again)} survivors to try again", file=sys.stderr)
    if selected and not names:
        return report()
    # Tests that run scripts/* find the venv relative to the tree they run in: mutants/.
    (ROOT / "mutants").mkdir(exist_ok=True)
    if not (ROOT / "mutants" / ".venv").exists():
        (ROOT / "mutants" / ".venv").symlink_to(ROOT / ".venv")
    env = {**os.environ, "ISCSIKIT_SHARED": os.environ.get("ISCSIKIT_SHARED", str(ROOT.parent / "shared"))}
    res = subprocess.run([str(ROOT / ".venv" / "bin" / "mutmut"), "run", *names], cwd=ROOT, env=env)
    if res.returncode != 0:
        print(f"mutmut run exited {res.returncode}", file=sys.stderr)
        return res.returncode
    return report()


def render() -> str:
    """docs/testing.md's table, from report.json (scripts/gen_docs.py)."""
    if not REPORT.exists():
        return "No report yet: run `scripts/mutation`."
    data = json.loads(REPORT.read_text())
    rows = [
        "| module | mutants | killed | survived | equivalent | log text | not run | score | goal met | run at |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for module in modules():
        e = data["modules"].get(module)
        if e is None:
            rows.append(f"| `{module}` | | | | | | all | not run | no | |")
            continue
        met = "yes" if e["score"] >= data["goal"] else "**no**"
        rows.append(
            f"| `{module}` | {e['mutants']} | {e['killed']} | {e['survived']} | {e['equivalent']} |"
            f" {e.get('log_text', 0)} |"
            f" {e.get('not_run', 0)} |"
            f" {e['score']:.1f}% | {met} | {e['commit']}, {e['date']} |"
        )
    note = f"\n\n{data['note']}" if data.get("note") else ""
    return (
        f"Generated from `tests/mutation/report.json` ({data['tool']}; goal {data['goal']:.0f}% killed on every"
        " module; score = killed / (mutants - equivalent - log text), a mutant not run yet counts as not killed;"
        " log text: survivors that change only a logging call's arguments, see docs/testing.md):\n\n"
        + "\n".join(rows)
        + note
    )


# NAME -> renderer of the markdown between <!-- generated: NAME --> markers (scripts/gen_docs.py).
DOC_SECTIONS: dict[str, Callable[[], str]] = {"mutation": render}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="paths such as iscsikit/db/lock.py (default: all listed)")
    parser.add_argument("--all", action="store_true", help="re-test every mutant of the named modules")
    parser.add_argument("--retry-survivors", action="store_true", help="also re-test the unexcused survivors")
    parser.add_argument("--report", action="store_true", help="only recompute the report from mutants/")
    parser.add_argument("--survivors", metavar="MODULE", help="print the unexcused survivors' diffs")
    parser.add_argument("--template", metavar="MODULE", help="print equivalent.toml entries for the survivors")
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    if args.survivors or args.template:
        return survivors(args.survivors or args.template, template=bool(args.template))
    if args.report:
        return report()
    return run(args.modules, everything=args.all, retry=args.retry_survivors)


if __name__ == "__main__":
    sys.exit(main())
