"""database.py on a scratch DB: what each operation leaves on disk, its side effects, and
every refusal. The byte-for-byte comparison with the real iscsiadm is in tests/interop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from iscsikit.db.database import Database
from iscsikit.db.layout import DiscoveryRef, IfaceRef, NodeRef
from iscsikit.db.schema import RecordKind
from iscsikit.errors import (
    DatabaseError,
    InvalidNameError,
    InvalidSettingError,
    LockTimeoutError,
    RecordExistsError,
    RecordNotFoundError,
    RecordRejectedError,
)
from tests.unit.db.support import IFACE_RES1, T1_RECORD, tree

T = "iqn.2026-11.test:disk1"


@pytest.fixture
def db(tmp_path: Path) -> Database:
    root = tmp_path / "etc-iscsi"
    root.mkdir()
    return Database(root, lock_dir=tmp_path / "lock", lock_timeout=2, link_root="/etc/iscsi", defaults="compiled")


def _text(db: Database, rel: str) -> str:
    return (db.root / rel).read_text()


# ---- create -----------------------------------------------------------------------------


def test_new_node_with_tpgt_is_new_style_with_a_static_link(db: Database) -> None:
    node = db.new_node(T, "10.0.0.1:3260,1")
    assert node.ref == NodeRef(T, "10.0.0.1", 3260, 1, "default")
    t = tree(db.root)
    assert t[f"nodes/{T}/10.0.0.1,3260,1/default"][:2] == ("file", 0o600)
    assert t[f"nodes/{T}"][:2] == ("dir", 0o700)
    assert t[f"static/{T},10.0.0.1,3260,1,default"] == ("link", 0o777, f"/etc/iscsi/nodes/{T}/10.0.0.1,3260,1")
    assert t["ifaces"][:2] == ("dir", 0o700)  # iscsiadm without -I creates it
    text = _text(db, node.ref.relpath)
    assert "node.tpgt = 1\n" in text and "node.discovery_type = static\n" in text
    assert "node.conn[0].timeo.login_timeout = 30\n" in text  # compiled default: iscsid not asked
    assert ".iscsikit-tmp" not in t  # the scratch directory is gone after the write


def test_new_node_without_tpgt_is_an_old_style_file_without_link(db: Database) -> None:
    node = db.new_node(T, "10.0.0.2", iface="default")
    assert node.ref.old_style and node.tpgt is None
    t = tree(db.root)
    assert t[f"nodes/{T}/10.0.0.2,3260"][:2] == ("file", 0o600)
    assert "static" not in t and "ifaces" not in t  # -I default creates no ifaces/
    assert "node.tpgt = -1\n" in _text(db, node.ref.relpath)


def test_ipv6_portal_is_stored_unbracketed(db: Database) -> None:
    node = db.new_node(T, "[2001:db8::11]:3260,2")
    assert node.ref.relpath == f"nodes/{T}/2001:db8::11,3260,2/default"
    assert "node.conn[0].address = 2001:db8::11\n" in _text(db, node.ref.relpath)


def test_new_node_refuses_to_reset_an_existing_record_unless_overwrite(db: Database) -> None:
    db.new_node(T, "10.0.0.1:3260,1")
    db.update_nodes({"node.startup": "automatic"}, T)
    with pytest.raises(RecordExistsError, match="overwrite"):
        db.new_node(T, "10.0.0.1:3260,1")
    assert "node.startup = automatic" in _text(db, f"nodes/{T}/10.0.0.1,3260,1/default")
    db.new_node(T, "10.0.0.1:3260,1", overwrite=True)
    assert "node.startup = manual" in _text(db, f"nodes/{T}/10.0.0.1,3260,1/default")


def test_an_old_style_record_counts_as_existing_and_is_replaced_on_overwrite(db: Database) -> None:
    db.new_node(T, "10.0.0.1")
    with pytest.raises(RecordExistsError):
        db.new_node(T, "10.0.0.1:3260,1")
    db.new_node(T, "10.0.0.1:3260,1", overwrite=True)
    assert [r.relpath for r in db.nodes()] == [f"nodes/{T}/10.0.0.1,3260,1/default"]


def test_new_node_copies_the_iface_but_not_its_prefix_len(db: Database) -> None:
    (db.root / "ifaces").mkdir()
    (db.root / "ifaces/iscsikit-res1").write_text(IFACE_RES1.replace("prefix_len = 0", "prefix_len = 24"))
    node = db.new_node(T, "10.0.0.1:3260,1", iface="iscsikit-res1")
    assert node.iface == "iscsikit-res1"
    assert node.value("iface.net_ifacename") == "lo"
    assert node.initiator_name == "iqn.2026-11.org.iscsikit.research:initiator1"
    assert node.value("iface.prefix_len") == "0"
    assert (db.root / f"static/{T},10.0.0.1,3260,1,iscsikit-res1").is_symlink()


def test_new_node_with_a_missing_iface_writes_nothing(db: Database) -> None:
    with pytest.raises(RecordNotFoundError, match="no iface record 'nope'"):
        db.new_node(T, "10.0.0.1:3260,1", iface="nope")
    assert tree(db.root) == {}


def test_settings_given_at_creation_are_validated_first(db: Database) -> None:
    with pytest.raises(InvalidSettingError, match="valid choices are manual, automatic, onboot"):
        db.new_node(T, "10.0.0.1:3260,1", settings={"node.startup": "Automatic"})
    assert tree(db.root) == {}
    node = db.new_node(T, "10.0.0.1:3260,1", settings={"node.session.auth.authmethod": "CHAP"})
    assert node.chap.enabled


@pytest.mark.parametrize(
    ("target", "portal", "iface"),
    [
        ("../../etc", "10.0.0.1:3260,1", None),
        ("iqn.2026-11.test:a/b", "10.0.0.1:3260,1", None),
        (T, "10.0.0.1:3260,1", "../x"),
        (T, "10.0.0.1:3260,1", "a/b"),
        (T, "../x:3260", None),
        (T, "a,b:3260", None),
    ],
)
def test_names_that_would_escape_the_db_are_refused(db: Database, target: str, portal: str, iface: str | None) -> None:
    with pytest.raises(InvalidNameError):
        db.new_node(target, portal, iface=iface, strict_names=False)
    assert sorted(os.listdir(db.root.parent)) == ["etc-iscsi"]  # not even the lock was taken
    assert tree(db.root) == {}


def test_ipv6_iface_not_named_ipv6_is_refused_because_iscsiadm_could_not_read_it(db: Database) -> None:
    with pytest.raises(RecordRejectedError, match="'ipv6' in its name"):
        db.new_iface("offload0", settings={"iface.ipaddress": "2001:db8::99"})
    assert not (db.root / "ifaces/offload0").exists()
    iface = db.new_iface("offload-ipv6", settings={"iface.ipaddress": "2001:db8::99"})
    assert "iface.hop_limit = 0" in _text(db, "ifaces/offload-ipv6")
    assert iface.ok


# ---- update -----------------------------------------------------------------------------


def test_update_rewrites_every_match_and_keeps_other_records(db: Database) -> None:
    db.new_node(T, "10.0.0.1:3260,1")
    db.new_node(T, "10.0.0.2:3260,1")
    db.new_node("iqn.2026-11.test:other", "10.0.0.1:3260,1")
    result = db.update_nodes({"node.session.auth.username": "u", "node.session.auth.password": "p w#1"}, T)
    assert len(result.nodes) == 2
    for node in db.show_nodes(T):
        assert node.chap.username == "u" and node.chap.password == "p w#1"
        assert node.settings()["node.session.auth.password"] == "********"
    assert db.node("iqn.2026-11.test:other").chap.username == ""


def test_update_refuses_iface_keys_in_node_mode_and_writes_nothing(db: Database) -> None:
    db.new_node(T, "10.0.0.1:3260,1")
    before = tree(db.root)
    with pytest.raises(InvalidSettingError, match="iface set"):
        db.update_nodes({"node.startup": "automatic", "iface.net_ifacename": "eth0"}, T)
    assert tree(db.root) == before


def test_update_of_nothing_is_not_found(db: Database) -> None:
    with pytest.raises(RecordNotFoundError):
        db.update_nodes({"node.startup": "automatic"}, "iqn.2026-11.test:none")


def test_update_drops_unknown_keys_like_iscsiadm_and_says_so(db: Database) -> None:
    node = db.new_node(T, "10.0.0.1:3260,1")
    path = db.root / node.ref.relpath
    path.write_text(path.read_text().replace("# END RECORD", "node.session.futurekey = 1\n# END RECORD"))
    assert not db.node(T).ok  # iscsiadm 2.1.8 could not list it
    result = db.update(node.ref, {"node.startup": "automatic"})
    assert any("futurekey" in w for w in result.warnings)
    assert db.node(T).ok and "futurekey" not in path.read_text()


def test_portal_filters(db: Database) -> None:
    db.new_node(T, "10.0.0.1:3260,1")
    db.new_node(T, "10.0.0.1:3261,2")
    db.new_node(T, "[2001:db8::1]:3260,1")
    assert len(db.nodes(T, "10.0.0.1")) == 1  # port 3260 when omitted
    assert len(db.nodes(T, "10.0.0.1:3261")) == 1
    assert db.nodes(T, "10.0.0.1:3260,2") == []  # a tpgt, when given, must match
    assert len(db.nodes(T, "[2001:0db8:0::1]:3260")) == 1  # addresses compare as addresses
    assert len(db.nodes("iqn.2026-11.test:*")) == 3


# ---- delete -----------------------------------------------------------------------------


def test_delete_removes_link_file_and_empty_dirs(db: Database) -> None:
    db.new_node(T, "10.0.0.1:3260,1")
    db.new_node(T, "10.0.0.2:3260,1")
    db.delete_nodes(T, "10.0.0.1")
    t = tree(db.root)
    assert f"nodes/{T}/10.0.0.1,3260,1" not in t
    assert f"static/{T},10.0.0.1,3260,1,default" not in t
    assert f"nodes/{T}" in t  # still holds the other portal
    db.delete_nodes(T)
    t = tree(db.root)
    assert f"nodes/{T}" not in t and "nodes" in t and "static" in t  # iscsiadm keeps the top dirs


def test_delete_by_glob(db: Database) -> None:
    for i in range(5):
        db.new_node(f"iqn.2026-11.test:a{i}", "10.0.0.1:3260,1")
    db.new_node("iqn.2026-11.test:b0", "10.0.0.1:3260,1")
    result = db.delete_nodes("iqn.2026-11.test:a*")
    assert len(result.nodes) == 5
    assert [r.target for r in db.nodes()] == ["iqn.2026-11.test:b0"]


def test_deleting_a_discovery_record_deletes_its_linked_nodes(db: Database) -> None:
    disc = db.new_discovery("10.0.0.9")
    ref = DiscoveryRef(RecordKind.SENDTARGETS, "10.0.0.9", 3260)
    assert disc.ref == ref
    db.new_node(T, "10.0.0.1:3260,1", discovery=ref)
    db.new_node("iqn.2026-11.test:static", "10.0.0.1:3260,1")
    assert (db.root / f"send_targets/10.0.0.9,3260/{T},10.0.0.1,3260,1,default").is_symlink()
    assert db.discovery("10.0.0.9").links == [NodeRef(T, "10.0.0.1", 3260, 1)]
    result = db.delete_discovery("10.0.0.9")
    assert result.nodes == [NodeRef(T, "10.0.0.1", 3260, 1)]
    assert [n.target for n in db.nodes()] == ["iqn.2026-11.test:static"]
    assert not (db.root / "send_targets/10.0.0.9,3260").exists()


def test_a_dangling_discovery_link_stays_like_iscsiadm_unless_pruned(db: Database) -> None:
    ref = db.new_discovery("10.0.0.9").ref
    db.new_node(T, "10.0.0.1:3260,1", discovery=ref)
    os.unlink(db.root / f"nodes/{T}/10.0.0.1,3260,1/default")  # a half-deleted node
    inv = db.inventory()
    assert [link.relpath for link in inv.dangling] == [f"send_targets/10.0.0.9,3260/{T},10.0.0.1,3260,1,default"]
    result = db.delete_discovery(ref)
    assert result.warnings and (db.root / "send_targets/10.0.0.9,3260").is_dir()
    db.delete_discovery(ref, prune_dangling=True)
    assert not (db.root / "send_targets/10.0.0.9,3260").exists()


def test_deleting_an_iface_deletes_the_nodes_bound_to_it(db: Database) -> None:
    db.new_iface("res1", settings={"iface.net_ifacename": "lo"})
    db.new_node(T, "10.0.0.1:3260,1", iface="res1")
    db.new_node(T, "10.0.0.1:3260,1")
    db.delete_iface("res1")
    assert [n.iface for n in db.nodes()] == ["default"]
    assert not (db.root / "ifaces/res1").exists()
    with pytest.raises(Exception, match="special interface"):
        db.delete_iface("default")


def test_an_old_style_record_bound_to_an_iface_goes_with_it(db: Database) -> None:
    """iscsiadm matches ifaces by the name *inside* the record: old-style records count too."""
    db.new_iface("res1")
    db.new_node(T, "10.0.0.1", iface="res1")
    db.new_node(T, "10.0.0.2")
    assert db.bound_nodes("res1") == [NodeRef(T, "10.0.0.1", 3260, None)]
    db.update_iface("res1", {"iface.net_ifacename": "lo"})
    assert db.node(T, "10.0.0.1").value("iface.net_ifacename") == "lo"
    db.delete_iface("res1")
    assert [n.address for n in db.nodes()] == ["10.0.0.2"]


def test_iface_update_reaches_its_nodes_and_refuses_binding_switches(db: Database) -> None:
    db.new_iface("res1", settings={"iface.net_ifacename": "lo"})
    db.new_node(T, "10.0.0.1:3260,1", iface="res1")
    db.update_iface("res1", {"iface.initiatorname": "iqn.2026-11.test:init"})
    assert db.iface("res1").initiator_name == "iqn.2026-11.test:init"
    assert db.node(T).initiator_name == "iqn.2026-11.test:init"
    with pytest.raises(InvalidSettingError, match="bound by net_ifacename"):
        db.update_iface("res1", {"iface.hwaddress": "02:00:00:00:00:01"})
    with pytest.raises(InvalidSettingError, match="renamed"):
        db.update_iface("res1", {"iface.iscsi_ifacename": "x"})


# ---- bad input, locking, dry run, snapshots ---------------------------------------------


def test_a_bad_record_is_reported_and_the_rest_still_lists(db: Database) -> None:
    db.new_node("iqn.2026-11.test:a", "10.0.0.1:3260,1")
    db.new_node("iqn.2026-11.test:b", "10.0.0.1:3260,1")
    db.new_node("iqn.2026-11.test:c", "10.0.0.1:3260,1")
    bad = db.root / "nodes/iqn.2026-11.test:b/10.0.0.1,3260,1/default"
    bad.write_text(bad.read_text().replace("node.startup = manual", "node.startup = Automatic"))
    (db.root / "nodes/iqn.2026-11.test:junk").mkdir()
    (db.root / "nodes/iqn.2026-11.test:junk/not-a-portal").write_text("x")
    shown = list(db.show_nodes())
    assert [n.target for n in shown] == ["iqn.2026-11.test:a", "iqn.2026-11.test:b", "iqn.2026-11.test:c"]
    problems = shown[1].problems
    assert problems[0].path == str(bad) and problems[0].line == 4 and problems[0].severity == "error"
    assert [p.relpath for p in db.node_scan().problems] == ["nodes/iqn.2026-11.test:junk/not-a-portal"]


def test_contents_that_disagree_with_the_path_are_reported(db: Database) -> None:
    (db.root / f"nodes/{T}/10.0.0.1,3260,1").mkdir(parents=True)
    (db.root / f"nodes/{T}/10.0.0.1,3260,1/default").write_text(T1_RECORD)
    node = db.node(T)
    assert any("disagrees with the record's path" in p.message for p in node.problems)


def test_a_record_whose_contents_name_another_record_is_not_rewritten(db: Database) -> None:
    """iscsiadm writes an update where the *contents* say (here: an old-style file, tpgt -1),
    leaving a second record behind; iscsikit refuses instead."""
    node = db.new_node(T, "10.0.0.1:3260,1")
    path = db.root / node.ref.relpath
    path.write_text(path.read_text().replace("node.tpgt = 1", "node.tpgt = -1"))
    before = tree(db.root)
    with pytest.raises(DatabaseError, match=r"identify another record \(nodes/iqn.2026-11.test:disk1/10.0.0.1,3260\)"):
        db.update(node.ref, {"node.startup": "automatic"})
    assert tree(db.root) == before


def test_lock_timeout_writes_nothing(db: Database, tmp_path: Path) -> None:
    db.lock.timeout = 0.1
    (tmp_path / "lock").mkdir()
    (tmp_path / "lock/lock").touch()
    os.link(tmp_path / "lock/lock", tmp_path / "lock/lock.write")
    with pytest.raises(LockTimeoutError):
        db.new_node(T, "10.0.0.1:3260,1")
    assert tree(db.root) == {}


def test_dry_run_reports_and_writes_nothing(db: Database) -> None:
    db.new_node(T, "10.0.0.1:3260,1")
    before = tree(db.root)
    dry = Database(db.root, lock_dir=db.lock.lock_dir, link_root="/etc/iscsi", defaults="compiled", dry_run=True)
    result = dry.delete_nodes(T)
    assert f"nodes/{T}/10.0.0.1,3260,1/default" in result.removed
    assert f"nodes/{T}/" in result.removed  # it predicts the empty directories going too
    node = dry.new_node("iqn.2026-11.test:new", "10.0.0.2:3260,1")
    assert node.target == "iqn.2026-11.test:new"
    assert tree(db.root) == before


def test_snapshot_then_restore_brings_back_exact_files_and_links(db: Database) -> None:
    ref = db.new_discovery("10.0.0.9").ref
    db.new_node(T, "10.0.0.1:3260,1", discovery=ref)
    db.new_node(T, "10.0.0.2:3260,1", discovery=ref)
    db.new_iface("res1")
    db.new_node("iqn.2026-11.test:x", "10.0.0.3:3260,1", iface="res1")
    before = tree(db.root)
    snap = db.snapshot(ref, IfaceRef("res1"))
    assert f"send_targets/10.0.0.9,3260/{T},10.0.0.1,3260,1,default" in snap.paths()
    assert "static/iqn.2026-11.test:x,10.0.0.3,3260,1,res1" in snap.paths()
    db.delete_discovery(ref)
    db.delete_iface("res1")
    assert tree(db.root) != before
    db.restore(snap)
    assert tree(db.root) == before


def test_records_found_by_the_fast_listing_are_in_iscsiadm_order(db: Database) -> None:
    for target, portal in [
        ("iqn.2026-11.test:b", "10.0.0.1:3260,1"),
        ("iqn.2026-11.test:a", "[2001:db8::11]:3260,2"),
        ("iqn.2026-11.test:a", "10.0.0.10"),
        ("iqn.2026-11.test:a", "10.0.0.1:3260,1"),
    ]:
        db.new_node(target, portal)
    assert [(r.target, r.portal_entry) for r in db.nodes()] == [
        ("iqn.2026-11.test:a", "10.0.0.1,3260,1"),
        ("iqn.2026-11.test:a", "10.0.0.10,3260"),
        ("iqn.2026-11.test:a", "2001:db8::11,3260,2"),
        ("iqn.2026-11.test:b", "10.0.0.1,3260,1"),
    ]
    assert db.nodes()[1].to_json() == {
        "target": "iqn.2026-11.test:a",
        "address": "10.0.0.10",
        "port": 3260,
        "tpgt": None,
        "iface": "default",
    }


def test_link_root_is_taken_from_existing_links(tmp_path: Path) -> None:
    root = tmp_path / "db"
    (root / "static").mkdir(parents=True)
    os.symlink("/var/lib/iscsi/nodes/iqn.2026-11.test:x/1.2.3.4,3260,1", root / "static/x,1.2.3.4,3260,1,default")
    db = Database(root, lock_dir=tmp_path / "lock", defaults="compiled")
    assert db.link_root == Path("/var/lib/iscsi")
    assert Database(tmp_path / "empty", lock_dir=tmp_path / "lock").link_root == tmp_path / "empty"


def test_the_fast_json_of_a_node_is_the_json_of_its_dict(db: Database) -> None:
    db.new_node(T, "[2001:db8::1]:3260,1", settings={"node.session.auth.password": 'p"w\\é'})
    db.new_node(T, "10.0.0.2")
    bad = db.root / f"nodes/{T}/10.0.0.2,3260"
    bad.write_text(bad.read_text() + "node.session.futurekey = 1\n")
    for node in db.show_nodes():
        for show in (False, True):
            assert json.loads(node.to_json_text(show)) == node.to_json(show)
            assert node.to_json_text(show) == json.dumps(node.to_json(show))
