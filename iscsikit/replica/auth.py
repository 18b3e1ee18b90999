"""Replica authentication (protocol revision 3): the shared-secret handshake, sans-IO, and TLS set-up.

A replica server started with a secret (``iscsikit replica serve ... --secret-file F``) answers
nothing but the handshake until the peer has proved it knows the secret, and proves itself to the
peer in the same exchange. The frames (op AUTH, ``docs/replica-protocol.md``, "Authentication")::

    client -> server  AUTH  0x01 | Nc (32 random bytes)
    server -> client  OK    Ns (32 random bytes) | Ps (32) | volume id (UTF-8, 0 to 64 bytes)
    client -> server  AUTH  0x02 | Pc (32)
    server -> client  OK    (empty): the connection is authenticated

    Ps = HMAC-SHA256(secret, SERVER_LABEL | Nc | Ns | len(vid) | vid)
    Pc = HMAC-SHA256(secret, CLIENT_LABEL | Nc | Ns | len(vid) | vid)

Both nonces are in both proofs, so neither side can replay an old exchange (the other side's
nonce is fresh); the labels differ per direction, so a proof cannot be reflected back to the
side that made it. The volume id is the server's ``volume_id``, or the empty string while the
replica is fresh (no controller has given it one yet); a pulling replica checks it against the
volume it was told to pull before it proves itself. Proofs are compared in constant time.

Nothing here reads a socket: :class:`ServerAuth` turns received AUTH requests into
:class:`Answer` objects, :class:`ClientAuth` makes request payloads and checks answers. The
server (:mod:`~iscsikit.replica.server`), the controller's client (:mod:`~iscsikit.replica.client`)
and the pulling replica (:mod:`~iscsikit.replica.pull`) drive them.

Example, a whole handshake::

    >>> client, server = ClientAuth(b"s" * 32), ServerAuth(b"s" * 32, lambda: None)
    >>> answer = server.receive(Frame(Op.AUTH, 1, payload=client.challenge()))
    >>> answer = server.receive(Frame(Op.AUTH, 2, payload=client.answer(answer.payload)))
    >>> (answer.status, answer.done, server.authenticated)
    (<Status.OK: 0>, True, True)
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iscsikit.errors import ConfigError, ReplicaAuthError
from iscsikit.replica.protocol import Frame, Op, Status

NONCE_SIZE = 32
PROOF_SIZE = 32  # HMAC-SHA256
#: The longest volume id bound into the proofs (a UUID is 36).
MAX_VOLUME_ID = 64
#: The shortest secret accepted (``iscsikit replica secret`` makes 64 hex characters).
MIN_SECRET = 16
STEP_CHALLENGE = 1
STEP_PROOF = 2
#: Largest request payload an unauthenticated connection may send (a step byte and 32 bytes).
MAX_AUTH_PAYLOAD = 64
#: A connection must finish its TLS and AUTH handshakes within this many seconds.
AUTH_TIMEOUT = 10.0
#: At most this many connections may be in their handshakes at once; more are refused.
MAX_PENDING = 16
#: The revision that brought AUTH.
AUTH_REVISION = 3

SERVER_LABEL = b"iscsikit replica auth r3: server proof\0"
CLIENT_LABEL = b"iscsikit replica auth r3: client proof\0"


def proof(secret: bytes, label: bytes, client_nonce: bytes, server_nonce: bytes, volume_id: str) -> bytes:
    """The keyed hash one side shows: HMAC-SHA256 over the label, both nonces and the volume id."""
    vid = volume_id.encode()
    return hmac.new(secret, label + client_nonce + server_nonce + bytes([len(vid)]) + vid, hashlib.sha256).digest()


def required_message(op_name: str) -> str:
    """What a server with a secret answers to any request before the handshake (old peers too)."""
    return (
        f"authentication required: this replica server has a secret and answers {op_name} only after "
        f"the AUTH handshake of protocol revision {AUTH_REVISION}; give the controller the same secret "
        "(LUN spec secret_file=) and run a version that speaks revision 3"
    )


# --------------------------------------------------------------------------------------
# Server side


class State(enum.Enum):
    CHALLENGE = "waiting for AUTH step 1"
    PROOF = "waiting for AUTH step 2"
    DONE = "authenticated"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server sends for one request during the handshake.

    ``close``: close the connection once the answer is sent (every refusal does); ``done``: the
    connection is authenticated from the next request on; ``reason``: a refusal, for the log.
    """

    status: Status
    payload: bytes = b""
    close: bool = False
    done: bool = False
    reason: str = ""


class ServerAuth:
    """The server's side of the handshake on one connection.

    ``volume_id`` is called at step 1 (the replica's volume id, None while fresh); ``nonce``
    makes the server's nonce (fresh random bytes; tests may pass their own).
    """

    def __init__(
        self,
        secret: bytes,
        volume_id: Callable[[], str | None],
        nonce: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._secret = secret
        self._volume_id = volume_id
        self._nonce = nonce
        self.state = State.CHALLENGE
        self._client_nonce = b""
        self._server_nonce = b""
        self._vid = ""

    @property
    def authenticated(self) -> bool:
        return self.state == State.DONE

    def _refuse(self, status: Status, reason: str) -> Answer:
        self.state = State.FAILED
        return Answer(status, reason.encode(), close=True, reason=reason)

    def receive(self, frame: Frame) -> Answer:
        """The answer to a request received before the connection is authenticated."""
        if self.state == State.DONE:
            return Answer(Status.EINVAL, b"already authenticated")
        if self.state == State.FAILED:
            return self._refuse(Status.FENCED, "the handshake already failed")
        if frame.op != Op.AUTH:
            return self._refuse(Status.FENCED, required_message(frame.op.name))
        payload = frame.payload
        step = payload[0] if payload else 0
        if step == STEP_CHALLENGE:
            if self.state != State.CHALLENGE:
                return self._refuse(Status.EINVAL, "AUTH step 1 sent twice")
            if len(payload) != 1 + NONCE_SIZE:
                return self._refuse(
                    Status.EINVAL, f"AUTH step 1 carries a {NONCE_SIZE}-byte nonce, got {len(payload) - 1}"
                )
            self._client_nonce = bytes(payload[1:])
            server_nonce = self._nonce(NONCE_SIZE)
            if len(server_nonce) != NONCE_SIZE or server_nonce == self._client_nonce:
                return self._refuse(Status.EINVAL, "the client's nonce repeats the server's")
            self._server_nonce = server_nonce
            self._vid = self._volume_id() or ""
            vid = self._vid.encode()
            if len(vid) > MAX_VOLUME_ID:  # pragma: no cover - volume ids are UUIDs
                return self._refuse(Status.STATE, f"the volume id is longer than {MAX_VOLUME_ID} bytes")
            mine = proof(self._secret, SERVER_LABEL, self._client_nonce, server_nonce, self._vid)
            self.state = State.PROOF
            return Answer(Status.OK, server_nonce + mine + vid)
        if step == STEP_PROOF:
            if self.state != State.PROOF:
                return self._refuse(Status.EINVAL, "AUTH step 2 before step 1")
            if len(payload) != 1 + PROOF_SIZE:
                return self._refuse(
                    Status.EINVAL, f"AUTH step 2 carries a {PROOF_SIZE}-byte proof, got {len(payload) - 1}"
                )
            want = proof(self._secret, CLIENT_LABEL, self._client_nonce, self._server_nonce, self._vid)
            if not hmac.compare_digest(bytes(payload[1:]), want):
                return self._refuse(
                    Status.FENCED, "authentication failed: wrong proof (the controller's secret is not this server's)"
                )
            self.state = State.DONE
            return Answer(Status.OK, done=True)
        return self._refuse(Status.EINVAL, f"AUTH step {step} is unknown (1: nonce, 2: proof)")


# --------------------------------------------------------------------------------------
# Client side


class ClientAuth:
    """The connecting side of the handshake (the controller, or a replica pulling from its source).

    ``volume_id``, when given, is the volume the server must hold: checked before this side
    proves itself. Errors raise :class:`ReplicaAuthError`.
    """

    def __init__(
        self, secret: bytes, *, volume_id: str | None = None, nonce: Callable[[int], bytes] = secrets.token_bytes
    ) -> None:
        self._secret = secret
        self._want_volume = volume_id
        self._nonce = nonce
        self._client_nonce = b""
        self.volume_id: str | None = None  # what the server bound into its proof ("" while fresh)

    def challenge(self) -> bytes:
        """The payload of AUTH step 1."""
        if self._client_nonce:
            raise ReplicaAuthError("AUTH step 1 was already sent on this connection")
        self._client_nonce = self._nonce(NONCE_SIZE)
        return bytes([STEP_CHALLENGE]) + self._client_nonce

    def answer(self, payload: bytes) -> bytes:
        """Check the server's answer to step 1 (its proof); the payload of AUTH step 2."""
        if not self._client_nonce:
            raise ReplicaAuthError("an AUTH answer before AUTH step 1 was sent")
        if self.volume_id is not None:
            raise ReplicaAuthError("a second AUTH answer to step 1")
        if not 2 * NONCE_SIZE <= len(payload) <= 2 * NONCE_SIZE + MAX_VOLUME_ID:
            raise ReplicaAuthError(
                f"the AUTH answer is {len(payload)} bytes; want a nonce, a proof and a volume id "
                f"({2 * NONCE_SIZE} to {2 * NONCE_SIZE + MAX_VOLUME_ID})"
            )
        server_nonce, shown = bytes(payload[:NONCE_SIZE]), bytes(payload[NONCE_SIZE : 2 * NONCE_SIZE])
        try:
            vid = bytes(payload[2 * NONCE_SIZE :]).decode("utf-8")
        except UnicodeDecodeError:
            raise ReplicaAuthError("the volume id in the AUTH answer is not UTF-8") from None
        if server_nonce == self._client_nonce:
            raise ReplicaAuthError("the server's nonce repeats ours (a reflected challenge)")
        want = proof(self._secret, SERVER_LABEL, self._client_nonce, server_nonce, vid)
        if not hmac.compare_digest(shown, want):
            raise ReplicaAuthError(
                "the replica server failed to prove that it knows the secret (its secret differs from ours)"
            )
        if self._want_volume is not None and vid != self._want_volume:
            raise ReplicaAuthError(f"the server holds volume {vid or '(none: fresh)'}, not {self._want_volume}")
        self.volume_id = vid
        return bytes([STEP_PROOF]) + proof(self._secret, CLIENT_LABEL, self._client_nonce, server_nonce, vid)


# --------------------------------------------------------------------------------------
# Secrets, TLS contexts, addresses


def new_secret() -> str:
    """A new random secret: 32 random bytes as 64 hex characters."""
    return secrets.token_hex(32)


def read_secret_file(path: str | os.PathLike[str], where: str) -> bytes:
    """The secret in ``path`` (surrounding white space dropped); ConfigError naming ``where``."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read secret file {file}: {exc.strerror or exc}") from None
    secret = data.strip()
    if len(secret) < MIN_SECRET:
        raise ConfigError(
            f"{where}: the secret in {file} is {len(secret)} bytes; at least {MIN_SECRET} are required "
            "(make one with `iscsikit replica secret`)"
        )
    return secret


def _tls_context(purpose: ssl.Purpose, cert: str, key: str, ca: str, where: str) -> ssl.SSLContext:
    for name, value in (("tls_cert", cert), ("tls_key", key), ("tls_ca", ca)):
        if not Path(value).is_file():
            raise ConfigError(f"{where}: {name} {value} is not a readable file")
    try:
        ctx = ssl.create_default_context(purpose, cafile=ca)
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{where}: cannot load the TLS certificate {cert}, key {key} or CA {ca}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED  # mutual: the server requires the client's certificate too
    return ctx


def server_tls(cert: str, key: str, ca: str, where: str) -> ssl.SSLContext:
    """A replica server's TLS context: its certificate, client certificates required and checked against ``ca``."""
    return _tls_context(ssl.Purpose.CLIENT_AUTH, cert, key, ca, where)


def client_tls(cert: str, key: str, ca: str, where: str) -> ssl.SSLContext:
    """A connecting side's TLS context: its certificate, the server's checked against ``ca`` and its address."""
    return _tls_context(ssl.Purpose.SERVER_AUTH, cert, key, ca, where)


@dataclass(frozen=True, slots=True, repr=False)
class Credentials:
    """What a connecting side (controller, pulling replica) needs: the secret and/or a TLS context."""

    secret: bytes | None = None
    tls: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"Credentials(secret={'********' if self.secret else None}, tls={self.tls is not None})"


@dataclass(frozen=True, slots=True, repr=False)
class ServerSecurity:
    """A replica server's secret and TLS contexts: ``tls`` to serve, ``peer.tls`` to pull from another."""

    secret: bytes | None = None
    tls: ssl.SSLContext | None = None
    peer: Credentials = Credentials()

    @property
    def guarded(self) -> bool:
        """Connections must finish a handshake (TLS, AUTH or both) before they are served."""
        return self.secret is not None or self.tls is not None

    def __repr__(self) -> str:
        return f"ServerSecurity(secret={'********' if self.secret else None}, tls={self.tls is not None})"


def tls_files(cert: str | None, key: str | None, ca: str | None, where: str) -> tuple[str, str, str] | None:
    """The three TLS files, all or none; ConfigError naming what is missing."""
    given = {"tls_cert": cert, "tls_key": key, "tls_ca": ca}
    if not any(given.values()):
        return None
    missing = [k for k, v in given.items() if not v]
    if missing:
        raise ConfigError(f"{where}: TLS needs tls_cert, tls_key and tls_ca together; missing {', '.join(missing)}")
    return str(cert), str(key), str(ca)
