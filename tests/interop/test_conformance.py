"""libiscsi's conformance suite against iscsikit's built-in target, differential against tgtd.

Both targets get the same layout in the same run: LUN 1 thick (1 GiB sparse file, no UNMAP),
LUN 2 thin (LBPME, UNMAP, WRITE SAME with UNMAP), LUN 3 read-only, LUN 4 thin with 4 KiB blocks,
and a second target that requires CHAP; each target listens on two portals (127.0.0.1 and
127.0.0.2, same port). iscsikit runs as users run it (``iscsikit target serve --config``), tgtd
through :mod:`iscsikit.tgt`. ``iscsi-test-cu -d`` runs one suite per process (see
tests/support/testcu.py for why), always with the LU's URL on the second portal as its
multipath URL: MultipathIO then runs over two paths instead of skipping, and the suites that need
a second I_T nexus (persistent reservations, RESERVE(6), PREVENT ALLOW) use that path. Every suite
runs against the thick and thin LUNs, the ReadOnly-relevant ones against LUN 3 and the
provisioning ones against LUN 4 (one logical block per physical block: what libiscsi's
GetLBAStatus.UnmapSingle needs to be right, see testcu_expected.toml).

A test fails on any libiscsi test tgt passes on a LUN kind and iscsikit fails, skips or does not
run on the same kind (SCSI and iSCSI families separately, so the owner of a regression is clear),
unless tests/support/testcu_expected.toml lists that difference with its reason; and on any test
iscsikit skips or fails that the same file does not explain (``[skips]``: a feature the target
deliberately lacks; ``[failures]``: where tgt fails too, and why). An entry that no longer holds
fails too, so the file stays true. The whole table is printed (``pytest -s``) and written to
``$ISCSIKIT_CONFORMANCE_REPORT`` when that is set. About a minute and a half on the 2-core
machines; ``ISCSIKIT_CONFORMANCE_SUITES=Unmap,ProutReserve`` runs only those suites (entries
outside them are then not checked for staleness).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import testcu
from tests.support.tgtd import Tgtd, free_port, wait_for_port
from tests.support.tiers import ROOT, require, require_root

IQN = "iqn.2026-11.org.iscsikit.conformance:disk"
CHAP_IQN = "iqn.2026-11.org.iscsikit.conformance:chap"
CHAP_USER, CHAP_SECRET = "chapuser", "chapsecret123"
LUN_SIZE = 1 << 30
RO_SIZE = 64 << 20
THIN4K_SIZE = 256 << 20
#: Every libiscsi suite runs against these LUNs.
KINDS = {"thick": 1, "thin": 2}
#: LUN 3 is write-protected; only these suites are run against it (ReadOnly needs it).
READ_ONLY_LUN = 3
READ_ONLY_SUITES = ["ReadOnly", "TestUnitReady", "Inquiry", "ModeSense6", "Read10", "Read16", "ReadCapacity16"]
#: LUN 4 is thin with 4 KiB logical blocks (one per physical block); the provisioning suites run on it.
THIN4K_LUN = 4
THIN4K_SUITES = ["GetLBAStatus", "Unmap", "WriteSame16", "ReadCapacity16", "Inquiry"]
#: LUN kinds that run only some suites: kind -> (LUN, suites).
PARTIAL = {"ro": (READ_ONLY_LUN, READ_ONLY_SUITES), "thin4k": (THIN4K_LUN, THIN4K_SUITES)}
ALL_KINDS = [*KINDS, *PARTIAL]
#: Both targets listen on the same port on both addresses: the first and the second path.
HOST, SECOND_HOST = "127.0.0.1", "127.0.0.2"


def second_path(url: str) -> str:
    """The same LU's URL through the second portal (iscsi-test-cu's multipath URL)."""
    return url.replace(f"@{HOST}:", f"@{SECOND_HOST}:", 1).replace(f"//{HOST}:", f"//{SECOND_HOST}:", 1)


class IscsikitTarget:
    """``iscsikit target serve --config`` (the command users run) on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        (workdir / "chap.secret").write_text(CHAP_SECRET + "\n")
        config = workdir / "serve.toml"
        config.write_text(
            f"""\
portals = ["{HOST}:{self.port}", "{SECOND_HOST}:{self.port}"]
control = "{workdir / "control.sock"}"

[[targets]]
iqn = "{IQN}"

[targets.luns]
1 = "file:{workdir / "thick.img"},size={LUN_SIZE},thin=no"
2 = "file:{workdir / "thin.img"},size={LUN_SIZE},thin=yes"
{THIN4K_LUN} = "file:{workdir / "thin4k.img"},size={THIN4K_SIZE},thin=yes,block_size=4096"

[targets.luns.{READ_ONLY_LUN}]
spec = "file:{workdir / "ro.img"},size={RO_SIZE},thin=no"
read_only = true

[[targets]]
iqn = "{CHAP_IQN}"
chap_user = "{CHAP_USER}"
chap_secret_file = "{workdir / "chap.secret"}"

[targets.luns]
1 = "memory:size=64M"
"""
        )
        self.log = open(workdir / "iscsikit-target.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iscsikit", "target", "serve", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            wait_for_port(HOST, self.port, timeout=30)
            wait_for_port(SECOND_HOST, self.port, timeout=30)
        except TimeoutError:
            self.close()
            raise RuntimeError(
                f"iscsikit target did not start: {(workdir / 'iscsikit-target.log').read_text()}"
            ) from None

    def url(self, iqn: str, lun: int, *, user: str | None = None, secret: str | None = None) -> str:
        auth = f"{user}%{secret}@" if user is not None else ""
        return f"iscsi://{auth}{HOST}:{self.port}/{iqn}/{lun}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: finish in-flight I/O, flush, exit
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def tools(request: pytest.FixtureRequest) -> None:
    require_root(request)
    require(request, "tgtd", "tgtadm", "iscsi-test-cu", "iscsi-inq")


@pytest.fixture(scope="module")
def reference(tools: None) -> Iterator[Tgtd]:
    with Tgtd(HOST) as tgtd:
        tid = tgtd.add_target(IQN, luns={1: tgtd.backing_file("thick.img", LUN_SIZE)})
        tgtd.tgt.add_lun(tid, 2, str(tgtd.backing_file("thin.img", LUN_SIZE)))
        tgtd.tgt.set_lun_thin_provisioning(tid, 2)
        tgtd.tgt.add_lun(tid, READ_ONLY_LUN, str(tgtd.backing_file("ro.img", RO_SIZE)))
        tgtd.tgt.update_lun(tid, READ_ONLY_LUN, {"readonly": "1"})
        thin4k = str(tgtd.backing_file("thin4k.img", THIN4K_SIZE))
        tgtd.tgtadm("--op", "new", "--mode", "logicalunit", "--tid", str(tid), "--lun", str(THIN4K_LUN),
                    "--backing-store", thin4k, "--blocksize", "4096")  # fmt: skip
        tgtd.tgt.set_lun_thin_provisioning(tid, THIN4K_LUN)
        tgtd.add_target(CHAP_IQN, luns={1: tgtd.backing_file("chap.img", 64 << 20)}, chap=(CHAP_USER, CHAP_SECRET))
        tgtd.tgt.add_portal(f"{SECOND_HOST}:{tgtd.port}")
        wait_for_port(SECOND_HOST, tgtd.port)
        yield tgtd


@pytest.fixture(scope="module")
def candidate(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IscsikitTarget]:
    target = IscsikitTarget(tmp_path_factory.mktemp("isk-target"))
    yield target
    target.close()


def _report(text: str) -> None:
    print(text)
    path = os.environ.get("ISCSIKIT_CONFORMANCE_REPORT")
    if path:
        Path(path).write_text(text + "\n")


Matrix = dict[str, dict[str, testcu.CaseResult]]


def _suites() -> dict[str, list[str]]:
    """Suite -> tests: all of them, or those named in ``$ISCSIKIT_CONFORMANCE_SUITES``."""
    tests = testcu.list_tests()
    wanted = [s for s in os.environ.get("ISCSIKIT_CONFORMANCE_SUITES", "").split(",") if s]
    unknown = [s for s in wanted if s not in tests]
    assert not unknown, (
        f"ISCSIKIT_CONFORMANCE_SUITES: no such suite {unknown}; iscsi-test-cu --list has {sorted(tests)}"
    )
    return {s: tests[s] for s in wanted} if wanted else tests


def _kind_suites(kind: str, suites: dict[str, list[str]]) -> dict[str, list[str]]:
    """The suites (of those chosen) that run against a LUN kind."""
    return {s: suites[s] for s in PARTIAL[kind][1] if s in suites} if kind in PARTIAL else suites


@pytest.fixture(scope="module")
def matrix(reference: Tgtd, candidate: IscsikitTarget) -> Matrix:
    """The suites against every LUN kind, tgt and iscsikit side by side (two processes at a time),
    each with the LU's second path as the multipath URL."""
    suites = _suites()
    results: Matrix = {}
    luns = {**KINDS, **{kind: lun for kind, (lun, _) in PARTIAL.items()}}
    for kind, lun in luns.items():
        # Same kind side by side, so each pair of runs finishes together.
        configs = {f"tgt-{kind}": reference.url(IQN, lun), f"isk-{kind}": candidate.url(IQN, lun)}
        chosen = _kind_suites(kind, suites)
        extra = {name: {s: [second_path(url)] for s in chosen} for name, url in configs.items()}
        results.update(testcu.run_matrix(configs, chosen, extra_urls=extra, parallel=2))
    lines = [testcu.render_table(results)]
    for kind in ALL_KINDS:
        ours, theirs = results[f"isk-{kind}"], results[f"tgt-{kind}"]
        better = sorted(n for n, r in ours.items() if r.outcome == "pass" and theirs.get(n, r).outcome != "pass")
        lines.append(f"\n{kind}: iscsikit passes {len(better)} test(s) tgt does not: {', '.join(better)}")
    _report("\n".join(lines))
    return results


def _regressions(results: Matrix, suites: list[str]) -> list[str]:
    out = []
    expected = testcu.load_expected()
    for kind in ALL_KINDS:
        ours = {n: r for n, r in results[f"isk-{kind}"].items() if n.split(".")[0] in suites}
        theirs = {n: r for n, r in results[f"tgt-{kind}"].items() if n.split(".")[0] in suites}
        for name in testcu.regressions(theirs, ours, expected.get(kind, {})):
            got = ours.get(name)
            out.append(f"{kind}: {name}: {got.outcome if got else 'missing'}: {got.detail if got else ''}")
    return out


def test_scsi_suites_pass_where_tgt_passes(matrix: Matrix) -> None:
    """The SCSI family (and MultipathIO): the SCSI disk's conformance."""
    regressions = _regressions(matrix, testcu.family_suites("SCSI"))
    assert not regressions, "SCSI tests tgt passes and iscsikit does not:\n" + "\n".join(regressions)


def test_iscsi_suites_pass_where_tgt_passes(matrix: Matrix) -> None:
    """The iSCSI family (CmdSN window, DataSN, residuals, TMF): the protocol layer's conformance."""
    regressions = _regressions(matrix, testcu.family_suites("iSCSI"))
    assert not regressions, "iSCSI tests tgt passes and iscsikit does not:\n" + "\n".join(regressions)


def test_listed_differences_are_still_differences(matrix: Matrix) -> None:
    """tests/support/testcu_expected.toml lists only what is true today: each entry is a test tgt
    passes and iscsikit does not, on a LUN kind this run has."""
    expected = testcu.load_expected()
    unknown = sorted(set(expected) - set(ALL_KINDS))
    assert not unknown, f"testcu_expected.toml: unknown LUN kinds {unknown}; the kinds are {ALL_KINDS}"
    ran = _suites()

    def outcome(column: str, name: str) -> str:
        got = matrix[column].get(name)
        return got.outcome if got else "not run"

    stale = [
        f"[{kind}] {name}: tgt {outcome(f'tgt-{kind}', name)}, iscsikit {outcome(f'isk-{kind}', name)}"
        for kind, listed in expected.items()
        for name in testcu.stale_expectations(
            matrix[f"tgt-{kind}"], matrix[f"isk-{kind}"], {t: r for t, r in listed.items() if t.split(".")[0] in ran}
        )
    ]
    assert not stale, "no longer a difference: remove from tests/support/testcu_expected.toml:\n" + "\n".join(stale)


def test_iscsikit_skips_and_failures_are_explained(matrix: Matrix) -> None:
    """A skip is a feature the target deliberately lacks and a failure (where tgt fails too) has its
    reason: each is listed in testcu_expected.toml ([skips.KIND] / [failures.KIND])."""
    own, differences = testcu.load_own(), testcu.load_expected()
    unexplained = [
        f"{kind}: {line}"
        for kind in ALL_KINDS
        for line in testcu.unexplained(matrix[f"isk-{kind}"], kind, own, differences.get(kind, {}))
    ]
    assert not unexplained, "iscsikit skips or fails, and testcu_expected.toml does not say why:\n" + "\n".join(
        unexplained
    )


def test_listed_skips_and_failures_still_happen(matrix: Matrix) -> None:
    own = testcu.load_own()
    unknown = sorted({k for kinds in own.values() for k in kinds} - {*ALL_KINDS, testcu.EVERY_KIND})
    assert not unknown, f"testcu_expected.toml: unknown LUN kinds {unknown}; the kinds are {ALL_KINDS} and 'all'"
    stale = testcu.stale_own({kind: matrix[f"isk-{kind}"] for kind in ALL_KINDS}, own, _suites())
    assert not stale, "no longer skipped or failed: remove from tests/support/testcu_expected.toml:\n" + "\n".join(
        stale
    )


def test_every_suite_ran_on_every_lun(matrix: Matrix) -> None:
    """Guards the oracle: a harness that silently ran nothing would pass the tests above."""
    tests = _suites()
    everything = tests == testcu.list_tests()
    for name, results in matrix.items():
        ran = _kind_suites(name.split("-", 1)[1], tests)
        expected = sum(len(tests[s]) for s in ran)
        assert len(results) == expected, f"{name}: {len(results)} results for {expected} tests"
        if everything:  # a chosen few suites may all skip on a kind (thin-only ones on thick)
            assert testcu.counts(results)["pass"] > expected // 2, f"{name}: {testcu.counts(results)}"
    if "ReadOnly" in tests:
        assert matrix["isk-ro"]["ReadOnly.ReadOnlySBC"].outcome == "pass"


def test_multipath_ran_over_two_portals(matrix: Matrix) -> None:
    """MultipathIO skips without a second URL; with the second portal it runs on both targets."""
    if "MultipathIO" not in _suites():
        return  # ISCSIKIT_CONFORMANCE_SUITES chose others: nothing of it ran
    for column in ("tgt-thick", "isk-thick", "tgt-thin", "isk-thin"):
        for test in ("MultipathIO.Simple", "MultipathIO.Reset"):
            got = matrix[column].get(test)
            assert got is not None and got.outcome == "pass", f"{column}: {test}: {got}"


def test_chap_target(reference: Tgtd, candidate: IscsikitTarget) -> None:
    """With the right secret the suites run; with a wrong one (or none) login fails, on both targets."""
    suites = {"TestUnitReady": ["Simple"], "Read10": ["Simple", "BeyondEol", "ZeroBlocks", "ReadProtect", "DpoFua",
                                                      "Async"]}  # fmt: skip
    for label, target in (("tgt", reference), ("iscsikit", candidate)):
        good = target.url(CHAP_IQN, 1, user=CHAP_USER, secret=CHAP_SECRET)
        results = testcu.run_suites(good, suites, timeout=120)
        bad = {n: r for n, r in results.items() if r.outcome != "pass"}
        assert not bad, f"{label}: CHAP login with the right secret: {bad}"
        for url in (target.url(CHAP_IQN, 1, user=CHAP_USER, secret="wrongsecret123"), target.url(CHAP_IQN, 1)):
            proc = subprocess.run(["iscsi-inq", url], capture_output=True, text=True, timeout=60)
            assert proc.returncode != 0, f"{label}: login to the CHAP target succeeded with {url}"


def test_iscsikit_target_log_is_clean(candidate: IscsikitTarget) -> None:
    """No tracebacks from the SCSI layer while the suites ran (HARDWARE ERROR would hide them)."""
    log = (candidate.workdir / "iscsikit-target.log").read_text()
    if "Traceback" in log:
        pytest.fail(f"the target logged a traceback:\n{log[log.index('Traceback') :][:3000]}")
