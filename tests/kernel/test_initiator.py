"""``iscsikit discover/login/logout/session/device`` in the VM against a real target.

Also records real captures (sysfs and iscsiadm output after a real login) for the unit tier
when ISCSIKIT_RECORD_DIR is set.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest

from iscsikit.session.parse import parse_session_tree

MiB = 1024 * 1024
TARGET_KINDS = ["tgtd"]


@pytest.fixture(params=TARGET_KINDS)
def target(request: pytest.FixtureRequest, guest: Any) -> Any:
    if request.param == "tgtd":
        return guest.target(iqn=f"iqn.2026-11.io.iscsikit.test:i{uuid.uuid4().hex[:6]}", luns=[16 * MiB, 8 * MiB])
    raise AssertionError(request.param)


def cli(guest: Any, args: str, ok: tuple[int, ...] = (0,)) -> Any:
    r = guest.sh(f"iscsikit --json {args}", ok=ok)
    return json.loads(r.stdout) if r.stdout.strip() else None


def test_discover_login_wait_mkfs_mount_logout_nothing_left(guest, target):
    found = cli(guest, f"discover {target.portal}")
    assert {"target": target.iqn, "address": "127.0.0.1", "port": 3260, "tpgt": 1} in found
    res = cli(guest, f"login {target.iqn} --portal {target.portal} --lun 1 --timeout 120")
    assert res["target"] == target.iqn and len(res["sessions"]) == 1
    (dev,) = [d for d in res["devices"] if d["lun"] == 1]
    assert dev["by_path"] == target.by_path(1) and dev["size_bytes"] == 16 * MiB and dev["wwn"].startswith("0x")
    # --lun: the other LUN was scanned by iscsid's automatic scan or not at all; LUN 1 is there now.
    guest.sh(
        f"""
        set -e
        mkfs.ext4 -q {dev["device"]}
        mkdir -p /run/iscsikit-test/mnt-i && mount {dev["by_path"]} /run/iscsikit-test/mnt-i
        echo hello > /run/iscsikit-test/mnt-i/f && sync && umount /run/iscsikit-test/mnt-i
        """
    )
    listed = cli(guest, "session list")
    assert [s["target"] for s in listed] == [target.iqn]
    devices = cli(guest, "device list")
    assert any(d["device"] == dev["device"] and d["lun"] == 1 for d in devices)
    # login again: success, same session
    again = cli(guest, f"login {target.iqn} --portal {target.portal} --lun 1")
    assert again["sessions"] == res["sessions"]
    out = cli(guest, f"logout {target.iqn}")
    assert out["logged_out"] == [res["sessions"][0]["sid"]]
    # logout again: not logged in is success
    assert cli(guest, f"logout {target.iqn}")["logged_out"] == []
    left = guest.sh("ls /sys/class/iscsi_session; ls /dev/disk/by-path | grep -- -iscsi-", ok=(0, 1, 2))
    assert left.stdout.strip() == ""


def test_logout_if_unused_keeps_a_mounted_session(guest, target):
    cli(guest, f"discover {target.portal}")
    res = cli(guest, f"login {target.iqn} --portal {target.portal} --lun 1")
    (dev,) = [d for d in res["devices"] if d["lun"] == 1]
    mnt = "/run/iscsikit-test/mnt-u"
    guest.sh(f"set -e; mkfs.ext4 -q {dev['device']}; mkdir -p {mnt}; mount {dev['device']} {mnt}")
    out = cli(guest, f"logout {target.iqn} --if-unused")
    assert out["logged_out"] == [] and "mounted" in out["kept"][0]["reason"]
    guest.sh("umount /run/iscsikit-test/mnt-u")
    out = cli(guest, f"logout {target.iqn} --if-unused")
    assert out["logged_out"] == [res["sessions"][0]["sid"]]


def test_logout_by_sid_when_node_records_are_gone(guest, target):
    cli(guest, f"discover {target.portal}")
    res = cli(guest, f"login {target.iqn} --portal {target.portal} --no-wait")
    # iscsiadm refuses to delete a record in use, so remove it behind its back, as a wiped
    # DB or a container with its own /etc/iscsi would leave it
    guest.sh(f"rm -rf /etc/iscsi/nodes/{target.iqn} /var/lib/iscsi/nodes/{target.iqn}")
    assert guest.sh(f"iscsiadm -m node -T {target.iqn}", ok=(21,)).returncode == 21
    sid = res["sessions"][0]["sid"]
    assert cli(guest, f"logout --sid {sid}")["logged_out"] == [sid]
    assert guest.sessions() == []


def test_no_persist_discovery_leaves_the_db_alone(guest, target):
    found = cli(guest, f"discover {target.portal} --no-persist")
    assert found[0]["target"] == target.iqn
    assert guest.sh("iscsiadm -m node", ok=(21,)).returncode == 21


def test_session_list_matches_iscsiadm_and_records_captures(guest, target, vm):
    cli(guest, f"discover {target.portal}")
    cli(guest, f"login {target.iqn} --portal {target.portal}")
    guest.sh("udevadm settle")
    ours = cli(guest, "session list")
    p3 = guest.sh("iscsiadm -m session -P 3").stdout
    theirs = parse_session_tree(p3)
    assert [(s["sid"], s["target"], s["address"], s["port"], s["host"]) for s in ours] == [
        (s.sid, s.target, s.portal.address, s.portal.port, s.host) for s in theirs
    ]
    assert sorted((d["lun"], d["device"]) for d in ours[0]["devices"]) == sorted(
        (u.lun, f"/dev/{u.disk}" if u.disk else None) for u in theirs[0].luns
    )
    record = os.environ.get("ISCSIKIT_RECORD_DIR")
    if record:  # refresh the real captures used by the unit tier
        guest.sh(
            f"""
            set -e
            mkdir -p {record}
            iscsiadm -m session -P 3 > {record}/session-P3.stdout
            iscsiadm -m session > {record}/session-P0.stdout
            cd /sys && tar czf {record}/sysfs-login.tar.gz --no-recursion \
              $(find class/iscsi_session class/iscsi_connection class/iscsi_host class/scsi_host class/block \
                     bus/scsi/devices -maxdepth 1) \
              $(find -L class/iscsi_session/ -maxdepth 0) 2>/dev/null || true
            """
        )
