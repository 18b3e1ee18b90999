"""Text format, negotiation results, CHAP vectors and encodings, serial arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iscsikit.target.proto.chap import ChapCredentials, ChapError, chap_response, decode_binary, encode_binary
from iscsikit.target.proto.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from iscsikit.target.proto.keys import Negotiator, TargetLimits
from iscsikit.target.proto.serial import sn_add, sn_between, sn_lt
from iscsikit.target.proto.state import Phase, Trigger, diagram, next_phase
from iscsikit.target.proto.text import decode_text, encode_text


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("x")
    assert isinstance(RemoteProtocolError("x", reject_reason=4), ProtocolError)


def test_phase_table_refuses_unknown_moves() -> None:
    assert next_phase(Phase.LOGIN, Trigger.LOGIN_COMPLETE) is Phase.FULL_FEATURE
    with pytest.raises(LocalProtocolError):
        next_phase(Phase.CLOSED, Trigger.LOGIN_COMPLETE)
    assert '"login" -> "full-feature"' in diagram()


@settings(deadline=None)
@given(st.lists(st.tuples(st.from_regex(r"[A-Za-z][A-Za-z0-9.\-+@_]{0,40}", fullmatch=True),
                          st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=60)),
                unique_by=lambda kv: kv[0], max_size=8))  # fmt: skip
def test_text_round_trip(pairs: list[tuple[str, str]]) -> None:
    assert decode_text(encode_text(pairs)) == pairs


@pytest.mark.parametrize(
    ("raw", "why"),
    [(b"NoEquals\0", "no '='"), (b"A=1\0A=2\0", "twice"), (b"Bad Key=1\0", "not a valid key"), (b"K=\xff\0", "UTF-8")],
)
def test_bad_text_is_a_remote_error(raw: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why) as exc:
        decode_text(raw)
    assert exc.value.login_status == 0x0200


@pytest.mark.parametrize(
    ("key", "offer", "answer"),
    [
        ("InitialR2T", "Yes", "Yes"),  # OR: either side's Yes wins
        ("InitialR2T", "No", "No"),
        ("ImmediateData", "No", "No"),  # AND
        ("MaxBurstLength", "262144", "262144"),  # min
        ("MaxBurstLength", "16776192", "1048576"),
        ("FirstBurstLength", "65536", "65536"),
        ("DefaultTime2Wait", "0", "2"),  # max
        ("DefaultTime2Retain", "20", "0"),  # min
        ("ErrorRecoveryLevel", "2", "0"),
        ("MaxConnections", "8", "1"),
        ("HeaderDigest", "CRC32C,None", "CRC32C"),  # first offered that we support
        ("HeaderDigest", "None,CRC32C", "None"),
        ("DataDigest", "MD5", "Reject"),
        ("DataPDUInOrder", "No", "Yes"),
        ("IFMarker", "No", "No"),
        ("OFMarkInt", "1~65535", "Irrelevant"),
        ("MaxBurstLength", "100", "Reject"),  # below 512
        ("MaxBurstLength", "99999999999", "Reject"),
        ("InitialR2T", "Maybe", "Reject"),
    ],
)
def test_negotiation_results(key: str, offer: str, answer: str) -> None:
    n = Negotiator(TargetLimits(), discovery=False)
    assert n.negotiate([(key, offer)]) == [(key, answer)]


def test_declarative_mrdsl_and_first_burst_clamp() -> None:
    n = Negotiator(TargetLimits(), discovery=False)
    offer = [("MaxRecvDataSegmentLength", "65536"), ("MaxBurstLength", "4096"), ("FirstBurstLength", "262144")]
    assert n.negotiate(offer) == [("MaxBurstLength", "4096"), ("FirstBurstLength", "262144")]
    assert n.params.max_send_data_segment_length == 65536
    assert n.params.first_burst_length == 4096  # never above MaxBurstLength
    assert n.declarations() == [("MaxRecvDataSegmentLength", "262144")]
    assert n.declarations() == []


def test_digest_required_by_config() -> None:
    n = Negotiator(TargetLimits(header_digests=("CRC32C",)), discovery=False)
    assert n.negotiate([("HeaderDigest", "None")]) == [("HeaderDigest", "Reject")]


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="first_burst"):
        TargetLimits(first_burst_length=2 << 20, max_burst_length=1 << 20)
    with pytest.raises(ValueError, match="digests"):
        TargetLimits(header_digests=("MD5",))


# CHAP known answers: H(id=0x2a || "chapsecret123" || 00112233..ff) for each PPP algorithm.
VECTORS = {
    5: "82c5c6a520234ab0dc6a35323a05a1b1",
    6: "95bfb4f1ae5efb18b49434e963bd3aa782ed4091",
    7: "a1ae6950d8598eb6ceaad23b07d7ab197fb1ac587eaa7543cb63b31496318af8",
    8: "ba58eaaea963669ea146225da5a814410840593666be8ff6be1fbb5964901a41",
}


@pytest.mark.parametrize("algorithm", sorted(VECTORS))
def test_chap_vectors(algorithm: int) -> None:
    challenge = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert chap_response(algorithm, 0x2A, b"chapsecret123", challenge).hex() == VECTORS[algorithm]


def test_binary_encodings() -> None:
    assert decode_binary("0x0aFF") == b"\x0a\xff"
    assert decode_binary("0xabc") == b"\x0a\xbc"
    assert decode_binary("0bAAEC") == b"\x00\x01\x02"
    assert encode_binary(b"\x01\x02") == "0x0102"
    for bad in ("abcd", "0xzz", "0b!!"):
        with pytest.raises(ChapError):
            decode_binary(bad)


def test_short_secrets_are_refused_and_never_shown() -> None:
    with pytest.raises(ValueError, match="at least 12"):
        ChapCredentials("u", b"short")
    assert "topsecret" not in repr(ChapCredentials("u", b"topsecret-123"))


def test_serial_arithmetic_wraps() -> None:
    assert sn_add(0xFFFFFFFF, 1) == 0
    assert sn_lt(0xFFFFFFF0, 5)
    assert sn_between(0xFFFFFFF0, 3, 0x10)
    assert not sn_between(10, 9, 20)
    assert not sn_between(10, 10, 9)  # an empty window (MaxCmdSN = ExpCmdSN - 1) admits nothing
