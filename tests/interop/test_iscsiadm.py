"""The iscsiadm wrapper against the REAL iscsiadm (private DB) and a real tgtd over TCP.

Discovery runs for real here: iscsiadm does SendTargets in userspace, which only needs the
tcp transport to be visible in sysfs (``IscsiadmSandbox(sysfs="transport")``). Login needs
iscsid and the kernel, so it is covered in tests/kernel; here only its failure without
iscsid is checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from iscsikit.errors import (
    InvalidParameterError,
    IscsidNotConnectedError,
    NoObjectsFoundError,
    PduTimeoutError,
    RecordNotFoundError,
)
from iscsikit.iscsiadm import Chap, Iscsiadm
from iscsikit.names import Portal
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tgtd import Tgtd, free_port
from tests.support.tiers import require, require_root

IQN = "iqn.2026-11.io.iscsikit.test:interop1"
SECRET = "s3cret pass#1"


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[IscsiadmSandbox]:
    require_root(request)
    require(request, "iscsiadm", "unshare", "nsenter")
    with IscsiadmSandbox(sysfs="transport") as sbx:
        yield sbx


@pytest.fixture
def tgtd(request: pytest.FixtureRequest) -> Iterator[Tgtd]:
    require_root(request)
    require(request, "tgtd", "tgtadm")
    with Tgtd() as t:
        t.add_target(IQN, luns={1: t.backing_file("lun1.img", 16 << 20)})
        yield t


def adm(sandbox: IscsiadmSandbox) -> Iscsiadm:
    return Iscsiadm(sandbox.runner, timeout=60, sleep=lambda s: None)


IFACE = "isk-disc"


def disc_iface(a: Iscsiadm) -> str:
    """Without iscsid, iscsiadm takes the initiator name for discovery from the iface."""
    if not a.iface_exists(IFACE):
        a.iface_new(IFACE)
        a.iface_update(IFACE, {"iface.initiatorname": "iqn.2026-11.io.iscsikit.test:initiator"})
    return IFACE


def portal(t: Tgtd) -> Portal:
    return Portal("127.0.0.1", t.port)


def test_sendtargets_discovery_creates_node_records(sandbox, tgtd):
    a = adm(sandbox)
    found = a.discover_sendtargets(portal(tgtd), iface=disc_iface(a))
    assert [(f.target, f.portal.address, f.portal.port, f.portal.tpgt) for f in found] == [
        (IQN, "127.0.0.1", tgtd.port, 1)
    ]
    assert a.node_exists(IQN, portal(tgtd), iface=IFACE)
    assert any(k.startswith(f"nodes/{IQN}/127.0.0.1,{tgtd.port},1") for k in sandbox.tree())


def test_no_persist_discovery_leaves_the_db_unchanged(sandbox, tgtd):
    a = adm(sandbox)
    iface = disc_iface(a)
    before = sandbox.tree()
    found = a.discover_sendtargets(portal(tgtd), iface=iface, persist=False)
    assert found[0].target == IQN
    assert sandbox.tree() == before


def test_discovery_with_chap_sets_and_masks_the_secret(sandbox, tgtd):
    a = adm(sandbox)
    found = a.discover_sendtargets(portal(tgtd), iface=disc_iface(a), chap=Chap("discuser", SECRET))
    assert found[0].target == IQN  # tgtd does not require discovery auth; the record carries it
    record = sandbox.tree()[f"send_targets/127.0.0.1,{tgtd.port}/st_config"][2]
    assert isinstance(record, bytes)
    text = record.decode()
    assert "discovery.sendtargets.auth.authmethod = CHAP" in text
    assert "discovery.sendtargets.auth.username = discuser" in text
    assert all(SECRET not in " ".join(c.argv) for c in sandbox.runner.recorded)


def test_no_persist_discovery_with_chap_removes_its_discovery_record(sandbox, tgtd):
    a = adm(sandbox)
    iface = disc_iface(a)
    before = sandbox.tree()
    a.discover_sendtargets(portal(tgtd), iface=iface, chap=Chap("discuser", SECRET), persist=False)
    after = sandbox.tree()
    # iscsiadm leaves the (empty) send_targets directory it created; no record, no nodes.
    assert after.pop("send_targets", ("dir", 0, ""))[0] == "dir"
    assert after == before


def test_discovery_on_a_closed_port_is_a_pdu_timeout(sandbox):
    with pytest.raises(PduTimeoutError) as err:
        a = Iscsiadm(sandbox.runner, attempts=1)
        a.discover_sendtargets(Portal("127.0.0.1", free_port()), iface=disc_iface(a), persist=False)
    assert err.value.error_code == 11 and "Connection refused" in err.value.stderr


def test_node_records_new_update_delete_and_errors(sandbox):
    a = adm(sandbox)
    p = Portal("192.0.2.30", 3260, 1)
    a.node_new(IQN, p, iface="default")
    a.node_update(IQN, p, {"node.startup": "manual", "node.session.timeo.replacement_timeout": 15})
    shown = sandbox.iscsiadm("-m", "node", "-T", IQN, "-p", "192.0.2.30:3260").stdout
    assert "node.startup = manual" in shown and "node.session.timeo.replacement_timeout = 15" in shown
    with pytest.raises(InvalidParameterError) as err:
        a.node_update(IQN, p, {"node.session.no_such_key": "1"})
    assert err.value.error_code == 7
    a.node_delete(IQN, p)
    assert not a.node_exists(IQN, p)
    a.node_delete(IQN, p)  # already gone: success
    with pytest.raises(NoObjectsFoundError):
        a.node_update(IQN, p, {"node.startup": "manual"})


def test_secrets_never_appear_in_errors(sandbox):
    a = adm(sandbox)
    with pytest.raises(RecordNotFoundError) as err:  # written by the DB writer, not iscsiadm -v SECRET
        a.set_session_chap(IQN, Portal("192.0.2.31"), Chap("user", SECRET))
    assert SECRET not in str(err.value) and SECRET not in json.dumps(err.value.to_json())


def test_logout_and_session_queries_without_sessions_are_success(sandbox):
    a = adm(sandbox)
    assert a.sessions() == [] and a.sessions(3) == []
    assert a.logout(IQN) == []
    assert a.logout_all() == []
    assert a.logout_session(99) == []


def test_login_without_iscsid_names_the_cause(sandbox):
    a = adm(sandbox)
    p = Portal("192.0.2.32", 3260, 1)
    a.node_new(IQN, p)
    with pytest.raises(IscsidNotConnectedError) as err:
        a.login(IQN, p, timeout=60)
    assert err.value.error_code == 20 and "iscsid" in str(err.value)


def test_iface_clone_workflow(sandbox):
    a = adm(sandbox)
    assert not a.iface_exists("isk-clone")
    a.iface_new("isk-clone")
    a.iface_update("isk-clone", {"iface.initiatorname": "iqn.2026-11.test:n1"})
    rec = a.iface_show("isk-clone")
    assert rec["iface.initiatorname"] == "iqn.2026-11.test:n1" and rec["iface.transport_name"] == "tcp"
    a.iface_delete("isk-clone")
    assert not a.iface_exists("isk-clone")
    a.iface_delete("isk-clone")  # already gone: success


def test_dry_run_runs_nothing_that_changes_the_db(sandbox, tgtd):
    from iscsikit.runner import Runner

    before = sandbox.tree()
    runner = Runner("ns", ns_process="isk-sandbox", dry_run=True)
    a = Iscsiadm(runner)
    a.node_new(IQN, Portal("192.0.2.33", 3260, 1))
    a.discover_sendtargets(portal(tgtd), iface=IFACE)
    assert sandbox.tree() == before
    assert [r.argv[:3] for r in runner.recorded] == [["iscsiadm", "-m", "node"], ["iscsiadm", "-m", "discovery"]]
