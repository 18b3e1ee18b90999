"""Parsers and the sysfs reader on REAL captures from the kernel tier.

``tests/fixtures/kernel/`` (recorded in the VM by the harness: a real login to tgtd, Linux
6.1, open-iscsi 2.1.8) holds iscsiadm's output and the sysfs tree of the same moment;
``data/vm-tgtd-session-P3.txt`` is an earlier real capture of ours. Both readers must agree
with each other and with udev.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from iscsikit.devices.paths import WwnInfo, by_path_name
from iscsikit.session.parse import parse_session_flat, parse_session_tree
from iscsikit.session.sysfs import Sessions
from tests.support.tiers import ROOT, unavailable
from tests.unit.session.conftest import unpack_sysfs

KERNEL = ROOT / "tests" / "fixtures" / "kernel"
OURS = Path(__file__).parent / "data"


def _out(request: pytest.FixtureRequest, name: str) -> str:
    path = KERNEL / "iscsiadm" / f"{name}.stdout"
    if not path.exists():
        unavailable(request, f"kernel-tier capture {path} is missing")
    return path.read_text()


def _udev(request: pytest.FixtureRequest, name: str) -> dict[str, str]:
    props = {}
    for line in _out(request, name).splitlines():
        key, _, value = line.partition("=")
        props[key] = shlex.split(value)[0] if value else ""
    return props


@pytest.fixture
def kernel_sysfs(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    tarball = KERNEL / "sysfs" / "sys-kernel.tar.gz"
    if not tarball.exists():
        unavailable(request, f"kernel-tier sysfs capture {tarball} is missing")
    return unpack_sysfs(tarball, tmp_path / "sys")


def test_real_p3_capture_of_ours():
    (s,) = parse_session_tree((OURS / "vm-tgtd-session-P3.txt").read_text())
    assert s.target == "iqn.2026-11.test:probe" and s.host == 6
    assert [(u.lun, u.disk) for u in s.luns] == [(0, None), (1, "sda"), (2, "sdb")]


def test_flat_and_tree_captures_agree(request):
    flat = parse_session_flat(_out(request, "session-P0"))
    for level in ("session-P1", "session-P2", "session-P3", "session-P3-S"):
        tree = parse_session_tree(_out(request, level))
        assert [(s.sid, s.target, s.portal) for s in tree] == [(s.sid, s.target, s.portal) for s in flat]


def test_sysfs_reader_agrees_with_iscsiadm_on_the_real_tree(request, kernel_sysfs):
    printed = {s.sid: s for s in parse_session_tree(_out(request, "session-P3"))}
    read = Sessions(kernel_sysfs).all()
    assert sorted(printed) == [s.sid for s in read]
    for s in read:
        p = printed[s.sid]
        assert (s.target, s.portal, s.host.host_no, s.state) == (p.target, p.portal, p.host, p.session_state)
        assert sorted((d.lun, d.block.name if d.block else None) for d in s.devices) == sorted(
            (u.lun, u.disk) for u in p.luns
        )
        assert s.host.transport == "tcp" and s.connection is not None and s.connection.state == "up"
        # iscsi_tcp's host says "(null)"; iscsiadm's "Iface Initiatorname" is the session's name
        assert p.iface is not None and s.host.initiator_name == p.iface.initiator_name == s.initiator_name is not None


def test_by_path_and_wwn_match_udev(request, kernel_sysfs):
    props = _udev(request, "udevadm-info-t1-lun1-export")
    disk = props["DEVNAME"].removeprefix("/dev/")
    session = next(s for s in Sessions(kernel_sysfs).all() for d in s.devices if d.block and d.block.name == disk)
    dev = next(d for d in session.devices if d.block and d.block.name == disk)
    assert by_path_name(session.portal.address, session.portal.port, session.target, dev.lun) == props["ID_PATH"]
    assert dev.wwid is not None
    wwn = WwnInfo.from_sysfs_wwid(dev.wwid)
    assert wwn.wwn == props["ID_WWN_WITH_EXTENSION"] and wwn.wwid == props["ID_SERIAL"]
