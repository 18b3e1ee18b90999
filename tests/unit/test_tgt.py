"""tgt.py without tgtd: tgtadm argv (recorded by a dry-run Runner), typed errors, and parsers
replaying output recorded from tgtd 1.0.85 (Debian 12).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iscsikit.errors import (
    TgtAclExistsError,
    TgtadmError,
    TgtdNotRunningError,
    TgtLunActiveError,
    TgtNoTargetError,
    UsageError,
)
from iscsikit.runner import Runner
from iscsikit.tgt import DISABLE_WRITE_CACHE_MODE_PAGE, Tgt, parse_connections, parse_system, parse_targets

# `tgtadm -C 79 --lld iscsi --op show --mode target` with one libiscsi session (iscsi-perf) logged in
# (trailing blanks after "Backing store flags:" stripped).
SHOW_TARGET = """\
Target 1: iqn.2026-11.test:a
    System information:
        Driver: iscsi
        State: ready
    I_T nexus information:
        I_T nexus: 1
            Initiator: iqn.2010-11.libiscsi:iscsi-perf alias: none
            Connection: 0
                IP Address: 127.0.0.1
    LUN information:
        LUN: 0
            Type: controller
            SCSI ID: IET     00010000
            SCSI SN: beaf10
            Size: 0 MB, Block size: 1
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: null
            Backing store path: None
            Backing store flags:
        LUN: 1
            Type: disk
            SCSI ID: IET     00010001
            SCSI SN: beaf11
            Size: 67 MB, Block size: 512
            Online: Yes
            Removable media: No
            Prevent removal: No
            Readonly: No
            SWP: No
            Thin-provisioning: No
            Backing store type: rdwr
            Backing store path: /tmp/tgtexp/a.img
            Backing store flags:
    Account information:
        u2 (outgoing)
    ACL information:
        ALL
        iqn.2026-11.init:x
"""

SHOW_CONN = """\
Session: 1
    Connection: 0
        Initiator: iqn.2010-11.libiscsi:iscsi-perf
        IP Address: 127.0.0.1
"""

SHOW_SYSTEM = """\
System:
    State: ready
    debug: off
LLDs:
    iscsi: ready
    iser: error
Backing stores:
    sheepdog
    bsg
    sg
    null
    ssc
    smc (bsoflags sync:direct)
    mmc (bsoflags sync:direct)
    rdwr (bsoflags sync:direct)
    aio
Device types:
    disk
    cd/dvd
"""


def test_parse_targets_reads_every_section() -> None:
    (target,) = parse_targets(SHOW_TARGET)
    assert (target.tid, target.name, target.driver, target.state) == (1, "iqn.2026-11.test:a", "iscsi", "ready")
    assert [lun.lun for lun in target.luns] == [0, 1]
    controller, disk = target.luns
    assert controller.type == "controller" and controller.backing_store_path == ""
    assert disk.type == "disk" and disk.block_size == 512 and disk.size == "67 MB"
    assert disk.backing_store_type == "rdwr" and disk.backing_store_path == "/tmp/tgtexp/a.img"
    assert not disk.thin_provisioning and not disk.readonly
    (nexus,) = target.nexuses
    assert nexus.initiator == "iqn.2010-11.libiscsi:iscsi-perf" and nexus.alias == "none"
    assert nexus.connections == [(0, "IP Address: 127.0.0.1")]
    assert target.outgoing_account == "u2" and target.accounts == []
    assert target.acls == ["ALL", "iqn.2026-11.init:x"]


def test_parse_targets_of_nothing() -> None:
    assert parse_targets("") == []


def test_parse_connections() -> None:
    (conn,) = parse_connections(SHOW_CONN)
    assert (conn.sid, conn.cid, conn.initiator, conn.address) == (
        1, 0, "iqn.2010-11.libiscsi:iscsi-perf", "IP Address: 127.0.0.1",
    )  # fmt: skip


def test_parse_system_lists_backing_stores() -> None:
    sections = parse_system(SHOW_SYSTEM)
    assert sections["LLDs"] == ["iscsi: ready", "iser: error"]
    assert "rdwr (bsoflags sync:direct)" in sections["Backing stores"]


@pytest.fixture
def tgt() -> Tgt:
    return Tgt(Runner("local", dry_run=True), control_port=79)


def _recorded(tgt: Tgt) -> list[list[str]]:
    return [action.argv for action in tgt.runner.recorded]


def test_target_and_lun_argv(tgt: Tgt) -> None:
    tgt.create_target(3, "iqn.2019-10.io.longhorn:vol1")
    tgt.add_lun(3, 1, "/var/lib/vol1.img")
    tgt.set_lun_thin_provisioning(3, 1)
    tgt.disable_write_cache(3, 1)
    tgt.update_lun(3, 1, {"vendor_id": "X", "product_id": "Y"})
    tgt.expand_lun(3, 1, 2 << 30)
    tgt.bind_initiator(3)
    tgt.unbind_initiator(3, "10.0.0.0/8")
    tgt.delete_lun(3, 1)
    tgt.delete_target(3, force=True)
    base = ["tgtadm", "-C", "79", "--lld", "iscsi"]
    assert _recorded(tgt) == [
        [*base, "--op", "new", "--mode", "target", "--tid", "3", "--targetname", "iqn.2019-10.io.longhorn:vol1"],
        [*base, "--op", "new", "--mode", "logicalunit", "--tid", "3", "--lun", "1",
         "--backing-store", "/var/lib/vol1.img"],
        [*base, "--op", "update", "--mode", "logicalunit", "--tid", "3", "--lun", "1",
         "--params", "thin_provisioning=1"],
        [*base, "--op", "update", "--mode", "logicalunit", "--tid", "3", "--lun", "1",
         "--params", f"mode_page={DISABLE_WRITE_CACHE_MODE_PAGE}"],
        # sorted, unlike go-iscsi-helper's map order
        [*base, "--op", "update", "--mode", "logicalunit", "--tid", "3", "--lun", "1",
         "--params", "product_id=Y,vendor_id=X"],
        [*base, "--op", "update", "--mode", "logicalunit", "--tid", "3", "--lun", "1",
         "--params", f"bsopts=size={2 << 30}"],
        [*base, "--op", "bind", "--mode", "target", "--tid", "3", "--initiator-address", "ALL"],
        [*base, "--op", "unbind", "--mode", "target", "--tid", "3", "--initiator-address", "10.0.0.0/8"],
        [*base, "--op", "delete", "--mode", "logicalunit", "--tid", "3", "--lun", "1"],
        [*base, "--op", "delete", "--mode", "target", "--force", "--tid", "3"],
    ]  # fmt: skip


def test_account_password_is_masked_in_the_record(tgt: Tgt) -> None:
    tgt.create_account("chapuser", "chapsecret123")
    tgt.bind_account(2, "chapuser", outgoing=True)
    create, bind = _recorded(tgt)
    assert "chapsecret123" not in " ".join(create)
    assert bind[-3:] == ["--user", "chapuser", "--outgoing"]


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("create_target", (0, "iqn.2026-11.test:a")),
        ("create_target", (4096, "iqn.2026-11.test:a")),
        ("create_target", (1, "not an iqn")),
        ("add_lun", (1, -1, "/x")),
        ("add_lun", (1, 1, "")),
        ("update_lun", (1, 1, {"a": "x,y"})),
        ("update_lun", (1, 1, {"a=b": "x"})),
        ("bind_initiator_name", (1, "bogus name")),
    ],
)
def test_bad_arguments_never_reach_tgtadm(tgt: Tgt, call: str, args: tuple[object, ...]) -> None:
    with pytest.raises(UsageError):
        getattr(tgt, call)(*args)
    assert _recorded(tgt) == []


@pytest.mark.parametrize(
    ("stderr", "rc", "cls"),
    [
        ("tgtadm: can't find the target\n", 22, TgtNoTargetError),
        ("tgtadm: this access control rule already exists\n", 22, TgtAclExistsError),
        ("tgtadm: this logical unit is still active\n", 22, TgtLunActiveError),
        ("tgtadm: failed to send request hdr to tgt daemon, Transport endpoint is not connected\n", 107,
         TgtdNotRunningError),
        ("tgtadm: something new\n", 22, TgtadmError),
    ],
)  # fmt: skip
def test_errors_are_typed_by_message(stderr: str, rc: int, cls: type[TgtadmError]) -> None:
    err = TgtadmError.from_result(["tgtadm"], rc, "", stderr)
    assert type(err) is cls
    assert err.reason == stderr.strip().removeprefix("tgtadm: ")
    assert err.returncode == rc
    assert err.to_json()["reason"] == err.reason


def test_a_failed_account_call_carries_no_secret(tmp_path: Path) -> None:
    """TgtadmError.to_json() (what --json prints) and str() show the argv with the secret masked."""
    fake = tmp_path / "tgtadm"  # a stand-in tgtadm that fails the way tgtd answers
    fake.write_text("#!/bin/sh\necho \"$*\"\necho 'tgtadm: this account already exists' >&2\nexit 22\n")
    fake.chmod(0o755)
    tgt = Tgt(Runner("local"), tgtadm=str(fake))
    with pytest.raises(TgtadmError) as info:
        tgt.create_account("chapuser", "chapsecret123")
    shown = json.dumps(info.value.to_json()) + str(info.value) + info.value.stdout
    assert "chapsecret123" not in shown
    assert "********" in json.dumps(info.value.to_json()["argv"])
