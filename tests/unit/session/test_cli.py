"""``iscsikit session|device|login|logout|discover`` through the real CLI, on the synthetic sysfs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from iscsikit.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_session_list_json(synthetic_sysfs):
    r = invoke("--sysfs-root", str(synthetic_sysfs), "--json", "session", "list")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [s["sid"] for s in rows] == [1, 2, 10, 11]
    for key in ("sid", "target", "address", "port", "tpgt", "iface", "state", "host", "devices"):
        assert key in rows[0]
    assert rows[2]["state"] == "FAILED" and rows[1]["address"] == "2001:db8::11"


def test_session_list_plain_and_filter(synthetic_sysfs):
    r = invoke(
        "--sysfs-root", str(synthetic_sysfs), "session", "list", "--target", "iqn.2026-11.org.iscsikit.research:t2"
    )
    lines = r.stdout.splitlines()
    assert lines[0].split("\t")[:2] == ["SID", "TARGET"] and len(lines) == 2
    assert "1:sdg, 2:sdi, 10:sdh" in lines[1]


def test_session_show_and_missing(synthetic_sysfs):
    r = invoke("--sysfs-root", str(synthetic_sysfs), "--json", "session", "show", "10")
    data = json.loads(r.stdout)
    assert data["current_address"] == "192.0.2.113" and data["connection"]["persistent_port"] == 3260
    r = invoke("--sysfs-root", str(synthetic_sysfs), "--json", "session", "show", "99")
    assert r.exit_code == 1 and json.loads(r.stdout)["error"]["name"] == "NoSuchSessionError"


def test_session_rescan_lun_dry_run(synthetic_sysfs):
    r = invoke("--sysfs-root", str(synthetic_sysfs), "--dry-run", "--json", "session", "rescan", "11", "--lun", "5")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"rescanned": [11], "lun": 5}


def test_device_list(synthetic_sysfs):
    r = invoke("--sysfs-root", str(synthetic_sysfs), "--json", "device", "list")
    rows = json.loads(r.stdout)
    assert sorted(d["device"] for d in rows) == [f"/dev/sd{c}" for c in "bcdefghi"]
    for key in ("device", "sid", "lun", "size_bytes", "wwn", "by_path", "holders", "mountpoints"):
        assert key in rows[0]


def test_login_and_logout_usage_errors(synthetic_sysfs, tmp_path):
    db = tmp_path / "iscsi"
    (db / "nodes").mkdir(parents=True)
    r = invoke("--db-root", str(db), "--json", "login", "iqn.2026-11.org.ex:t")
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"]["message"] == (
        "no node record for iqn.2026-11.org.ex:t: run `iscsikit discover PORTAL` first, or give --portal P"
    )
    for portal in ("10.0.0.1,3260,1", "10.0.0.2,3260,1"):
        (db / "nodes/iqn.2026-11.org.ex:t" / portal).mkdir(parents=True)
        (db / "nodes/iqn.2026-11.org.ex:t" / portal / "default").write_text("node.name = iqn.2026-11.org.ex:t\n")
    r = invoke("--db-root", str(db), "--json", "login", "iqn.2026-11.org.ex:t")
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"]["message"] == (
        "iqn.2026-11.org.ex:t has 2 portals (10.0.0.1:3260, 10.0.0.2:3260): give --portal P or --all-portals"
    )
    r = invoke("--json", "login", "iqn.2026-11.org.ex:t", "--portal", "1.2.3.4", "--all-portals")
    assert r.exit_code == 2
    r = invoke("--json", "logout")
    assert r.exit_code == 2 and "--sid" in json.loads(r.stdout)["error"]["message"]
    r = invoke("--json", "discover", "1.2.3.4", "--chap-user", "u")
    assert r.exit_code == 2 and "--chap-secret-file" in json.loads(r.stdout)["error"]["message"]


def test_logout_of_nothing_is_success(synthetic_sysfs):
    r = invoke("--sysfs-root", str(synthetic_sysfs), "--json", "logout", "iqn.2026-11.org.ex:none")
    assert r.exit_code == 0 and json.loads(r.stdout) == {
        "target": "iqn.2026-11.org.ex:none",
        "logged_out": [],
        "kept": [],
    }


def test_logout_dry_run_by_target(synthetic_sysfs):
    r = invoke(
        "--sysfs-root", str(synthetic_sysfs), "--dry-run", "--json", "logout", "iqn.2026-11.org.iscsikit.research:t1"
    )
    assert json.loads(r.stdout)["logged_out"] == [1, 2]


def test_session_show_host_initiator_name_on_a_real_iscsi_tcp_tree(tmp_path):
    """iscsi_tcp leaves the host's initiatorname "(null)": show prints the session's name there,
    as iscsiadm's "Iface Initiatorname" does, not "-"."""
    from tests.unit.session.conftest import unpack_sysfs
    from tests.unit.session.test_kernel_captures import KERNEL

    root = unpack_sysfs(KERNEL / "sysfs" / "sys-kernel.tar.gz", tmp_path / "sys")
    r = invoke("--sysfs-root", str(root), "session", "show", "1")
    assert r.exit_code == 0, r.output
    lines = dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)
    assert lines["host_info.initiator_name"] == lines["initiator_name"] == "iqn.2026-11.io.iscsikit.capture:initiator"
