"""The sysfs session model on the synthetic tree (fixtures/README.md scenario table)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iscsikit.errors import NoSuchSessionError
from iscsikit.names import Portal
from iscsikit.session.parse import parse_session_tree
from iscsikit.session.sysfs import BlockDevices, ScsiDevices, Sessions, SysfsRoot, read_attr, scsi_host_of_session


def test_lists_every_session_in_numeric_order(synthetic_sysfs):
    assert Sessions(synthetic_sysfs).sids() == [1, 2, 10, 11]


def test_session_fields(synthetic_sysfs):
    s = Sessions(synthetic_sysfs).from_sid(1)
    assert s.target == "iqn.2026-11.org.iscsikit.research:t1"
    assert s.portal == Portal("192.0.2.11", 3260, 1)
    assert s.state == "LOGGED_IN" and s.iface_name == "default"
    assert s.host.host_no == 2 and s.host.transport == "tcp" and s.host.state == "running"
    assert s.timeouts == {"recovery": 120, "abort": 15, "lun_reset": 30, "target_reset": 30}
    assert s.username == "kituser"
    assert [(d.lun, d.block.name if d.block else None) for d in s.devices] == [(0, "sdb"), (1, "sdc")]


def test_redirected_failed_session(synthetic_sysfs):
    s = Sessions(synthetic_sysfs).from_sid(10)
    assert s.portal == Portal("192.0.2.13", 3260, 1)
    assert s.current_portal == Portal("192.0.2.113", 3261, 1)
    assert s.state == "FAILED" and s.timeouts["recovery"] == 5
    assert s.devices[0].state == "blocked"
    assert s.host.netdev == "lo" and s.iface_name == "iscsikit-res1"


def test_luns_sorted_numerically_and_controller_without_disk(synthetic_sysfs):
    s = Sessions(synthetic_sysfs).from_sid(11)
    assert [d.lun for d in s.devices] == [0, 1, 2, 10]
    controller = s.device(0)
    assert controller is not None and controller.block is None and controller.type == 12
    disk = s.device(10)
    assert disk is not None and disk.block is not None and disk.block.name == "sdh"
    assert disk.block.size_bytes == 2097152 * 512 and disk.block.devnum == "8:112"
    assert s.device(99) is None


def test_ipv6_session(synthetic_sysfs):
    s = Sessions(synthetic_sysfs).from_sid(2)
    assert s.portal == Portal("2001:db8::11", 3260, 2) and s.host.ip_address == "2001:db8::100"


def test_sysfs_agrees_with_iscsiadm_p3_on_the_same_tree(synthetic_sysfs, capture):
    """iscsiadm printed session-P3 from this very tree: both readers must see the same."""
    printed = {s.sid: s for s in parse_session_tree(capture("session-P3").stdout)}
    for s in Sessions(synthetic_sysfs).all():
        p = printed[s.sid]
        seen = (s.target, s.portal, s.current_portal, s.state)
        assert seen == (p.target, p.portal, p.current_portal, p.session_state)
        assert s.host.host_no == p.host
        assert sorted((d.lun, d.block.name if d.block else None) for d in s.devices) == sorted(
            (u.lun, u.disk) for u in p.luns
        )


def test_find_by_target_portal_and_iface(synthetic_sysfs):
    sessions = Sessions(synthetic_sysfs)
    t1 = "iqn.2026-11.org.iscsikit.research:t1"
    assert [s.sid for s in sessions.find(t1)] == [1, 2]
    assert [s.sid for s in sessions.find(t1, Portal.parse("[2001:db8::11]:3260"))] == [2]
    assert [s.sid for s in sessions.find(t1, Portal.parse("192.0.2.11:3260,7"))] == []  # tpgt differs
    t3 = "iqn.2026-11.org.iscsikit.research:t3"
    assert [s.sid for s in sessions.find(t3, Portal.parse("192.0.2.113:3261"))] == [10]  # current portal
    assert sessions.find(t3, iface="default") == []


def test_missing_session_names_the_sid(synthetic_sysfs):
    with pytest.raises(NoSuchSessionError) as err:
        Sessions(synthetic_sysfs).from_sid(99)
    assert err.value.sid == 99 and "99" in str(err.value)
    with pytest.raises(NoSuchSessionError):
        scsi_host_of_session(SysfsRoot(synthetic_sysfs), 99)
    assert scsi_host_of_session(SysfsRoot(synthetic_sysfs), 11) == 12


def test_block_and_scsi_lookups(synthetic_sysfs):
    blocks = BlockDevices(synthetic_sysfs)
    assert blocks.iscsi_location("sdh") == (12, 11, 12, 0, 0, 10)
    assert blocks.from_name("nope") is None and blocks.from_name("../x") is None
    dev = ScsiDevices(synthetic_sysfs).from_hctl(12, 0, 0, 2)
    assert dev is not None and dev.block is not None and dev.block.name == "sdi" and dev.vendor == "LIO-ORG"
    assert ScsiDevices(synthetic_sysfs).from_hctl(9, 0, 0, 0) is None


def test_empty_or_missing_root_lists_nothing(tmp_path):
    assert Sessions(tmp_path).all() == []
    assert Sessions(tmp_path / "missing").sids() == []


def test_session_vanishing_mid_listing_is_skipped(synthetic_sysfs):
    sessions = Sessions(synthetic_sysfs)
    os.unlink(synthetic_sysfs / "class/iscsi_session/session10")
    assert [s.sid for s in sessions.all()] == [1, 2, 11]


def test_read_attr_null_and_missing(tmp_path: Path):
    (tmp_path / "a").write_text("(null)\n")
    (tmp_path / "b").write_text("value\n")
    assert read_attr(tmp_path / "a") is None
    assert read_attr(tmp_path / "b") == "value"
    assert read_attr(tmp_path / "c") is None


def test_to_json_shape(synthetic_sysfs):
    data = Sessions(synthetic_sysfs).from_sid(11).to_json()
    for key in ("sid", "target", "address", "port", "tpgt", "iface", "state", "host", "devices"):
        assert key in data
    assert data["devices"][1]["device"] == "/dev/sdg"
