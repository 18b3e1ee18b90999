"""The ``iscsikit`` command against the real iscsiadm: run in a sandbox's namespace (so it
finds /etc/iscsi and /run/lock/iscsi by itself, like on a host), every command leaves the
tree iscsiadm leaves for the same operation, and ``node show`` prints what iscsiadm prints."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sandbox import IscsiadmSandbox
from tests.support.tiers import require, require_root, unavailable
from tests.unit.db.iscsiadm_harness import (
    IscsidStandIn,
    db_tree,
    iscsiadm,
    parse_show,
    private_sandbox,
    reset,
    run_in,
)

ISCSIKIT = str(Path(sys.executable).parent / "iscsikit")
T1 = "iqn.2026-11.test:cli-one"
T2 = "iqn.2026-11.test:cli-two"


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[IscsiadmSandbox, IscsiadmSandbox, IscsidStandIn]]:
    require_root(request)
    require(request, "iscsiadm", "nsenter")
    if not Path(ISCSIKIT).exists() and shutil.which("iscsikit") is None:
        unavailable(request, "the iscsikit entry point is not installed in this venv (scripts/bootstrap installs it)")
    with private_sandbox() as theirs, private_sandbox() as mine:
        reset(theirs)
        reset(mine)
        standin = IscsidStandIn(theirs.base)
        standin.answer("/etc/iscsi/iscsid.conf")  # iscsid "up": both apply iscsid.conf
        try:
            yield theirs, mine, standin
        finally:
            standin.close()


def test_cli_writes_what_iscsiadm_writes(pair: tuple[IscsiadmSandbox, IscsiadmSandbox, IscsidStandIn]) -> None:
    theirs, mine, standin = pair
    secret = mine.base / "chap-secret"
    secret.write_text("cli secret #1\n")
    steps = [
        (
            ["iface", "new", "res1", "iface.net_ifacename=lo"],
            [["-m", "iface", "-I", "res1", "-o", "new", "-n", "iface.net_ifacename", "-v", "lo"]],
        ),
        (
            ["node", "new", T1, "--portal", "10.0.0.1:3260,1", "--iface", "res1"],
            [["-m", "node", "-o", "new", "-T", T1, "-p", "10.0.0.1:3260,1", "-I", "res1"]],
        ),
        (
            ["node", "new", T2, "-p", "[2001:db8::2]:3260"],
            [["-m", "node", "-o", "new", "-T", T2, "-p", "[2001:db8::2]"]],
        ),
        (
            [
                "node", "set", T1, "node.session.auth.authmethod=CHAP", "node.session.auth.username=u1",
                "--value-file", f"node.session.auth.password={secret}",
            ],
            [[
                "-m", "node", "-T", T1, "-o", "update", "-n", "node.session.auth.authmethod", "-v", "CHAP",
                "-n", "node.session.auth.username", "-v", "u1",
                "-n", "node.session.auth.password", "-v", "cli secret #1",
            ]],
        ),
        (
            ["discovery", "new", "10.0.0.9", "discovery.sendtargets.auth.authmethod=CHAP"],
            [
                ["-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "new"],
                ["-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "update",
                 "-n", "discovery.sendtargets.auth.authmethod", "-v", "CHAP"],
            ],
        ),
        (["node", "delete", T2], [["-m", "node", "-o", "delete", "-T", T2]]),
        (["iface", "delete", "res1", "--yes"], [["-m", "iface", "-I", "res1", "-o", "delete"]]),
        (["discovery", "delete", "10.0.0.9"], [["-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "delete"]]),
    ]  # fmt: skip
    for cli, reference in steps:
        for argv in reference:
            done = iscsiadm(theirs, standin, *argv)
            assert done.returncode == 0, f"iscsiadm {argv}: {done.stderr}"
        ran = run_in(mine, [ISCSIKIT, *cli], standin)
        assert ran.returncode == 0, f"iscsikit {cli}: {ran.stderr}"
        assert db_tree(mine) == db_tree(theirs), f"trees differ after iscsikit {' '.join(cli)}"


def test_cli_show_prints_what_iscsiadm_prints(pair: tuple[IscsiadmSandbox, IscsiadmSandbox, IscsidStandIn]) -> None:
    theirs, _, standin = pair
    for argv in (
        ["-m", "node", "-o", "new", "-T", T1, "-p", "10.0.0.1:3260,1"],
        ["-m", "node", "-o", "new", "-T", T2, "-p", "storage.example:3261"],
        ["-m", "node", "-T", T1, "-o", "update", "-n", "node.session.auth.password", "-v", "pw"],
    ):
        assert iscsiadm(theirs, standin, *argv).returncode == 0
    for flags in ([], ["--show-secrets"]):
        shown = run_in(theirs, [ISCSIKIT, "node", "show", "--json", *flags], standin)
        assert shown.returncode == 0, shown.stderr
        records = json.loads(shown.stdout)
        expected = iscsiadm(theirs, standin, "-m", "node", "-o", "show", *(["-S"] if flags else []))
        assert [r["settings"] for r in records] == parse_show(expected.stdout)
        text = run_in(theirs, [ISCSIKIT, "node", "show", *flags], standin)
        assert text.stdout == expected.stdout  # piped output is iscsiadm's own format
    listed = json.loads(run_in(theirs, [ISCSIKIT, "node", "list", "--json"], standin).stdout)
    assert listed == [
        {"target": T1, "address": "10.0.0.1", "port": 3260, "tpgt": 1, "iface": "default"},
        {"target": T2, "address": "storage.example", "port": 3261, "tpgt": None, "iface": "default"},
    ]
