"""iscsikit.tgt against a real tgtd on loopback: every call go-iscsi-helper makes, and its errors."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from iscsikit.errors import (
    TgtAclNotFoundError,
    TgtdNotRunningError,
    TgtLunExistsError,
    TgtNoLunError,
    TgtNoTargetError,
    TgtTargetExistsError,
    UsageError,
)
from iscsikit.tgt import Tgt
from tests.support.tgtd import Tgtd
from tests.support.tiers import require, require_root

IQN = "iqn.2026-11.org.iscsikit.test:tgt"


@pytest.fixture
def tgtd(request: pytest.FixtureRequest) -> Iterator[Tgtd]:
    require_root(request)
    require(request, "tgtd", "tgtadm")
    with Tgtd() as daemon:
        yield daemon


def test_target_lifecycle(tgtd: Tgtd) -> None:
    tgt = tgtd.tgt
    assert tgt.is_running()
    assert tgt.supports_backing_store("rdwr") and not tgt.supports_backing_store("longhorn")
    assert tgt.next_free_tid() == 1
    tgt.create_target(1, IQN)
    with pytest.raises(TgtTargetExistsError):
        tgt.create_target(1, IQN)
    assert tgt.target_tid(IQN) == 1 and tgt.target_tid(IQN + "x") is None
    assert tgt.next_free_tid() == 2

    disk = tgtd.backing_file("disk.img", 64 << 20)
    tgt.add_lun(1, 1, str(disk))
    with pytest.raises(TgtLunExistsError):
        tgt.add_lun(1, 1, str(disk))
    with pytest.raises(UsageError, match="longhorn is not supported"):
        tgt.add_lun(1, 2, str(disk), bstype="longhorn")
    tgt.set_lun_thin_provisioning(1, 1)
    tgt.disable_write_cache(1, 1)
    tgt.bind_initiator(1, "ALL")
    tgt.bind_initiator_name(1, "iqn.2026-11.org.iscsikit.test:host")

    target = tgt.target(1)
    lun = next(lu for lu in target.luns if lu.lun == 1)
    assert lun.thin_provisioning and lun.backing_store_path == str(disk) and lun.block_size == 512
    assert target.acls == ["ALL", "iqn.2026-11.org.iscsikit.test:host"]

    tgt.unbind_initiator(1, "ALL")
    with pytest.raises(TgtAclNotFoundError):
        tgt.unbind_initiator(1, "ALL")
    tgt.unbind_initiator(1, "ALL", missing_ok=True)
    with pytest.raises(TgtNoLunError):
        tgt.delete_lun(1, 7)
    tgt.delete_lun(1, 1)
    tgt.delete_target(1)
    with pytest.raises(TgtNoTargetError):
        tgt.delete_target(1)
    assert tgt.targets() == []


def test_create_target_auto_reuses_and_allocates(tgtd: Tgtd) -> None:
    tgt = tgtd.tgt
    tgt.create_target(1, IQN + "a")
    tgt.create_target(3, IQN + "c")
    assert tgt.create_target_auto(IQN + "b") == 2
    assert tgt.create_target_auto(IQN + "b") == 2  # exists: same tid
    assert tgt.create_target_auto(IQN + "d") == 4


def test_connections_are_listed_closed_and_torn_down(request: pytest.FixtureRequest, tgtd: Tgtd) -> None:
    require(request, "iscsi-perf")
    tgt = tgtd.tgt
    tid = tgtd.add_target(IQN, luns={1: tgtd.backing_file("c.img", 64 << 20)})
    reader = subprocess.Popen(
        ["iscsi-perf", "-t", "20", tgtd.url(IQN, 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not (conns := tgt.connections(tid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        (conn,) = conns
        assert conn.initiator.startswith("iqn.2010-11.libiscsi") and conn.cid == 0
        assert tgt.connection_map(tid) == {conn.sid: [0]}
        (nexus,) = tgt.target(tid).nexuses
        assert nexus.initiator == conn.initiator
        assert tgt.teardown_target(tid) is True
        assert tgt.targets() == []
        assert tgt.teardown_target(tid) is False  # idempotent
    finally:
        reader.kill()
        reader.wait()


def test_chap_account_binding(tgtd: Tgtd) -> None:
    tid = tgtd.add_target(IQN, luns={1: tgtd.backing_file("chap.img", 16 << 20)}, chap=("chapuser", "chapsecret123"))
    assert tgtd.tgt.target(tid).accounts == ["chapuser"]
    tgtd.tgt.unbind_account(tid, "chapuser")
    tgtd.tgt.delete_account("chapuser")
    assert tgtd.tgt.target(tid).accounts == []


def test_delete_all_targets_keeps_tgtd_running(tgtd: Tgtd) -> None:
    for i in range(3):
        tgtd.add_target(f"{IQN}{i}", luns={1: tgtd.backing_file(f"d{i}.img", 8 << 20)})
    assert sorted(tgtd.tgt.delete_all_targets()) == [1, 2, 3]
    assert tgtd.tgt.targets() == [] and tgtd.tgt.is_running()


def test_no_daemon_is_a_typed_error(request: pytest.FixtureRequest) -> None:
    require(request, "tgtadm")
    tgt = Tgt(control_port=4999)
    assert not tgt.is_running()
    with pytest.raises(TgtdNotRunningError):
        tgt.targets()
