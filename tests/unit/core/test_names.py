"""names.py: every portal form users and open-iscsi write, and names that must be refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iscsikit.errors import InvalidNameError
from iscsikit.names import (
    Portal,
    check_path_component,
    validate_iface_name,
    validate_iscsi_name,
)


@pytest.mark.parametrize(
    ("text", "address", "port", "tpgt"),
    [
        ("10.0.0.1", "10.0.0.1", 3260, None),
        ("10.0.0.1:3260", "10.0.0.1", 3260, None),
        ("10.0.0.1:3261,1", "10.0.0.1", 3261, 1),
        ("10.0.0.1,5", "10.0.0.1", 3260, 5),
        ("[fe80::1]:3260,1", "fe80::1", 3260, 1),
        ("[fe80::1]", "fe80::1", 3260, None),
        ("[2001:db8::11]:3260", "2001:db8::11", 3260, None),
        ("2001:db8::11", "2001:db8::11", 3260, None),
        ("host.example:3260", "host.example", 3260, None),
        ("host.example", "host.example", 3260, None),
        ("fe80::1,3260,1", "fe80::1", 3260, 1),
        ("10.0.0.1,3260,7", "10.0.0.1", 3260, 7),
        ("192.0.2.10:3260,4294967295", "192.0.2.10", 3260, None),
        ("192.0.2.10:3260,-1", "192.0.2.10", 3260, None),
        (" 10.0.0.1:3260 ", "10.0.0.1", 3260, None),
    ],
)
def test_portal_forms(text: str, address: str, port: int, tpgt: int | None) -> None:
    assert Portal.parse(text) == Portal(address, port, tpgt)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("10.0.0.1:99999", "outside 1-65535"),
        ("10.0.0.1:abc", "not a number"),
        ("10.0.0.1:3260,70000", "outside 0-65535"),
        ("[fe80::1", "closing"),
        ("[fe80::1]x", "unexpected"),
        ("[zz::1]:3260", "not a valid IPv6"),
        ("300.1.1.1", "not a valid IPv4"),
        ("../etc:3260", "'/'"),
        ("a b:3260", "not an IP address or a host name"),
    ],
)
def test_portal_errors_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(InvalidNameError) as exc:
        Portal.parse(text)
    assert reason in str(exc.value)
    assert repr(text) in str(exc.value)


def test_portal_formats() -> None:
    v6 = Portal("fe80::1", 3260, 1)
    assert str(v6) == "[fe80::1]:3260,1"
    assert v6.host_port == "[fe80::1]:3260"
    assert v6.db_name == "fe80::1,3260,1"
    old = Portal("192.0.2.10")
    assert old.db_name == "192.0.2.10,3260"  # old-style record file
    assert old.db_tpgt == -1 and old.printed_tpgt == 4294967295
    assert str(old) == "192.0.2.10:3260"


def test_portal_matching_ignores_unknown_tpgt_and_ip_spelling() -> None:
    assert Portal.parse("[2001:DB8::11]:3260").matches(Portal.parse("[2001:db8:0::11]:3260,2"))
    assert not Portal.parse("10.0.0.1:3260,1").matches(Portal.parse("10.0.0.1:3260,2"))
    assert not Portal.parse("10.0.0.1:3260").matches(Portal.parse("10.0.0.1:3261"))


octet = st.integers(0, 255)
ipv4 = st.tuples(octet, octet, octet, octet).map(lambda t: ".".join(map(str, t)))
ipv6 = st.ip_addresses(v=6).map(str)
tpgts = st.none() | st.integers(0, 65535)
ports = st.integers(1, 65535)


@given(address=ipv4 | ipv6, port=ports, tpgt=tpgts)
def test_portal_round_trips(address: str, port: int, tpgt: int | None) -> None:
    portal = Portal(address, port, tpgt)
    assert Portal.parse(str(portal)) == portal
    if tpgt is not None:
        assert Portal.parse(portal.db_name) == portal
    assert Portal.from_db_name(portal.db_name) == portal


@given(st.text(max_size=40))
def test_portal_parse_never_crashes(text: str) -> None:
    try:
        Portal.parse(text)
    except InvalidNameError as exc:
        assert "portal" in str(exc)


@pytest.mark.parametrize(
    "name",
    [
        "iqn.2026-11.org.example:disk1",
        "iqn.2001-04.com.example",
        "iqn.1992-08.com.netapp:sn.84183797",
        "iqn.2010-10.org.openstack:volume-00000001",
        "eui.02004567A425678D",
        "naa.52004567BA64678D",
        "naa.62004567BA64678D0123456789ABCDEF",
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_iscsi_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("iqn.2026-13.org.example", "month 13"),
        ("iqn.26-11.org.example", "iqn.YYYY-MM"),
        ("iqn.2026-11.org..example", "not a valid label"),
        ("iqn.2026-11.org.example:", "nothing follows"),
        ("iqn.2026-11.org.ex_ample", "not allowed"),
        ("eui.1234", "16 hex digits"),
        ("naa.XYZ4567BA64678D", "hex digits"),
        ("foo.bar", "must start with"),
        ("iqn.2026-11.org.example/x", "'/'"),
        ("..", "directory"),
        ("iqn.2026-11.a:\x01", "control character"),
        ("iqn.2026-11.a:\x00", "NUL"),
        ("iqn.2026-11.org.e:" + "x" * 220, "223 bytes"),
    ],
)
def test_invalid_names_say_why(name: str, reason: str) -> None:
    with pytest.raises(InvalidNameError) as exc:
        validate_iscsi_name(name, "target name")
    assert reason in str(exc.value)
    assert "target name" in str(exc.value)


def test_lenient_names_only_need_path_safety() -> None:
    assert validate_iscsi_name("weird_Name", strict=False) == "weird_Name"
    with pytest.raises(InvalidNameError):
        validate_iscsi_name("a/b", strict=False)


@given(st.text(min_size=1, max_size=30))
def test_path_components_never_escape(value: str) -> None:
    try:
        check_path_component(value, "thing")
    except InvalidNameError:
        return
    assert "/" not in value and value not in (".", "..") and "\0" not in value


def test_iface_names() -> None:
    assert validate_iface_name("iscsikit-res1") == "iscsikit-res1"
    for bad in ("", "a" * 65, "x,y", "../x"):
        with pytest.raises(InvalidNameError):
            validate_iface_name(bad)
