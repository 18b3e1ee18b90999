"""The replica handshake state machine (iscsikit.replica.auth), sans-IO: every rule broken once."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from iscsikit.errors import ConfigError, ReplicaAuthError
from iscsikit.replica import auth
from iscsikit.replica.protocol import Frame, Op, Status

SECRET = b"correct horse battery staple 42"
VOLUME = "0b4e7c1a-58a9-4a3e-9a53-6f2f4b0c9d11"


def counter_nonces(start: int) -> Callable[[int], bytes]:
    """Distinct, reproducible nonces (no unseeded randomness in the tests)."""
    numbers = itertools.count(start)
    return lambda n: next(numbers).to_bytes(n, "big")


def server(secret: bytes = SECRET, volume: str | None = VOLUME, start: int = 1000) -> auth.ServerAuth:
    return auth.ServerAuth(secret, lambda: volume, nonce=counter_nonces(start))


def client(secret: bytes = SECRET, volume: str | None = None, start: int = 1) -> auth.ClientAuth:
    return auth.ClientAuth(secret, volume_id=volume, nonce=counter_nonces(start))


def send(srv: auth.ServerAuth, payload: bytes, op: Op = Op.AUTH) -> auth.Answer:
    return srv.receive(Frame(op, 1, payload=payload))


def test_a_whole_handshake_authenticates_both_sides_and_binds_the_volume_id() -> None:
    c, s = client(volume=VOLUME), server()
    first = send(s, c.challenge())
    assert first.status == Status.OK and not first.done and not s.authenticated
    assert first.payload.endswith(VOLUME.encode())
    second = send(s, c.answer(first.payload))
    assert (second.status, second.done, second.close) == (Status.OK, True, False)
    assert s.authenticated and c.volume_id == VOLUME


def test_a_fresh_replica_binds_the_empty_volume_id() -> None:
    c, s = client(), server(volume=None)
    first = send(s, c.challenge())
    assert len(first.payload) == 2 * auth.NONCE_SIZE  # no volume id bytes
    assert send(s, c.answer(first.payload)).done
    assert c.volume_id == ""


def test_wrong_secret_fails_on_both_sides() -> None:
    # The server does not know the client's secret: the client refuses the server's proof.
    c, s = client(secret=b"another secret of 16+ bytes"), server()
    first = send(s, c.challenge())
    with pytest.raises(ReplicaAuthError, match="failed to prove that it knows the secret"):
        c.answer(first.payload)
    # A client that skips checking and proves with the wrong secret is refused and closed.
    s = server()
    c = client()
    first = send(s, c.challenge())
    liar = client(secret=b"another secret of 16+ bytes")
    liar._client_nonce = c._client_nonce  # same exchange, other key
    bad_proof = bytes([auth.STEP_PROOF]) + auth.proof(
        b"another secret of 16+ bytes", auth.CLIENT_LABEL, c._client_nonce, first.payload[:32], VOLUME
    )
    answer = send(s, bad_proof)
    assert (answer.status, answer.close, answer.done) == (Status.FENCED, True, False)
    assert "wrong proof" in answer.reason and not s.authenticated
    assert SECRET.decode() not in answer.reason


def test_a_reflected_proof_is_refused() -> None:
    """The server's own proof sent back as the client's: the labels differ per direction."""
    c, s = client(), server()
    first = send(s, c.challenge())
    server_proof = first.payload[auth.NONCE_SIZE : 2 * auth.NONCE_SIZE]
    answer = send(s, bytes([auth.STEP_PROOF]) + server_proof)
    assert answer.status == Status.FENCED and answer.close and not s.authenticated


def test_a_reflected_challenge_is_refused_by_the_client() -> None:
    """A fake server that echoes our nonce (to make us compute its proof) is caught."""
    c = client()
    nonce = c.challenge()[1:]
    fake = nonce + auth.proof(SECRET, auth.SERVER_LABEL, nonce, nonce, "") + b""
    with pytest.raises(ReplicaAuthError, match="repeats ours"):
        c.answer(fake)


def test_a_replayed_exchange_is_refused() -> None:
    """A recorded handshake replayed on a new connection: the server's fresh nonce defeats it."""
    c, s = client(), server(start=1000)
    step1 = c.challenge()
    first = send(s, step1)
    step2 = c.answer(first.payload)
    assert send(s, step2).done
    again = server(start=2000)  # a new connection: a new server nonce
    assert send(again, step1).status == Status.OK
    answer = send(again, step2)
    assert answer.status == Status.FENCED and answer.close and not again.authenticated


def test_a_replayed_server_answer_is_refused_by_the_client() -> None:
    c, s = client(start=1), server()
    first = send(s, c.challenge())
    later = client(start=50)  # a new connection with a new client nonce
    later.challenge()
    with pytest.raises(ReplicaAuthError, match="failed to prove"):
        later.answer(first.payload)


@pytest.mark.parametrize("op", [Op.HELLO, Op.WRITE, Op.SET_META, Op.SOURCE, Op.GRANT, Op.PULL, Op.READ, Op.PING])
def test_any_request_before_the_handshake_is_refused_with_the_revision_it_needs(op: Op) -> None:
    s = server()
    answer = s.receive(Frame(op, 7, payload=b'{"claim": true}' if op == Op.HELLO else b""))
    assert (answer.status, answer.close) == (Status.FENCED, True)
    text = answer.payload.decode()
    assert text.startswith("authentication required") and "revision 3" in text and op.name in text
    # After a refusal nothing is accepted any more, not even a correct handshake.
    c = client()
    assert send(s, c.challenge()).status == Status.FENCED


def test_steps_out_of_order_are_refused() -> None:
    c, s = client(), server()
    answer = send(s, bytes([auth.STEP_PROOF]) + bytes(32))  # step 2 first
    assert (answer.status, answer.close, answer.reason) == (Status.EINVAL, True, "AUTH step 2 before step 1")
    s = server()
    send(s, c.challenge())
    answer = send(s, bytes([auth.STEP_CHALLENGE]) + bytes(range(32)))  # step 1 twice
    assert (answer.status, answer.close) == (Status.EINVAL, True) and "twice" in answer.reason
    for payload in (b"", b"\x03" + bytes(32)):
        answer = send(server(), payload)
        assert (answer.status, answer.close) == (Status.EINVAL, True) and "unknown" in answer.reason
    c = client()
    with pytest.raises(ReplicaAuthError, match="before AUTH step 1"):
        c.answer(bytes(64))


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_bad_sizes_are_refused(size: int) -> None:
    answer = send(server(), bytes([auth.STEP_CHALLENGE]) + bytes(size))
    assert (answer.status, answer.close) == (Status.EINVAL, True) and "32-byte nonce" in answer.reason
    c, s = client(), server()
    send(s, c.challenge())
    answer = send(s, bytes([auth.STEP_PROOF]) + bytes(size))
    assert (answer.status, answer.close) == (Status.EINVAL, True) and "32-byte proof" in answer.reason
    c = client()
    c.challenge()
    if size < 64:
        with pytest.raises(ReplicaAuthError, match="AUTH answer is"):
            c.answer(bytes(size))
    c = client()
    c.challenge()
    with pytest.raises(ReplicaAuthError, match="AUTH answer is"):
        c.answer(bytes(64 + auth.MAX_VOLUME_ID + 1 + size))


def test_the_client_checks_the_volume_before_proving_itself() -> None:
    c, s = client(volume="another-volume"), server()
    first = send(s, c.challenge())
    with pytest.raises(ReplicaAuthError, match=f"holds volume {VOLUME}, not another-volume"):
        c.answer(first.payload)


def test_a_proof_is_bound_to_the_volume_id() -> None:
    c, s = client(), server(volume=VOLUME)
    first = send(s, c.challenge())
    forged = first.payload[:64] + b"some-other-volume"  # an on-path attacker edits the volume id
    with pytest.raises(ReplicaAuthError, match="failed to prove"):
        c.answer(forged)


@given(st.lists(st.binary(max_size=80), max_size=6), st.lists(st.sampled_from(list(Op)), max_size=6))
@example([b"\x01" + bytes(32), b"\x02" + bytes(32)], [Op.AUTH, Op.AUTH])
@example([b"\x02" + bytes(32)], [Op.AUTH])
def test_no_sequence_without_the_secret_authenticates(payloads: list[bytes], ops: list[Op]) -> None:
    """Whatever a stranger sends, it never gets in, and the machine only ever returns answers."""
    s = server()
    for payload, op in zip(payloads, ops + [Op.AUTH] * len(payloads), strict=False):
        answer = s.receive(Frame(op, 1, payload=payload))
        assert isinstance(answer, auth.Answer)
        assert not answer.done and not s.authenticated
        if answer.close:
            assert answer.status != Status.OK
            break


def test_secret_files_and_masking(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    base = Path(str(tmp_path))
    good = base / "good"
    good.write_text(auth.new_secret() + "\n")
    assert len(auth.read_secret_file(good, "--secret-file")) == 64
    short = base / "short"
    short.write_text("tooshort\n")
    with pytest.raises(ConfigError, match=r"--secret-file: the secret in .*short is 8 bytes; at least 16"):
        auth.read_secret_file(short, "--secret-file")
    with pytest.raises(ConfigError, match="cannot read secret file"):
        auth.read_secret_file(base / "missing", "spec")
    creds = auth.Credentials(b"s" * 32)
    assert "sss" not in repr(creds) and "********" in repr(creds)
    assert "sss" not in repr(auth.ServerSecurity(b"s" * 32))


def test_tls_files_are_all_or_none() -> None:
    assert auth.tls_files(None, None, None, "spec") is None
    with pytest.raises(ConfigError, match="missing tls_key, tls_ca"):
        auth.tls_files("c.pem", None, None, "spec")


@given(st.binary(max_size=200))
@example(bytes(64))
@example(bytes(64) + b"\xff\xfe")
def test_any_answer_to_step_1_either_fails_cleanly_or_was_made_with_the_secret(payload: bytes) -> None:
    c = client()
    c.challenge()
    with pytest.raises(ReplicaAuthError):
        c.answer(payload)
