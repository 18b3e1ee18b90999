"""CHAP, unit by unit: what the exchange accepts and refuses, and why (the ChapError names it).

The login tests run CHAP end to end; these pin the rules a login test reaches only by luck: each
algorithm by itself, the configured subset, the challenge sizes and identifier range, every
refusal of a malformed or replayed mutual challenge, the replay log's bounds, and the binary
value encodings.
"""

from __future__ import annotations

import hashlib
import re

import pytest

from iscsikit.target.proto.chap import (
    ChallengeLog,
    ChapCredentials,
    ChapError,
    ChapExchange,
    chap_response,
    decode_binary,
    encode_binary,
)

USER, SECRET = "user1", b"secret-12345678"
TGT, TGT_SECRET = "tgt", b"mutual-secret-99"
DIGEST_SIZES = {5: 16, 6: 20, 7: 32, 8: 32}
PENDING = "CHAP_R without a pending challenge (before CHAP_A, or a second response to one)"


def exactly(message: str) -> str:
    """A pytest.raises pattern for the whole message (a substring would pass a padded one)."""
    return "^" + re.escape(message) + "$"


def exchange(*, mutual: bool = False, log: ChallengeLog | None = None, **kw: object) -> ChapExchange:
    outgoing = ChapCredentials(TGT, TGT_SECRET) if mutual else None
    return ChapExchange(ChapCredentials(USER, SECRET), outgoing, log or ChallengeLog(), **kw)  # type: ignore[arg-type]


def answer(ex: ChapExchange, offered: str = "5", secret: bytes = SECRET) -> dict[str, str]:
    """Run CHAP_A and return the initiator's correct CHAP_N/CHAP_R for the challenge."""
    keys = dict(ex.choose(offered))
    resp = chap_response(int(keys["CHAP_A"]), int(keys["CHAP_I"]), secret, decode_binary(keys["CHAP_C"]))
    return {"CHAP_N": USER, "CHAP_R": encode_binary(resp)}


@pytest.mark.parametrize("algorithm", sorted(DIGEST_SIZES))
def test_every_algorithm_is_accepted_by_default_with_a_challenge_of_its_digest_size(algorithm: int) -> None:
    ex = exchange()
    keys = dict(ex.choose(str(algorithm)))
    assert keys["CHAP_A"] == str(algorithm) and ex.algorithm == algorithm
    name = {5: "md5", 6: "sha1", 7: "sha256", 8: "sha3_256"}[algorithm]
    assert hashlib.new(name).digest_size == DIGEST_SIZES[algorithm]
    challenge = decode_binary(keys["CHAP_C"])
    assert len(challenge) == max(16, DIGEST_SIZES[algorithm]) and challenge == ex.challenge
    assert int(keys["CHAP_I"]) == ex.identifier
    resp = chap_response(algorithm, ex.identifier, SECRET, challenge)
    assert len(resp) == DIGEST_SIZES[algorithm]
    assert ex.verify({"CHAP_N": USER, "CHAP_R": encode_binary(resp)}) == []


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [("9, 6 ,5", 6), (" 8", 8), ("x,5,7", 5), ("5,7", 5), ("7,5", 7), ("06", 6)],
)
def test_the_first_offered_supported_algorithm_is_chosen(offered: str, chosen: int) -> None:
    assert dict(exchange().choose(offered))["CHAP_A"] == str(chosen)


def test_only_the_configured_algorithms_are_accepted() -> None:
    with pytest.raises(ChapError) as exc:
        exchange(algorithms=(7,)).choose("5,6,8")
    assert str(exc.value) == "no supported CHAP algorithm in '5,6,8' (we support (7,))"
    assert dict(exchange(algorithms=(5,)).choose("7,5"))["CHAP_A"] == "5"
    with pytest.raises(ChapError, match=exactly("no supported CHAP algorithm in '9,x' (we support (7, 8, 6, 5))")):
        exchange().choose("9,x")


def test_the_identifier_covers_exactly_one_byte() -> None:
    seen = set()
    ex = exchange()
    for _ in range(5000):
        ex.choose("5")
        seen.add(ex.identifier)
    # 5000 draws of 256 values: the chance of missing one is below 1e-6.
    assert seen == set(range(256))


def test_a_response_needs_a_pending_challenge() -> None:
    ex = exchange()
    with pytest.raises(ChapError, match=exactly(PENDING)):
        ex.verify({"CHAP_N": USER, "CHAP_R": "0x00"})
    good = answer(ex)
    assert ex.verify(good) == []
    with pytest.raises(ChapError, match=exactly(PENDING)):
        ex.verify(good)  # a second response to the same challenge, even a correct one


@pytest.mark.parametrize("missing", ["CHAP_N", "CHAP_R"])
def test_name_and_response_are_both_required(missing: str) -> None:
    ex = exchange()
    keys = answer(ex)
    del keys[missing]
    with pytest.raises(ChapError, match=exactly("CHAP_N and CHAP_R are required")):
        ex.verify(keys)


@pytest.mark.parametrize("wrong", ["name", "response"])
def test_a_wrong_name_or_response_fails_and_consumes_the_challenge(wrong: str) -> None:
    ex = exchange()
    good = answer(ex)
    bad = dict(good, CHAP_N="user2") if wrong == "name" else dict(good, CHAP_R="0x" + "00" * 16)
    with pytest.raises(ChapError) as exc:
        ex.verify(bad)
    assert str(exc.value) == f"CHAP response for user {bad['CHAP_N']!r} does not match"
    with pytest.raises(ChapError, match=exactly(PENDING)):
        ex.verify(good)  # no second try against the same challenge


def mutual_keys(ex: ChapExchange, ident: str = "9", challenge: str = "0x" + "cd" * 16) -> dict[str, str]:
    return {**answer(ex), "CHAP_I": ident, "CHAP_C": challenge}


@pytest.mark.parametrize(("ident", "size"), [("0", 1), ("255", 1024), ("17", 16)])
def test_mutual_chap_answers_with_the_targets_identity(ident: str, size: int) -> None:
    ex = exchange(mutual=True)
    challenge = bytes(range(256)) * 4
    challenge = challenge[:size]
    out = dict(ex.verify(mutual_keys(ex, ident, encode_binary(challenge))))
    assert out == {"CHAP_N": TGT, "CHAP_R": encode_binary(chap_response(5, int(ident), TGT_SECRET, challenge))}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"CHAP_I": None}, "mutual CHAP needs both CHAP_I and CHAP_C"),
        ({"CHAP_C": None}, "mutual CHAP needs both CHAP_I and CHAP_C"),
        ({"CHAP_I": "256"}, "CHAP_I '256' is not 0..255"),
        ({"CHAP_I": "-1"}, "CHAP_I '-1' is not 0..255"),
        ({"CHAP_C": "0x"}, "mutual challenge length 0 is out of range"),
        ({"CHAP_C": "0x" + "ab" * 1025}, "mutual challenge length 1025 is out of range"),
    ],
)
def test_a_malformed_mutual_challenge_is_refused(change: dict[str, str | None], why: str) -> None:
    ex = exchange(mutual=True)
    keys = mutual_keys(ex)
    for k, v in change.items():
        if v is None:
            del keys[k]
        else:
            keys[k] = v
    with pytest.raises(ChapError) as exc:
        ex.verify(keys)
    assert str(exc.value) == why


def test_mutual_chap_without_target_credentials_is_refused() -> None:
    ex = exchange()
    with pytest.raises(
        ChapError, match=exactly("initiator asked for mutual CHAP but the target has no credentials for it")
    ):
        ex.verify(mutual_keys(ex))


def test_mutual_chap_with_equal_secrets_is_refused_before_answering() -> None:
    ex = ChapExchange(ChapCredentials(USER, SECRET), ChapCredentials(TGT, SECRET), ChallengeLog())
    with pytest.raises(ChapError, match=exactly("target and initiator secrets must differ for mutual CHAP")):
        ex.verify(mutual_keys(ex))


def test_our_own_challenge_reflected_back_is_refused() -> None:
    ex = exchange(mutual=True)
    keys = answer(ex)
    with pytest.raises(ChapError, match=exactly("mutual challenge is our own challenge reflected back")):
        ex.verify({**keys, "CHAP_I": "1", "CHAP_C": encode_binary(ex.challenge)})


def test_a_replayed_mutual_challenge_is_refused_across_exchanges() -> None:
    log = ChallengeLog()
    first = exchange(mutual=True, log=log)
    assert dict(first.verify(mutual_keys(first)))["CHAP_N"] == TGT
    second = exchange(mutual=True, log=log)
    with pytest.raises(ChapError, match=exactly("mutual challenge was used before (replay)")):
        second.verify(mutual_keys(second))
    third = exchange(mutual=True, log=log)
    assert dict(third.verify(mutual_keys(third, challenge="0x" + "ce" * 16)))["CHAP_N"] == TGT


def test_the_challenge_log_forgets_the_least_recently_seen_first() -> None:
    log = ChallengeLog(capacity=2)
    assert [log.seen_before(c) for c in (b"a", b"b", b"a", b"c")] == [False, False, True, False]
    # b was the least recently seen: forgotten; a (seen again) and c are kept.
    assert log.seen_before(b"c") is True
    assert log.seen_before(b"a") is True
    assert log.seen_before(b"b") is False


def test_the_challenge_log_keeps_65536_challenges_by_default() -> None:
    log = ChallengeLog()
    challenges = [i.to_bytes(4, "big") for i in range(65537)]
    assert not any(log.seen_before(c) for c in challenges[1:])
    assert log.seen_before(challenges[1]) is True  # 65536 kept
    assert log.seen_before(challenges[0]) is False  # one more pushes out the least recent
    assert log.seen_before(challenges[2]) is False


def test_credentials_rules_and_repr() -> None:
    with pytest.raises(ValueError, match=exactly("CHAP user name must not be empty")):
        ChapCredentials("", SECRET)
    with pytest.raises(ValueError) as exc:
        ChapCredentials("u", b"x" * 11)
    assert str(exc.value) == "CHAP secret for 'u' is 11 bytes; at least 12 are required"
    assert ChapCredentials("u", b"x" * 12).secret == b"x" * 12
    assert repr(ChapCredentials("u", b"x" * 13)) == "ChapCredentials(user='u', secret=<13 bytes>)"


@pytest.mark.parametrize(
    ("text", "value"),
    [("0X0A0b", b"\x0a\x0b"), ("0x1", b"\x01"), ("0x", b""), ("0BAAEC", b"\x00\x01\x02"), ("0b", b"")],
)
def test_binary_values_in_both_encodings_and_cases(text: str, value: bytes) -> None:
    assert decode_binary(text) == value


def test_bad_binary_values_are_named_but_cut_to_20_characters() -> None:
    """The value comes from the peer: the log shows its start, not all of it."""
    long = "0x" + "zz" * 50
    with pytest.raises(ChapError) as exc:
        decode_binary(long)
    assert str(exc.value) == f"malformed binary value {long[:20]!r}..."
    with pytest.raises(ChapError) as exc:
        decode_binary("0bAA!C")
    assert str(exc.value) == "malformed binary value '0bAA!C'..."
    nope = "Zx" + "1" * 40
    with pytest.raises(ChapError) as exc:
        decode_binary(nope)
    assert str(exc.value) == f"binary value {nope[:20]!r} has neither 0x nor 0b prefix"
