"""CRC32C digests: the known check value, continuation, and the wire byte order.

A digest both ends compute the same wrong way would still pass the end-to-end tests; these pin
the values against the standard (RFC 7143 Appendix B: CRC32C; the check value of "123456789"
is 0xE3069283) and the little-endian byte order every initiator uses.
"""

from __future__ import annotations

import pytest

from iscsikit.target.proto.digest import crc32c, data_digest, digest_bytes, header_digest

CHECK = 0xE3069283
CHECK_WIRE = bytes([0x83, 0x92, 0x06, 0xE3])


def test_crc32c_check_value_and_continuation() -> None:
    assert crc32c(b"123456789") == CHECK
    assert crc32c(b"") == 0
    assert crc32c(b"6789", crc32c(b"12345")) == CHECK
    assert crc32c(memoryview(bytearray(b"123456789"))) == CHECK


def test_digest_bytes_are_little_endian() -> None:
    assert digest_bytes(CHECK) == CHECK_WIRE
    assert digest_bytes(0) == b"\0\0\0\0"


def test_header_digest_of_a_header() -> None:
    assert header_digest(b"123456789") == CHECK_WIRE
    bhs = bytes(range(48))
    assert header_digest(bhs) == digest_bytes(crc32c(bhs))


@pytest.mark.parametrize(
    "pieces", [[b"123456789"], [b"1234", b"", b"56789"], [memoryview(b"12"), bytearray(b"3456789")]]
)
def test_data_digest_over_pieces_equals_the_digest_of_the_whole(pieces: list[bytes]) -> None:
    assert data_digest(pieces) == CHECK_WIRE


def test_data_digest_of_nothing_is_zero() -> None:
    assert data_digest([]) == b"\0\0\0\0"
