"""CHAP authentication for iSCSI login, target side (RFC 7143 12.1.3, RFC 1994).

The exchange::

    I: AuthMethod=CHAP,None        T: AuthMethod=CHAP
    I: CHAP_A=7,5                  T: CHAP_A=7 CHAP_I=<id> CHAP_C=0x<challenge>
    I: CHAP_N=<user> CHAP_R=0x<H(id || secret || challenge)>
       [CHAP_I=<id2> CHAP_C=0x<challenge2>]            (mutual: the initiator checks us)
                                   T: [CHAP_N=<target user> CHAP_R=0x<H(id2 || target secret || challenge2)>]

Algorithms are PPP numbers: 5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256. We pick the first one the
initiator lists that we support. Binary values are hex (``0x``) or base64 (``0b``).

Refused on purpose: a second response to one challenge, a mutual challenge equal to ours
(reflection), a mutual challenge seen before in this process (replay: :class:`ChallengeLog`),
mutual CHAP whose two secrets are equal, a response of the wrong length, and secrets shorter
than 12 bytes (checked when credentials are built).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "ALGORITHMS",
    "ChallengeLog",
    "ChapCredentials",
    "ChapError",
    "ChapExchange",
    "chap_response",
    "decode_binary",
    "encode_binary",
]

#: PPP algorithm number -> (hashlib name, name used in config files).
ALGORITHMS: dict[int, tuple[str, str]] = {
    5: ("md5", "MD5"),
    6: ("sha1", "SHA1"),
    7: ("sha256", "SHA256"),
    8: ("sha3_256", "SHA3-256"),
}
MIN_SECRET_LEN = 12


class ChapError(Exception):
    """Authentication failed; the message says why (for the log, never for the initiator)."""


@dataclass(frozen=True, slots=True)
class ChapCredentials:
    """One user name and secret. ``repr`` never shows the secret."""

    user: str
    secret: bytes

    def __post_init__(self) -> None:
        if not self.user:
            raise ValueError("CHAP user name must not be empty")
        if len(self.secret) < MIN_SECRET_LEN:
            raise ValueError(
                f"CHAP secret for {self.user!r} is {len(self.secret)} bytes; at least {MIN_SECRET_LEN} are required"
            )

    def __repr__(self) -> str:
        return f"ChapCredentials(user={self.user!r}, secret=<{len(self.secret)} bytes>)"


def decode_binary(value: str) -> bytes:
    """``0x<hex>`` or ``0b<base64>`` (RFC 7143 6.1 binary-value) to bytes."""
    try:
        if value[:2] in ("0x", "0X"):
            digits = value[2:]
            if len(digits) % 2:
                digits = "0" + digits
            return binascii.unhexlify(digits)
        if value[:2] in ("0b", "0B"):
            return base64.b64decode(value[2:], validate=True)
    except (binascii.Error, ValueError):
        raise ChapError(f"malformed binary value {value[:20]!r}...") from None
    raise ChapError(f"binary value {value[:20]!r} has neither 0x nor 0b prefix")


def encode_binary(data: bytes) -> str:
    return "0x" + data.hex()


def chap_response(algorithm: int, identifier: int, secret: bytes, challenge: bytes) -> bytes:
    """H(identifier || secret || challenge) for a PPP algorithm number."""
    h = hashlib.new(ALGORITHMS[algorithm][0])
    h.update(bytes([identifier]))
    h.update(secret)
    h.update(challenge)
    return h.digest()


class ChallengeLog:
    """Initiator challenges seen recently in this process, to refuse replays (bounded LRU)."""

    def __init__(self, capacity: int = 65536) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity

    def seen_before(self, challenge: bytes) -> bool:
        """Record ``challenge``; True if it was already recorded."""
        if challenge in self._seen:
            self._seen.move_to_end(challenge)
            return True
        self._seen[challenge] = None
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return False


@dataclass(slots=True)
class ChapExchange:
    """One CHAP exchange on one connection.

    ``incoming``: what the initiator must prove (its user/secret). ``outgoing``: our identity
    for mutual CHAP, or None when we cannot authenticate ourselves.
    """

    incoming: ChapCredentials
    outgoing: ChapCredentials | None
    log: ChallengeLog
    algorithms: tuple[int, ...] = (7, 8, 6, 5)
    algorithm: int = 0
    identifier: int = 0
    challenge: bytes = b""

    def choose(self, offered: str) -> list[tuple[str, str]]:
        """Answer CHAP_A: pick the first offered algorithm we support, issue our challenge."""
        for item in offered.split(","):
            item = item.strip()
            if item.isdigit() and int(item) in ALGORITHMS and int(item) in self.algorithms:
                self.algorithm = int(item)
                break
        else:
            raise ChapError(f"no supported CHAP algorithm in {offered!r} (we support {self.algorithms})")
        self.identifier = secrets.randbelow(256)
        size = max(16, hashlib.new(ALGORITHMS[self.algorithm][0]).digest_size)
        self.challenge = secrets.token_bytes(size)
        return [
            ("CHAP_A", str(self.algorithm)),
            ("CHAP_I", str(self.identifier)),
            ("CHAP_C", encode_binary(self.challenge)),
        ]

    def verify(self, keys: dict[str, str]) -> list[tuple[str, str]]:
        """Check CHAP_N/CHAP_R; answer a mutual challenge. Raises ChapError on any failure."""
        if not self.challenge:
            raise ChapError("CHAP_R without a pending challenge (before CHAP_A, or a second response to one)")
        name = keys.get("CHAP_N")
        response = keys.get("CHAP_R")
        if name is None or response is None:
            raise ChapError("CHAP_N and CHAP_R are required")
        got = decode_binary(response)
        expected = chap_response(self.algorithm, self.identifier, self.incoming.secret, self.challenge)
        # Compare name and response both, always, so timing says nothing about which was wrong.
        ok_name = hmac.compare_digest(name.encode(), self.incoming.user.encode())
        ok_resp = hmac.compare_digest(got, expected)
        ours = self.challenge
        self.challenge = b""  # one response per challenge: a second CHAP_R finds none
        if not (ok_name and ok_resp):
            raise ChapError(f"CHAP response for user {name!r} does not match")
        if "CHAP_I" not in keys and "CHAP_C" not in keys:
            return []
        return self._mutual(keys, ours)

    def _mutual(self, keys: dict[str, str], ours: bytes) -> list[tuple[str, str]]:
        if self.outgoing is None:
            raise ChapError("initiator asked for mutual CHAP but the target has no credentials for it")
        ident, chal = keys.get("CHAP_I"), keys.get("CHAP_C")
        if ident is None or chal is None:
            raise ChapError("mutual CHAP needs both CHAP_I and CHAP_C")
        if not ident.isdigit() or int(ident) > 255:
            raise ChapError(f"CHAP_I {ident!r} is not 0..255")
        challenge = decode_binary(chal)
        if not 1 <= len(challenge) <= 1024:
            raise ChapError(f"mutual challenge length {len(challenge)} is out of range")
        if challenge == ours:
            raise ChapError("mutual challenge is our own challenge reflected back")
        if self.log.seen_before(challenge):
            raise ChapError("mutual challenge was used before (replay)")
        if self.outgoing.secret == self.incoming.secret:
            raise ChapError("target and initiator secrets must differ for mutual CHAP")
        answer = chap_response(self.algorithm, int(ident), self.outgoing.secret, challenge)
        return [("CHAP_N", self.outgoing.user), ("CHAP_R", encode_binary(answer))]
