"""Login: leading keys, ACL, stages, negotiation answers, CHAP, reinstatement."""

from __future__ import annotations

import pytest

from iscsikit.target.proto import AuthConfig, ConnectionClosed, InitiatorConnection, SessionStarted, SessionTable
from iscsikit.target.proto.chap import ChallengeLog, ChapExchange, chap_response, decode_binary
from iscsikit.target.proto.initiator import LoginFailed
from iscsikit.target.proto.pdu import LoginRequest, LoginResponse, TextResponse
from iscsikit.target.proto.text import decode_text, encode_text

from .harness import INITIATOR, TARGET, Pair, creds


def test_plain_login_negotiates_large_transfers() -> None:
    pair = Pair()
    (resp,) = pair.login()
    assert isinstance(resp, LoginResponse) and resp.status == 0 and resp.transit and resp.nsg == 3
    assert resp.tsih != 0
    keys = dict(decode_text(resp.data))
    assert keys["TargetPortalGroupTag"] == "1"
    assert keys["MaxRecvDataSegmentLength"] == "262144"
    assert keys["InitialR2T"] == "No"
    assert keys["ImmediateData"] == "Yes"
    assert keys["MaxBurstLength"] == "1048576"  # min(16776192 offered, ours)
    assert keys["FirstBurstLength"] == "262144"
    (started,) = pair.take_events()
    assert isinstance(started, SessionStarted) and started.replaced is None
    assert started.session.params.max_send_data_segment_length == 262144


def _fails(pair: Pair, status: int) -> None:
    with pytest.raises(LoginFailed) as exc:
        pair.login()
    assert exc.value.status == status
    assert any(isinstance(e, ConnectionClosed) for e in pair.take_events())
    assert pair.target.is_closed


def test_unknown_target_is_not_found() -> None:
    _fails(Pair(InitiatorConnection(INITIATOR, target="iqn.2026-11.org.example:nope")), 0x0203)


def test_acl_refuses_other_initiators() -> None:
    _fails(Pair(allow=frozenset({"iqn.2026-11.org.example:other"})), 0x0202)
    Pair(allow=frozenset({INITIATOR})).login()


def test_missing_initiator_name() -> None:
    pair = Pair()
    req = LoginRequest(b"\x80" + bytes(5), 1, 1, 3, True, data=encode_text([("TargetName", TARGET)]))
    (resp,) = pair.send(pair.ini.encode(req))
    assert isinstance(resp, LoginResponse) and resp.status == 0x0207


def test_unsupported_version() -> None:
    pair = Pair()
    req = LoginRequest(b"\x80" + bytes(5), 1, 1, 3, True, version_min=1, version_max=1,
                       data=encode_text([("InitiatorName", INITIATOR), ("TargetName", TARGET)]))  # fmt: skip
    (resp,) = pair.send(pair.ini.encode(req))
    assert isinstance(resp, LoginResponse) and resp.status == 0x0205


def test_full_feature_pdu_during_login_ends_it() -> None:
    pair = Pair()
    _itt, wire = pair.ini.nop_out(b"")
    (resp,) = pair.send(wire)
    assert isinstance(resp, LoginResponse) and resp.status >> 8 == 2
    assert pair.target.is_closed


def test_unknown_and_irrelevant_keys() -> None:
    ini = InitiatorConnection(INITIATOR, keys=[("X-com.example.foo", "1"), ("Bogus", "x")])
    pair = Pair(ini)
    (resp,) = pair.send(ini.login_request())
    keys = dict(decode_text(resp.data))
    assert keys["X-com.example.foo"] == "NotUnderstood"
    assert keys["Bogus"] == "NotUnderstood"
    ini2 = InitiatorConnection(INITIATOR, keys=[("InitialR2T", "No"), ("MaxBurstLength", "4096")])
    pair2 = Pair(ini2)
    (resp2,) = pair2.send(ini2.login_request())
    keys2 = dict(decode_text(resp2.data))  # a discovery session: data-transfer keys do not apply
    assert keys2["InitialR2T"] == "Irrelevant" and keys2["MaxBurstLength"] == "Irrelevant"


def test_bad_numeric_value_is_rejected_key_by_key() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET, keys=[("MaxConnections", "0"), ("DataPDUInOrder", "Maybe")])
    pair = Pair(ini)
    (resp,) = pair.send(ini.login_request())
    keys = dict(decode_text(resp.data))
    assert resp.status == 0
    assert keys["MaxConnections"] == "Reject" and keys["DataPDUInOrder"] == "Reject"


def test_a_key_offered_twice_fails_the_login() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET, keys=[("MaxOutstandingR2T", "1")])
    _fails(Pair(ini), 0x0200)


def test_discovery_session_lists_every_portal() -> None:
    ini = InitiatorConnection(INITIATOR)
    pair = Pair(ini, extra=("iqn.2026-11.org.example:second",))
    pair.login()
    _itt, wire = ini.text([("SendTargets", "All")])
    (resp,) = pair.send(wire)
    assert isinstance(resp, TextResponse) and resp.final
    pairs = [kv for kv in resp.data.split(b"\0") if kv]
    assert pairs[:3] == [
        f"TargetName={TARGET}".encode(),
        b"TargetAddress=127.0.0.1:3260,1",
        b"TargetAddress=10.0.0.2:3260,2",
    ]
    assert b"TargetName=iqn.2026-11.org.example:second" in pairs


def test_discovery_hides_targets_the_acl_refuses() -> None:
    ini = InitiatorConnection(INITIATOR)
    pair = Pair(ini, allow=frozenset({"iqn.2026-11.org.example:other"}))
    pair.login()
    (resp,) = pair.send(ini.text([("SendTargets", "All")])[1])
    assert TARGET.encode() not in bytes(resp.data)


def test_sendtargets_in_a_normal_session_names_own_target() -> None:
    pair = Pair(extra=("iqn.2026-11.org.example:second",))
    pair.login()
    (resp,) = pair.send(pair.ini.text([("SendTargets", "All")])[1])
    assert bytes(resp.data).startswith(f"TargetName={TARGET}\0".encode())
    assert b"second" not in bytes(resp.data)


def test_long_sendtargets_answer_continues_with_c_bit() -> None:
    names = tuple(f"iqn.2026-11.org.example:t{i:03d}" for i in range(200))
    ini = InitiatorConnection(INITIATOR, keys=[("MaxRecvDataSegmentLength", "512")])
    ini._operational = lambda: [("MaxRecvDataSegmentLength", "512")]  # type: ignore[method-assign]
    pair = Pair(ini, extra=names)
    pair.login()
    (resp,) = pair.send(ini.text([("SendTargets", "All")])[1])
    chunks = [bytes(resp.data)]
    while not resp.final:
        assert resp.cont and resp.ttt != 0xFFFFFFFF and len(resp.data) <= 512
        (resp,) = pair.send(ini.text([], ttt=resp.ttt)[1])
        chunks.append(bytes(resp.data))
    text = b"".join(chunks)
    assert text.count(b"TargetName=") == 201


@pytest.mark.parametrize(("offered", "chosen"), [("5", 5), ("6", 6), ("7", 7), ("8", 8), ("9,8,5", 8), ("7,5", 7)])
def test_chap_picks_first_offered_supported_algorithm(offered: str, chosen: int) -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET, chap=("user1", b"secret-12345678"), chap_algorithms=offered)
    pair = Pair(ini, auth=AuthConfig(creds()))
    pair.login()
    assert ini.target_keys["CHAP_A"] == str(chosen)
    assert ini.logged_in


def test_chap_wrong_secret_fails() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET, chap=("user1", b"wrong-secret-000"))
    _fails(Pair(ini, auth=AuthConfig(creds())), 0x0201)


def test_chap_wrong_user_fails() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET, chap=("user2", b"secret-12345678"))
    _fails(Pair(ini, auth=AuthConfig(creds())), 0x0201)


def test_chap_required_but_not_offered() -> None:
    _fails(Pair(auth=AuthConfig(creds())), 0x0201)


def test_chap_offered_but_target_has_none_is_refused() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET, chap=("user1", b"secret-12345678"))
    _fails(Pair(ini), 0x0201)


def test_mutual_chap() -> None:
    ini = InitiatorConnection(
        INITIATOR, target=TARGET, chap=("user1", b"secret-12345678"), mutual=("tgt", b"mutual-secret-99")
    )
    pair = Pair(ini, auth=AuthConfig(creds(), creds("tgt", b"mutual-secret-99")))
    pair.login()  # the initiator verified the target's CHAP_R
    assert ini.logged_in


def test_mutual_chap_without_target_credentials_fails() -> None:
    ini = InitiatorConnection(
        INITIATOR, target=TARGET, chap=("user1", b"secret-12345678"), mutual=("tgt", b"mutual-secret-99")
    )
    _fails(Pair(ini, auth=AuthConfig(creds())), 0x0201)


def test_reflected_and_replayed_challenges_are_refused() -> None:
    ex = ChapExchange(creds(), creds("tgt", b"mutual-secret-99"), ChallengeLog())
    answer = dict(ex.choose("5"))
    ident, challenge = int(answer["CHAP_I"]), decode_binary(answer["CHAP_C"])
    resp = "0x" + chap_response(5, ident, b"secret-12345678", challenge).hex()
    from iscsikit.target.proto.chap import ChapError

    with pytest.raises(ChapError, match="reflected"):
        ex.verify({"CHAP_N": "user1", "CHAP_R": resp, "CHAP_I": "3", "CHAP_C": answer["CHAP_C"]})
    log = ChallengeLog()
    for expect_ok in (True, False):
        ex = ChapExchange(creds(), creds("tgt", b"mutual-secret-99"), log)
        answer = dict(ex.choose("5"))
        resp = "0x" + chap_response(5, int(answer["CHAP_I"]), b"secret-12345678", decode_binary(answer["CHAP_C"])).hex()
        keys = {"CHAP_N": "user1", "CHAP_R": resp, "CHAP_I": "7", "CHAP_C": "0x" + "ab" * 16}
        if expect_ok:
            assert dict(ex.verify(keys))["CHAP_N"] == "tgt"
        else:
            with pytest.raises(ChapError, match="replay"):
                ex.verify(keys)


def test_discovery_chap() -> None:
    ini = InitiatorConnection(INITIATOR, chap=("disc", b"discovery-secret"))
    Pair(ini, discovery_auth=AuthConfig(creds("disc", b"discovery-secret"))).login()
    _fails(Pair(InitiatorConnection(INITIATOR), discovery_auth=AuthConfig(creds("disc", b"discovery-secret"))), 0x0201)


def test_session_reinstatement_replaces_the_old_session() -> None:
    table = SessionTable()
    first = Pair(table=table)
    first.login()
    (old,) = first.take_events()
    second = Pair(table=table)
    second.login()
    (new,) = second.take_events()
    assert isinstance(new, SessionStarted) and isinstance(old, SessionStarted)
    assert new.replaced is old.session
    assert new.session.tsih != old.session.tsih
    other_isid = Pair(InitiatorConnection(INITIATOR, target=TARGET, isid=b"\x80\0\0\0\0\x02"), table=table)
    other_isid.login()
    (third,) = other_isid.take_events()
    assert third.replaced is None  # a different ISID is a different session


def test_nonzero_tsih_for_an_unknown_session() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET)
    ini.tsih = 77
    with pytest.raises(LoginFailed) as exc:
        Pair(ini).login()
    assert exc.value.status == 0x020A


def test_required_digest_missing_fails_login() -> None:
    from iscsikit.target.proto import TargetLimits

    _fails(Pair(limits=TargetLimits(header_digests=("CRC32C",))), 0x0200)
    Pair(InitiatorConnection(INITIATOR), limits=TargetLimits(header_digests=("CRC32C",))).login()  # discovery
    ini = InitiatorConnection(INITIATOR, target=TARGET, header_digest=True)
    Pair(ini, limits=TargetLimits(header_digests=("CRC32C",))).login()
    assert ini._hd


def test_wildcard_portals_are_reported_as_the_address_reached() -> None:
    from iscsikit.target.proto import PortalInfo, SessionTable, TargetConnection, TargetDirectory, TargetInfo

    directory = TargetDirectory({TARGET: TargetInfo(TARGET, (PortalInfo("0.0.0.0", 3260, 1),))})
    pair = Pair(InitiatorConnection(INITIATOR))
    pair.target = TargetConnection(directory, SessionTable(), PortalInfo("192.0.2.7", 3260, 1))
    pair.login()
    (resp,) = pair.send(pair.ini.text([("SendTargets", "All")])[1])
    assert b"TargetAddress=192.0.2.7:3260,1" in bytes(resp.data)


def test_security_stage_responses_carry_no_operational_keys() -> None:
    """open-iscsi refuses a login whose security-stage response carries e.g. MaxRecvDataSegmentLength."""
    ini = InitiatorConnection(INITIATOR, target=TARGET, chap=("user1", b"secret-12345678"))
    pair = Pair(ini, auth=AuthConfig(creds()))
    pdus = pair.send(ini.login_request())
    allowed = {"AuthMethod", "CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R", "TargetPortalGroupTag", "TargetAlias"}
    while True:
        (resp,) = pdus
        keys = dict(decode_text(resp.data))  # type: ignore[attr-defined]
        if resp.csg == 0:  # type: ignore[attr-defined]
            assert set(keys) <= allowed, keys
        else:
            assert keys.get("MaxRecvDataSegmentLength") == "262144"
        nxt = ini.login_response(resp)  # type: ignore[arg-type]
        if nxt is None:
            break
        pdus = pair.send(nxt)
