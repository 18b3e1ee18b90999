"""Login against initiator ACLs: per-ACL CHAP (one-way, mutual), the target's CHAP as fallback,
refusal statuses, SendTargets filtering, and the mutual-CHAP rules."""

from __future__ import annotations

import pytest

from iscsikit.target.proto import AuthConfig, ConnectionClosed, InitiatorConnection, SessionStarted
from iscsikit.target.proto.chap import (
    ChallengeLog,
    ChapError,
    ChapExchange,
    chap_response,
    decode_binary,
    encode_binary,
)
from iscsikit.target.proto.initiator import LoginFailed
from iscsikit.target.proto.pdu import LoginResponse
from iscsikit.target.proto.session import InitiatorAcl
from iscsikit.target.proto.text import decode_text

from .harness import INITIATOR, TARGET, Pair, creds

OTHER = "iqn.2026-11.org.example:intruder"
OWN = ("host-user", b"host-own-secret-1")
MUTUAL = ("disk-for-host", b"disk-mutual-secret-2")
TARGET_CHAP = ("shared", b"target-chap-secret-3")


def own_acl(mutual: bool = False) -> InitiatorAcl:
    return InitiatorAcl(INITIATOR, AuthConfig(creds(*OWN), creds(*MUTUAL) if mutual else None))


def _fails(pair: Pair, status: int) -> None:
    with pytest.raises(LoginFailed) as exc:
        pair.login()
    assert exc.value.status == status
    assert any(isinstance(e, ConnectionClosed) for e in pair.take_events())
    assert pair.target.is_closed


def ini(name: str = INITIATOR, **kw: object) -> InitiatorConnection:
    return InitiatorConnection(name, target=TARGET, **kw)  # type: ignore[arg-type]


def test_acl_entry_with_own_chap_logs_in_with_it() -> None:
    pair = Pair(ini(chap=OWN), acls=(own_acl(),), auth=AuthConfig(creds(*TARGET_CHAP)))
    pair.login()
    (started,) = pair.take_events()
    assert isinstance(started, SessionStarted) and started.session.chap_user == "host-user"


def test_acl_entry_with_own_chap_refuses_the_targets_chap_and_no_chap() -> None:
    target_auth = AuthConfig(creds(*TARGET_CHAP))
    _fails(Pair(ini(chap=TARGET_CHAP), acls=(own_acl(),), auth=target_auth), 0x0201)
    _fails(Pair(ini(), acls=(own_acl(),)), 0x0201)
    _fails(Pair(ini(chap=("host-user", b"wrong-secret-0000")), acls=(own_acl(),)), 0x0201)


def test_acl_entry_without_own_chap_uses_the_targets_chap() -> None:
    target_auth = AuthConfig(creds(*TARGET_CHAP))
    Pair(ini(chap=TARGET_CHAP), acls=(InitiatorAcl(INITIATOR),), auth=target_auth).login()
    _fails(Pair(ini(), acls=(InitiatorAcl(INITIATOR),), auth=target_auth), 0x0201)
    Pair(ini(), acls=(InitiatorAcl(INITIATOR),)).login()  # no CHAP anywhere: the name is enough


def test_initiator_not_on_the_acl_is_refused_even_with_the_targets_chap() -> None:
    target_auth = AuthConfig(creds(*TARGET_CHAP))
    _fails(Pair(ini(OTHER, chap=TARGET_CHAP), acls=(own_acl(),), auth=target_auth), 0x0202)
    _fails(Pair(ini(OTHER, chap=OWN), acls=(own_acl(),)), 0x0202)  # someone else's credentials


def test_an_empty_acl_admits_nobody() -> None:
    _fails(Pair(ini(), acls=()), 0x0202)


def test_per_acl_mutual_chap() -> None:
    initiator = ini(chap=OWN, mutual=MUTUAL)
    Pair(initiator, acls=(own_acl(mutual=True),), auth=AuthConfig(creds(*TARGET_CHAP))).login()
    assert initiator.logged_in and initiator.target_keys["CHAP_N"] == "disk-for-host"
    # The initiator expects another target secret: the target's answer does not prove it.
    wrong = ini(chap=OWN, mutual=("disk-for-host", b"not-the-mutual-secret"))
    with pytest.raises(LoginFailed) as exc:
        Pair(wrong, acls=(own_acl(mutual=True),)).login()
    assert exc.value.status == -2
    # An entry without a mutual identity cannot answer a mutual challenge.
    _fails(Pair(ini(chap=OWN, mutual=MUTUAL), acls=(own_acl(),)), 0x0201)


def test_acl_entry_does_not_borrow_the_targets_mutual_identity() -> None:
    target_auth = AuthConfig(creds(*TARGET_CHAP), creds("target-itself", b"target-mutual-secret"))
    _fails(Pair(ini(chap=OWN, mutual=("target-itself", b"target-mutual-secret")), acls=(own_acl(),),
                auth=target_auth), 0x0201)  # fmt: skip


def _to_challenge(pair: Pair, initiator: InitiatorConnection) -> dict[str, str]:
    (resp,) = pair.send(initiator.login_request())
    nxt = initiator.login_response(resp)  # type: ignore[arg-type]
    assert nxt is not None
    (resp,) = pair.send(nxt)
    assert isinstance(resp, LoginResponse) and resp.status == 0
    return dict(decode_text(resp.data))


def test_one_response_per_challenge_on_the_wire() -> None:
    """A second CHAP_R for the same challenge fails the login, even a correct one."""
    initiator = ini(chap=OWN)
    pair = Pair(initiator, acls=(own_acl(),))
    keys = _to_challenge(pair, initiator)
    answer = chap_response(int(keys["CHAP_A"]), int(keys["CHAP_I"]), OWN[1], decode_binary(keys["CHAP_C"]))
    response = [("CHAP_N", OWN[0]), ("CHAP_R", encode_binary(answer))]
    (first,) = pair.send(initiator._login(0, 1, False, response))  # T=0: stay in the security stage
    assert isinstance(first, LoginResponse) and first.status == 0 and not first.transit
    (second,) = pair.send(initiator._login(0, 1, True, response))
    assert isinstance(second, LoginResponse) and second.status == 0x0201
    assert pair.target.is_closed and not any(isinstance(e, SessionStarted) for e in pair.take_events())


def test_one_response_per_challenge_in_the_exchange() -> None:
    ex = ChapExchange(creds(*OWN), None, ChallengeLog())
    keys = dict(ex.choose("7"))
    answer = chap_response(7, int(keys["CHAP_I"]), OWN[1], decode_binary(keys["CHAP_C"]))
    response = {"CHAP_N": OWN[0], "CHAP_R": encode_binary(answer)}
    assert ex.verify(response) == []
    with pytest.raises(ChapError, match="second response"):
        ex.verify(response)


def test_mutual_chap_with_equal_secrets_is_refused_by_the_exchange() -> None:
    """The exchange refuses on its own, whatever built the credentials."""
    ex = ChapExchange(creds(*OWN), creds("tgt", OWN[1]), ChallengeLog())
    keys = dict(ex.choose("5"))
    answer = chap_response(5, int(keys["CHAP_I"]), OWN[1], decode_binary(keys["CHAP_C"]))
    with pytest.raises(ChapError, match="must differ"):
        ex.verify({"CHAP_N": OWN[0], "CHAP_R": encode_binary(answer), "CHAP_I": "9", "CHAP_C": "0x" + "cd" * 16})


def test_equal_mutual_secret_cannot_be_configured() -> None:
    with pytest.raises(ValueError, match="must differ"):
        AuthConfig(creds(*OWN), creds("tgt", OWN[1]))
    with pytest.raises(ValueError, match="must differ"):
        InitiatorAcl(INITIATOR, AuthConfig(creds(*OWN), creds("tgt", OWN[1])))


def test_sendtargets_lists_only_targets_whose_acl_admits_the_initiator() -> None:
    names = ("iqn.2026-11.org.example:open",)
    for who, visible in ((INITIATOR, True), (OTHER, False)):
        initiator = InitiatorConnection(who)
        pair = Pair(initiator, acls=(own_acl(),), extra=names)
        pair.login()
        (resp,) = pair.send(initiator.text([("SendTargets", "All")])[1])
        text = bytes(resp.data)  # type: ignore[attr-defined]
        assert (f"TargetName={TARGET}\0".encode() in text) is visible
        assert b"TargetName=iqn.2026-11.org.example:open\0" in text  # no ACL: listed to everyone
        (resp,) = pair.send(initiator.text([("SendTargets", TARGET)])[1])
        assert (TARGET.encode() in bytes(resp.data)) is visible  # type: ignore[attr-defined]


def test_sendtargets_hides_targets_with_an_empty_acl() -> None:
    initiator = InitiatorConnection(INITIATOR)
    pair = Pair(initiator, acls=())
    pair.login()
    (resp,) = pair.send(initiator.text([("SendTargets", "All")])[1])
    assert TARGET.encode() not in bytes(resp.data)  # type: ignore[attr-defined]


def test_acl_removed_during_login_refuses_the_final_step() -> None:
    """``acl remove`` between the first and the last login PDU: the login does not complete."""
    from dataclasses import replace

    initiator = ini(chap=OWN)
    pair = Pair(initiator, acls=(own_acl(),))
    (resp,) = pair.send(initiator.login_request())
    info = pair.directory.targets[TARGET]
    assert isinstance(pair.directory.targets, dict)
    pair.directory.targets[TARGET] = replace(info, acls={})
    nxt = initiator.login_response(resp)  # type: ignore[arg-type]
    assert nxt is not None
    with pytest.raises(LoginFailed) as exc:
        while nxt is not None:
            (resp,) = pair.send(nxt)
            nxt = initiator.login_response(resp)  # type: ignore[arg-type]
    assert exc.value.status == 0x0202
    assert not any(isinstance(e, SessionStarted) for e in pair.take_events())
