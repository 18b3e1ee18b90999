"""The conformance harness's log reader, on output recorded from libiscsi 1.19's iscsi-test-cu."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.testcu import (
    CaseResult,
    load_expected,
    load_own,
    parse_log,
    regressions,
    render_table,
    stale_expectations,
    stale_own,
    unexplained,
)

# Recorded against tgtd 1.0.85 (GetLBAStatus, CompareAndWrite) and iscsikit (Reserve6, whose
# suite clean-up prints on the verdict's line), merged stdout+stderr, trimmed.
LOG = """\


     CUnit - A unit testing framework for C - Version 2.1-3
     http://cunit.sourceforge.net/


Suite: GetLBAStatus
  Test: Simple ...passed
  Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed with ILLEGAL_REQUEST(0x05)
FAILED
    1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
  Test: UnmapSingle ...FAILED
    1. test_get_lba_status_unmap_single.c:135  - CU_FAIL("[FAILED] GETLBASTATUS command")
Suite: CompareAndWrite
  Test: Simple ...    [SKIPPED] COMPAREANDWRITE is not implemented.
    [SKIPPED] COMPAREANDWRITE is not implemented.
passed
Suite: Reserve6
  Test: TargetWarmReset ...    [SKIPPED] Task Management functionfor WarmReset is not working/implemented

passed
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. SENSE KEY:UNIT_ATTENTION(6)
  Test: Logout ...    Take out a RESERVE6 from the first initiator
    RELEASE6 from the second initiator
passed

Run Summary:    Type  Total    Ran Passed Failed Inactive
              suites      3      3    n/a      2        0
               tests      7      7      5      2        0
"""


def test_parse_log_classifies_each_test() -> None:
    got = {r.test: r.outcome for r in parse_log(LOG)}
    assert got == {
        "GetLBAStatus.Simple": "pass",
        "GetLBAStatus.BeyondEol": "fail",
        "GetLBAStatus.UnmapSingle": "fail",
        "CompareAndWrite.Simple": "skip",  # CUnit says "passed"; the log says skipped
        "Reserve6.TargetWarmReset": "skip",
        "Reserve6.LUNReset": "pass",  # the [FAILED] after "passed" is the suite clean-up's
        "Reserve6.Logout": "pass",
    }
    details = {r.test: r.detail for r in parse_log(LOG)}
    assert details["GetLBAStatus.BeyondEol"].startswith("[FAILED] GET_LBA_STATUS")
    assert details["GetLBAStatus.UnmapSingle"].startswith("1. test_get_lba_status_unmap_single.c:135")


# Recorded from the built-in target on a thin LUN with two portals (libiscsi 1.19), trimmed: four
# of the tests issue 14 named as failing. Each prints "failed"/"[FAILED]" and each passed: the
# target answered as the test wants (a DataSN error fails the WRITE; RESERVATIONS RELEASED for
# the other registrant after an EARO/WERO holder unregisters), or the text is the suite clean-up's
# (its PRIN meets the LUN reset's unit attention). Only CUnit's verdict counts.
LOOKS_FAILED = """\
Suite: ProutReserve
  Test: OwnershipEARO ...    [INFO] TESTUNITREADY command: failed with sense. UNIT_ATTENTION(6) (0x2a04)
passed
  Test: OwnershipWERO ...    [INFO] TESTUNITREADY command: failed with sense. UNIT_ATTENTION(6) (0x2a04)
passed
Suite: Reserve6
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. UNIT_ATTENTION(6) (0x2903)
    [FAILED] PRIN command: failed with sense. UNIT_ATTENTION(6) (0x2903)
Suite: iSCSIdatasn
  Test: iSCSIDataSnInvalid ...    [FAILED] WRITE10 command failed with status 2 / COMMAND ABORTED(0x0b) (0x4b00)
    [FAILED] WRITE10 command failed with status 2 / COMMAND ABORTED(0x0b) (0x4b00)
passed

Run Summary:    Type  Total    Ran Passed Failed Inactive
"""


def test_failure_text_inside_a_passed_test_is_not_a_failure() -> None:
    got = {r.test: r.outcome for r in parse_log(LOOKS_FAILED)}
    assert got == {
        "ProutReserve.OwnershipEARO": "pass",
        "ProutReserve.OwnershipWERO": "pass",
        "Reserve6.LUNReset": "pass",
        "iSCSIdatasn.iSCSIDataSnInvalid": "pass",
    }


def test_a_test_cut_off_by_a_dying_process_is_a_crash() -> None:
    log = "Suite: Read10\n  Test: Simple ...passed\n  Test: BeyondEol ...    Send READ10\n"
    assert [(r.test, r.outcome) for r in parse_log(log)] == [("Read10.Simple", "pass"), ("Read10.BeyondEol", "crash")]


def test_regressions_are_reference_passes_the_candidate_misses() -> None:
    ref = {n: CaseResult(n, o) for n, o in [("A.x", "pass"), ("A.y", "pass"), ("A.z", "fail"), ("A.w", "pass")]}
    cand = {n: CaseResult(n, o) for n, o in [("A.x", "pass"), ("A.y", "crash"), ("A.z", "fail"), ("A.w", "skip")]}
    # a test tgt passes and the built-in target skips is a regression like a failure
    assert regressions(ref, cand) == ["A.w", "A.y"]
    assert regressions(ref, {}) == ["A.w", "A.x", "A.y"]
    # ... unless the expected-differences file lists it, with its reason
    assert regressions(ref, cand, {"A.w": "the target lacks W on purpose"}) == ["A.y"]


def test_stale_expectations_are_named() -> None:
    ref = {n: CaseResult(n, o) for n, o in [("A.x", "pass"), ("A.y", "pass"), ("A.z", "fail")]}
    cand = {n: CaseResult(n, o) for n, o in [("A.x", "pass"), ("A.y", "skip"), ("A.z", "fail")]}
    listed = {"A.x": "fixed since", "A.y": "still true", "A.z": "tgt fails it too", "A.gone": "renamed"}
    assert stale_expectations(ref, cand, listed) == ["A.gone", "A.x", "A.z"]


def test_the_expected_differences_file_gives_a_reason_for_each_entry(tmp_path: Path) -> None:
    expected = load_expected()  # the real file parses, every entry with a reason
    assert all(reason.strip() for table in expected.values() for reason in table.values())
    good = tmp_path / "good.toml"
    good.write_text('[thin]\n"GetLBAStatus.UnmapSingle" = "deliberately not implemented: ..."\n')
    assert load_expected(good) == {"thin": {"GetLBAStatus.UnmapSingle": "deliberately not implemented: ..."}}
    bad = tmp_path / "bad.toml"
    bad.write_text('[thin]\n"GetLBAStatus.UnmapSingle" = ""\n')
    with pytest.raises(ValueError, match=r"\[thin\] 'GetLBAStatus.UnmapSingle' needs the form"):
        load_expected(bad)


def test_every_skip_and_failure_of_the_candidate_needs_a_listed_reason() -> None:
    cand = {
        n: CaseResult(n, o, "why")
        for n, o in [("A.x", "pass"), ("A.y", "skip"), ("B.z", "skip"), ("C.w", "fail"), ("C.v", "crash")]
    }
    # nothing listed: each skip and each failure is named, with its outcome and detail
    assert unexplained(cand, "thin", {}) == ["A.y: skip: why", "B.z: skip: why", "C.v: crash: why", "C.w: fail: why"]
    own = {
        "skips": {"all": {"B": "the target lacks B on purpose"}, "thin": {"A.y": "thin only"}},
        "failures": {"thin": {"C.w": "libiscsi's own bug"}},
    }
    assert unexplained(cand, "thin", own) == ["C.v: crash: why"]
    # a kind's entries hold for that kind only; "all" for every kind; a skip is not excused as a failure
    assert unexplained(cand, "thick", own) == ["A.y: skip: why", "C.v: crash: why", "C.w: fail: why"]
    assert unexplained(cand, "thin", {"failures": {"all": {"A.y": "x", "B": "x", "C": "x"}}}) == [
        "A.y: skip: why",
        "B.z: skip: why",
    ]
    # an expected difference (tgt passes it) explains it too
    assert unexplained(cand, "thin", own, {"C.v": "listed difference"}) == []


def test_listed_skips_and_failures_that_no_longer_happen_are_named() -> None:
    columns = {
        "thin": {n: CaseResult(n, o) for n, o in [("A.y", "skip"), ("C.w", "fail")]},
        "thick": {n: CaseResult(n, o) for n, o in [("A.y", "pass"), ("C.w", "pass")]},
    }
    own = {
        "skips": {"all": {"A": "x", "B": "gone"}, "thick": {"A.y": "passes on thick now"}},
        "failures": {"thin": {"C.w": "x", "A.y": "it skips, not fails"}},
    }
    assert stale_own(columns, own, ["A", "B", "C"]) == [
        "[failures.thin] A.y",
        "[skips.all] B",
        "[skips.thick] A.y",
    ]
    assert stale_own(columns, own, ["C"]) == []  # entries of suites that did not run are not judged


def test_the_skips_and_failures_tables_parse_and_need_reasons(tmp_path: Path) -> None:
    own = load_own()  # the real file parses, every entry with a reason
    assert set(own) == {"skips", "failures"}
    assert all(r.strip() for section in own.values() for table in section.values() for r in table.values())
    assert all(kind not in ("skips", "failures") for kind in load_expected())  # not mistaken for LUN kinds
    path = tmp_path / "own.toml"
    path.write_text('[skips.all]\nSanitize = "no SANITIZE on purpose"\n[failures.thin]\n"A.b" = "why"\n')
    assert load_own(path) == {
        "skips": {"all": {"Sanitize": "no SANITIZE on purpose"}},
        "failures": {"thin": {"A.b": "why"}},
    }
    path.write_text('[skips.all]\n"A.b.c" = "why"\n')
    with pytest.raises(ValueError, match=r"\[skips.all\] 'A.b.c' needs the form"):
        load_own(path)
    path.write_text('[failures.thin]\n"A.b" = " "\n')
    with pytest.raises(ValueError, match=r"\[failures.thin\] 'A.b' needs the form"):
        load_own(path)


def test_render_table() -> None:
    table = render_table({"tgt": {"A.x": CaseResult("A.x", "pass")}, "isk": {"A.x": CaseResult("A.x", "fail", "why")}})
    assert "A.x" in table and "FAIL" in table and "A.x [isk]: why" in table
    assert "tgt: total=1 pass=1 fail=0 skip=0 crash=0" in table
