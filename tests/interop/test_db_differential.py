"""Differential tests against the real iscsiadm 2.1.8 on private DBs.

For generated scenarios (IQN/EUI/NAA names, IPv4/IPv6/hostname portals, with and without
tpgt, several ifaces, CHAP settings, discovery records) the same operations run through
iscsiadm in one sandbox and through iscsikit in another, and:

(a) what iscsiadm wrote, iscsikit reads with exactly the values ``iscsiadm -o show`` prints
    (nodes with and without secrets, ifaces, discovery records) and lists in its order;
(b) what iscsikit wrote is byte-identical to iscsiadm's tree (files, modes, links), and
    ``iscsiadm -o show`` reads it back as iscsikit shows it.

Both with iscsid "down" (compiled defaults) and "up" (iscsid.conf applied; a stand-in
answers iscsiadm's config-file request, see tests/unit/db/iscsiadm_harness.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from iscsikit.db.database import Database
from iscsikit.db.layout import NodeRef
from iscsikit.db.schema import RecordKind
from tests.support.profiles import examples
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tiers import require, require_root
from tests.unit.db.iscsiadm_harness import IscsidStandIn, db_tree, iscsiadm, parse_show, private_sandbox, reset

# A config with many values that differ from the compiled defaults.
CUSTOM_CONF = """\
iscsid.startup = /bin/true
node.startup = automatic
node.leading_login = Yes
node.session.timeo.replacement_timeout = 77
node.conn[0].timeo.login_timeout = 13
node.conn[0].timeo.noop_out_interval = 9
node.session.initial_login_retry_max = 6
node.session.cmds_max = 64
node.session.auth.authmethod = CHAP
node.session.auth.username = confuser
node.session.auth.password = conf secret
node.session.auth.chap_algs = SHA256,MD5
node.session.iscsi.ImmediateData = No
node.conn[0].iscsi.HeaderDigest = CRC32C,None
discovery.sendtargets.auth.authmethod = CHAP
discovery.sendtargets.auth.username = discuser
discovery.sendtargets.auth.password = disc secret
discovery.sendtargets.timeo.login_timeout = 21
discovery.startup = automatic
discovery.isns.discoveryd_poll_inval = 11
this.key.is.unknown = 1
"""


@dataclass
class Env:
    ref: IscsiadmSandbox  # iscsiadm writes here
    mine: IscsiadmSandbox  # iscsikit writes here
    standin: IscsidStandIn

    def db(self, sandbox: IscsiadmSandbox, mode: str) -> Database:
        return Database(
            sandbox.db,
            link_root="/etc/iscsi",
            lock_dir=sandbox.lock_dir,
            lock_timeout=10,
            defaults="conf" if mode == "conf" else "compiled",
            iscsid_conf=sandbox.db / "iscsid.conf",
        )

    def prepare(self, mode: str) -> None:
        for sandbox in (self.ref, self.mine):
            reset(sandbox)
        self.standin.answer("/etc/iscsi/iscsid.conf" if mode == "conf" else None)


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    require_root(request)
    require(request, "iscsiadm", "unshare", "nsenter")
    with private_sandbox() as ref, private_sandbox() as mine:
        for sandbox in (ref, mine):
            (sandbox.db / "iscsid.conf").write_text(CUSTOM_CONF)
        standin = IscsidStandIn(ref.base)
        try:
            yield Env(ref, mine, standin)
        finally:
            standin.close()


# ---- generated names, portals and settings ------------------------------------------------

_label = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
_iqn = st.builds(
    lambda y, m, labels, suffix: f"iqn.{y}-{m:02d}.{'.'.join(labels)}" + (f":{suffix}" if suffix else ""),
    st.integers(1990, 2030),
    st.integers(1, 12),
    st.lists(_label, min_size=1, max_size=3),
    st.one_of(st.none(), st.from_regex(r"[a-z0-9][a-z0-9.:-]{0,20}[a-z0-9]", fullmatch=True)),
)
_hex = "0123456789ABCDEF"
_eui = st.text(_hex, min_size=16, max_size=16).map(lambda h: f"eui.{h}")
_naa = st.one_of(st.text(_hex, min_size=16, max_size=16), st.text(_hex, min_size=32, max_size=32)).map(
    lambda h: f"naa.{h}"
)
TARGETS = st.one_of(_iqn, _iqn, _eui, _naa)

_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(lambda a: ipaddress.IPv6Address(a).compressed).filter(lambda a: "." not in a)
_hostname = st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True), min_size=2, max_size=3).map(
    ".".join
)
ADDRESSES = st.one_of(_ipv4, _ipv4, _ipv6, _hostname)
PORTS = st.one_of(st.just(3260), st.integers(1, 65535))
TPGTS = st.one_of(st.none(), st.integers(0, 65535))

_secret_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_secret = st.tuples(
    _secret_chars, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24), _secret_chars
).map("".join)
NODE_SETTINGS = st.dictionaries(
    st.sampled_from(
        [
            "node.startup",
            "node.session.auth.authmethod",
            "node.session.auth.username",
            "node.session.auth.password",
            "node.session.auth.username_in",
            "node.session.auth.password_in",
            "node.session.auth.chap_algs",
            "node.conn[0].timeo.login_timeout",
            "node.session.timeo.replacement_timeout",
            "node.conn[0].iscsi.HeaderDigest",
            "node.session.nr_sessions",
        ]
    ),
    st.just(""),
    max_size=5,
).flatmap(lambda d: st.fixed_dictionaries({k: _setting_value(k) for k in d}))


def _setting_value(key: str) -> st.SearchStrategy[str]:
    return {
        "node.startup": st.sampled_from(["manual", "automatic", "onboot"]),
        "node.session.auth.authmethod": st.sampled_from(["None", "CHAP"]),
        "node.session.auth.chap_algs": st.permutations(["MD5", "SHA1", "SHA256", "SHA3-256"]).map(
            lambda p: ",".join(p[:2])
        ),
        "node.conn[0].timeo.login_timeout": st.integers(0, 600).map(str),
        "node.session.timeo.replacement_timeout": st.integers(-1, 86400).map(str),
        "node.conn[0].iscsi.HeaderDigest": st.sampled_from(["None", "CRC32C", "CRC32C,None", "None,CRC32C"]),
        "node.session.nr_sessions": st.integers(1, 8).map(str),
    }.get(key, _secret)


# ---- operations, each expressed for both tools ----------------------------------------------


@dataclass
class Op:
    argv: list[str]
    apply: Callable[[Database], Any]

    def __repr__(self) -> str:
        return "iscsiadm " + " ".join(self.argv)


def _p(address: str, port: int, tpgt: int | None = None) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}" + ("" if tpgt is None else f",{tpgt}")


def _n(settings: dict[str, str]) -> list[str]:
    out: list[str] = []
    for key, value in settings.items():
        out += ["-n", key, "-v", value]
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> list[Op]:
    ops: list[Op] = []
    iface_names = draw(
        st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True), max_size=3, unique=True).map(
            lambda names: [n for n in names if n not in ("default", "iser") and "ipv6" not in n]
        )
    )
    for name in iface_names:
        iface_settings = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "iface.net_ifacename": st.sampled_from(["lo", "eth0", "ens3"]),
                    "iface.initiatorname": _iqn,
                    "iface.ipaddress": _ipv4,
                },
            )
        )
        ops.append(
            Op(
                ["-m", "iface", "-I", name, "-o", "new", *_n(iface_settings)],
                lambda db, name=name, s=iface_settings: db.new_iface(name, settings=s),
            )
        )
    nodes: list[tuple[str, str, int, int | None, str | None]] = []
    for _ in range(draw(st.integers(1, 5))):
        target = draw(TARGETS)
        address, port, tpgt = draw(ADDRESSES), draw(PORTS), draw(TPGTS)
        iface = draw(st.sampled_from([None, "default", *iface_names]))
        key = (target, address, port)
        if any(n[:3] == key for n in nodes):
            continue  # the same portal twice: -o new resets; covered by the overwrite test
        nodes.append((target, address, port, tpgt, iface))
        argv = ["-m", "node", "-o", "new", "-T", target, "-p", _p(address, port, tpgt)]
        ops.append(
            Op(
                argv + (["-I", iface] if iface else []),
                lambda db, t=target, a=address, p=port, g=tpgt, i=iface: db.new_node(
                    t, _p(a, p, g), iface=i, strict_names=True
                ),
            )
        )
    for target, address, port, _tpgt, _iface in draw(st.lists(st.sampled_from(nodes), max_size=3)):
        node_settings = draw(NODE_SETTINGS)
        if not node_settings:
            continue
        ops.append(
            Op(
                ["-m", "node", "-T", target, "-p", _p(address, port), "-o", "update", *_n(node_settings)],
                lambda db, t=target, a=address, p=port, s=node_settings: db.update_nodes(s, t, _p(a, p)),
            )
        )
    for _ in range(draw(st.integers(0, 2))):
        address, kind = draw(ADDRESSES), draw(st.sampled_from(["st", "isns"]))
        rkind = RecordKind.SENDTARGETS if kind == "st" else RecordKind.ISNS
        port = 3260 if kind == "st" else 3205
        ops.append(
            Op(
                ["-m", "discoverydb", "-t", kind, "-p", _p(address, port), "-o", "new"],
                lambda db, a=address, k=rkind, p=port: db.new_discovery(_p(a, p), k, overwrite=True),
            )
        )
        if kind == "st" and draw(st.booleans()):
            disc = {
                "discovery.sendtargets.auth.authmethod": "CHAP",
                "discovery.sendtargets.auth.username": draw(_secret),
                "discovery.sendtargets.auth.password": draw(_secret),
            }
            ops.append(
                Op(
                    ["-m", "discoverydb", "-t", "st", "-p", _p(address, port), "-o", "update", *_n(disc)],
                    lambda db, a=address, p=port, s=disc: db.update_discovery(_p(a, p), s, RecordKind.SENDTARGETS),
                )
            )
    if nodes and draw(st.booleans()):
        target, address, port, _tpgt, _iface = draw(st.sampled_from(nodes))
        ops.append(
            Op(
                ["-m", "node", "-o", "delete", "-T", target, "-p", _p(address, port)],
                lambda db, t=target, a=address, p=port: db.delete_nodes(t, _p(a, p)),
            )
        )
    if iface_names and draw(st.booleans()):
        name = draw(st.sampled_from(iface_names))
        ops.append(Op(["-m", "iface", "-I", name, "-o", "delete"], lambda db, n=name: db.delete_iface(n)))
    return ops


# ---- the comparisons ----------------------------------------------------------------------


def _flat(settings: dict[str, str]) -> str:
    address = settings["node.conn[0].address"]
    host = address if "." in address else f"[{address}]"
    return f"{host}:{settings['node.conn[0].port']},{int(settings['node.tpgt']) & 0xFFFFFFFF} {settings['node.name']}"


def _compare_reading(env: Env, sandbox: IscsiadmSandbox, db: Database) -> None:
    listing = iscsiadm(sandbox, env.standin, "-m", "node")
    records = list(db.show_nodes())
    if not records:
        assert listing.returncode == 21
    else:
        assert listing.returncode == 0, listing.stderr
        assert listing.stdout.splitlines() == [_flat(r.settings()) for r in records]
        for show in (False, True):
            out = iscsiadm(sandbox, env.standin, "-m", "node", "-o", "show", *(["-S"] if show else []))
            assert out.returncode == 0, out.stderr
            assert parse_show(out.stdout) == [r.settings(show_secrets=show) for r in records]
        assert all(r.ok for r in records)
    ifaces = iscsiadm(sandbox, env.standin, "-m", "iface")
    assert ifaces.returncode == 0, ifaces.stderr
    expected = []
    for ref in db.ifaces():
        s = db.iface(ref.name).settings()
        expected.append(
            f"{ref.name} {s['iface.transport_name']},{s['iface.hwaddress']},{s['iface.ipaddress']},"
            f"{s['iface.net_ifacename']},{s['iface.initiatorname']}"
        )
        if not ref.virtual:
            shown = iscsiadm(sandbox, env.standin, "-m", "iface", "-I", ref.name, "-o", "show")
            assert parse_show(shown.stdout) == [s]
    assert ifaces.stdout.splitlines() == expected
    for disc in db.discoveries():
        kind = "st" if disc.kind is RecordKind.SENDTARGETS else "isns"
        for show in (False, True):
            out = iscsiadm(
                sandbox, env.standin, "-m", "discoverydb", "-t", kind, "-p", _p(disc.address, disc.port), "-o", "show",
                *(["-S"] if show else []),
            )  # fmt: skip
            assert parse_show(out.stdout) == [db.discovery(disc).settings(show_secrets=show)], out.stderr


def _run_scenario(env: Env, ops: list[Op], mode: str) -> None:
    env.prepare(mode)
    theirs = env.db(env.ref, mode)
    mine = env.db(env.mine, mode)
    for op in ops:
        result = iscsiadm(env.ref, env.standin, *op.argv)
        assert result.returncode == 0, f"{op}: {result.stderr}"
        op.apply(mine)
        assert db_tree(env.mine) == db_tree(env.ref), f"trees differ after {op}"
    # (a) iscsikit reads what iscsiadm wrote exactly as iscsiadm shows it
    _compare_reading(env, env.ref, theirs)
    # (b) iscsiadm reads what iscsikit wrote exactly as iscsikit shows it
    _compare_reading(env, env.mine, mine)


@pytest.mark.parametrize("mode", ["compiled", "conf"])
# No shrinking: each step runs real iscsiadm, and a failure prints the whole scenario anyway.
@settings(
    max_examples=examples(25),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(ops=scenarios())
def test_iscsikit_and_iscsiadm_agree(env: Env, mode: str, ops: list[Op]) -> None:
    _run_scenario(env, ops, mode)


def test_new_over_an_existing_record_resets_it_like_iscsiadm(env: Env) -> None:
    env.prepare("compiled")
    target, portal = "iqn.2026-11.test:reset", "10.0.0.1:3260,1"
    for sandbox in (env.ref, env.mine):
        db = env.db(sandbox, "compiled")
        db.new_node(target, portal)
        db.update_nodes({"node.startup": "automatic", "node.session.auth.username": "u"}, target)
    iscsiadm(env.ref, env.standin, "-m", "node", "-o", "new", "-T", target, "-p", portal)
    env.db(env.mine, "compiled").new_node(target, portal, overwrite=True)
    assert db_tree(env.mine) == db_tree(env.ref)
    assert "node.startup = manual" in (env.ref.db / f"nodes/{target}/10.0.0.1,3260,1/default").read_text()


def test_a_tpgt_turns_an_old_style_record_into_a_directory_like_iscsiadm(env: Env) -> None:
    env.prepare("compiled")
    target = "iqn.2026-11.test:convert"
    for sandbox, tool in ((env.ref, "iscsiadm"), (env.mine, "iscsikit")):
        if tool == "iscsiadm":
            iscsiadm(sandbox, env.standin, "-m", "node", "-o", "new", "-T", target, "-p", "10.0.0.1")
            iscsiadm(sandbox, env.standin, "-m", "node", "-o", "new", "-T", target, "-p", "10.0.0.1:3260,4")
        else:
            db = env.db(sandbox, "compiled")
            db.new_node(target, "10.0.0.1")
            db.new_node(target, "10.0.0.1:3260,4", overwrite=True)
    assert db_tree(env.mine) == db_tree(env.ref)
    assert env.db(env.mine, "compiled").nodes() == [NodeRef(target, "10.0.0.1", 3260, 4)]
