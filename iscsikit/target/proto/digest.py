"""CRC32C header and data digests (RFC 7143 11.1, Appendix B).

Uses the ``crc32c`` C extension (hardware CRC32 instruction, ~17-28 GiB/s here), which accepts
any buffer, including memoryviews of the bytearrays that receive Data-Out payloads;
``google-crc32c`` only takes read-only bytes and would force a copy of every payload.
The digest travels as the little-endian encoding of the CRC register (libiscsi
``lib/socket.c``, Linux ``iscsi_tcp``).
"""

from __future__ import annotations

from collections.abc import Sequence

from crc32c import crc32c as _crc32c

from iscsikit.target.proto.pdu import Buffer

__all__ = ["crc32c", "data_digest", "digest_bytes", "header_digest"]


def crc32c(data: Buffer, value: int = 0) -> int:
    """CRC32C of ``data``, continuing from ``value``.

    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    return int(_crc32c(data, value))


def digest_bytes(value: int) -> bytes:
    """The 4 wire bytes of a CRC32C value."""
    return value.to_bytes(4, "little")


def header_digest(header: Buffer) -> bytes:
    """The 4 digest bytes that follow a BHS (+AHS)."""
    return int(_crc32c(header)).to_bytes(4, "little")


def data_digest(pieces: Sequence[Buffer]) -> bytes:
    """The 4 digest bytes over a data segment given as pieces (padding included by the caller)."""
    value = 0
    for p in pieces:
        value = _crc32c(p, value)
    return int(value).to_bytes(4, "little")
