"""The login machine rule by rule: every refusal with its status and the fact its message names,
and the fields of the responses an initiator relies on (sequence numbers, stages, TSIH).

The end-to-end login tests (test_login.py, test_acl_login.py) go through the test initiator,
which never sends a malformed login; these drive :class:`LoginMachine` with hand-made Login
Requests, as a buggy or hostile initiator would.
"""

from __future__ import annotations

import dataclasses

import pytest

from iscsikit.target.proto import AuthConfig, SessionTable, TargetLimits
from iscsikit.target.proto.chap import chap_response, decode_binary, encode_binary
from iscsikit.target.proto.errors import RemoteProtocolError
from iscsikit.target.proto.login import LoginMachine
from iscsikit.target.proto.pdu import LoginRequest, LoginResponse
from iscsikit.target.proto.session import InitiatorAcl, TargetDirectory, TargetInfo
from iscsikit.target.proto.text import decode_text, encode_text

from .harness import INITIATOR, PORTAL, TARGET, creds, directory

ISID = b"\x80\0\0\0\0\x01"
LEAD = [("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", TARGET)]
DISCOVERY = [("InitiatorName", INITIATOR), ("SessionType", "Discovery")]
USER, SECRET = "user1", b"secret-12345678"


def machine(table: SessionTable | None = None, **kw: object) -> LoginMachine:
    return LoginMachine(directory(**kw), table or SessionTable(), PORTAL)  # type: ignore[arg-type]


def req(csg: int, nsg: int, transit: bool, keys: list[tuple[str, str]], **kw: object) -> LoginRequest:
    fields: dict[str, object] = {"isid": ISID, "itt": 5, "cmd_sn": 10, "exp_stat_sn": 1000}
    fields.update(kw)
    return LoginRequest(csg=csg, nsg=nsg, transit=transit, data=encode_text(keys), **fields)  # type: ignore[arg-type]


def keys_of(resp: LoginResponse) -> dict[str, str]:
    return dict(decode_text(resp.data))


def refusal(m: LoginMachine, *requests: LoginRequest) -> tuple[int, str]:
    """Feed requests; the last one must fail the login. Returns (status, message)."""
    for r in requests[:-1]:
        m.receive(r)
    with pytest.raises(RemoteProtocolError) as exc:
        m.receive(requests[-1])
    assert exc.value.close and m.result is None
    assert exc.value.login_status is not None
    return exc.value.login_status, str(exc.value)


def chap_answer(resp: LoginResponse, secret: bytes = SECRET) -> list[tuple[str, str]]:
    k = keys_of(resp)
    value = chap_response(int(k["CHAP_A"]), int(k["CHAP_I"]), secret, decode_binary(k["CHAP_C"]))
    return [("CHAP_N", USER), ("CHAP_R", encode_binary(value))]


CHAP = {"auth": AuthConfig(creds(USER, SECRET))}
SEC_T0 = req(0, 1, False, [*LEAD, ("AuthMethod", "None")])


@pytest.mark.parametrize(
    ("setup", "requests", "status", "message"),
    [
        ({}, [req(1, 3, True, LEAD, version_min=1, version_max=2)], 0x0205, "version 1..2 unsupported"),
        ({}, [req(1, 3, True, [("TargetName", TARGET)])], 0x0207, "InitiatorName is missing"),
        ({}, [req(1, 3, True, [("InitiatorName", ""), ("TargetName", TARGET)])], 0x0207, "InitiatorName is missing"),
        ({}, [req(1, 3, True, [*DISCOVERY[:1], ("SessionType", "Bogus")])], 0x0209, "SessionType 'Bogus'"),
        ({}, [req(1, 3, True, LEAD[:2])], 0x0207, "TargetName is missing in a Normal session"),
        ({}, [req(1, 3, True, [*LEAD[:2], ("TargetName", "")])], 0x0207,
         "TargetName is missing in a Normal session"),
        ({}, [req(1, 3, True, [*LEAD[:2], ("TargetName", TARGET + "x")])], 0x0203, f"no target '{TARGET}x'"),
        ({"allow": frozenset({"iqn.x:other"})}, [req(1, 3, True, LEAD)], 0x0202,
         f"initiator '{INITIATOR}' is not in {TARGET}'s ACL"),
        ({}, [req(3, 3, True, LEAD)], 0x0200, "CSG 3 is not a login stage"),
        ({}, [req(2, 3, True, LEAD)], 0x0200, "CSG 2 is not a login stage"),
        ({}, [req(1, 0, True, LEAD)], 0x0200, "illegal stage transition 1 -> 0"),
        ({}, [req(1, 1, True, LEAD)], 0x0200, "illegal stage transition 1 -> 1"),
        ({}, [req(0, 2, True, LEAD)], 0x0200, "illegal stage transition 0 -> 2"),
        ({}, [req(0, 0, True, LEAD)], 0x0200, "illegal stage transition 0 -> 0"),
        ({}, [SEC_T0, req(0, 1, True, [], isid=b"\x80\0\0\0\0\x02")], 0x0200, "ISID, TSIH or CID changed during login"),
        ({}, [SEC_T0, req(0, 1, True, [], tsih=3)], 0x0200, "ISID, TSIH or CID changed during login"),
        ({}, [SEC_T0, req(0, 1, True, [], cid=1)], 0x0200, "ISID, TSIH or CID changed during login"),
        ({}, [SEC_T0, req(1, 3, True, [])], 0x0200, "CSG 1 but the login is in stage 0"),
        ({}, [SEC_T0, req(0, 1, False, [("AuthMethod", "None")])], 0x0200, "AuthMethod offered twice"),
        (CHAP, [req(0, 1, True, [*LEAD, ("AuthMethod", "None")])], 0x0201,
         "target requires AuthMethod=CHAP, initiator offered ['None']"),
        ({}, [req(0, 1, True, [*LEAD, ("AuthMethod", "CHAP")])], 0x0201,
         "target requires AuthMethod=None, initiator offered ['CHAP']"),
        (CHAP, [req(0, 1, False, [*LEAD, ("CHAP_A", "5")])], 0x0200, "CHAP_A without AuthMethod=CHAP, or twice"),
        (CHAP, [req(0, 1, False, [*LEAD, ("AuthMethod", "CHAP")]), req(0, 1, False, [("CHAP_A", "5")]),
                req(0, 1, False, [("CHAP_A", "5")])], 0x0200, "CHAP_A without AuthMethod=CHAP, or twice"),
        (CHAP, [req(0, 1, False, [*LEAD, ("CHAP_N", USER), ("CHAP_R", "0x00")])], 0x0200,
         "CHAP_R without AuthMethod=CHAP"),
        (CHAP, [req(0, 1, False, [*LEAD, ("CHAP_R", "0x00")])], 0x0200, "CHAP_R without AuthMethod=CHAP"),
        (CHAP, [req(0, 1, False, [*LEAD, ("AuthMethod", "CHAP")]), req(0, 1, False, [("CHAP_A", "5")]),
                req(0, 1, True, [("CHAP_N", USER)])], 0x0201, "CHAP_N and CHAP_R are required"),
        (CHAP, [req(0, 1, False, [*LEAD, ("AuthMethod", "CHAP")]), req(0, 1, False, [("CHAP_A", "4")])],
         0x0201, "no supported CHAP algorithm in '4' (we support (7, 8, 6, 5))"),
        (CHAP, [req(0, 1, True, LEAD)], 0x0201, "target requires CHAP; initiator did not negotiate it"),
        (CHAP, [req(1, 3, True, LEAD)], 0x0201, "target requires CHAP; login skipped the security stage"),
        ({"limits": TargetLimits(data_digests=("CRC32C",))}, [req(1, 3, True, LEAD)], 0x0200,
         "the target requires a CRC32C data digest"),
        ({"limits": TargetLimits(header_digests=("CRC32C",))}, [req(1, 3, True, LEAD)], 0x0200,
         "the target requires a CRC32C header digest"),
        ({}, [req(1, 3, True, LEAD, tsih=77)], 0x020A, "no session with TSIH 77"),
    ],
)  # fmt: skip
def test_a_bad_login_fails_with_its_status_and_reason(
    setup: dict[str, object], requests: list[LoginRequest], status: int, message: str
) -> None:
    got_status, got_message = refusal(machine(**setup), *requests)
    assert (hex(got_status), got_message) == (hex(status), f"login failed: {message}")


def test_the_first_response_numbers_from_the_request() -> None:
    m = machine(limits=TargetLimits(queue_depth=32))
    first = m.receive(req(0, 1, False, [*LEAD, ("AuthMethod", "None")], itt=9, cmd_sn=0xFFFFFFF0, exp_stat_sn=500))
    assert (first.isid, first.itt, first.status, first.tsih) == (ISID, 9, 0, 0)
    assert (first.stat_sn, first.exp_cmd_sn, first.max_cmd_sn) == (500, 0xFFFFFFF0, (0xFFFFFFF0 + 31) & 0xFFFFFFFF)
    assert (first.csg, first.transit, first.nsg) == (0, False, 0)  # stays: NSG is 0 without T
    second = m.receive(req(0, 1, True, [], itt=9, cmd_sn=0xFFFFFFF0, exp_stat_sn=501))
    assert (second.stat_sn, second.transit, second.nsg, second.csg) == (501, True, 1, 0)
    third = m.receive(req(1, 3, False, [], itt=9, cmd_sn=0xFFFFFFF0))
    assert (third.stat_sn, third.transit, third.nsg, third.csg) == (502, False, 0, 1) and m.result is None
    last = m.receive(req(1, 3, True, [], itt=9, cmd_sn=0xFFFFFFF0))
    assert (last.stat_sn, last.transit, last.nsg, last.status) == (503, True, 3, 0)
    assert m.result is not None and last.tsih == m.result.session.tsih != 0
    assert last.max_cmd_sn == m.result.session.max_cmd_sn == (0xFFFFFFF0 + 31) & 0xFFFFFFFF
    assert m.result.session.exp_cmd_sn == 0xFFFFFFF0


def test_a_login_split_over_continued_pdus_is_joined() -> None:
    m = machine()
    text = encode_text([*LEAD, ("X-pad", "p" * 100), ("MaxBurstLength", "4096")])
    cut = [text[:7], text[7:60], text[60:]]  # inside "InitiatorName", inside a value
    for piece in cut[:-1]:
        ack = m.receive(LoginRequest(ISID, 5, 1, 3, True, True, cmd_sn=10, data=piece))
        assert (ack.status, ack.transit, ack.nsg, bytes(ack.data)) == (0, False, 0, b"")
    last = m.receive(LoginRequest(ISID, 5, 1, 3, True, cmd_sn=10, data=cut[-1]))
    keys = keys_of(last)
    assert last.transit and keys["X-pad"] == "NotUnderstood" and keys["MaxBurstLength"] == "4096"
    assert m.result is not None and m.result.session.initiator_name == INITIATOR
    assert [a.stat_sn for a in (ack, last)] == [1, 2]  # every response takes a StatSN


def test_continued_login_text_is_bounded_at_64_kib() -> None:
    pad = encode_text([("X-pad", "p" * (8192 - 7))])
    assert len(pad) == 8192
    m = machine()
    m.receive(req(1, 3, False, LEAD))
    for _ in range(8):  # exactly 64 KiB is still accepted
        m.receive(LoginRequest(ISID, 5, 1, 3, False, True, data=pad))
    status, message = refusal(m, LoginRequest(ISID, 5, 1, 3, False, True, data=b"\0"))
    assert (status, message) == (0x0200, "login failed: login text longer than 64 KiB")


def test_a_second_continued_login_starts_from_nothing() -> None:
    m = machine()
    m.receive(LoginRequest(ISID, 5, 1, 3, False, True, data=encode_text(LEAD[:1])))
    m.receive(LoginRequest(ISID, 5, 1, 3, False, data=encode_text(LEAD[1:])))
    m.receive(LoginRequest(ISID, 5, 1, 3, False, True, data=encode_text([("MaxBurstLength", "8192")])))
    last = m.receive(LoginRequest(ISID, 5, 1, 3, True, data=encode_text([("FirstBurstLength", "8192")])))
    assert keys_of(last) == {"MaxBurstLength": "8192", "FirstBurstLength": "8192"}


def test_auth_method_none_in_the_security_stage_leads_to_operational() -> None:
    m = machine()
    resp = m.receive(req(0, 1, True, [*LEAD, ("AuthMethod", "CHAP , None"), ("MaxBurstLength", "4096")]))
    keys = keys_of(resp)
    assert (resp.transit, resp.nsg) == (True, 1)
    # The leading answer once, AuthMethod, and an early operational key answered; no declarations yet.
    assert list(decode_text(resp.data)) == [
        ("TargetPortalGroupTag", "1"), ("TargetAlias", "disk"), ("AuthMethod", "None"), ("MaxBurstLength", "4096"),
    ]  # fmt: skip
    assert "MaxRecvDataSegmentLength" not in keys
    op = m.receive(req(1, 3, False, [("TargetPortalGroupTag", "1")]))
    assert keys_of(op)["TargetPortalGroupTag"] == "NotUnderstood"  # answered in the operational stage
    assert keys_of(op)["MaxRecvDataSegmentLength"] == "262144"
    again = m.receive(req(1, 3, True, []))
    assert "MaxRecvDataSegmentLength" not in keys_of(again)  # declared once
    assert m.result is not None and m.result.session.chap_user == ""


def test_the_portal_group_tag_echoed_in_the_security_stage_is_not_answered() -> None:
    m = machine()
    resp = m.receive(req(0, 1, True, [*LEAD, ("AuthMethod", "None"), ("TargetPortalGroupTag", "1")]))
    # Only the target's own declaration: no second TargetPortalGroupTag (NotUnderstood) in the same answer.
    assert list(decode_text(resp.data)) == [
        ("TargetPortalGroupTag", "1"),
        ("TargetAlias", "disk"),
        ("AuthMethod", "None"),
    ]


def test_skipping_the_security_stage_without_chap_goes_straight_to_full_feature() -> None:
    m = machine()
    resp = m.receive(req(0, 3, True, LEAD))
    assert (resp.transit, resp.nsg) == (True, 3) and m.result is not None


def test_security_keys_in_the_operational_stage_are_not_answered() -> None:
    m = machine()
    resp = m.receive(req(1, 3, True, [*LEAD, ("AuthMethod", "None"), ("CHAP_A", "5")]))
    assert not {"AuthMethod", "CHAP_A"} & set(keys_of(resp)) and m.result is not None


def test_auth_method_and_chap_a_in_one_request_are_both_answered() -> None:
    m = machine(**CHAP)  # type: ignore[arg-type]
    resp = m.receive(req(0, 1, False, [*LEAD, ("AuthMethod", "CHAP"), ("CHAP_A", "5")]))
    keys = keys_of(resp)
    assert (keys["AuthMethod"], keys["CHAP_A"]) == ("CHAP", "5") and {"CHAP_I", "CHAP_C"} <= set(keys)


def test_chap_stays_in_the_security_stage_until_the_response_checks_out() -> None:
    m = machine(auth=AuthConfig(creds(USER, SECRET), algorithms=(5,)))
    first = m.receive(req(0, 1, True, [*LEAD, ("AuthMethod", "None,CHAP")]))
    assert keys_of(first)["AuthMethod"] == "CHAP" and (first.transit, first.nsg) == (False, 0)
    challenge = m.receive(req(0, 1, True, [("CHAP_A", "7,5")]))
    assert keys_of(challenge)["CHAP_A"] == "5" and not challenge.transit  # the configured subset
    done = m.receive(req(0, 1, True, chap_answer(challenge)))
    assert (done.transit, done.nsg) == (True, 1)
    m.receive(req(1, 3, True, []))
    assert m.result is not None and m.result.session.chap_user == USER


def test_a_non_final_request_naming_full_feature_creates_no_session() -> None:
    table = SessionTable()
    m = machine(table)
    resp = m.receive(req(1, 3, False, LEAD))
    assert not resp.transit and m.result is None and not table.by_tsih


def test_leading_keys_reach_the_session() -> None:
    m = machine()
    resp = m.receive(req(1, 3, True, [LEAD[0], LEAD[2], ("InitiatorAlias", "my host")]))  # SessionType defaults
    assert m.result is not None and not m.result.session.discovery
    assert (m.result.session.initiator_alias, m.result.session.target_name) == ("my host", TARGET)
    assert keys_of(resp)["TargetAlias"] == "disk"
    plain = LoginMachine(TargetDirectory({TARGET: TargetInfo(TARGET)}), SessionTable(), PORTAL)
    resp = plain.receive(req(1, 3, True, LEAD))
    assert plain.result is not None and plain.result.session.initiator_alias == ""
    assert "TargetAlias" not in keys_of(resp)  # no alias configured: none announced
    disc = machine()
    resp = disc.receive(req(1, 3, True, DISCOVERY))
    assert disc.result is not None and disc.result.session.discovery and disc.result.session.target_name == ""
    assert "TargetAlias" not in keys_of(resp)


def _acl(*entries: InitiatorAcl) -> dict[str, InitiatorAcl]:
    return {e.initiator: e for e in entries}


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ("removed", 0x0204, f"target {TARGET} was removed during login"),
        ("not on the acl", 0x0202, f"the ACL of {TARGET} for '{INITIATOR}' changed during login"),
        ("own chap added", 0x0202, f"the ACL of {TARGET} for '{INITIATOR}' changed during login"),
    ],
)
def test_the_acl_is_checked_again_when_the_login_completes(change: str, status: int, message: str) -> None:
    targets = {TARGET: TargetInfo(TARGET, acls=_acl(InitiatorAcl(INITIATOR)))}
    m = LoginMachine(TargetDirectory(targets), SessionTable(), PORTAL)
    m.receive(req(1, 3, False, LEAD))
    if change == "removed":
        del targets[TARGET]
    elif change == "not on the acl":
        targets[TARGET] = TargetInfo(TARGET, acls=_acl(InitiatorAcl("iqn.x:other")))
    else:
        own = InitiatorAcl(INITIATOR, AuthConfig(creds("own-user", b"own-secret-123")))
        targets[TARGET] = TargetInfo(TARGET, acls=_acl(own))
    assert refusal(m, req(1, 3, True, [])) == (status, f"login failed: {message}")


def test_an_unchanged_acl_admits_the_login() -> None:
    targets = {TARGET: TargetInfo(TARGET, acls=_acl(InitiatorAcl(INITIATOR)))}
    m = LoginMachine(TargetDirectory(targets), SessionTable(), PORTAL)
    m.receive(req(1, 3, False, LEAD))
    targets[TARGET] = TargetInfo(TARGET, acls=_acl(InitiatorAcl(INITIATOR), InitiatorAcl("iqn.x:other")))
    m.receive(req(1, 3, True, []))
    assert m.result is not None


def _logged_in(table: SessionTable, **kw: object) -> LoginMachine:
    m = LoginMachine(directory(**kw), table, PORTAL)  # type: ignore[arg-type]
    m.receive(req(1, 3, True, LEAD))
    assert m.result is not None
    return m


def test_connection_reinstatement_takes_the_session_over() -> None:
    table = SessionTable()
    first = _logged_in(table)
    assert first.result is not None
    session = first.result.session
    session.active = 3
    session.exp_cmd_sn = 99
    m = LoginMachine(first.directory, table, PORTAL)
    resp = m.receive(req(1, 3, True, [*LEAD, ("MaxBurstLength", "8192")], tsih=session.tsih, cmd_sn=40))
    assert m.result is not None and m.result.reused and m.result.session is session is m.result.replaced
    assert (resp.tsih, session.exp_cmd_sn, session.active) == (session.tsih, 40, 0)
    assert session.params.max_burst_length == 8192 and resp.max_cmd_sn == session.max_cmd_sn
    assert table.by_tsih == {session.tsih: session}


def test_every_response_of_a_reinstating_login_carries_the_session_tsih() -> None:
    table = SessionTable()
    first = _logged_in(table)
    assert first.result is not None
    tsih = first.result.session.tsih
    m = LoginMachine(first.directory, table, PORTAL)
    security = m.receive(req(0, 1, True, [*LEAD, ("AuthMethod", "None")], tsih=tsih))
    operational = m.receive(req(1, 3, False, [("MaxBurstLength", "8192")], tsih=tsih))
    last = m.receive(req(1, 3, True, [], tsih=tsih))
    assert [r.tsih for r in (security, operational, last)] == [tsih] * 3 and tsih != 0
    assert m.result is not None and m.result.reused and m.result.session is first.result.session


@pytest.mark.parametrize(
    "other",
    [{"isid": b"\x80\0\0\0\0\x02"}, {"initiator": "iqn.2026-11.org.example:else"}, {"target": "iqn.2026-11.org.x:b"}],
)
def test_reinstatement_must_name_the_same_session(other: dict[str, object]) -> None:
    table = SessionTable()
    target = str(other.get("target", TARGET))
    extra = (target,) if target != TARGET else ()
    first = _logged_in(table, extra=extra)
    assert first.result is not None
    tsih = first.result.session.tsih
    lead = [("InitiatorName", str(other.get("initiator", INITIATOR))), ("TargetName", target)]
    m = LoginMachine(first.directory, table, PORTAL)
    isid = other.get("isid", ISID)
    got = refusal(m, req(1, 3, True, lead, tsih=tsih, isid=isid))
    assert got == (0x020A, f"login failed: no session with TSIH {tsih}")


def test_the_failure_response_reports_the_status_on_the_request() -> None:
    m = machine()
    m.receive(req(0, 1, False, [*LEAD, ("AuthMethod", "None")], itt=7, cmd_sn=20, exp_stat_sn=30))
    bad = req(1, 3, True, [], itt=8, isid=b"\x80\0\0\0\0\x09")
    fail = m.failure_response(bad, 0x0201)
    assert dataclasses.astuple(fail) == dataclasses.astuple(
        LoginResponse(b"\x80\0\0\0\0\x09", 8, 1, 0, False, False, 0, 31, 20, 20, 0x0201)
    )
    nothing = machine().failure_response(None, 0x0200)
    assert dataclasses.astuple(nothing) == dataclasses.astuple(LoginResponse(b"\0" * 6, 0, 0, 0, status=0x0200))
    assert m.stat_sn == 32
