"""iscsiadm output parsers, on the real iscsiadm 2.1.8 captures and on generated text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iscsikit.errors import OutputParseError
from iscsikit.names import Portal
from iscsikit.session.parse import (
    parse_discovery,
    parse_portal_outcomes,
    parse_record,
    parse_session_flat,
    parse_session_tree,
    parse_sessions,
)

T1 = "iqn.2026-11.org.iscsikit.research:t1"
T2 = "iqn.2026-11.org.iscsikit.research:t2"
T3 = "iqn.2026-11.org.iscsikit.research:t3"


def test_flat_keeps_text_order_ipv6_and_flash(capture):
    c = capture("session-P0")
    sessions = parse_session_flat(c.stdout)
    assert [s.sid for s in sessions] == [1, 10, 11, 2]  # iscsiadm's text sort, kept
    ipv6 = sessions[3]
    assert ipv6.portal == Portal("2001:db8::11", 3260, 2)
    assert ipv6.target == T1 and ipv6.transport == "tcp" and ipv6.flash is False
    assert parse_session_flat(capture("session-P0-explicit").stdout) == sessions


def test_flat_older_format_without_flash_suffix_and_unknown_tpgt():
    text = "tcp: [3] 10.0.0.5:3260,4294967295 iqn.2001-05.com.example:disk\n"
    (s,) = parse_session_flat(text)
    assert s.flash is None and s.portal == Portal("10.0.0.5", 3260, None)


def test_flat_hostname_portal():
    (s,) = parse_session_flat("tcp: [1] truenas.example:3260,1 iqn.2005-10.org.freenas.ctl:csi-pvc (non-flash)")
    assert s.portal.address == "truenas.example"


@pytest.mark.parametrize("name", ["session-P1", "session-P2", "session-P3", "session-P3-S"])
def test_tree_levels_agree_with_flat(capture, name):
    flat = parse_session_flat(capture("session-P0").stdout)
    tree = parse_session_tree(capture(name).stdout)
    assert [(s.sid, s.target, s.portal) for s in tree] == [(s.sid, s.target, s.portal) for s in flat]


def test_tree_redirect_keeps_current_and_persistent_portal(capture):
    by_sid = {s.sid: s for s in parse_session_tree(capture("session-P1").stdout)}
    redirected = by_sid[10]
    assert redirected.portal == Portal("192.0.2.13", 3260, 1)
    assert redirected.current_portal == Portal("192.0.2.113", 3261, 1)
    assert redirected.session_state == "FAILED"
    assert redirected.iface is not None and redirected.iface.name == "iscsikit-res1"
    assert redirected.iface.netdev == "lo" and redirected.iface.hw_address is None


def test_tree_p3_luns_in_text_order_and_lun_without_disk(capture):
    by_sid = {s.sid: s for s in parse_session_tree(capture("session-P3").stdout)}
    t2 = by_sid[11]
    assert t2.host == 12 and t2.host_state == "running"
    assert [(u.lun, u.disk) for u in t2.luns] == [(0, None), (1, "sdg"), (10, "sdh"), (2, "sdi")]
    assert by_sid[10].luns[0].state == "blocked"
    assert by_sid[1].timeouts == {"recovery": 120, "target_reset": 30, "lun_reset": 30, "abort": 15}
    assert by_sid[1].chap["username"] == "kituser" and by_sid[1].chap["username_in"] is None
    assert by_sid[1].negotiated["MaxRecvDataSegmentLength"] == "262144"
    assert by_sid[2].iface is not None and by_sid[2].iface.ip_address == "2001:db8::100"


def test_tree_without_iscsid_reports_unknown_states(capture):
    sessions = parse_session_tree(capture("session-P1-no-iscsid").stdout)
    assert {s.connection_state for s in sessions} == {"Unknown"}
    assert {s.internal_state for s in sessions} == {"Unknown"}


def test_tree_survives_tabs_turned_into_spaces(capture):
    original = parse_session_tree(capture("session-P3").stdout)
    pasted = capture("session-P3").stdout.replace("\t", "    ")
    assert parse_session_tree(pasted) == original


def test_tree_shared_portal_blank_line_inherits_previous_portal():
    text = (
        f"Target: {T1} (non-flash)\n\tCurrent Portal: 10.0.0.1:3260,1\n\tPersistent Portal: 10.0.0.1:3260,1\n"
        "\t\tIface Name: default\n\t\tSID: 4\n"
        "\n"
        "\t\tIface Name: iface2\n\t\tSID: 5\n"
    )
    s4, s5 = parse_session_tree(text)
    assert s5.target == T1 and s5.portal == s4.portal and s5.iface is not None and s5.iface.name == "iface2"


def test_single_session_by_sid_and_sysfs_dir(capture):
    (s,) = parse_session_tree(capture("session-r1-P3").stdout)
    assert s.sid == 1 and [u.disk for u in s.luns] == ["sdb", "sdc"]
    (s,) = parse_session_tree(capture("session-sysfsdir").stdout)
    assert s.sid == 10


def test_parse_sessions_detects_the_form(capture):
    assert [s.sid for s in parse_sessions(capture("session-P0").stdout)] == [1, 10, 11, 2]
    assert parse_sessions(capture("session-P3").stdout)[2].host == 12
    assert parse_sessions("") == []


def test_tree_errors_name_the_line():
    with pytest.raises(OutputParseError) as err:
        parse_session_tree(f"Target: {T1}\n\tPersistent Portal: 10.0.0.1:3260,1\n\t\tIface Name: x\n\t\tgarbage\n")
    assert "line 4" in str(err.value) and "garbage" in str(err.value)
    with pytest.raises(OutputParseError, match="SID"):
        parse_session_tree(f"Target: {T1}\n\tPersistent Portal: 10.0.0.1:3260,1\n\t\tIface Name: x\n")
    with pytest.raises(OutputParseError, match="line 1"):
        parse_session_flat("not a session line")


def test_discovery_flat_and_tree(capture):
    (t,) = parse_discovery(capture("disc-st").stdout)
    assert t.target == "iqn.2026-11.test:tgt1" and t.portal == Portal("127.0.0.1", 3260, 1)
    (t,) = parse_discovery(capture("disc-st-nonpersistent-P1").stdout)
    assert t.iface == "iscsikit-res1"
    assert t.to_json() == {"target": "iqn.2026-11.test:tgt1", "address": "127.0.0.1", "port": 3260, "tpgt": 1}


def test_discovery_db_listing_with_sections(capture):
    found = parse_discovery(capture("disc-list-P1").stdout)
    t3 = [f for f in found if f.target == T3]
    assert [f.iface for f in t3] == ["default", "iscsikit-res1"]
    old = [f for f in found if f.target.endswith(":oldstyle")]
    assert old[0].portal.tpgt is None
    assert any(f.portal.address == "2001:db8::11" for f in found)


def test_discovery_ipv6_flat():
    (t,) = parse_discovery("[2001:db8::21]:3260,1 iqn.2026-11.test:v6\n")
    assert t.portal == Portal("2001:db8::21", 3260, 1)


def test_login_outcomes(capture):
    (ok,) = parse_portal_outcomes(capture("login-ok").stdout, capture("login-ok").stderr)
    assert ok.ok and ok.action == "login" and ok.iface == "default" and ok.port == 3260
    (fail,) = parse_portal_outcomes(capture("login-authfail").stdout, capture("login-authfail").stderr)
    assert not fail.ok and fail.address == "192.0.2.14"
    (exists,) = parse_portal_outcomes(capture("login-exists").stdout, capture("login-exists").stderr)
    assert exists.already and exists.ok


def test_logout_outcomes_mix_persistent_address_and_current_port(capture):
    outcomes = parse_portal_outcomes(capture("logoutall").stdout)
    by_sid = {o.sid: o for o in outcomes}
    assert set(by_sid) == {1, 2, 10, 11}
    assert (by_sid[10].address, by_sid[10].port) == ("192.0.2.13", 3261)
    assert by_sid[2].address == "2001:db8::11"


def test_rhel5_colon_form():
    (o,) = parse_portal_outcomes(
        "Login to [iface: default, target: iqn.2001-05.com.ex:a, portal: 10.0.0.1,3260]: successful"
    )
    assert o.ok and o.target == "iqn.2001-05.com.ex:a"


def test_parse_record():
    rec = parse_record(
        "# BEGIN RECORD 2.1.8\niface.iscsi_ifacename = default\niface.hwaddress = <empty>\n# END RECORD\n"
    )
    assert rec == {"iface.iscsi_ifacename": "default", "iface.hwaddress": None}
    with pytest.raises(OutputParseError):
        parse_record("no equals sign here")


# ---- property tests ------------------------------------------------------------------

_label = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
_iqn = st.builds(lambda d, u: f"iqn.2026-11.org.{d}:{u}", _label, _label)
_ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
_ipv6 = st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8).map(lambda p: ":".join(f"{x:x}" for x in p))
_portal = st.builds(Portal, st.one_of(_ipv4, _ipv6), st.integers(1, 65535), st.one_of(st.none(), st.integers(0, 65535)))


@given(st.lists(st.tuples(st.integers(1, 10**6), _iqn, _portal), max_size=20))
def test_flat_round_trip(rows):
    def show(p: Portal) -> str:
        return f"{p.host_port},{4294967295 if p.tpgt is None else p.tpgt}"

    text = "".join(f"tcp: [{sid}] {show(p)} {t} (non-flash)\n" for sid, t, p in rows)
    parsed = parse_session_flat(text)
    assert [(s.sid, s.target, s.portal.address, s.portal.port, s.portal.tpgt) for s in parsed] == [
        (sid, t, p.address, p.port, p.tpgt) for sid, t, p in rows
    ]


@given(st.lists(st.tuples(_iqn, _portal), max_size=20))
def test_discovery_round_trip(rows):
    text = "".join(f"{p.host_port},{-1 if p.tpgt is None else p.tpgt} {t}\n" for t, p in rows)
    assert [(d.target, d.portal) for d in parse_discovery(text)] == list(rows)


@given(st.text(max_size=300))
def test_parsers_raise_only_parse_errors(text):
    for parser in (parse_sessions, parse_discovery, parse_record):
        try:
            parser(text)
        except OutputParseError:
            pass
    parse_portal_outcomes(text, text)
