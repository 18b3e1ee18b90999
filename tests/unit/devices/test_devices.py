"""Device names, the udev waiter's logic, SCSI operations and the inventory, on sysfs trees."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iscsikit.devices.inventory import Inventory, read_mountinfo
from iscsikit.devices.multipath import Multipath
from iscsikit.devices.paths import WwnInfo, by_path_name, format_lun, links_to, resolve_link
from iscsikit.devices.scsi import ScsiOps
from iscsikit.devices.udev import DeviceEvent, DeviceWaiter, PollingEventSource
from iscsikit.errors import DeviceBusyError, DeviceTimeoutError
from iscsikit.runner import Runner

# ---- names ---------------------------------------------------------------------------


def test_by_path_name_matches_udev():
    # Seen in the VM: /dev/disk/by-path/ip-127.0.0.1:3260-iscsi-iqn.2026-11.test:probe-lun-1
    name = by_path_name("127.0.0.1", 3260, "iqn.2026-11.test:probe", 1)
    assert name == "ip-127.0.0.1:3260-iscsi-iqn.2026-11.test:probe-lun-1"
    assert by_path_name("[2001:db8::11]", 3260, "iqn.x:y", 0).startswith("ip-2001:db8::11:3260-")


@given(st.integers(0, 2**32 - 1))
def test_format_lun(lun):
    text = format_lun(lun)
    if lun < 256:
        assert text == f"lun-{lun}"
    else:
        hexpart = text.removeprefix("lun-0x")
        assert len(hexpart) == 16 and hexpart.endswith("00000000")
        assert int(hexpart[:4], 16) == lun & 0xFFFF and int(hexpart[4:8], 16) == (lun >> 16) & 0xFFFF


def test_wwn_spellings():
    # the kernel's wwid and udev's values for a tgt LUN, recorded in the VM
    w = WwnInfo.from_sysfs_wwid("naa.60000000000000000e00000000010001")
    assert w.wwn == "0x60000000000000000e00000000010001"  # ID_WWN_WITH_EXTENSION
    assert w.wwid == "360000000000000000e00000000010001"  # ID_SERIAL, multipath's WWID
    t10 = WwnInfo.from_sysfs_wwid("t10.IET     VIRTUAL-DISK    beaf11")
    assert t10.wwn is None and t10.wwid == "1IET_VIRTUAL-DISK_beaf11"
    assert WwnInfo.from_sysfs_wwid("eui.0123456789abcdef").wwid == "20123456789abcdef"


def test_links_to_and_resolve(tmp_path):
    d = tmp_path / "by-path"
    d.mkdir()
    (d / "ip-a-lun-1").symlink_to("../../sdb")
    (d / "ip-a-lun-1-part1").symlink_to("../../sdb1")
    (d / "ip-a-lun-2").symlink_to("../../sdc")
    assert links_to(d, "sdb") == [str(d / "ip-a-lun-1")]
    assert resolve_link(d / "ip-a-lun-2") == "sdc"
    assert resolve_link(d / "missing") is None
    assert links_to(tmp_path / "none", "sdb") == []


# ---- waiter ----------------------------------------------------------------------------


class ScriptedSource(PollingEventSource):
    """Events that change the tree when delivered: a recorded sequence replayed."""

    def __init__(self, actions):
        super().__init__(interval=0, sleep=lambda s: None)
        self.actions = list(actions)
        self.started = False
        self.polls = 0

    def start(self):
        self.started = True

    def poll(self, timeout):
        self.polls += 1
        if self.actions:
            action = self.actions.pop(0)
            action()
            return DeviceEvent("add", "/sys/x", "block")
        return None


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 1.0
        return self.now


def _hide_lun(sysfs: Path, hctl: str, disk: str) -> Path:
    """Move a LUN's block dir away (as before the kernel created it); return where it went."""
    lun_dir = Path(os.path.realpath(sysfs / f"bus/scsi/devices/{hctl}"))
    stash = sysfs.parent / f"stash-{disk}"
    shutil.move(str(lun_dir / "block"), str(stash))
    return stash


def test_waits_for_the_lun_event_driven(synthetic_sysfs):
    lun_dir = Path(os.path.realpath(synthetic_sysfs / "bus/scsi/devices/12:0:0:10"))
    stash = _hide_lun(synthetic_sysfs, "12:0:0:10", "sdh")
    source = ScriptedSource([lambda: None, lambda: shutil.move(str(stash), str(lun_dir / "block"))])
    with DeviceWaiter(synthetic_sysfs, source=source, clock=FakeClock()) as waiter:
        assert source.started
        dev = waiter.wait_for_lun(11, 10, timeout=30)
    assert dev.block is not None and dev.block.name == "sdh" and source.polls == 2


def test_timeout_names_what_was_expected(synthetic_sysfs):
    waiter = DeviceWaiter(synthetic_sysfs, source=ScriptedSource([]), clock=FakeClock())
    with pytest.raises(DeviceTimeoutError) as err:
        waiter.wait_for_lun(11, 7, timeout=3)
    msg = str(err.value)
    assert "LUN 7 of session 11" in msg and "LUNs seen: 0, 1, 2, 10" in msg
    with pytest.raises(DeviceTimeoutError, match="no block device"):
        waiter.wait_for_lun(11, 0, timeout=2)  # the controller LUN never gets a disk
    with pytest.raises(DeviceTimeoutError, match="session 42 is gone"):
        waiter.wait_for_lun(42, 1, timeout=2)


def test_not_initialized_by_udev_is_not_ready(synthetic_sysfs):
    class Uninitialized(ScriptedSource):
        def is_initialized(self, sys_path):
            return False

    waiter = DeviceWaiter(synthetic_sysfs, source=Uninitialized([]), clock=FakeClock())
    with pytest.raises(DeviceTimeoutError, match="udev has not finished"):
        waiter.wait_for_lun(1, 1, timeout=2)


def _add_multipath(sysfs: Path, dm: str, paths: list[str], uuid: str = "mpath-3600") -> None:
    dm_dir = sysfs / "devices/virtual/block" / dm
    (dm_dir / "dm").mkdir(parents=True)
    (dm_dir / "slaves").mkdir()
    (dm_dir / "holders").mkdir()
    (dm_dir / "dev").write_text("254:0\n")
    (dm_dir / "size").write_text("2097152\n")
    (dm_dir / "dm/name").write_text("mpatha\n")
    (dm_dir / "dm/uuid").write_text(uuid + "\n")
    (sysfs / "class/block" / dm).symlink_to(f"../../devices/virtual/block/{dm}")
    for p in paths:
        (dm_dir / "slaves" / p).symlink_to(f"../../../../class/block/{p}")
        block = Path(os.path.realpath(sysfs / "class/block" / p))
        (block / "holders").mkdir(exist_ok=True)
        (block / "holders" / dm).symlink_to(f"../../../../../../../../../virtual/block/{dm}")


def test_multipath_map_found_only_when_it_holds_every_path(synthetic_sysfs):
    waiter = DeviceWaiter(synthetic_sysfs, source=ScriptedSource([]), clock=FakeClock())
    assert waiter.multipath_holder(["sdb", "sdd"]) is None
    _add_multipath(synthetic_sysfs, "dm-0", ["sdb"])
    assert waiter.multipath_holder(["sdb", "sdd"]) is None  # sdd not in the map yet
    assert waiter.multipath_holder(["sdb"]) == "dm-0"
    with pytest.raises(DeviceTimeoutError, match="multipathd"):
        waiter.wait_for_multipath(["sdb", "sdd"], timeout=2)
    mp = Multipath(Runner(dry_run=True), synthetic_sysfs)
    assert mp.map_of("sdb") == "dm-0" and mp.name("dm-0") == "mpatha" and mp.paths("dm-0") == ["sdb"]
    assert mp.wwid("dm-0") == "3600"


def test_non_multipath_dm_holder_is_ignored(synthetic_sysfs):
    _add_multipath(synthetic_sysfs, "dm-1", ["sdc"], uuid="LVM-abc")
    assert Multipath(Runner(dry_run=True), synthetic_sysfs).map_of("sdc") is None


def test_wait_gone(synthetic_sysfs):
    link = synthetic_sysfs / "class/block/sdb"
    waiter = DeviceWaiter(synthetic_sysfs, source=ScriptedSource([link.unlink]), clock=FakeClock())
    waiter.wait_gone(["sdb"], timeout=10)
    with pytest.raises(DeviceTimeoutError, match="sdc"):
        waiter.wait_gone(["sdc"], timeout=2)


# ---- SCSI operations ------------------------------------------------------------------


def test_scan_rescan_delete_write_the_kernel_files(synthetic_sysfs, tmp_path):
    ops = ScsiOps(Runner(), synthetic_sysfs, dev_root=tmp_path / "dev")
    scan = synthetic_sysfs / "class/scsi_host/host12/scan"
    scan.write_text("")
    ops.scan_lun(12, 0, 0, 7)
    assert scan.read_text() == "0 0 7"
    dev = Path(os.path.realpath(synthetic_sysfs / "class/block/sdg/device"))
    (dev / "rescan").write_text("")
    (dev / "delete").write_text("")
    assert ops.rescan("sdg") == 2097152 * 512
    assert (dev / "rescan").read_text() == "1"
    ops.delete("sdg")
    assert (dev / "delete").read_text() == "1"


def test_dry_run_records_instead_of_writing(synthetic_sysfs):
    runner = Runner(dry_run=True)
    ops = ScsiOps(runner, synthetic_sysfs)
    ops.scan_lun(2, 0, 0, 5)
    ops.remove("sdb")
    assert [a.describe() for a in runner.recorded] == [
        f"write '0 0 5' to {synthetic_sysfs}/class/scsi_host/host2/scan",
        "blockdev --flushbufs /dev/sdb",
        f"write '1' to {synthetic_sysfs}/class/block/sdb/device/delete",
    ]


def test_remove_refuses_a_held_device(synthetic_sysfs):
    _add_multipath(synthetic_sysfs, "dm-0", ["sdb"])
    runner = Runner(dry_run=True)
    with pytest.raises(DeviceBusyError, match="dm-0"):
        ScsiOps(runner, synthetic_sysfs).remove("sdb")
    assert runner.recorded == []
    ScsiOps(runner, synthetic_sysfs).remove("sdb", force=True)
    assert runner.recorded[-1].path.endswith("sdb/device/delete")


def test_remove_of_a_gone_device_is_success(synthetic_sysfs):
    runner = Runner(dry_run=True)
    ScsiOps(runner, synthetic_sysfs).remove("sdz")
    assert runner.recorded == []


def test_blocked_device_is_deleted_without_flush(synthetic_sysfs):
    runner = Runner(dry_run=True)
    ScsiOps(runner, synthetic_sysfs).remove("sdf")  # session 10 is FAILED, sdf blocked
    assert [a.kind for a in runner.recorded] == ["write"]


# ---- inventory ---------------------------------------------------------------------------


def test_inventory(synthetic_sysfs, tmp_path):
    dev_root = tmp_path / "dev"
    (dev_root / "disk/by-path").mkdir(parents=True)
    (dev_root / "disk/by-id").mkdir(parents=True)
    name = by_path_name("192.0.2.12", 3260, "iqn.2026-11.org.iscsikit.research:t2", 10)
    (dev_root / "disk/by-path" / name).symlink_to("../../sdh")
    (dev_root / "disk/by-id/wwn-0x6001").symlink_to("../../sdh")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("36 35 8:112 / /mnt/with\\040space rw,relatime shared:1 - ext4 /dev/sdh rw\n")
    devices = {d.name: d for d in Inventory(synthetic_sysfs, dev_root, mountinfo).devices()}
    assert sorted(devices) == ["sdb", "sdc", "sdd", "sde", "sdf", "sdg", "sdh", "sdi"]
    sdh = devices["sdh"]
    assert (sdh.sid, sdh.lun, sdh.hctl, sdh.address) == (11, 10, "12:0:0:10", "192.0.2.12")
    assert sdh.by_path == str(dev_root / "disk/by-path" / name)
    assert sdh.by_id == (str(dev_root / "disk/by-id/wwn-0x6001"),)
    assert sdh.mountpoints == ("/mnt/with space",)
    assert devices["sdg"].by_path is None and devices["sdg"].mountpoints == ()
    assert sdh.to_json()["device"] == "/dev/sdh"


def test_read_mountinfo_missing(tmp_path):
    assert read_mountinfo(tmp_path / "none") == {}
