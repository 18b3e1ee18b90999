"""Discovery records with linked nodes, made by a real SendTargets discovery (iscsiadm against
a private tgtd on loopback): iscsikit reads them as iscsiadm shows them, deletes them with
the same side effects, and writes the same tree for the same records."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from iscsikit.db.database import Database
from iscsikit.db.layout import DiscoveryRef, NodeRef
from iscsikit.db.schema import RecordKind
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tgtd import Tgtd
from tests.support.tiers import require, require_root
from tests.unit.db.iscsiadm_harness import db_tree, iscsiadm, parse_show, private_sandbox, reset

TARGETS = ["iqn.2026-11.test:disc-a", "iqn.2026-11.test:disc-b"]
IFACES = ["res1", "res2"]
IFACE_SETTINGS = {
    "res1": {"iface.net_ifacename": "lo", "iface.initiatorname": "iqn.2026-11.test:initiator1"},
    "res2": {"iface.initiatorname": "iqn.2026-11.test:initiator2"},
}


def _iface_args(name: str) -> list[str]:
    out: list[str] = []
    for key, value in IFACE_SETTINGS[name].items():
        out += ["-n", key, "-v", value]
    return out


@dataclass
class Discovered:
    tgtd: Tgtd
    a: IscsiadmSandbox
    b: IscsiadmSandbox

    @property
    def portal(self) -> str:
        return f"127.0.0.1:{self.tgtd.port}"

    def db(self, sandbox: IscsiadmSandbox) -> Database:
        return Database(sandbox.db, link_root="/etc/iscsi", lock_dir=sandbox.lock_dir, defaults="compiled")

    def discover(self, sandbox: IscsiadmSandbox) -> None:
        reset(sandbox)
        for iface in IFACES:
            made = iscsiadm(sandbox, None, "-m", "iface", "-I", iface, "-o", "new", *_iface_args(iface))
            assert made.returncode == 0, made.stderr
        # Every iface names its initiator: without iscsid, iscsiadm cannot learn the default one.
        found = iscsiadm(sandbox, None, "-m", "discovery", "-t", "st", "-p", self.portal, "-I", "res1", "-I", "res2")
        assert found.returncode == 0, found.stderr
        assert sorted(line.split()[1] for line in found.stdout.splitlines()) == sorted(TARGETS * 2)


@pytest.fixture(scope="module")
def discovered(request: pytest.FixtureRequest) -> Iterator[Discovered]:
    require_root(request)
    require(request, "iscsiadm", "tgtd", "tgtadm", "nsenter")
    with Tgtd() as tgtd, private_sandbox(sysfs="transport") as a, private_sandbox(sysfs="transport") as b:
        for i, iqn in enumerate(TARGETS):
            tgtd.add_target(iqn, luns={1: tgtd.backing_file(f"lun{i}.img", 1 << 20)})
        yield Discovered(tgtd, a, b)


def test_iscsikit_reads_discovered_nodes_and_their_links(discovered: Discovered) -> None:
    discovered.discover(discovered.a)
    db = discovered.db(discovered.a)
    ref = DiscoveryRef(RecordKind.SENDTARGETS, "127.0.0.1", discovered.tgtd.port)
    assert db.discoveries() == [ref]
    record = db.discovery(discovered.portal)
    expected = sorted(
        (NodeRef(t, "127.0.0.1", discovered.tgtd.port, 1, i) for t in TARGETS for i in IFACES), key=NodeRef.sort_key
    )
    assert sorted(record.links, key=NodeRef.sort_key) == expected
    shown = iscsiadm(discovered.a, None, "-m", "discoverydb", "-t", "st", "-p", discovered.portal, "-o", "show")
    assert parse_show(shown.stdout) == [record.settings()]
    nodes = list(db.show_nodes())
    assert [n.ref for n in nodes] == expected
    assert all(n.discovery_type == "send_targets" and n.discovery_port == discovered.tgtd.port for n in nodes)
    out = iscsiadm(discovered.a, None, "-m", "node", "-o", "show", "-S")
    assert parse_show(out.stdout) == [n.settings(show_secrets=True) for n in nodes]
    assert db.inventory().dangling == []


def test_deleting_the_discovery_record_deletes_its_nodes_like_iscsiadm(discovered: Discovered) -> None:
    discovered.discover(discovered.a)
    discovered.discover(discovered.b)
    assert db_tree(discovered.a) == db_tree(discovered.b)
    # a static node that must survive
    for sandbox in (discovered.a, discovered.b):
        discovered.db(sandbox).new_node("iqn.2026-11.test:static", "10.0.0.9:3260,1")
    deleted = iscsiadm(discovered.a, None, "-m", "discoverydb", "-t", "st", "-p", discovered.portal, "-o", "delete")
    assert deleted.returncode == 0, deleted.stderr
    result = discovered.db(discovered.b).delete_discovery(discovered.portal)
    assert len(result.nodes) == 4
    assert db_tree(discovered.a) == db_tree(discovered.b)
    assert [n.target for n in discovered.db(discovered.b).nodes()] == ["iqn.2026-11.test:static"]


def test_records_iscsikit_links_to_a_discovery_match_what_discovery_wrote(discovered: Discovered) -> None:
    discovered.discover(discovered.a)
    reset(discovered.b)
    db = discovered.db(discovered.b)
    for iface in IFACES:
        db.new_iface(iface, settings=IFACE_SETTINGS[iface])
    ref = db.new_discovery(discovered.portal).ref
    for target in TARGETS:
        for iface in IFACES:
            db.new_node(target, f"{discovered.portal},1", iface=iface, discovery=ref)
    assert db_tree(discovered.b) == db_tree(discovered.a)
