"""The planner on synthetic hosts (sysfs, /proc, DB, state dir) covering every kind of leftover."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from iscsikit.clean.collect import write_journal
from iscsikit.clean.desired import parse_desired
from iscsikit.clean.model import PendingItem, SessionView, Survey
from iscsikit.clean.plan import PHASES, Action, Kind, Plan, Selection, plan
from iscsikit.names import Portal
from tests.unit.clean.synthetic import SyntheticHost, T


def survey(host: SyntheticHost, **kwargs: Any) -> Survey:
    s = host.survey(**kwargs)
    assert isinstance(s, Survey)
    return s


def kinds(p: Plan) -> list[str]:
    return [str(a.kind) for a in p.actions]


def find(p: Plan, kind: Kind, **match: Any) -> Action:
    found = [a for a in p.actions if a.kind is kind and all(getattr(a, k) == v for k, v in match.items())]
    assert len(found) == 1, f"{kind} {match}: {[a.to_json() for a in p.actions]}"
    return found[0]


def absent(p: Plan, kind: Kind, **match: Any) -> None:
    found = [a for a in p.actions if a.kind is kind and all(getattr(a, k) == v for k, v in match.items())]
    assert not found, [a.to_json() for a in found]


# ---- decommission: every kind, in a safe order ---------------------------------------------------


def test_decommission_plans_every_kind_of_leftover_in_safe_order(host: SyntheticHost) -> None:
    db = host.db
    # a two-path multipath volume, a failed session, an orphan record, discovery, iface, junk
    db.new_node(f"{T}:mp", "127.0.0.1:3260,1")
    db.new_node(f"{T}:mp", "127.0.0.2:3260,1")
    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    mp = host.multipath_map([host.disks_of(s1)[0], host.disks_of(s2)[0]])
    failed = host.session(f"{T}:gone", "127.0.0.3:3261,1", state="FAILED", conn_state="failed")
    db.new_discovery("127.0.0.3:3261")
    db.new_node(f"{T}:gone", "127.0.0.3:3261,1", discovery=db.discoveries()[0])
    db.new_node(f"{T}:deleted-volume", "10.0.0.9:3260")
    db.new_iface("clone-abc")
    db.new_node(f"{T}:cloned", "10.0.0.8:3260,1", iface="clone-abc")
    os.symlink(f"{host.db_root}/nodes/{T}:x/10.0.0.7,3260,1", host.db_root / f"static/{T}:x,10.0.0.7,3260,1,default")
    (host.db_root / f"nodes/{T}:mp/garbage").write_text("x")
    (host.db_root / f"nodes/{T}:empty/10.0.0.6,3260,1").mkdir(parents=True)
    orphan = host.orphan_device()
    pathless = host.multipath_map([], name="mpathz", wwid="3600")
    host.attachment("pvc-stale", f"{T}:long-gone")
    (host.state / "attachments/broken.json").write_text("{not json")

    p = plan(survey(host), Selection())

    assert [a.order for a in p.actions] == list(range(1, len(p.actions) + 1))
    assert [a.phase for a in p.actions] == sorted(a.phase for a in p.actions), "phases must not interleave"
    assert set(kinds(p)) == {str(k) for k in Kind} - {"delete-config"}
    assert {a.device for a in p.actions if a.kind is Kind.FLUSH_MAP} == {mp, pathless}
    assert {a.sid for a in p.actions if a.kind is Kind.LOGOUT} == {s1, s2, failed}
    find(p, Kind.REMOVE_DEVICE, device=orphan)
    assert "orphan" in find(p, Kind.REMOVE_DEVICE, device=orphan).detail
    find(p, Kind.DELETE_LINK, path=f"static/{T}:x,10.0.0.7,3260,1,default")
    find(p, Kind.DELETE_ENTRY, path=f"nodes/{T}:mp/garbage")
    find(p, Kind.DELETE_ENTRY, path=f"nodes/{T}:empty")
    find(p, Kind.DELETE_IFACE, path="ifaces/clone-abc")
    find(p, Kind.DELETE_DISCOVERY, portal="127.0.0.3:3261")
    assert {a.subject.volume_id for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT} == {"pvc-stale", "broken"}
    assert not p.blocked


def test_empty_host_plans_nothing(host: SyntheticHost) -> None:
    p = plan(survey(host), Selection())
    assert p.actions == [] and p.to_json()["actions"] == []


def test_plan_json_has_the_cli_contract_keys(host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:a", "127.0.0.1:3260,1")
    host.session(f"{T}:a")
    doc = plan(survey(host), Selection()).to_json()
    assert set(doc) >= {"actions", "summary"}
    for action in doc["actions"]:
        assert {"kind", "target", "portal", "detail", "order", "blocked_by", "sid", "device", "path"} <= set(action)
    assert [a["kind"] for a in doc["actions"]] == ["remove-device", "logout", "delete-node"]
    assert doc["actions"][1] | {"detail": ""} == {
        "order": 2, "kind": "logout", "target": f"{T}:a", "portal": "127.0.0.1:3260,1", "detail": "",
        "sid": 1, "device": None, "path": None, "blocked_by": [],
    }  # fmt: skip


# ---- stale sessions ------------------------------------------------------------------------------------


def stale_scene(host: SyntheticHost) -> dict[str, Any]:
    db = host.db
    db.new_node(f"{T}:healthy", "127.0.0.1:3260,1")
    healthy = host.session(f"{T}:healthy", "127.0.0.1:3260,1")
    db.new_discovery("127.0.0.1:3261")
    db.new_node(f"{T}:stale", "127.0.0.1:3261,1", discovery=db.discoveries()[0])
    stale = host.session(f"{T}:stale", "127.0.0.1:3261,1", state="FAILED", conn_state="failed", luns={1: "blocked"})
    db.new_node(f"{T}:orphan-record", "127.0.0.1:3262,1")
    return {"healthy": healthy, "stale": stale}


def test_stale_only_takes_exactly_the_stale_session_its_device_and_records(host: SyntheticHost) -> None:
    ids = stale_scene(host)
    p = plan(survey(host), Selection(stale_only=True))
    assert kinds(p) == ["remove-device", "logout", "delete-node", "delete-discovery"]
    assert find(p, Kind.LOGOUT).sid == ids["stale"]
    assert find(p, Kind.REMOVE_DEVICE).device == host.disks_of(ids["stale"])[0]
    assert find(p, Kind.DELETE_NODE).target == f"{T}:stale"
    assert find(p, Kind.DELETE_DISCOVERY).portal == "127.0.0.1:3261"
    assert "blocked" in find(p, Kind.REMOVE_DEVICE).detail
    assert not p.blocked


def test_a_session_in_recovery_counts_as_failing(host: SyntheticHost) -> None:
    sid = host.session(f"{T}:flapping", conn_state="failed")  # session LOGGED_IN, connection failed
    assert find(plan(survey(host), Selection(stale_only=True)), Kind.LOGOUT).sid == sid


def test_older_than_remembers_when_a_session_started_failing(host: SyntheticHost) -> None:
    sid = host.session(f"{T}:stale", state="FAILED")
    first = survey(host, now=1_000_000.0)
    assert first.sessions[0].failed_for == 0.0
    sel = Selection(stale_only=True, older_than=300)
    p = plan(first, sel)
    assert p.actions == [] and "not for 5 min yet" in p.notes[0]
    later = survey(host, now=1_000_000.0 + 600)
    assert later.sessions[0].failed_for == 600
    assert find(plan(later, sel), Kind.LOGOUT).sid == sid
    # once it recovers the memory is dropped: a new failure starts from zero
    host.set_state(sid, "LOGGED_IN")
    survey(host, now=1_000_000.0 + 700)
    host.set_state(sid, "FAILED")
    assert survey(host, now=1_000_000.0 + 800).sessions[0].failed_for == 0.0


def test_transport_offline_luns_prove_the_recovery_timeout_expired(host: SyntheticHost) -> None:
    sid = host.session(f"{T}:stale", state="FAILED", recovery_tmo=120, luns={1: "transport-offline"})
    s = survey(host)
    assert s.sessions[0].failed_for == 120
    assert find(plan(s, Selection(stale_only=True, older_than=60)), Kind.LOGOUT).sid == sid


def test_records_without_sessions_are_not_stale(host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:manual", "10.0.0.1:3260,1")
    assert plan(survey(host), Selection(stale_only=True)).actions == []


def test_dead_lun_of_a_healthy_session_is_removed_but_the_session_stays(host: SyntheticHost) -> None:
    sid = host.session(f"{T}:t", luns={1: "running", 2: "offline"})
    p = plan(survey(host), Selection(stale_only=True))
    assert kinds(p) == ["remove-device"]
    action = p.actions[0]
    assert action.device == host.disks_of(sid)[1] and "gave up" in action.detail


# ---- users block, and say who ----------------------------------------------------------------------


def mounted_scene(host: SyntheticHost) -> tuple[int, str]:
    host.db.new_discovery("127.0.0.1:3260")
    host.db.new_node(f"{T}:db", "127.0.0.1:3260,1", discovery=host.db.discoveries()[0])
    sid = host.session(f"{T}:db", luns=[1])
    disk = host.disks_of(sid)[0]
    host.attachment("pvc-db", f"{T}:db")
    return sid, disk


def test_a_mounted_device_blocks_its_session_records_and_attachment(host: SyntheticHost) -> None:
    sid, disk = mounted_scene(host)
    host.mount(disk, "/var/lib/kubelet/plugins/pv/pvc-db/globalmount")
    p = plan(survey(host), Selection())
    assert len(p.blocked) == len(p.actions) == 5
    assert find(p, Kind.REMOVE_DEVICE).blocked_by == (
        f"/dev/{disk} is mounted at /var/lib/kubelet/plugins/pv/pvc-db/globalmount",
    )
    assert find(p, Kind.LOGOUT).blocked_by == find(p, Kind.REMOVE_DEVICE).blocked_by
    assert find(p, Kind.DELETE_NODE).blocked_by[0].startswith(f"session {sid} stays logged in (/dev/{disk} is mounted")
    assert find(p, Kind.DELETE_DISCOVERY).blocked_by[0].startswith("node record")
    assert find(p, Kind.DELETE_ATTACHMENT).blocked_by == (f"session {sid} stays logged in",)


def test_force_blocks_nothing_but_names_the_users(host: SyntheticHost) -> None:
    _, disk = mounted_scene(host)
    host.mount(disk, "/mnt/data")
    p = plan(survey(host), Selection(force=True))
    assert not p.blocked
    assert "forced although" in find(p, Kind.REMOVE_DEVICE).detail
    assert "/mnt/data" in find(p, Kind.LOGOUT).detail


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda h, d: h.mount(h.partition(d), "/srv/data"), "is mounted at /srv/data via {d}1"),
        (lambda h, d: h.mount(d, "/data", pid=h.process(777, "containerd-shim", own_namespace=True)),
         "is mounted at /data (mount namespace of pid 777)"),
        (lambda h, d: h.open_fd(d, 4242, "qemu-system-x86"), "is open by pid 4242 (qemu-system-x86)"),
        (lambda h, d: h.swap(d), "is used as swap"),
        (lambda h, d: h.lvm([d]), "is held by dm-0 (vg0-data)"),
        (lambda h, d: h.lvm([h.partition(d)]), "is held by dm-0 (vg0-data) via {d}1"),
    ],
    ids=["partition-mounted", "other-namespace", "open-fd", "swap", "lvm", "lvm-on-partition"],
)  # fmt: skip
def test_every_kind_of_user_blocks_and_is_named(host: SyntheticHost, setup: Any, expected: str) -> None:
    sid = host.session(f"{T}:busy")
    disk = host.disks_of(sid)[0]
    setup(host, disk)
    p = plan(survey(host), Selection())
    assert find(p, Kind.REMOVE_DEVICE).blocked_by == (f"/dev/{disk} {expected.format(d=disk)}",)
    assert find(p, Kind.LOGOUT).blocked


def test_our_own_open_descriptors_do_not_count(host: SyntheticHost) -> None:
    sid = host.session(f"{T}:t")
    host.open_fd(host.disks_of(sid)[0], 1)  # pid 1 is /proc/self on the synthetic host
    assert not plan(survey(host), Selection()).blocked


# ---- multipath -------------------------------------------------------------------------------------


def multipath_scene(host: SyntheticHost) -> tuple[int, int, str, list[str]]:
    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    disks = [host.disks_of(s1)[0], host.disks_of(s2)[0]]
    return s1, s2, host.multipath_map(disks), disks


def test_a_map_is_flushed_before_its_paths_are_removed_and_sessions_logged_out(host: SyntheticHost) -> None:
    _s1, _s2, dm, disks = multipath_scene(host)
    p = plan(survey(host), Selection(targets=(f"{T}:mp",)))
    assert kinds(p) == ["flush-map", "remove-device", "remove-device", "logout", "logout"]
    assert find(p, Kind.FLUSH_MAP).device == dm and p.actions[0].detail == (
        f"flush multipath map mpatha (dm-0), wwid 360000000000000000e00000000010001 ({disks[0]}, {disks[1]})"
    )
    assert {a.device for a in p.actions if a.kind is Kind.REMOVE_DEVICE} == set(disks)
    assert not p.blocked


def test_a_mounted_map_blocks_its_paths_and_sessions(host: SyntheticHost) -> None:
    _s1, _s2, dm, _disks = multipath_scene(host)
    host.mount(host.map_partition(dm), "/data")
    p = plan(survey(host), Selection())
    assert find(p, Kind.FLUSH_MAP).blocked_by == ("mpatha (dm-0) is mounted at /data via dm-1",)
    for a in p.actions:
        if a.kind is Kind.REMOVE_DEVICE:
            assert a.blocked_by == (f"/dev/{a.device} is a path of mpatha (dm-0), which stays: "
                                    "mpatha (dm-0) is mounted at /data via dm-1",)  # fmt: skip
    assert all(a.blocked for a in p.actions if a.kind is Kind.LOGOUT)


def test_one_path_of_a_map_can_go_while_the_map_stays(host: SyntheticHost) -> None:
    s1, _s2, _dm, disks = multipath_scene(host)
    host.mount("dm-0", "/data")
    p = plan(survey(host), Selection(portals=(Portal.parse("127.0.0.1:3260"),)))
    assert kinds(p) == ["remove-device", "logout"]
    assert find(p, Kind.REMOVE_DEVICE).device == disks[0]
    assert "dropped from multipath map mpatha (dm-0)" in p.actions[0].detail
    assert find(p, Kind.LOGOUT).sid == s1 and not p.blocked


def test_pathless_maps_and_orphan_devices_are_host_wide_leftovers(host: SyntheticHost) -> None:
    host.multipath_map([], name="mpathq", wwid="36001")
    orphan = host.orphan_device()
    for sel in (Selection(), Selection(stale_only=True), Selection(desired=())):
        p = plan(survey(host), sel)
        assert find(p, Kind.FLUSH_MAP).device == "dm-0", sel
        assert find(p, Kind.REMOVE_DEVICE).device == orphan
    assert plan(survey(host), Selection(targets=(f"{T}:*",))).actions == []


def test_non_multipath_maps_are_never_flushed(host: SyntheticHost) -> None:
    host.session(f"{T}:t")
    host.lvm([], name="vg1-root")
    assert not [a for a in plan(survey(host), Selection()).actions if a.kind is Kind.FLUSH_MAP]


# ---- records --------------------------------------------------------------------------------------


def test_dangling_links_junk_and_empty_target_directories(host: SyntheticHost) -> None:
    db = host.db
    db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    link = f"static/{T}:b,10.0.0.2,3260,1,default"
    os.symlink(f"/etc/iscsi/nodes/{T}:b/10.0.0.2,3260,1", host.db_root / link)
    (host.db_root / f"nodes/{T}:a/not-a-portal").write_text("junk")
    (host.db_root / f"nodes/{T}:c/10.0.0.3,3260,1").mkdir(parents=True)
    p = plan(survey(host), Selection(targets=(f"{T}:b", f"{T}:c")))
    assert [(str(a.kind), a.path) for a in p.actions] == [
        ("delete-link", link),
        ("delete-entry", f"nodes/{T}:c"),
    ]
    p = plan(survey(host), Selection(targets=(f"{T}:a",)))
    assert [(str(a.kind), a.path) for a in p.actions] == [
        ("delete-node", f"nodes/{T}:a/10.0.0.1,3260,1/default"),
        ("delete-entry", f"nodes/{T}:a/not-a-portal"),
    ]
    assert plan(survey(host), Selection(stale_only=True)).actions[0].path == link  # dangling links are stale


def test_unreadable_entries_are_noted_not_deleted(host: SyntheticHost) -> None:
    from iscsikit.db.layout import LayoutProblem

    s = survey(host)
    s.problems.append(LayoutProblem("nodes", "cannot read: Permission denied"))
    p = plan(s, Selection())
    assert p.actions == [] and "not touched" in p.notes[0]


def test_a_discovery_record_stays_while_a_node_it_found_stays(host: SyntheticHost) -> None:
    db = host.db
    db.new_discovery("10.0.0.1:3260")
    disc = db.discoveries()[0]
    db.new_node(f"{T}:a", "10.0.0.1:3260,1", discovery=disc)
    db.new_node(f"{T}:b", "10.0.0.1:3260,1", discovery=disc)
    p = plan(survey(host), Selection(targets=(f"{T}:a",)))
    assert kinds(p) == ["delete-node"]
    p = plan(survey(host), Selection(targets=(f"{T}:*",)))
    assert kinds(p) == ["delete-node", "delete-node", "delete-discovery"]
    assert plan(survey(host), Selection(portals=(Portal.parse("10.0.0.1"),))).actions[-1].kind is Kind.DELETE_DISCOVERY


def test_a_discovery_record_without_nodes_needs_a_portal_filter(host: SyntheticHost) -> None:
    host.db.new_discovery("10.0.0.1:3260")
    assert plan(survey(host), Selection(targets=(f"{T}:*",))).actions == []
    assert plan(survey(host), Selection(stale_only=True)).actions == []
    assert kinds(plan(survey(host), Selection(portals=(Portal.parse("10.0.0.1"),)))) == ["delete-discovery"]
    assert kinds(plan(survey(host), Selection())) == ["delete-discovery"]


def test_records_of_a_session_that_stays_are_never_deleted(host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:live", "127.0.0.1:3260,1")
    host.session(f"{T}:live")
    p = plan(survey(host), Selection(reset=True, stale_only=True))
    absent(p, Kind.DELETE_NODE)
    assert "kept: their sessions stay logged in" in " ".join(p.notes)
    assert f"reset: nodes/ stays, it holds what stays (node record {T}:live" in " ".join(p.notes)
    assert not [a for a in p.actions if a.path in ("nodes", "static")]


def test_keep_is_never_touched_nor_what_it_needs(host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth1-iface")
    db.new_discovery("10.0.0.1:3260")
    db.new_node(f"{T}:prod-db", "10.0.0.1:3260,1", iface="eth1-iface", discovery=db.discoveries()[0])
    host.session(f"{T}:prod-db", "10.0.0.1:3260,1", iface="eth1-iface")
    host.attachment("pvc-prod", f"{T}:prod-db", ("10.0.0.1:3260",))
    db.new_node(f"{T}:scratch", "10.0.0.2:3260,1")
    p = plan(survey(host), Selection(keep=(f"{T}:prod-*",), reset=True))
    assert all(a.target != f"{T}:prod-db" for a in p.actions)
    absent(p, Kind.DELETE_IFACE)
    absent(p, Kind.DELETE_DISCOVERY)
    absent(p, Kind.LOGOUT)
    find(p, Kind.DELETE_NODE, target=f"{T}:scratch")


def test_flash_sessions_are_left_alone(host: SyntheticHost) -> None:
    host.session(f"{T}:boot", flash=True)
    p = plan(survey(host), Selection())
    assert p.actions == [] and "firmware" in p.notes[0]


# ---- reset ------------------------------------------------------------------------------------------


def test_reset_removes_every_record_then_the_directories_and_keeps_config(host: SyntheticHost) -> None:
    (host.db_root / "iscsid.conf").write_text("node.startup = manual\n")
    (host.db_root / "initiatorname.iscsi").write_text("InitiatorName=iqn.1993-08.org.debian:01:x\n")
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    host.db.new_discovery("10.0.0.9:3260")
    p = plan(survey(host), Selection(reset=True))
    assert [(str(a.kind), a.path) for a in p.actions][-4:] == [
        ("delete-entry", "static"),
        ("delete-entry", "send_targets"),
        ("delete-entry", "nodes"),
        ("delete-entry", "ifaces"),
    ]
    absent(p, Kind.DELETE_CONFIG)
    p = plan(survey(host), Selection(reset=True, keep_config=False))
    assert [a.path for a in p.actions if a.kind is Kind.DELETE_CONFIG] == ["initiatorname.iscsi", "iscsid.conf"]


# ---- desired ----------------------------------------------------------------------------------------


def test_desired_keeps_what_it_names_and_removes_the_rest(host: SyntheticHost) -> None:
    db = host.db
    for name in ("keep-all", "moved", "shared", "deleted"):
        db.new_node(f"{T}:{name}", "10.0.0.1:3260,1")
    db.new_node(f"{T}:moved", "10.0.0.2:3260,1")
    host.session(f"{T}:keep-all", "10.0.0.1:3260,1")
    host.session(f"{T}:moved", "10.0.0.1:3260,1")
    moved_new = host.session(f"{T}:moved", "10.0.0.2:3260,1")
    shared = host.session(f"{T}:shared", "10.0.0.1:3260,1", luns=[1, 2, 3])
    deleted = host.session(f"{T}:deleted", "10.0.0.1:3260,1")
    host.attachment("pvc-1", f"{T}:keep-all", ("10.0.0.1:3260",))
    host.attachment("pvc-old", f"{T}:deleted", ("10.0.0.1:3260",))
    db.new_iface("csi-clone")
    desired = parse_desired(
        f"{T}:keep-all\n{T}:moved 10.0.0.2:3260\n{T}:shared 10.0.0.1 lun=1,3\n# comment\n", "desired.txt"
    )
    p = plan(survey(host), Selection(desired=desired))
    assert {a.sid for a in p.actions if a.kind is Kind.LOGOUT} == {moved_new - 1, deleted}
    assert find(p, Kind.REMOVE_DEVICE, device=host.disks_of(shared)[1]).sid == shared
    assert [a.device for a in p.actions if a.kind is Kind.REMOVE_DEVICE and a.sid == shared] == [
        host.disks_of(shared)[1]
    ]
    absent(p, Kind.LOGOUT, sid=shared)
    assert {a.path for a in p.actions if a.kind is Kind.DELETE_NODE} == {
        f"nodes/{T}:moved/10.0.0.1,3260,1/default",
        f"nodes/{T}:deleted/10.0.0.1,3260,1/default",
    }
    assert [a.subject.volume_id for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT] == ["pvc-old"]
    find(p, Kind.DELETE_IFACE, path="ifaces/csi-clone")


def test_desired_by_volume_id_keeps_the_attachment(host: SyntheticHost) -> None:
    host.attachment("pvc-1", f"{T}:a")
    host.attachment("pvc-2", f"{T}:b")
    p = plan(survey(host), Selection(desired=parse_desired('[{"target": "x", "volume_id": "pvc-1"}]')))
    assert [a.subject.volume_id for a in p.actions] == ["pvc-2"]


# ---- attachments, unreachable portals, interrupted runs -----------------------------------------------


def test_attachment_records(host: SyntheticHost) -> None:
    host.session(f"{T}:live")
    host.attachment("pvc-live", f"{T}:live")
    host.attachment("pvc-stale", f"{T}:gone")
    (host.state / "attachments/garbage.json").write_text("[]")
    p = plan(survey(host), Selection(stale_only=True))
    assert [(a.subject.volume_id, a.detail.split(":")[-1].strip()) for a in p.actions] == [
        ("garbage", "not an iscsikit attachment record (format 1))"),
        ("pvc-stale", "no session of it is left"),
    ]
    assert plan(survey(host), Selection(targets=(f"{T}:nothing",))).actions == []


@pytest.fixture
def listening() -> Any:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port_closed = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connections are refused
    yield server.getsockname()[1], port_closed
    server.close()


def test_unreachable_portals_are_probed_and_selected(host: SyntheticHost, listening: tuple[int, int]) -> None:
    up, down = listening
    host.db.new_node(f"{T}:up", f"127.0.0.1:{up},1")
    host.db.new_node(f"{T}:down", f"127.0.0.1:{down},1")
    s = survey(host, probe_timeout=2.0)
    assert s.unreachable == frozenset({f"127.0.0.1:{down}"})
    p = plan(s, Selection(unreachable=True))
    assert [a.target for a in p.actions] == [f"{T}:down"]
    skipped = survey(host, probe_timeout=2.0, probe_filter=lambda t, _p: t != f"{T}:down")
    assert skipped.unreachable == frozenset()


def test_records_left_by_an_interrupted_run_are_taken_again(host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:half-done", "10.0.0.1:3260,1")
    ref = host.db.nodes()[0]
    assert plan(survey(host), Selection(stale_only=True)).actions == []
    write_journal(host.state, [PendingItem("node", ref.relpath)], ["iscsikit", "clean"])
    p = plan(survey(host), Selection(stale_only=True))
    assert kinds(p) == ["delete-node"] and "interrupted clean" in p.actions[0].detail


def test_selection_describes_itself() -> None:
    sel = Selection(targets=("iqn.x:*",), stale_only=True, older_than=600, keep=("iqn.x:db",), reset=True)
    assert sel.describe() == "target iqn.x:*; stale only (failing >= 10 min); full reset; keeping iqn.x:db"
    assert Selection().describe() == "everything (decommission)"
    assert list(PHASES.values()) == sorted(PHASES.values())


def test_survey_round_trips_to_json(host: SyntheticHost, tmp_path: Path) -> None:
    mounted_scene(host)
    doc = survey(host).to_json()
    assert doc["sessions"][0]["target"] == f"{T}:db" and doc["devices"][0]["users"] == []
    assert doc["attachments"][0]["volume_id"] == "pvc-db"


# ---- what the user reads: descriptions, details, notes, JSON (mutation testing, issue 14) ---------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(1, "1 s"), (119, "119 s"), (120, "2 min"), (7199, "119 min"), (7200, "2 h"), (172799, "47 h"),
     (172800, "2 d"), (864000, "10 d")],
)  # fmt: skip
def test_durations_are_shown_in_the_largest_whole_unit(seconds: int, text: str) -> None:
    assert Selection(stale_only=True, older_than=seconds).describe() == f"stale only (failing >= {text})"


def test_every_flag_is_described_and_serialised() -> None:
    desired = parse_desired("iqn.x:a 10.0.0.1:3260 lun=1,2\n")
    sel = Selection(
        portals=(Portal.parse("10.0.0.1"),), unreachable=True, desired=desired, reset=True, keep_config=False,
        force=True, stale_only=True,
    )  # fmt: skip
    assert sel.describe() == (
        "everything not in the desired list (1 entries); portal 10.0.0.1:3260; stale only; unreachable portals; "
        "full reset including initiatorname.iscsi and iscsid.conf; forced"
    )
    assert not sel.decommission and not sel.host_wide
    assert sel.to_json() == {
        "targets": [], "portals": ["10.0.0.1:3260"], "stale_only": True, "older_than": 0.0, "unreachable": True,
        "desired": [{"target": "iqn.x:a", "portal": "10.0.0.1:3260", "luns": [1, 2], "iface": None,
                     "volume_id": None}],
        "keep": [], "reset": True, "keep_config": False, "force": True,
    }  # fmt: skip
    assert Selection(targets=("iqn.x:*",), keep=("iqn.x:db",)).to_json() | {"targets": 0, "keep": 0} == {
        "targets": 0, "portals": [], "stale_only": False, "older_than": 0.0, "unreachable": False, "desired": None,
        "keep": 0, "reset": False, "keep_config": True, "force": False,
    }  # fmt: skip
    assert Selection(targets=("a",), keep=("b",)).to_json()["targets"] == ["a"]
    assert Selection(targets=("a",), keep=("b",)).to_json()["keep"] == ["b"]
    for sel, decommission, host_wide in [
        (Selection(), True, True),
        (Selection(keep=("x",), reset=True, force=True), True, True),
        (Selection(targets=("x",)), False, False),
        (Selection(portals=(Portal.parse("10.0.0.1"),)), False, False),
        (Selection(stale_only=True), False, True),
        (Selection(unreachable=True), False, False),
        (Selection(desired=()), False, True),
    ]:
        assert (sel.decommission, sel.host_wide) == (decommission, host_wide), sel
    assert Selection(desired=()).describe() == "everything not in the desired list (0 entries)"
    assert Selection(reset=True).describe() == "everything (decommission); full reset"
    assert Selection(unreachable=True).describe() == "unreachable portals"


def test_the_plan_summary_counts_kinds_and_blocked_actions(host: SyntheticHost) -> None:
    _sid, disk = mounted_scene(host)
    host.db.new_node(f"{T}:free", "10.0.0.5:3260,1")
    host.mount(disk, "/mnt/db")
    p = plan(survey(host), Selection())
    assert p.summary() == {
        "total": 6,
        "blocked": 5,
        "by_kind": {"remove-device": 1, "logout": 1, "delete-node": 2, "delete-discovery": 1, "delete-attachment": 1},
    }
    assert [a.target for a in p.runnable] == [f"{T}:free"] and len(p.blocked) == 5
    doc = p.to_json()
    assert doc["summary"] == p.summary() and doc["selection"] == Selection().to_json()
    assert doc["db_root"] == str(host.db_root) and doc["notes"] == []
    assert [a["order"] for a in doc["actions"]] == [1, 2, 3, 4, 5, 6]
    assert doc["actions"][0]["blocked_by"] == [f"/dev/{disk} is mounted at /mnt/db"]


def test_details_name_the_state_the_map_and_the_reason(host: SyntheticHost) -> None:
    sid = host.session(f"{T}:stale", state="FAILED", conn_state="failed", recovery_tmo=7200,
                       luns={1: "transport-offline"})  # fmt: skip
    other = host.session(f"{T}:ok", "127.0.0.2:3260,1", luns=[1])
    host.multipath_map([], name="mpathq", wwid="36001")
    host.multipath_map([host.disks_of(other)[0]], name="", wwid="")
    p = plan(survey(host), Selection(stale_only=True))
    disk = host.disks_of(sid)[0]
    assert find(p, Kind.LOGOUT).detail == f"log out session {sid} (FAILED for at least 2 h, iface default)"
    assert find(p, Kind.REMOVE_DEVICE).detail == (
        f"flush and remove /dev/{disk} (LUN 1, {sid + 1}:0:0:1, transport-offline) of session {sid}"
    )
    assert (
        find(p, Kind.FLUSH_MAP, device="dm-0").detail == "flush multipath map mpathq (dm-0), wwid 36001 (no paths left)"
    )
    assert find(p, Kind.LOGOUT).portal == "127.0.0.1:3260,1" and find(p, Kind.LOGOUT).target == f"{T}:stale"
    # a map over a path that goes, without a name or wwid
    p = plan(survey(host), Selection(targets=(f"{T}:ok",)))
    assert find(p, Kind.FLUSH_MAP).detail == f"flush multipath map dm-1 ({host.disks_of(other)[0]})"
    assert [str(a.kind) for a in p.actions] == ["flush-map", "remove-device", "logout"]


def test_an_orphan_device_detail_and_a_session_without_a_state(host: SyntheticHost) -> None:
    orphan = host.orphan_device(lun=3)
    s = survey(host)
    d = s.devices[0]
    p = plan(s, Selection())
    action = find(p, Kind.REMOVE_DEVICE)
    assert action.detail == f"remove orphan /dev/{orphan} (LUN 3, {d.hctl}): its session is gone"
    assert action.target is None and action.portal is None and action.sid is None
    from dataclasses import replace

    x = replace(s.sessions[0], state=None) if s.sessions else None
    assert x is None  # the orphan's session is not listed
    sid = host.session(f"{T}:x")
    s = survey(host)
    s.sessions[:] = [replace(v, state=None) if v.sid == sid else v for v in s.sessions]
    assert find(plan(s, Selection()), Kind.LOGOUT).detail == f"log out session {sid} (unknown state, iface default)"


def test_unreachable_takes_sessions_records_links_and_attachments_of_dead_portals_only(host: SyntheticHost) -> None:
    db = host.db
    db.new_discovery("10.0.0.1:3260")
    db.new_discovery("10.0.0.2:3260")
    db.new_node(f"{T}:down", "10.0.0.1:3260,1", discovery=db.discoveries()[0])
    db.new_node(f"{T}:up", "10.0.0.2:3260,1", discovery=db.discoveries()[1])
    down = host.session(f"{T}:down", "10.0.0.1:3260,1", state="FAILED")
    host.session(f"{T}:up", "10.0.0.2:3260,1")
    host.orphan_device()
    (host.db_root / "static").mkdir(exist_ok=True)
    os.symlink(f"{host.db_root}/nodes/{T}:x/10.0.0.1,3260,1", host.db_root / f"static/{T}:x,10.0.0.1,3260,1,default")
    os.symlink(f"{host.db_root}/nodes/{T}:y/10.0.0.2,3260,1", host.db_root / f"static/{T}:y,10.0.0.2,3260,1,default")
    host.attachment("pvc-down", f"{T}:old", ("10.0.0.1:3260",))
    host.attachment("pvc-mixed", f"{T}:old", ("10.0.0.1:3260", "10.0.0.2:3260"))
    db.new_discovery("10.0.0.3:3260")  # no node records: one down, one up
    db.new_discovery("10.0.0.4:3260")
    s = survey(host)
    s.unreachable = frozenset({"10.0.0.1:3260", "10.0.0.3:3260"})
    p = plan(s, Selection(unreachable=True))
    assert [(str(a.kind), a.target, a.portal) for a in p.actions] == [
        ("remove-device", f"{T}:down", "10.0.0.1:3260,1"),
        ("logout", f"{T}:down", "10.0.0.1:3260,1"),
        ("delete-node", f"{T}:down", "10.0.0.1:3260,1"),
        ("delete-link", f"{T}:x", "10.0.0.1:3260,1"),
        ("delete-discovery", None, "10.0.0.1:3260"),
        ("delete-discovery", None, "10.0.0.3:3260"),
        ("delete-attachment", f"{T}:old", "10.0.0.1:3260"),
    ]
    assert find(p, Kind.DELETE_DISCOVERY, portal="10.0.0.1:3260").detail == (
        "delete sendtargets discovery record 10.0.0.1:3260 (it discovered 1 of the node records above)"
    )
    assert find(p, Kind.DELETE_DISCOVERY, portal="10.0.0.3:3260").detail == (
        "delete sendtargets discovery record 10.0.0.3:3260"
    )
    assert find(p, Kind.LOGOUT).sid == down
    # not probed: nothing counts as unreachable
    s.unreachable = None
    assert plan(s, Selection(unreachable=True)).actions == []
    # with a target filter too, both must match
    s.unreachable = frozenset({"10.0.0.1:3260"})
    p = plan(s, Selection(unreachable=True, targets=(f"{T}:x",)))
    assert [(str(a.kind), a.target) for a in p.actions] == [("delete-link", f"{T}:x")]


def test_attachments_follow_their_sessions_and_the_selection(host: SyntheticHost) -> None:
    host.db.new_iface("eth1")
    host.session(f"{T}:a", "10.0.0.1:3260,1", iface="eth1")
    host.attachment("pvc-default", f"{T}:a", ("10.0.0.1:3260",))  # iface default: not the eth1 session's
    host.attachment("pvc-other-portal", f"{T}:a", ("10.0.0.9:3260",))
    (host.state / "attachments/junk.json").write_text("{")
    s = survey(host)
    p = plan(s, Selection(targets=(f"{T}:a",)))
    assert sorted(a.subject.volume_id for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT) == [
        "pvc-default",
        "pvc-other-portal",
    ]  # an unreadable record belongs to no target: not under --target
    assert find(p, Kind.DELETE_ATTACHMENT, portal="10.0.0.1:3260").detail == (
        "delete attachment record pvc-default (attached): no session of it is left"
    )
    p = plan(s, Selection(reset=True, targets=(f"{T}:none",)))
    assert [a.subject.volume_id for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT] == ["junk"]
    assert find(p, Kind.DELETE_ATTACHMENT).detail.startswith(
        f"delete unreadable attachment record {host.state}/attachments/junk.json ("
    )
    desired = parse_desired(f"{T}:a 10.0.0.1:3260 lun=1\n{T}:a 10.0.0.9:3260 lun=2\n")
    p = plan(s, Selection(desired=desired))
    assert sorted(a.subject.volume_id for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT) == [
        "junk",
        "pvc-other-portal",
    ]  # pvc-other-portal is LUN 1, the desired list wants LUN 2 there


def test_an_iface_waits_for_the_records_and_sessions_that_stay(host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth1")
    db.new_iface("eth2")
    db.new_iface("eth3")
    db.new_node(f"{T}:a", "10.0.0.1:3260,1", iface="eth1")
    sid = host.session(f"{T}:a", "10.0.0.1:3260,1", iface="eth1")
    host.mount(host.disks_of(sid)[0], "/data")
    busy = host.session(f"{T}:b", "10.0.0.2:3260,1", iface="eth2")
    host.mount(host.disks_of(busy)[0], "/data2")
    db.new_iface("eth4")
    host.session(f"{T}:c", "10.0.0.4:3260,1", iface="eth4")  # goes without trouble
    p = plan(survey(host), Selection())
    assert find(p, Kind.DELETE_IFACE, path="ifaces/eth4").blocked_by == ()
    assert find(p, Kind.DELETE_IFACE, path="ifaces/eth1").blocked_by == (f"node record {db.nodes()[0]} stays",)
    assert find(p, Kind.DELETE_IFACE, path="ifaces/eth2").blocked_by == (f"session {busy} stays logged in",)
    assert find(p, Kind.DELETE_IFACE, path="ifaces/eth3").blocked_by == ()
    assert find(p, Kind.DELETE_IFACE, path="ifaces/eth3").detail == (
        "delete iface record eth3 (no node record or session uses it any more)"
    )
    forced = plan(survey(host), Selection(force=True))
    assert not forced.blocked
    # an iface a kept session or record uses is not planned at all
    p = plan(survey(host), Selection(keep=(f"{T}:a", f"{T}:b")))
    assert sorted(a.path for a in p.actions if a.kind is Kind.DELETE_IFACE) == ["ifaces/eth3", "ifaces/eth4"]
    # only decommission, reset, desired or an interrupted run remove ifaces
    assert not [a for a in plan(survey(host), Selection(targets=("nothing",))).actions]
    p = plan(survey(host), Selection(desired=parse_desired(f"{T}:a iface=eth1\n{T}:z iface=eth3\n")))
    assert sorted(a.path for a in p.actions if a.kind is Kind.DELETE_IFACE) == ["ifaces/eth2", "ifaces/eth4"]


def test_a_pending_iface_link_and_discovery_of_an_interrupted_run_are_taken_again(host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth9")
    db.new_discovery("10.0.0.1:3260")
    (host.db_root / "static").mkdir(exist_ok=True)
    link = f"static/{T}:x,10.0.0.7,3260,1,default"
    os.symlink(f"{host.db_root}/nodes/{T}:x/10.0.0.7,3260,1", host.db_root / link)
    disc = db.discoveries()[0]
    sel = Selection(targets=("iqn.nothing:*",))
    assert plan(survey(host), sel).actions == []
    write_journal(
        host.state,
        [PendingItem("iface", "eth9"), PendingItem("link", link), PendingItem("discovery", disc.relpath)],
        ["iscsikit", "clean"],
    )
    p = plan(survey(host), sel)
    assert sorted((str(a.kind), a.path) for a in p.actions) == [
        ("delete-discovery", disc.relpath),
        ("delete-iface", "ifaces/eth9"),
        ("delete-link", link),
    ]


def test_desired_keeps_the_discovery_records_of_its_portals(host: SyntheticHost) -> None:
    db = host.db
    db.new_discovery("10.0.0.1:3260")
    db.new_discovery("10.0.0.2:3260")
    db.new_node(f"{T}:gone", "10.0.0.1:3260,1", discovery=db.discoveries()[0])
    p = plan(survey(host), Selection(desired=parse_desired(f"{T}:new 10.0.0.1\n{T}:any\n")))
    assert [(str(a.kind), a.portal) for a in p.actions] == [
        ("delete-node", "10.0.0.1:3260,1"),
        ("delete-discovery", "10.0.0.2:3260"),
    ]
    p = plan(survey(host), Selection(targets=(f"{T}:gone",), stale_only=True))
    assert p.actions == []  # no session: the record is not stale, nor its discovery record
    p = plan(survey(host), Selection(targets=(f"{T}:gone",)))
    assert [(str(a.kind), a.portal) for a in p.actions] == [
        ("delete-node", "10.0.0.1:3260,1"),
        ("delete-discovery", "10.0.0.1:3260"),
    ]
    p = plan(survey(host), Selection(portals=(Portal.parse("10.0.0.2"),)))
    assert [(str(a.kind), a.portal) for a in p.actions] == [("delete-discovery", "10.0.0.2:3260")]
    assert plan(survey(host), Selection(portals=(Portal.parse("10.0.0.2"),), stale_only=True)).actions == []


def test_reset_names_what_keeps_each_record_directory(host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth1")
    db.new_discovery("10.0.0.1:3260")
    db.new_node(f"{T}:prod", "10.0.0.1:3260,1", iface="eth1", discovery=db.discoveries()[0])
    db.new_node(f"{T}:prod", "10.0.0.2:3260,1", iface="eth1")
    db.new_node(f"{T}:scratch", "10.0.0.3:3260,1")
    s = survey(host)
    p = plan(s, Selection(reset=True, keep=(f"{T}:prod",)))
    prod = [r for r in s.nodes if r.target == f"{T}:prod"]
    static_link = next(lk.relpath for lk in s.links if lk.relpath.startswith("static/") and lk.node == prod[1])
    st_link = next(lk.relpath for lk in s.links if lk.relpath.startswith("send_targets/"))
    assert sorted(n for n in p.notes if n.startswith("reset:")) == sorted(
        [
            f"reset: nodes/ stays, it holds what stays (node record {prod[0]}, ...)",
            f"reset: static/ stays, it holds what stays (link {static_link}, ...)",
            f"reset: send_targets/ stays, it holds what stays (link {st_link}, ...)",
            "reset: ifaces/ stays, it holds what stays (iface record eth1, ...)",
        ]
    )
    assert [(str(a.kind), a.path) for a in p.actions] == [("delete-node", f"nodes/{T}:scratch/10.0.0.3,3260,1/default")]
    p = plan(s, Selection(reset=True))
    assert [a.path for a in p.actions if a.kind is Kind.DELETE_ENTRY] == ["static", "send_targets", "nodes", "ifaces"]
    assert all(a.detail == f"reset: remove the {a.path}/ directory once everything in it is gone"
               for a in p.actions if a.kind is Kind.DELETE_ENTRY)  # fmt: skip


def test_junk_and_empty_target_directories_follow_the_filters(host: SyntheticHost) -> None:
    from iscsikit.db.layout import LayoutProblem

    (host.db_root / "nodes").mkdir(exist_ok=True)
    (host.db_root / f"nodes/{T}:a").mkdir()
    (host.db_root / f"nodes/{T}:a/junk").write_text("x")
    (host.db_root / f"nodes/{T}:b").mkdir()
    (host.db_root / f"nodes/{T}:keep").mkdir()
    s = survey(host)
    s.problems.append(LayoutProblem("send_targets/odd", "not a discovery record"))
    s.problems.append(LayoutProblem(f"nodes/{T}:keep/odd", "not a portal"))
    assert sorted(s.empty_targets) == [f"{T}:b", f"{T}:keep"]

    def entries(sel: Selection) -> list[str]:
        return sorted(a.path or "" for a in plan(s, sel).actions if a.kind is Kind.DELETE_ENTRY)

    everything = [f"nodes/{T}:a/junk", f"nodes/{T}:b", "send_targets/odd"]
    assert entries(Selection(keep=(f"{T}:keep",))) == everything
    assert entries(Selection(keep=(f"{T}:keep",), desired=())) == everything
    assert entries(Selection(keep=(f"{T}:keep",), stale_only=True)) == [f"nodes/{T}:b"]
    assert entries(Selection(targets=(f"{T}:a",))) == [f"nodes/{T}:a/junk"]
    assert entries(Selection(targets=(f"{T}:b",))) == [f"nodes/{T}:b"]
    assert entries(Selection(targets=(f"{T}:b",), stale_only=True)) == []
    assert entries(Selection(targets=(f"{T}:b",), unreachable=True)) == []
    assert entries(Selection(targets=(f"{T}:b",), desired=())) == [  # desired: every piece of junk goes
        f"nodes/{T}:a/junk",
        f"nodes/{T}:keep/odd",
        "send_targets/odd",
    ]
    assert entries(Selection(portals=(Portal.parse("10.0.0.1"),))) == []
    reset = entries(Selection(reset=True, portals=(Portal.parse("10.0.0.1"),), keep=(f"{T}:keep",)))
    assert [e for e in reset if "/" in e] == everything
    junk = find(plan(s, Selection(targets=(f"{T}:a",))), Kind.DELETE_ENTRY)
    assert junk.detail.startswith(f"delete nodes/{T}:a/junk: not an open-iscsi record (")
    assert junk.target == f"{T}:a" and junk.paths == (f"nodes/{T}:a/junk",)
    s.problems.append(LayoutProblem("nodes/stray-file", "not a target directory"))
    stray = find(plan(s, Selection(targets=("stray-file",))), Kind.DELETE_ENTRY)
    assert stray.path == "nodes/stray-file" and stray.target == "stray-file"
    s.problems[-1] = LayoutProblem("nodes", "not a directory")
    assert find(plan(s, Selection()), Kind.DELETE_ENTRY, path="nodes").target is None
    odd = find(plan(s, Selection()), Kind.DELETE_ENTRY, path="send_targets/odd")
    assert odd.detail == "delete send_targets/odd: not an open-iscsi record (not a discovery record)"
    assert odd.target is None
    empty = find(plan(s, Selection(targets=(f"{T}:b",))), Kind.DELETE_ENTRY)
    assert empty.detail == f"delete nodes/{T}:b: an empty target directory (left by an interrupted delete)"


def test_actions_of_a_phase_are_ordered_by_target_portal_sid_and_device() -> None:
    from iscsikit.clean.model import DeviceView, SessionView
    from iscsikit.db.layout import NodeRef

    a, b = "iqn.2026-11.org.example:a", "iqn.2026-11.org.example:b"

    def session(sid: int, target: str, address: str, iface: str = "default") -> SessionView:
        return SessionView(sid, target, address, 3260, 1, iface, "LOGGED_IN", "up", 120, sid + 10)

    def device(sid: int, name: str, lun: int) -> DeviceView:
        return DeviceView(f"{sid + 10}:0:0:{lun}", sid, lun, name, f"8:{lun}", "running", 0, "/sys/x")

    s = Survey(
        db_root="/etc/iscsi",
        nodes=[NodeRef(b, "10.0.0.1", 3260, 1, "default"), NodeRef(a, "10.0.0.2", 3260, 1, "default")],
        sessions=[session(3, a, "10.0.0.2", "eth1"), session(1, a, "10.0.0.2"), session(2, b, "10.0.0.1")],
        devices=[device(1, "sdc", 2), device(1, "sdb", 1), device(2, "sda", 1)],
    )
    p = plan(s, Selection())
    assert [(str(x.kind), x.target, x.sid, x.device or x.path) for x in p.actions] == [
        ("remove-device", a, 1, "sdb"),
        ("remove-device", a, 1, "sdc"),
        ("remove-device", b, 2, "sda"),
        ("logout", a, 1, None),
        ("logout", a, 3, None),
        ("logout", b, 2, None),
        ("delete-node", a, None, f"nodes/{a}/10.0.0.2,3260,1/default"),
        ("delete-node", b, None, f"nodes/{b}/10.0.0.1,3260,1/default"),
    ]


def test_a_record_is_tied_only_to_sessions_on_its_own_portal_and_iface(host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth1")
    db.new_node(f"{T}:t", "10.0.0.1:3260,1")  # no session of its own
    db.new_node(f"{T}:t", "10.0.0.2:3261,1", iface="eth1")
    for portal, iface in (("10.0.0.2:3260,1", "default"), ("10.0.0.1:3261,1", "default"), ("10.0.0.1:3260,1", "eth1")):
        sid = host.session(f"{T}:t", portal, iface=iface)  # in use: these sessions stay
        host.mount(host.disks_of(sid)[0], f"/mnt/{sid}")
    p = plan(survey(host), Selection())
    nodes = {x.path: x.blocked_by for x in p.actions if x.kind is Kind.DELETE_NODE}
    assert nodes == {f"nodes/{T}:t/10.0.0.1,3260,1/default": (), f"nodes/{T}:t/10.0.0.2,3261,1/eth1": ()}
    assert len([x for x in p.actions if x.kind is Kind.LOGOUT and x.blocked]) == 3


def test_keep_covers_records_links_and_attachments_without_sessions(host: SyntheticHost) -> None:
    db = host.db
    db.new_node(f"{T}:prod", "10.0.0.1:3260,1")
    (host.db_root / "static").mkdir(exist_ok=True)
    os.symlink(
        f"{host.db_root}/nodes/{T}:prod/10.0.0.9,3260,1", host.db_root / f"static/{T}:prod,10.0.0.9,3260,1,default"
    )
    host.attachment("pvc-prod", f"{T}:prod")
    db.new_node(f"{T}:other", "10.0.0.2:3260,1")
    keep = (f"{T}:prod",)
    for sel in (Selection(keep=keep), Selection(keep=(f"{T}:pr*",), reset=True),
                Selection(keep=keep, stale_only=True), Selection(keep=keep, desired=())):  # fmt: skip
        p = plan(survey(host), sel)
        assert all(a.target != f"{T}:prod" for a in p.actions), (sel, [a.to_json() for a in p.actions])
    assert {a.target for a in plan(survey(host), Selection()).actions} == {f"{T}:prod", f"{T}:other"}


def test_flash_sessions_dead_luns_and_controller_luns(host: SyntheticHost) -> None:
    host.session(f"{T}:boot", flash=True, luns={1: "offline"})
    sid = host.session(f"{T}:ctl", luns=[1], controller_lun0=True)
    p = plan(survey(host), Selection(stale_only=True))
    assert p.actions == []  # the flash session's dead LUN is the firmware's business
    p = plan(survey(host), Selection(targets=(f"{T}:ctl",)))
    assert [(str(a.kind), a.device) for a in p.actions] == [("remove-device", host.disks_of(sid)[0]), ("logout", None)]


def test_notes_say_exactly_what_was_left_and_why(host: SyntheticHost) -> None:
    db = host.db
    for portal in ("127.0.0.1:3260,1", "127.0.0.2:3260,1"):
        db.new_node(f"{T}:busy", portal)
        sid = host.session(f"{T}:busy", portal)
        host.mount(host.disks_of(sid)[0], f"/mnt/{sid}")
    failing = host.session(f"{T}:flaky", "127.0.0.3:3260,1", state="FAILED")
    p = plan(survey(host), Selection(keep=(f"{T}:busy",)))
    assert p.notes == []
    p = plan(survey(host, now=1_000_000.0), Selection(stale_only=True, older_than=7200, targets=(f"{T}:*",)))
    assert p.notes == [f"session {failing} ({T}:flaky) is failing, but not for 2 h yet; left alone"]
    s = survey(host)
    s.sessions[:] = [x for x in s.sessions if x.target == f"{T}:busy"]
    s.devices[:] = [d for d in s.devices if d.sid in {x.sid for x in s.sessions}]
    p = plan(s, Selection(stale_only=True))
    assert p.notes == []  # stale-only: the records of healthy sessions are no news
    busy_only = Selection(targets=(f"{T}:busy",))
    assert plan(s, busy_only).notes == []
    p = plan(s, Selection())
    assert "2 node record(s) kept: their sessions stay logged in" not in p.notes  # their logouts are planned, blocked
    s.sessions[:] = []  # what `--keep`-like filters leave: sessions not chosen
    p = plan(survey(host), Selection(stale_only=True, reset=True))
    assert p.notes[0] == "2 node record(s) kept: their sessions stay logged in"
    p = plan(survey(host), Selection(portals=(Portal.parse("127.0.0.3"),), reset=True))
    assert not [n for n in p.notes if "kept" in n]  # the busy records are not selected at all


def test_a_record_of_a_firmware_session_is_kept_and_noted(host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:boot", "127.0.0.1:3260,1")
    sid = host.session(f"{T}:boot", flash=True)
    p = plan(survey(host), Selection())
    assert p.actions == [] and p.notes == [
        f"session {sid} ({T}:boot) was created by firmware (flash); left alone",
        "1 node record(s) kept: their sessions stay logged in",
    ]


def test_exact_details_of_records_devices_and_attachments(host: SyntheticHost) -> None:
    db = host.db
    db.new_discovery("127.0.0.1:3260")
    db.new_node(f"{T}:a", "127.0.0.1:3260,1", discovery=db.discoveries()[0])
    s1 = host.session(f"{T}:a", "127.0.0.1:3260,1", luns={1: "offline", 2: "running"})
    s2 = host.session(f"{T}:a", "127.0.0.2:3260,1", state="FAILED")
    host.attachment("pvc-a", f"{T}:a", ("127.0.0.1:3260", "127.0.0.2:3260"))
    s = survey(host)
    p = plan(s, Selection())
    ref = db.nodes()[0]
    disk1 = host.disks_of(s1)[0]
    assert find(p, Kind.DELETE_NODE).detail == f"delete node record {ref.relpath} and 1 link(s) to it"
    assert find(p, Kind.DELETE_NODE).paths == (
        ref.relpath,
        f"send_targets/127.0.0.1,3260/{T}:a,127.0.0.1,3260,1,default",
    )
    assert find(p, Kind.REMOVE_DEVICE, device=disk1).detail == (
        f"flush and remove /dev/{disk1} (LUN 1, {s1 + 1}:0:0:1, offline) of session {s1}"
    )  # its session goes anyway: no word about the kernel giving up
    assert find(p, Kind.LOGOUT, sid=s2).detail == f"log out session {s2} (FAILED, iface default)"
    att = find(p, Kind.DELETE_ATTACHMENT)
    assert att.detail == f"delete attachment record pvc-a (attached): its session(s) {s1}, {s2} are logged out"
    assert att.portal == "127.0.0.1:3260, 127.0.0.2:3260" and att.blocked_by == () and att.path.endswith("pvc-a.json")
    p = plan(s, Selection(stale_only=True, targets=(f"{T}:a",)))
    assert find(p, Kind.REMOVE_DEVICE, device=disk1).detail == (
        f"flush and remove /dev/{disk1} (LUN 1, {s1 + 1}:0:0:1, offline) of session {s1}; "
        "the kernel gave up on this LUN"
    )
    write_journal(host.state, [PendingItem("node", ref.relpath)], ["iscsikit", "clean"])
    p = plan(survey(host), Selection(targets=(f"{T}:a",)))
    assert find(p, Kind.DELETE_NODE).detail == (
        f"delete node record {ref.relpath} and 1 link(s) to it (left by an interrupted clean)"
    )


def test_a_path_dropped_from_a_map_that_stays_says_so(host: SyntheticHost) -> None:
    s1 = host.session(f"{T}:mp", "127.0.0.1:3260,1")
    s2 = host.session(f"{T}:mp", "127.0.0.2:3260,1")
    disks = [host.disks_of(s1)[0], host.disks_of(s2)[0]]
    host.multipath_map(disks)
    p = plan(survey(host), Selection(portals=(Portal.parse("127.0.0.1:3260"),)))
    assert find(p, Kind.REMOVE_DEVICE).detail == (
        f"flush and remove /dev/{disks[0]} (LUN 1, {s1 + 1}:0:0:1) of session {s1}; "
        "dropped from multipath map mpatha (dm-0), which keeps its other paths"
    )


def test_a_pending_attachment_is_taken_again(host: SyntheticHost) -> None:
    host.attachment("pvc-1", f"{T}:a", ("10.0.0.1:3260",))
    s = survey(host)
    s.unreachable = frozenset()
    assert plan(s, Selection(unreachable=True)).actions == []
    write_journal(host.state, [PendingItem("attachment", "pvc-1")], ["iscsikit", "clean"])
    s = survey(host)
    s.unreachable = frozenset()
    assert [a.subject.volume_id for a in plan(s, Selection(unreachable=True)).actions] == ["pvc-1"]


def test_desired_luns_per_portal_and_iface_and_entries_after_a_volume_id(host: SyntheticHost) -> None:
    db = host.db
    db.new_iface("eth1")
    s1 = host.session(f"{T}:s", "10.0.0.1:3260,1", luns=[1, 2])
    desired = parse_desired(f"{T}:s 10.0.0.1 lun=1\n{T}:s 10.0.0.2 lun=2\n")
    p = plan(survey(host), Selection(desired=desired))
    assert {a.device for a in p.actions if a.kind is Kind.REMOVE_DEVICE} == {host.disks_of(s1)[1]}
    desired = parse_desired(f"{T}:s iface=eth1 lun=1\n{T}:s iface=default lun=2\n")
    p = plan(survey(host), Selection(desired=desired))
    assert {a.device for a in p.actions if a.kind is Kind.REMOVE_DEVICE} == {host.disks_of(s1)[0]}
    # attachments: an entry after a volume id entry still counts; an iface entry must match
    host.attachment("pvc-x", f"{T}:s", ("10.0.0.1:3260",))
    doc = f'[{{"target": "x", "volume_id": "pvc-other"}}, {{"target": "{T}:s", "luns": [1]}}]'
    p = plan(survey(host), Selection(desired=parse_desired(doc)))
    assert not [a for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT]
    doc = f'[{{"target": "{T}:s", "luns": [2]}}, {{"target": "{T}:s", "luns": [1]}}]'
    p = plan(survey(host), Selection(desired=parse_desired(doc)))
    assert not [a for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT]
    p = plan(survey(host), Selection(desired=parse_desired(f"{T}:s iface=eth1\n")))
    assert [a.subject.volume_id for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT] == ["pvc-x"]


def test_an_attachments_sessions_are_those_on_its_portals_and_iface(host: SyntheticHost) -> None:
    host.db.new_iface("eth1")
    on_eth1 = host.session(f"{T}:a", "10.0.0.1:3260,1", iface="eth1")
    other_portal = host.session(f"{T}:a", "10.0.0.2:3260,1")
    mine = host.session(f"{T}:a", "10.0.0.1:3260,1")
    host.attachment("pvc-a", f"{T}:a", ("10.0.0.1:3260",))
    p = plan(survey(host), Selection())
    assert find(p, Kind.DELETE_ATTACHMENT).detail == (
        f"delete attachment record pvc-a (attached): its session(s) {mine} are logged out"
    )
    assert {on_eth1, other_portal} < {a.sid for a in p.actions if a.kind is Kind.LOGOUT}


def test_lists_in_details_are_comma_separated() -> None:
    sel = Selection(keep=("iqn.x:a", "iqn.x:b"))
    assert sel.describe() == "everything (decommission); keeping iqn.x:a, iqn.x:b"


def _session(sid: int, target: str, address: str | None, *, tpgt: int = 1, iface: str = "default",
             state: str = "LOGGED_IN", failed_for: float | None = None) -> SessionView:  # fmt: skip
    conn = "failed" if state == "FAILED" else "up"
    return SessionView(sid, target, address, 3260, tpgt, iface, state, conn, 120, sid + 10, failed_for=failed_for)


def test_ties_in_a_phase_are_broken_by_portal_then_path_and_a_session_without_portal_has_none() -> None:
    # Sessions of one target: the one whose portal sysfs did not show comes first and its
    # actions name no portal (not "None"); records of one target and portal by their path.
    from iscsikit.db.layout import LayoutProblem, NodeRef

    a = "iqn.2026-11.org.example:a"
    s = Survey(
        db_root="/etc/iscsi",
        nodes=[NodeRef(a, "10.0.0.1", 3260, 1, "eth1"), NodeRef(a, "10.0.0.1", 3260, 1, "default")],
        sessions=[_session(2, a, "10.0.0.1"), _session(5, a, None)],
        problems=[
            LayoutProblem(f"nodes/{a}/zz", "a file"),
            LayoutProblem("Junk", "a file"),
            LayoutProblem(f"nodes/{a}/aa", "a file"),
        ],
    )
    p = plan(s, Selection())
    assert [(str(x.kind), x.portal, x.sid, x.path) for x in p.actions] == [
        ("logout", None, 5, None),
        ("logout", "10.0.0.1:3260,1", 2, None),
        ("delete-node", "10.0.0.1:3260,1", None, f"nodes/{a}/10.0.0.1,3260,1/default"),
        ("delete-node", "10.0.0.1:3260,1", None, f"nodes/{a}/10.0.0.1,3260,1/eth1"),
        ("delete-entry", None, None, "Junk"),  # no target sorts before any target
        ("delete-entry", None, None, f"nodes/{a}/aa"),
        ("delete-entry", None, None, f"nodes/{a}/zz"),
    ]
    assert p.actions[0].to_json()["portal"] is None
    # Records without links say nothing about links.
    assert p.actions[2].detail == f"delete node record nodes/{a}/10.0.0.1,3260,1/default"


def test_a_target_that_sorts_before_the_fallback_still_comes_after_no_target() -> None:
    # Directory names under nodes/ are whatever is on disk: a junk entry of a target whose name
    # sorts low ("A...") still comes after top-level junk (no target).
    from iscsikit.db.layout import LayoutProblem

    s = Survey(db_root="/etc/iscsi", problems=[LayoutProblem("nodes/ATarget/x", "a file"),
                                               LayoutProblem("send_targets/x", "a file")])  # fmt: skip
    assert [x.path for x in plan(s, Selection()).actions] == ["send_targets/x", "nodes/ATarget/x"]


@pytest.mark.parametrize(("older_than", "taken"), [(0.0, True), (0.5, False), (1.0, False), (60.0, False)])
def test_a_session_failing_for_an_unknown_time_is_stale_only_without_older_than(older_than: float, taken: bool) -> None:
    a = "iqn.2026-11.org.example:a"
    s = Survey(db_root="/etc/iscsi", sessions=[_session(3, a, "10.0.0.1", state="FAILED", failed_for=None)])
    p = plan(s, Selection(stale_only=True, older_than=older_than))
    assert [x.sid for x in p.actions if x.kind is Kind.LOGOUT] == ([3] if taken else [])
    if not taken:
        assert p.notes == [f"session 3 ({a}) is failing, but not for {int(older_than)} s yet; left alone"]


def test_force_names_every_user_in_the_detail() -> None:
    from iscsikit.clean.model import DeviceView, Usage

    a = "iqn.2026-11.org.example:a"
    users = (Usage("mount", "/mnt/a"), Usage("open", "pid 7 (dd)"))
    disk = DeviceView("11:0:0:1", 1, 1, "sdb", "8:16", "running", 0, "/sys/x", users=users)
    s = Survey(db_root="/etc/iscsi", sessions=[_session(1, a, "10.0.0.1")], devices=[disk])
    why = "/dev/sdb is mounted at /mnt/a; /dev/sdb is open by pid 7 (dd)"
    p = plan(s, Selection(force=True))
    assert [(x.detail, x.blocked_by) for x in p.actions] == [
        (f"flush and remove /dev/sdb (LUN 1, 11:0:0:1) of session 1; forced although {why}", ()),
        (f"log out session 1 (LOGGED_IN, iface default); forced although {why}", ()),
    ]
    blocked = plan(s, Selection())
    assert [x.blocked_by for x in blocked.actions] == [
        ("/dev/sdb is mounted at /mnt/a", "/dev/sdb is open by pid 7 (dd)")
    ] * 2


def test_a_record_is_not_tied_to_a_session_of_another_portal_group(host: SyntheticHost) -> None:
    # Same address and port, another target portal group tag: another portal. The busy session
    # there does not hold this record back.
    host.db.new_node(f"{T}:t", "10.0.0.1:3260,1")
    sid = host.session(f"{T}:t", "10.0.0.1:3260,2")
    host.mount(host.disks_of(sid)[0], "/mnt/busy")
    p = plan(survey(host), Selection())
    assert find(p, Kind.DELETE_NODE, path=f"nodes/{T}:t/10.0.0.1,3260,1/default").blocked_by == ()
    assert find(p, Kind.LOGOUT, sid=sid).blocked


@pytest.mark.parametrize(
    "doc",
    [
        '[{"target": "iqn.x:other", "volume_id": "pvc-other"}, {"target": "TARGET", "luns": [1]}]',
        '[{"target": "iqn.x:other"}, {"target": "TARGET", "luns": [1]}]',
        '[{"target": "TARGET", "luns": [2]}, {"target": "TARGET", "luns": [1]}]',
    ],
    ids=["after-a-volume-id", "after-another-target", "after-another-lun"],
)
def test_an_attachment_without_sessions_is_kept_by_any_desired_entry_naming_it(host: SyntheticHost, doc: str) -> None:
    host.attachment("pvc-x", f"{T}:s", ("10.0.0.1:3260",), lun=1)  # its session is gone
    p = plan(survey(host), Selection(desired=parse_desired(doc.replace("TARGET", f"{T}:s"))))
    absent(p, Kind.DELETE_ATTACHMENT)
    p = plan(survey(host), Selection(desired=parse_desired(f'[{{"target": "{T}:s", "luns": [2]}}]')))
    assert [a.subject.volume_id for a in p.actions if a.kind is Kind.DELETE_ATTACHMENT] == ["pvc-x"]


def test_a_reset_plan_gives_the_executor_every_path_and_subject() -> None:
    # What `clean --yes` acts on: each action's paths (what is deleted and backed up) and its
    # subject (the typed thing), also for entries, dangling links and reset's directories.
    from iscsikit.db.layout import DiscoveryRef, IfaceRef, LayoutProblem, LinkRef, NodeRef, RecordKind

    a = "iqn.2026-11.org.example:a"
    node = NodeRef(a, "10.0.0.1", 3260, 1, "default")
    gone = NodeRef(a, "10.0.0.9", 3260, 1, "default")
    disc = DiscoveryRef(RecordKind.SENDTARGETS, "10.0.0.1", 3260)
    link = LinkRef(f"send_targets/10.0.0.1,3260/{a},10.0.0.1,3260,1,default", "sendtargets", node, "/x", disc)
    dangling = LinkRef(f"static/{a},10.0.0.9,3260,1,default", "static", gone, "/y")
    garbled = LinkRef("static/garbled", "static", None, "/z")
    s = Survey(
        db_root="/etc/iscsi",
        nodes=[node],
        discoveries=[disc],
        links=[link],
        dangling=[dangling, garbled],
        ifaces=[IfaceRef("eth9")],
        problems=[LayoutProblem(f"nodes/{a}/junk", "a file")],
        empty_targets=[f"{a}-empty"],
        top_dirs=["nodes", "send_targets", "static", "ifaces"],
    )
    p = plan(s, Selection(reset=True))
    node_path = f"nodes/{a}/10.0.0.1,3260,1/default"
    assert [(str(x.kind), x.detail, x.target, x.portal, x.path, x.paths, x.subject) for x in p.actions] == [
        ("delete-node", f"delete node record {node_path} and 1 link(s) to it", a, "10.0.0.1:3260,1", node_path,
         (node_path, link.relpath), node),
        ("delete-link", "delete dangling link static/garbled (its node record is gone)", None, None,
         "static/garbled", ("static/garbled",), garbled),
        ("delete-link", f"delete dangling link {dangling.relpath} (its node record is gone)", a, "10.0.0.9:3260,1",
         dangling.relpath, (dangling.relpath,), dangling),
        ("delete-discovery", "delete sendtargets discovery record 10.0.0.1:3260 (it discovered 1 of the node "
         "records above)", None, "10.0.0.1:3260", disc.relpath, (disc.relpath,), disc),
        ("delete-iface", "delete iface record eth9 (no node record or session uses it any more)", None, None,
         "ifaces/eth9", ("ifaces/eth9",), IfaceRef("eth9")),
        ("delete-entry", f"delete nodes/{a}/junk: not an open-iscsi record (a file)", a, None, f"nodes/{a}/junk",
         (f"nodes/{a}/junk",), f"nodes/{a}/junk"),
        ("delete-entry", f"delete nodes/{a}-empty: an empty target directory (left by an interrupted delete)",
         f"{a}-empty", None, f"nodes/{a}-empty", (f"nodes/{a}-empty",), f"nodes/{a}-empty"),
        *[("delete-entry", f"reset: remove the {top}/ directory once everything in it is gone", None, None, top,
           (top,), top) for top in ("static", "send_targets", "nodes", "ifaces")],
    ]  # fmt: skip
    assert p.notes == []


def _left_alone_first(case: str) -> tuple[Any, ...]:
    """A survey whose first item of some kind is left alone and whose second must be taken."""
    from iscsikit.clean.model import DeviceView
    from iscsikit.db.layout import LayoutProblem, LinkRef, NodeRef

    a, b = "iqn.2026-11.org.example:a", "iqn.2026-11.org.example:b"
    s = Survey(db_root="/etc/iscsi")
    if case == "flash-session":
        s.sessions = [replace(_session(1, a, "10.0.0.1"), flash=True), _session(2, a, "10.0.0.1")]
        return s, Selection(), ("logout", 2)
    if case == "reachable-session":
        s.sessions, s.unreachable = [_session(1, a, "10.0.0.1"), _session(2, a, "10.0.0.2")], {"10.0.0.2:3260"}
        return s, Selection(unreachable=True), ("logout", 2)
    if case == "orphan-device-out-of-scope":
        s.sessions = [_session(2, b, "10.0.0.1")]
        s.devices = [DeviceView("9:0:0:1", None, 1, "sdx", "8:0", "running", 0, "/sys/x"),
                     DeviceView("12:0:0:1", 2, 1, "sdb", "8:16", "transport-offline", 0, "/sys/y")]  # fmt: skip
        return s, Selection(targets=(b,)), ("remove-device", "sdb"), ("logout", 2)
    if case == "unreadable-entry":
        s.problems = [LayoutProblem(f"nodes/{a}/x", "cannot read: EACCES"), LayoutProblem(f"nodes/{b}/y", "a file")]
        return s, Selection(), ("delete-entry", f"nodes/{b}/y")
    if case == "kept-entry":
        s.problems = [LayoutProblem(f"nodes/{a}/x", "a file"), LayoutProblem(f"nodes/{b}/y", "a file")]
        return s, Selection(keep=(a,)), ("delete-entry", f"nodes/{b}/y")
    if case == "kept-empty-target":
        s.empty_targets = [a, b]
        return s, Selection(keep=(a,)), ("delete-entry", f"nodes/{b}")
    if case == "kept-attachment":
        from iscsikit.clean.model import AttachmentView

        s.attachments = [
            AttachmentView(v, f"/state/{v}.json", t, (), None, 1, "attached") for v, t in (("x", a), ("y", b))
        ]
        return s, Selection(keep=(a,)), ("delete-attachment", "/state/y.json")
    assert case == "kept-link"
    la = LinkRef(f"static/{a},10.0.0.1,3260,1,default", "static", NodeRef(a, "10.0.0.1", 3260, 1), "/x")
    lb = LinkRef(f"static/{b},10.0.0.1,3260,1,default", "static", NodeRef(b, "10.0.0.1", 3260, 1), "/y")
    s.dangling = [la, lb]
    return s, Selection(keep=(a,)), ("delete-link", lb.relpath)


@pytest.mark.parametrize(
    "case",
    ["flash-session", "reachable-session", "orphan-device-out-of-scope", "unreadable-entry", "kept-entry",
     "kept-empty-target", "kept-link", "kept-attachment"],
)  # fmt: skip
def test_an_item_left_alone_does_not_stop_the_planner_from_taking_the_next(case: str) -> None:
    s, sel, *want = _left_alone_first(case)
    p = plan(s, sel)
    assert [(str(x.kind), x.sid if x.kind is Kind.LOGOUT else x.device or x.path) for x in p.actions] == want


def test_a_portal_filter_takes_discovery_links_and_attachments_on_that_portal_and_port() -> None:
    from iscsikit.clean.model import AttachmentView
    from iscsikit.db.layout import DiscoveryRef, LinkRef, NodeRef, RecordKind

    a = "iqn.2026-11.org.example:a"
    portal = Portal("10.0.0.1", 3261)
    disc = DiscoveryRef(RecordKind.SENDTARGETS, "10.0.0.1", 3261)
    link = LinkRef(f"static/{a},10.0.0.1,3261,1,default", "static", NodeRef(a, "10.0.0.1", 3261, 1), "/x")
    s = Survey(
        db_root="/etc/iscsi",
        discoveries=[disc, DiscoveryRef(RecordKind.SENDTARGETS, "10.0.0.1", 3260)],
        dangling=[link],
        attachments=[AttachmentView("pvc-a", "/state/pvc-a.json", a, (portal,), None, 1, "attached")],
        unreachable={"10.0.0.1:3261", "10.0.0.1:3260"},
    )
    for sel in (Selection(portals=(portal,)), Selection(portals=(portal,), unreachable=True)):
        p = plan(s, sel)
        assert [(str(x.kind), x.path) for x in p.actions] == [
            ("delete-link", link.relpath),
            ("delete-discovery", disc.relpath),
            ("delete-attachment", "/state/pvc-a.json"),
        ]


def test_reset_without_keep_config_deletes_the_config_files_and_only_then() -> None:
    from iscsikit.db.layout import IfaceRef

    s = Survey(db_root="/etc/iscsi", config_files=["initiatorname.iscsi", "iscsid.conf"], ifaces=[IfaceRef("eth9")],
               pending=[PendingItem("node", "nodes/iqn.x:gone/10.0.0.1,3260,1/default")])  # fmt: skip
    p = plan(s, Selection(reset=True, keep_config=False))
    config = [(x.detail, x.path, x.paths, x.subject) for x in p.actions if x.kind is Kind.DELETE_CONFIG]
    assert config == [(f"reset: delete {n}", n, (n,), n) for n in ("initiatorname.iscsi", "iscsid.conf")]
    assert not [x for x in plan(s, Selection(reset=True)).actions if x.kind is Kind.DELETE_CONFIG]
    # A filtered run that resumes an interrupted one leaves an iface nobody named alone.
    assert plan(s, Selection(targets=("iqn.x:other",))).actions == []


def test_dead_luns_of_staying_sessions_go_only_with_stale_only_or_desired_and_whole_maps_are_not_partial() -> None:
    from iscsikit.clean.model import DeviceView, MapView

    a = "iqn.2026-11.org.example:a"
    dead = DeviceView("11:0:0:2", 1, 2, "sdc", "8:32", "transport-offline", 0, "/sys/x")
    s = Survey(
        db_root="/etc/iscsi", sessions=[_session(1, a, "10.0.0.1")], devices=[dead], unreachable={"10.0.0.9:3260"}
    )
    assert plan(s, Selection(unreachable=True)).actions == []  # its session is reachable: it stays, and its LUNs
    assert [x.device for x in plan(s, Selection(stale_only=True)).actions] == ["sdc"]
    # Both paths of a map go: the map is flushed, and neither path is "dropped from" it.
    paths = [DeviceView(f"1{i}:0:0:1", i, 1, f"sd{n}", f"8:{i}", "running", 0, "/sys/y", multipath="dm-0")
             for i, n in ((1, "b"), (2, "c"))]  # fmt: skip
    s = Survey(db_root="/etc/iscsi", sessions=[_session(1, a, "10.0.0.1"), _session(2, a, "10.0.0.2")],
               devices=paths, maps=[MapView("dm-0", "mpatha", "3600", ("sdb", "sdc"), "253:0")])  # fmt: skip
    details = [x.detail for x in plan(s, Selection()).actions if x.kind is Kind.REMOVE_DEVICE]
    assert details == [
        f"flush and remove /dev/sd{n} (LUN 1, 1{i}:0:0:1) of session {i}" for i, n in ((1, "b"), (2, "c"))
    ]
