"""libiscsi's conformance suite (``iscsi-test-cu``) run the way it must be run, and read per test.

* One process per suite: libiscsi 1.19's COMPARE AND WRITE test leaves a PDU-rewriting hook
  installed when the target rejects the command, which corrupts every later 16-byte CDB in the
  same process (target-anchors.md 2.5). Suites are listed with ``--list``.
* Results come from the log, not CUnit's summary: CUnit counts ``[SKIPPED]`` tests as passed.
  A test is ``fail`` if CUnit marked it FAILED, ``skip`` if it printed ``[SKIPPED]``, else
  ``pass``; tests of a suite that never reported (the process died, login failed) are ``crash``.
* :func:`regressions` is the differential oracle: a test the reference target passes is a
  regression when the candidate fails it, crashes, does not run it, or *skips* it (a skip is the
  suite deciding the target lacks something), unless tests/support/testcu_expected.toml lists it
  with its reason (:func:`load_expected`). :func:`stale_expectations` names listed tests that are
  no longer a difference, so that file only ever says what is true today.
* :func:`unexplained` holds the candidate to more than the reference: every test it skips must be
  a feature it deliberately lacks, and every test it fails (where the reference fails too) must
  have its reason; both are listed in the same file (``[skips.KIND]``, ``[failures.KIND]``, KIND
  ``all`` for every LUN kind; :func:`load_own`), and :func:`stale_own` names entries that no
  longer match anything.

Example::

    results = run_suites("iscsi://127.0.0.1:3260/iqn.x:t/1", list_suites())
    print(render_table({"tgt": results}))
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

TESTCU = os.environ.get("ISCSIKIT_TESTCU", "iscsi-test-cu")

Outcome = Literal["pass", "fail", "skip", "crash"]
#: Outcomes that count as "did not work".
BAD: frozenset[str] = frozenset({"fail", "crash"})

_SUITE_RE = re.compile(r"^Suite: (\S+)\s*$")
_TEST_RE = re.compile(r"^  Test: (\S+) \.\.\.(.*)$")
_STATUS = {"passed": "pass", "FAILED": "fail"}


@dataclass(frozen=True, slots=True)
class CaseResult:
    test: str  # "Suite.Test"
    outcome: Outcome
    detail: str = ""  # first [FAILED]/[SKIPPED] message or CUnit assertion


@dataclass(slots=True)
class SuiteRun:
    suite: str
    argv: list[str]
    returncode: int | None
    duration: float
    log: str
    results: dict[str, CaseResult] = field(default_factory=dict)


def list_tests(testcu: str = TESTCU) -> dict[str, list[str]]:
    """Suite -> test names, from ``iscsi-test-cu --list`` (the ``ALL`` family)."""
    out = subprocess.run([testcu, "--list"], capture_output=True, text=True, timeout=30, check=True).stdout
    suites: dict[str, list[str]] = {}
    for line in out.split():
        parts = line.strip().split(".")
        if parts[0] != "ALL" or len(parts) < 2:
            continue
        tests = suites.setdefault(parts[1], [])
        if len(parts) == 3:
            tests.append(parts[2])
    return suites


def list_suites(testcu: str = TESTCU) -> list[str]:
    return list(list_tests(testcu))


def family_suites(family: str, testcu: str = TESTCU) -> list[str]:
    """Suites of a family (``SCSI``, ``iSCSI``, ``LINUX``) from ``--list``."""
    out = subprocess.run([testcu, "--list"], capture_output=True, text=True, timeout=30, check=True).stdout
    return [parts[1] for parts in (line.split(".") for line in out.split()) if len(parts) == 2 and parts[0] == family]


def _detail_of(lines: Sequence[str]) -> str:
    for marker in ("[FAILED]", "[SKIPPED]"):
        for line in lines:
            if marker in line:
                return line.strip()
    for line in lines:
        if re.match(r"^\s+\d+\. ", line):
            return line.strip()
    return ""


def parse_log(text: str) -> list[CaseResult]:
    """Per-test outcomes from an ``iscsi-test-cu`` log (stdout and stderr merged)."""
    results: list[CaseResult] = []
    suite = ""
    test: str | None = None
    status: str | None = None
    body: list[str] = []

    def finish() -> None:
        nonlocal test, status, body
        if test is not None:
            if status is None:
                outcome: Outcome = "crash"
            elif status == "fail":
                outcome = "fail"
            elif any("[SKIPPED]" in line for line in body):
                outcome = "skip"
            else:
                outcome = "pass"
            results.append(CaseResult(f"{suite}.{test}", outcome, _detail_of(body)))
        test, status, body = None, None, []

    for line in text.splitlines():
        m = _SUITE_RE.match(line)
        if m:
            finish()
            suite = m.group(1)
            continue
        m = _TEST_RE.match(line)
        if m:
            finish()
            test = m.group(1)
            rest = m.group(2).strip()
            if rest.split()[:1] and rest.split()[0] in _STATUS:
                status = _STATUS[rest.split()[0]]  # anything after it is the suite clean-up talking
            elif rest:
                body.append(rest)
            continue
        if line.startswith("Run Summary:"):
            finish()
            continue
        if test is None:
            continue
        words = line.split()
        if status is None and words and words[0] in _STATUS:
            # CUnit's verdict; what follows on the line is the suite clean-up's output, not the test's
            status = _STATUS[words[0]]
        elif status is None and words and words[-1] in _STATUS and line.rstrip().endswith(words[-1]):
            # a message printed without a newline, then CUnit's verdict
            body.append(line)
            status = _STATUS[words[-1]]
        else:
            body.append(line)
    finish()
    return results


def run_suite(
    url: str,
    suite: str,
    *,
    extra_urls: Sequence[str] = (),
    dataloss: bool = True,
    timeout: float = 300,
    expected_tests: Iterable[str] = (),
    testcu: str = TESTCU,
    env: Mapping[str, str] | None = None,
) -> SuiteRun:
    """Run one suite in its own process; tests in ``expected_tests`` that never report are crashes."""
    argv = [testcu, *(["-d"] if dataloss else []), f"--test=ALL.{suite}", url, *extra_urls]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        log = proc.stdout.decode(errors="replace")
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout if isinstance(exc.stdout, bytes) else b""
        log = raw.decode(errors="replace") + f"\n[harness] timed out after {timeout} s\n"
        rc = None
    run = SuiteRun(suite, argv, rc, time.monotonic() - start, log)
    for result in parse_log(log):
        run.results[result.test] = result
    why = _last_words(log)
    for name in expected_tests:
        key = f"{suite}.{name}"
        if key not in run.results:
            run.results[key] = CaseResult(key, "crash", why)
    return run


def _last_words(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def run_suites(
    url: str,
    suites: Mapping[str, Sequence[str]] | Sequence[str],
    *,
    extra_urls: Mapping[str, Sequence[str]] | None = None,
    dataloss: bool = True,
    timeout: float = 300,
    testcu: str = TESTCU,
) -> dict[str, CaseResult]:
    """Every suite, one process each, one after the other (they share the LU's data and state)."""
    tests = suites if isinstance(suites, Mapping) else {s: [] for s in suites}
    results: dict[str, CaseResult] = {}
    for suite, names in tests.items():
        run = run_suite(
            url,
            suite,
            extra_urls=(extra_urls or {}).get(suite, ()),
            dataloss=dataloss,
            timeout=timeout,
            expected_tests=names,
            testcu=testcu,
        )
        results.update(run.results)
    return results


def run_matrix(
    configs: Mapping[str, str],
    suites: Mapping[str, Sequence[str]],
    *,
    extra_urls: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    parallel: int = 2,
    timeout: float = 300,
) -> dict[str, dict[str, CaseResult]]:
    """Run the suites against several URLs (column name -> URL), ``parallel`` columns at a time."""
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {
            name: pool.submit(run_suites, url, suites, extra_urls=(extra_urls or {}).get(name), timeout=timeout)
            for name, url in configs.items()
        }
        return {name: future.result() for name, future in futures.items()}


def counts(results: Mapping[str, CaseResult]) -> dict[str, int]:
    c = Counter(r.outcome for r in results.values())
    return {"total": len(results), **{k: c.get(k, 0) for k in ("pass", "fail", "skip", "crash")}}


#: The known differences between the built-in target and tgt, each with its reason: the one place
#: that may excuse a test tgt passes and iscsikit does not.
EXPECTED_FILE = Path(__file__).with_name("testcu_expected.toml")


#: Tables of that file that are not LUN kinds: the candidate's own skips and failures.
OWN_SECTIONS = ("skips", "failures")
#: The pseudo-kind of an own-section entry that holds on every LUN kind.
EVERY_KIND = "all"


def _checked_table(path: Path, where: str, table: object, *, suites: bool) -> dict[str, str]:
    form = '"Suite" or "Suite.Test"' if suites else '"Suite.Test"'
    if not isinstance(table, dict):
        raise ValueError(f'{path}: [{where}] must be a table of {form} = "reason"')
    for test, reason in table.items():
        dots = (0, 1) if suites else (1,)
        if test.count(".") not in dots or not isinstance(reason, str) or not reason.strip():
            raise ValueError(f'{path}: [{where}] {test!r} needs the form {form} = "reason"')
    return dict(table)


def load_expected(path: Path = EXPECTED_FILE) -> dict[str, dict[str, str]]:
    """LUN kind -> {"Suite.Test": reason} from the expected-differences file (validated)."""
    doc = tomllib.loads(path.read_text())
    return {
        kind: _checked_table(path, kind, table, suites=False) for kind, table in doc.items() if kind not in OWN_SECTIONS
    }


Own = dict[str, dict[str, dict[str, str]]]


def load_own(path: Path = EXPECTED_FILE) -> Own:
    """section ("skips"/"failures") -> LUN kind or ``all`` -> {"Suite[.Test]": reason} (validated)."""
    doc = tomllib.loads(path.read_text())
    out: Own = {}
    for section in OWN_SECTIONS:
        kinds = doc.get(section, {})
        if not isinstance(kinds, dict):
            raise ValueError(f"{path}: [{section}] must hold one table per LUN kind (or {EVERY_KIND!r})")
        out[section] = {
            kind: _checked_table(path, f"{section}.{kind}", table, suites=True) for kind, table in kinds.items()
        }
    return out


def _entries_for(own: Own, section: str, kind: str) -> dict[str, str]:
    return {**own.get(section, {}).get(EVERY_KIND, {}), **own.get(section, {}).get(kind, {})}


def _matches(entry: str, test: str) -> bool:
    return entry == test or ("." not in entry and test.split(".")[0] == entry)


def unexplained(
    candidate: Mapping[str, CaseResult], kind: str, own: Own, differences: Mapping[str, str] | None = None
) -> list[str]:
    """Tests the candidate skips or fails on ``kind`` that nothing lists: a skip needs a
    ``[skips]`` entry (a feature deliberately lacking), a failure or crash a ``[failures]``
    entry or, where the reference passes, an expected difference."""
    skips, failures = _entries_for(own, "skips", kind), _entries_for(own, "failures", kind)
    out = []
    for name, got in candidate.items():
        if got.outcome == "skip":
            listed = any(_matches(e, name) for e in skips) or name in (differences or {})
        elif got.outcome in BAD:
            listed = any(_matches(e, name) for e in failures) or name in (differences or {})
        else:
            continue
        if not listed:
            out.append(f"{name}: {got.outcome}: {got.detail}")
    return sorted(out)


def stale_own(columns: Mapping[str, Mapping[str, CaseResult]], own: Own, suites: Iterable[str]) -> list[str]:
    """Own-section entries (of suites in ``suites``) that match no test with that outcome in their
    kind's column (``all``: in any column). ``columns`` maps LUN kind -> the candidate's results."""
    ran = set(suites)
    wanted = {"skips": {"skip"}, "failures": set(BAD)}
    out = []
    for section, kinds in own.items():
        for kind, entries in kinds.items():
            cols = list(columns.values()) if kind == EVERY_KIND else [columns.get(kind, {})]
            for entry in entries:
                if entry.split(".")[0] not in ran:
                    continue
                if not any(_matches(entry, n) and r.outcome in wanted[section] for c in cols for n, r in c.items()):
                    out.append(f"[{section}.{kind}] {entry}")
    return sorted(out)


def regressions(
    reference: Mapping[str, CaseResult],
    candidate: Mapping[str, CaseResult],
    expected: Mapping[str, str] | None = None,
) -> list[str]:
    """Tests the reference passes and the candidate fails, crashes, skips or does not run at all,
    except those ``expected`` lists (test -> reason)."""
    out = []
    for name, ref in reference.items():
        if ref.outcome != "pass" or name in (expected or {}):
            continue
        got = candidate.get(name)
        if got is None or got.outcome != "pass":
            out.append(name)
    return sorted(out)


def stale_expectations(
    reference: Mapping[str, CaseResult], candidate: Mapping[str, CaseResult], expected: Mapping[str, str]
) -> list[str]:
    """Listed differences that are none today: the candidate passes too, the reference no longer
    passes, or the test ran on neither (renamed or gone)."""
    out = []
    for name in expected:
        ref, got = reference.get(name), candidate.get(name)
        if ref is None or ref.outcome != "pass" or (got is not None and got.outcome == "pass"):
            out.append(name)
    return sorted(out)


def render_table(
    columns: Mapping[str, Mapping[str, CaseResult]], *, only_differences: bool = False, details: bool = True
) -> str:
    """A fixed-width table: one row per test, one column per run, then per-column counts."""
    names: list[str] = []
    seen: set[str] = set()
    for results in columns.values():
        for name in results:
            if name not in seen:
                seen.add(name)
                names.append(name)
    width = max([len(n) for n in names] + [4]) + 2
    colw = max([len(c) for c in columns] + [5]) + 2
    lines = ["test".ljust(width) + "".join(c.ljust(colw) for c in columns)]
    notes: list[str] = []
    for name in names:
        cells = [results.get(name) for results in columns.values()]
        outcomes = [c.outcome if c else "-" for c in cells]
        if only_differences and len(set(outcomes)) == 1:
            continue
        lines.append(name.ljust(width) + "".join((o.upper() if o in BAD else o).ljust(colw) for o in outcomes))
        if details:
            for col, cell in zip(columns, cells, strict=True):
                if cell and cell.outcome in BAD and cell.detail:
                    notes.append(f"  {name} [{col}]: {cell.detail}")
    lines.append("")
    for col, results in columns.items():
        c = counts(results)
        lines.append(f"{col}: total={c['total']} pass={c['pass']} fail={c['fail']} skip={c['skip']} crash={c['crash']}")
    if notes:
        lines += ["", "failures:", *notes]
    return "\n".join(lines)
