"""Fuzz the replica protocol's shared-secret handshake (iscsikit/replica/auth.py) on its frames.

Byte 0 picks the side and the setting; the rest is what the peer sends.

* Server side (bit 0 clear): the byte stream of a connection to a server with a secret, driven as
  ``replica/server.py`` drives it: requests decoded by a ``ServerSession`` limited to
  ``MAX_AUTH_PAYLOAD`` until the handshake is done, each given to ``ServerAuth.receive``, the
  answer sent; a refusal closes the connection. Bits 1-2 pick the volume id the server holds.
* Client side (bit 0 set): the payloads of the server's answers to ``ClientAuth`` (2-byte length
  each); bit 1: the client expects a volume id.

Nonces are fixed (the API takes a nonce function), so the harness can be its own oracle: it
computes the proofs from the formula in docs/replica-protocol.md with ``hmac`` directly.

Invariants:

* ``ServerAuth.receive`` never raises; the session raises only ``ReplicaProtocolError``;
  ``ClientAuth`` raises only ``ReplicaAuthError``;
* before the handshake is done every request but AUTH is refused and the connection closed; a
  request payload over ``MAX_AUTH_PAYLOAD`` never gets through the decoder; after a refusal
  nothing more is read;
* the server is authenticated only by a step 2 carrying exactly the client proof for its own
  nonce and the client's nonce, and proves itself with exactly the server proof; a step-1 answer
  is never more than nonce, proof and volume id;
* the client accepts an answer only if it carries the server proof for its nonce (and the volume
  id it expects), and then answers with exactly the client proof.
"""

from __future__ import annotations

import hashlib
import hmac
import sys

from fuzz._common import allocation_limit, fuzz_main, instrument

with instrument("iscsikit.replica.auth", "iscsikit.replica.protocol", "iscsikit.errors"):
    from iscsikit.errors import ReplicaAuthError, ReplicaProtocolError
    from iscsikit.replica import auth
    from iscsikit.replica.protocol import (
        HEADER_SIZE,
        MAX_PAYLOAD,
        Op,
        PayloadChecksumError,
        ServerSession,
        Status,
        check_request,
        decode_header,
    )

SECRET = b"replica-shared-secret-0123456789"
SERVER_NONCE = bytes(range(0x40, 0x40 + auth.NONCE_SIZE))
CLIENT_NONCE = bytes(range(0x80, 0x80 + auth.NONCE_SIZE))
VOLUMES = (None, "", "6f1c2a7e-3b4d-4e5f-8a9b-0c1d2e3f4a5b", "v" * auth.MAX_VOLUME_ID)
CHUNKS = (0, 1, 36, 37)


def oracle(label: bytes, client_nonce: bytes, server_nonce: bytes, volume_id: str) -> bytes:
    """The proof as docs/replica-protocol.md defines it, computed independently of auth.proof."""
    vid = volume_id.encode()
    message = label + client_nonce + server_nonce + bytes([len(vid)]) + vid
    return hmac.new(SECRET, message, hashlib.sha256).digest()


def _server(config: int, stream: bytes) -> None:
    volume = VOLUMES[(config >> 1) & 3]
    server = auth.ServerAuth(SECRET, lambda: volume, nonce=lambda n: SERVER_NONCE[:n])
    session = ServerSession()
    session.limit_payload(auth.MAX_AUTH_PAYLOAD)
    chunk = CHUNKS[(config >> 3) & 3] or max(1, len(stream))
    client_nonce: bytes | None = None
    fed = 0
    while True:
        try:
            req = session.next_request()
        except PayloadChecksumError as e:
            if server.authenticated:
                continue
            req = e.frame  # the server answers BADCRC; still not authenticated
            assert len(req.payload) <= auth.MAX_AUTH_PAYLOAD
            continue
        except ReplicaProtocolError:
            return  # framing broken: the server closes the connection
        if req is None:
            if fed >= len(stream):
                return
            session.receive_data(stream[fed : fed + chunk])
            fed += chunk
            continue
        if server.authenticated:
            check_request(req)
            assert len(req.payload) <= MAX_PAYLOAD
            continue
        assert len(req.payload) <= auth.MAX_AUTH_PAYLOAD, "a large payload got past the handshake's limit"
        was = server.state
        answer = server.receive(req)
        assert isinstance(answer.status, Status)
        if req.op != Op.AUTH:
            assert answer.close and answer.status != Status.OK, f"{req.op.name} answered before the handshake"
        reply = b"".join(
            session.respond(req, answer.payload)
            if answer.status == Status.OK
            else session.respond_error(req, answer.status, answer.payload.decode())
        )
        assert decode_header(reply[:HEADER_SIZE]).frame.seq == req.seq
        if answer.close:
            assert not answer.done and not server.authenticated and server.state == auth.State.FAILED
            return  # closed after the answer: nothing more is read
        payload = bytes(req.payload)
        if answer.done:
            assert was == auth.State.PROOF and client_nonce is not None
            want = oracle(auth.CLIENT_LABEL, client_nonce, SERVER_NONCE, volume or "")
            assert payload == bytes([auth.STEP_PROOF]) + want, "authenticated without the client's proof"
            assert server.authenticated
            session.limit_payload(MAX_PAYLOAD)
            continue
        # An OK answer that is not the end: step 1, the server's nonce and proof.
        assert answer.status == Status.OK and was == auth.State.CHALLENGE, answer
        assert payload[:1] == bytes([auth.STEP_CHALLENGE]) and len(payload) == 1 + auth.NONCE_SIZE
        client_nonce = payload[1:]
        vid = (volume or "").encode()
        mine = oracle(auth.SERVER_LABEL, client_nonce, SERVER_NONCE, volume or "")
        assert answer.payload == SERVER_NONCE + mine + vid, "the server's step-1 answer is not nonce, proof, volume id"
        assert server.state == auth.State.PROOF


def _client(config: int, data: bytes) -> None:
    want_volume = VOLUMES[2] if config & 2 else None
    client = auth.ClientAuth(SECRET, volume_id=want_volume, nonce=lambda n: CLIENT_NONCE[:n])
    if config & 4:
        try:
            client.answer(data)
        except ReplicaAuthError:
            pass
        else:
            raise AssertionError("an answer accepted before the challenge was sent")
    challenge = client.challenge()
    assert challenge == bytes([auth.STEP_CHALLENGE]) + CLIENT_NONCE
    accepted = 0
    pos = 0
    while pos + 2 <= len(data):
        n = int.from_bytes(data[pos : pos + 2], "little") % 256
        payload = data[pos + 2 : pos + 2 + n]
        pos += 2 + n
        try:
            step2 = client.answer(payload)
        except ReplicaAuthError:
            continue
        accepted += 1
        assert accepted == 1, "a second answer accepted"
        server_nonce, shown = payload[: auth.NONCE_SIZE], payload[auth.NONCE_SIZE : 2 * auth.NONCE_SIZE]
        vid = payload[2 * auth.NONCE_SIZE :].decode()
        assert shown == oracle(auth.SERVER_LABEL, CLIENT_NONCE, server_nonce, vid), "accepted a wrong server proof"
        assert want_volume is None or vid == want_volume
        assert client.volume_id == vid
        assert step2 == bytes([auth.STEP_PROOF]) + oracle(auth.CLIENT_LABEL, CLIENT_NONCE, server_nonce, vid)


def check(data: bytes) -> None:
    if not data:
        return
    config, rest = data[0], data[1:]
    with allocation_limit(8 * len(data) + (256 << 10), "replica handshake"):
        if config & 1:
            _client(config, rest)
        else:
            _server(config, rest)


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
    sys.exit(0)
