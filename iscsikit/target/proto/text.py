"""The ``key=value`` text format of Login and Text PDUs (RFC 7143 6.1).

A data segment is a series of ``key=value`` pairs, each terminated by a NUL byte. Keys are
at most 63 bytes of ``[A-Za-z0-9.\\-+@_]``; values are UTF-8, at most 255 bytes except where
a key allows more (CHAP challenges and responses, SendTargets answers). A key may appear
only once per negotiation.

>>> decode_text(b"HeaderDigest=None\\0MaxRecvDataSegmentLength=262144\\0")
[('HeaderDigest', 'None'), ('MaxRecvDataSegmentLength', '262144')]
>>> encode_text([("AuthMethod", "None")])
b'AuthMethod=None\\x00'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from iscsikit.target.proto.errors import RemoteProtocolError
from iscsikit.target.proto.pdu import Buffer

__all__ = ["MAX_KEY_LEN", "MAX_VALUE_LEN", "decode_text", "encode_text", "split_text"]

MAX_KEY_LEN = 63
MAX_VALUE_LEN = 8192  # generous: CHAP_C/CHAP_R with SHA3-256 in hex are ~66 bytes; some initiators send more
# fullmatch, not ^...$: "$" also matches before a final newline ("Key\n" would pass).
_KEY_RE = re.compile(r"[A-Za-z0-9.\-+@_]{1,63}")

#: Login status "initiator error" (class 2, detail 0): malformed text.
INITIATOR_ERROR = 0x0200


def decode_text(data: Buffer) -> list[tuple[str, str]]:
    """Pairs in order; raises RemoteProtocolError naming the bad pair."""
    raw = bytes(data)
    if not raw:
        return []
    # A final pair without its NUL is tolerated only as an empty tail after the last NUL.
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(raw.split(b"\0")):
        if not item:
            continue  # stray NUL padding (some initiators pad with NULs)
        key_b, sep, value_b = item.partition(b"=")
        try:
            key = key_b.decode("ascii")
            value = value_b.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(
                f"text pair {i} is not valid UTF-8", login_status=INITIATOR_ERROR, reject_reason=0x09
            ) from None
        if not sep:
            raise RemoteProtocolError(
                f"text pair {i} ({key[:40]!r}) has no '='", login_status=INITIATOR_ERROR, reject_reason=0x09
            )
        if not _KEY_RE.fullmatch(key):
            raise RemoteProtocolError(
                f"text key {key[:70]!r} is not a valid key name", login_status=INITIATOR_ERROR, reject_reason=0x09
            )
        if len(value_b) > MAX_VALUE_LEN:
            raise RemoteProtocolError(
                f"value of {key} is {len(value_b)} bytes (limit {MAX_VALUE_LEN})",
                login_status=INITIATOR_ERROR,
                reject_reason=0x09,
            )
        if key in seen:
            raise RemoteProtocolError(f"key {key} appears twice", login_status=INITIATOR_ERROR, reject_reason=0x09)
        seen.add(key)
        pairs.append((key, value))
    return pairs


def encode_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """``key=value\\0`` for each pair."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def split_text(data: bytes, limit: int) -> list[bytes]:
    """Split an encoded text segment into chunks of at most ``limit`` bytes (C-bit continuation).

    Chunks break anywhere (RFC 7143 allows a pair to span PDUs); the receiver joins them.
    """
    if not data:
        return [b""]
    return [data[i : i + limit] for i in range(0, len(data), limit)]
