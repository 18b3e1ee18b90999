"""MAXIMUM TRANSFER LENGTH: advertised in the Block Limits VPD page and enforced on every path."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from .helpers import NEXUS, Disk, good, read10, read16, sense_of, write10, write16

MAX = 16
INVALID_FIELD = (5, 0x24, 0)


@pytest.fixture
def disk() -> Iterator[Disk]:
    d = Disk(max_transfer_blocks=MAX)
    yield d
    d.close()


def test_block_limits_page_advertises_it(disk: Disk) -> None:
    page = good(disk.cmd(bytes([0x12, 1, 0xB0, 0, 0xFF, 0])))
    assert struct.unpack_from(">I", page, 8)[0] == MAX  # MAXIMUM TRANSFER LENGTH
    assert struct.unpack_from(">I", page, 12)[0] <= MAX  # OPTIMAL TRANSFER LENGTH


@pytest.mark.parametrize(
    "cdb",
    [
        read10(0, MAX + 1),
        read16(0, MAX + 1),
        struct.pack(">BBIIBB", 0xA8, 0, 0, MAX + 1, 0, 0),  # READ(12)
        write10(0, MAX + 1),
        write16(0, MAX + 1),
        struct.pack(">BBIBHB", 0x2F, 0, 0, 0, MAX + 1, 0),  # VERIFY(10), no data compared: reads the medium
    ],
)
def test_longer_commands_get_invalid_field_in_cdb(disk: Disk, cdb: bytes) -> None:
    data = bytes((MAX + 1) * 512) if cdb[0] in (0x2A, 0x8A) else None
    assert sense_of(disk.cmd(cdb, data)) == INVALID_FIELD
    assert disk.backend.writes == []


def test_the_limit_itself_is_fine(disk: Disk) -> None:
    good(disk.cmd(write10(0, MAX), bytes(MAX * 512)))
    assert len(good(disk.cmd(read10(0, MAX)))) == MAX * 512


def test_the_synchronous_read_path_checks_it_too(disk: Disk) -> None:
    lu = disk.luns[1]
    disk.loop.run_until_complete(lu.open())
    rsp = disk.luns.execute_now(1, read16(0, MAX + 1), NEXUS)
    assert rsp is not None and sense_of(rsp) == INVALID_FIELD
