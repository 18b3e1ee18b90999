"""New records and iscsid.conf, decided the way iscsiadm decides: applied only when iscsid
answers. Here a stand-in answers (tests/unit/db/iscsiadm_harness.py); the kernel tier has the
same test with the real iscsid (tests/kernel/test_db_iscsid_conf.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.sandbox import IscsiadmSandbox
from tests.support.tiers import require, require_root
from tests.unit.db.iscsiadm_harness import IscsidStandIn, db_tree, iscsiadm, private_sandbox, reset, run_in

REPO = Path(__file__).resolve().parents[2]
TARGET = "iqn.2026-11.test:conf"
CONF = """\
node.startup = automatic
node.conn[0].timeo.login_timeout = 13
node.session.auth.authmethod = CHAP
node.session.auth.username = confuser
node.session.auth.password = conf secret
discovery.sendtargets.auth.authmethod = CHAP
discovery.sendtargets.timeo.login_timeout = 21
"""
# iscsikit in the sandbox's mount namespace, in whichever network namespace it is started:
# defaults="auto" must find (or not find) iscsid on its own.
ISCSIKIT = (
    "from iscsikit.db.database import Database\n"
    "db = Database('/etc/iscsi')\n"
    f"db.new_node({TARGET!r}, '10.0.0.1:3260,1')\n"
    "db.new_discovery('10.0.0.9')\n"
    "print(db.new_defaults().source)\n"
)


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[IscsiadmSandbox, IscsiadmSandbox, IscsidStandIn]]:
    require_root(request)
    require(request, "iscsiadm", "nsenter", "unshare")
    with private_sandbox() as theirs, private_sandbox() as mine:
        for sandbox in (theirs, mine):
            reset(sandbox)
            (sandbox.db / "iscsid.conf").write_text(CONF)
        standin = IscsidStandIn(theirs.base)
        try:
            yield theirs, mine, standin
        finally:
            standin.close()


def _iscsiadm_ops(sandbox: IscsiadmSandbox, standin: IscsidStandIn) -> None:
    for argv in (
        ["-m", "node", "-o", "new", "-T", TARGET, "-p", "10.0.0.1:3260,1"],
        ["-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "new"],
    ):
        result = iscsiadm(sandbox, standin, *argv)
        assert result.returncode == 0, result.stderr


def test_iscsid_running_means_iscsid_conf(pair: tuple[IscsiadmSandbox, IscsiadmSandbox, IscsidStandIn]) -> None:
    theirs, mine, standin = pair
    standin.answer("/etc/iscsi/iscsid.conf")
    _iscsiadm_ops(theirs, standin)
    result = run_in(mine, [sys.executable, "-c", ISCSIKIT], standin)  # iscsid "listening" here
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "/etc/iscsi/iscsid.conf"
    assert db_tree(mine) == db_tree(theirs)
    assert "login_timeout = 13" in (mine.db / f"nodes/{TARGET}/10.0.0.1,3260,1/default").read_text()


def test_no_iscsid_means_compiled_defaults(pair: tuple[IscsiadmSandbox, IscsiadmSandbox, IscsidStandIn]) -> None:
    theirs, mine, standin = pair
    standin.answer(None)  # iscsiadm gets no config file: its compiled defaults
    _iscsiadm_ops(theirs, standin)
    # iscsikit in a fresh, empty network namespace: nothing listens for iscsid there
    result = run_in(mine, ["unshare", "-n", sys.executable, "-c", ISCSIKIT])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "compiled"
    assert db_tree(mine) == db_tree(theirs)
    assert "login_timeout = 30" in (mine.db / f"nodes/{TARGET}/10.0.0.1,3260,1/default").read_text()
