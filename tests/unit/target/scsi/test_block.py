"""SBC block commands: data and sense byte for byte, through LunMap.execute."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator

import pytest

from iscsikit.target.backend import Buffer
from iscsikit.target.scsi import LogicalUnit, LuIdentity

from .helpers import (
    NEXUS,
    NEXUS2,
    Disk,
    RecordingBackend,
    caw,
    good,
    make_lu,
    read10,
    read16,
    sense_of,
    unmap_cdb,
    unmap_params,
    write10,
    write16,
    write_same10,
    write_same16,
)

BS = 512
BLOCKS = (8 << 20) // BS
LBA_OOB = (5, 0x21, 0)
INVALID_FIELD = (5, 0x24, 0)


@pytest.fixture
def disk() -> Iterator[Disk]:
    d = Disk()
    yield d
    d.close()


def pattern(blocks: int, seed: int = 1) -> bytes:
    return bytes((seed + i) % 251 for i in range(blocks * BS))


@pytest.mark.parametrize(
    ("write", "read"),
    [
        (bytes([0x0A, 0, 0, 7, 2, 0]), bytes([0x08, 0, 0, 7, 2, 0])),
        (write10(7, 2), read10(7, 2)),
        (struct.pack(">BBIIBB", 0xAA, 0, 7, 2, 0, 0), struct.pack(">BBIIBB", 0xA8, 0, 7, 2, 0, 0)),
        (write16(7, 2), read16(7, 2)),
    ],
)
def test_write_then_read_back_with_every_cdb_size(disk: Disk, write: bytes, read: bytes) -> None:
    payload = pattern(2)
    good(disk.cmd(write, payload))
    assert good(disk.cmd(read)) == payload
    assert good(disk.cmd(read10(6, 1))) == bytes(BS)  # neighbours untouched


def test_read6_transfer_length_zero_means_256_blocks(disk: Disk) -> None:
    assert len(good(disk.cmd(bytes([0x08, 0, 0, 0, 0, 0])))) == 256 * BS


@pytest.mark.parametrize(
    ("lba", "blocks"),
    [(BLOCKS, 1), (BLOCKS - 1, 2), (BLOCKS + 1, 0), (0xFFFFFFFF, 1), (0xFFFFFFFF, 0)],
)
def test_read10_out_of_range(disk: Disk, lba: int, blocks: int) -> None:
    rsp = disk.cmd(read10(lba, blocks))
    assert sense_of(rsp) == LBA_OOB
    assert rsp.sense[0] == 0xF0 and struct.unpack(">I", rsp.sense[3:7])[0] == lba  # VALID + INFORMATION


@pytest.mark.parametrize("lba", [2**64 - 1, 2**63, 1 << (64 - 9)])
def test_read16_huge_lbas_do_not_wrap(disk: Disk, lba: int) -> None:
    assert sense_of(disk.cmd(read16(lba, 1))) == LBA_OOB


def test_zero_blocks_at_the_end_is_fine(disk: Disk) -> None:
    assert good(disk.cmd(read10(BLOCKS, 0))) == b""
    good(disk.cmd(write10(BLOCKS, 0)))
    assert disk.backend.writes == []


@pytest.mark.parametrize("cdb", [read10(0, 1, flags=0x20), write10(0, 1, flags=0xE0), read16(0, 1, flags=0x40)])
def test_protection_information_is_refused(disk: Disk, cdb: bytes) -> None:
    rsp = disk.cmd(cdb, bytes(BS))
    assert sense_of(rsp) == INVALID_FIELD
    assert rsp.sense[15:18] == bytes([0xCD, 0x00, 0x01])  # field pointer: CDB byte 1, bit 5


def test_short_data_out_writes_only_whole_blocks(disk: Disk) -> None:
    good(disk.cmd(write10(0, 2), b"a" * (2 * BS)))
    good(disk.cmd(write10(0, 2), b"b" * (BS + 100)))  # EDTL smaller than the CDB asks for
    assert good(disk.cmd(read10(0, 2))) == b"b" * BS + b"a" * BS
    good(disk.cmd(write10(0, 1), b"c" * 200))  # less than a block: nothing written
    good(disk.cmd(write10(0, 1), b"d" * (3 * BS)))  # more than asked: the extra is ignored
    assert good(disk.cmd(read10(0, 2))) == b"d" * BS + b"a" * BS


def test_fua_and_write_cache(disk: Disk) -> None:
    good(disk.cmd(write10(0, 1), bytes(BS)))
    good(disk.cmd(write10(0, 1, flags=0x08), bytes(BS)))
    assert [fua for _, _, fua in disk.backend.writes] == [False, True]
    # WCE off: every write is write-through
    page = good(disk.cmd(bytes([0x1A, 0x08, 0x08, 0, 255, 0])))[4:]
    body = bytearray(page)
    body[2] &= ~0x04
    good(disk.cmd(bytes([0x15, 0x10, 0, 0, 4 + len(body), 0]), bytes(4) + bytes(body)))
    good(disk.cmd(write10(0, 1), bytes(BS)))
    assert disk.backend.writes[-1][2] is True


@pytest.mark.parametrize("thin", [True, False])
def test_read_only_lu_refuses_every_write(thin: bool) -> None:
    d = Disk({1: make_lu(read_only=True, thin=thin)})
    for cdb, payload in [
        (write10(0, 1), bytes(BS)),
        (write_same16(0, 1), bytes(BS)),
        (write_same16(0, 1, flags=0x08), None),  # UNMAP bit, no data at all: still WRITE PROTECTED
        (unmap_cdb(24), unmap_params((0, 1))),
        (caw(0, 1), bytes(2 * BS)),
        (bytes([0x8E, 0]) + struct.pack(">QIBB", 0, 1, 0, 0), bytes(BS)),
    ]:
        assert sense_of(d.cmd(cdb, payload)) == (7, 0x27, 0)
    good(d.cmd(read10(0, 1)))
    assert d.cmd(bytes([0x1A, 0, 0x3F, 0, 255, 0])).data[0][2] & 0x80  # WP in MODE SENSE
    d.close()


def test_verify(disk: Disk) -> None:
    data = pattern(3)
    good(disk.cmd(write10(10, 3), data))
    good(disk.cmd(bytes([0x2F, 0x02]) + struct.pack(">IBHB", 10, 0, 3, 0), data))  # BYTCHK=1
    good(disk.cmd(bytes([0x2F, 0x00]) + struct.pack(">IBHB", 10, 0, 3, 0)))  # medium verify
    bad = bytearray(data)
    bad[700] ^= 0xFF
    rsp = disk.cmd(bytes([0x2F, 0x02]) + struct.pack(">IBHB", 10, 0, 3, 0), bytes(bad))
    assert sense_of(rsp) == (0x0E, 0x1D, 0)
    assert rsp.sense[0] & 0x80 and struct.unpack(">I", rsp.sense[3:7])[0] == 700
    assert sense_of(disk.cmd(bytes([0x2F, 0x04]) + struct.pack(">IBHB", 10, 0, 3, 0), data)) == INVALID_FIELD


def test_write_and_verify_and_orwrite(disk: Disk) -> None:
    good(disk.cmd(bytes([0x2E, 0x02]) + struct.pack(">IBHB", 3, 0, 1, 0), b"\x0f" * BS))
    good(disk.cmd(bytes([0x8B, 0]) + struct.pack(">QIBB", 3, 1, 0, 0), b"\xa0" * BS))
    assert good(disk.cmd(read10(3, 1))) == b"\xaf" * BS


def test_compare_and_write(disk: Disk) -> None:
    good(disk.cmd(write16(5, 1), b"A" * BS))
    good(disk.cmd(caw(5, 1), b"A" * BS + b"B" * BS))
    assert good(disk.cmd(read16(5, 1))) == b"B" * BS
    verify = bytearray(b"B" * BS)
    verify[17] = 0
    rsp = disk.cmd(caw(5, 1), bytes(verify) + b"C" * BS)
    assert rsp.sense == bytes.fromhex("f0000e00000011" + "0a00000000" + "1d0000000000")
    assert good(disk.cmd(read16(5, 1))) == b"B" * BS  # unchanged after a miscompare


@pytest.mark.parametrize(
    ("cdb", "payload", "expected"),
    [
        (caw(0, 2), bytes(4 * BS), INVALID_FIELD),  # more than the 1-block limit
        (caw(0, 0), bytes(512 * BS), INVALID_FIELD),  # 256 blocks of data with NoLB wrapped to 0
        (caw(0, 1), bytes(BS), INVALID_FIELD),  # half the data
        (caw(BLOCKS, 1), bytes(2 * BS), LBA_OOB),
        (caw(0, 1, flags=0x20), bytes(2 * BS), INVALID_FIELD),
    ],
)
def test_compare_and_write_errors(disk: Disk, cdb: bytes, payload: bytes, expected: tuple[int, int, int]) -> None:
    assert sense_of(disk.cmd(cdb, payload)) == expected


class _SlowReads(RecordingBackend):
    """Reads yield to the loop several times, so a racing write could slip in."""

    async def read(self, offset: int, length: int) -> Buffer:
        for _ in range(5):
            await asyncio.sleep(0)
        return await super().read(offset, length)


def test_compare_and_write_is_atomic_against_concurrent_writes() -> None:
    lu = LogicalUnit(_SlowReads(1 << 20), identity=LuIdentity.from_name("caw"))
    d = Disk({1: lu})
    good(d.cmd(write10(0, 1), b"A" * BS))

    async def race() -> tuple[int, int]:
        caw_task = asyncio.ensure_future(d.luns.execute(1, caw(0, 1), b"A" * BS + b"B" * BS, NEXUS))
        await asyncio.sleep(0)  # CAW holds the range and is inside its read
        write_task = asyncio.ensure_future(d.luns.execute(1, write10(0, 1), b"W" * BS, NEXUS2))
        caw_rsp, write_rsp = await asyncio.gather(caw_task, write_task)
        return caw_rsp.status, write_rsp.status

    assert d.run(race()) == (0, 0)
    # the plain write waited for the CAW, so it is the last one on the medium
    assert good(d.cmd(read10(0, 1))) == b"W" * BS
    d.close()


def test_write_same(disk: Disk) -> None:
    block = pattern(1, seed=9)
    good(disk.cmd(write_same16(100, 300), block))
    assert good(disk.cmd(read16(100, 300))) == block * 300
    good(disk.cmd(write_same10(400, 2), b"x" * BS))
    assert good(disk.cmd(read10(400, 2))) == b"x" * 2 * BS
    # NDOB: zeros without a data block
    good(disk.cmd(write_same16(100, 2, flags=0x01)))
    assert good(disk.cmd(read16(100, 2))) == bytes(2 * BS)


def test_write_same_with_unmap_deallocates_on_thin_lus(disk: Disk) -> None:
    good(disk.cmd(write10(0, 256), b"\xff" * 256 * BS))
    good(disk.cmd(write_same16(0, 256, flags=0x08), bytes(BS)))
    assert disk.backend.unmaps[-1] == (0, 256 * BS)
    assert good(disk.cmd(read10(0, 256))) == bytes(256 * BS)
    # zero blocks = to the end of the LU
    good(disk.cmd(write_same10(BLOCKS - 8, 0, flags=0x08), bytes(BS)))
    assert disk.backend.unmaps[-1] == ((BLOCKS - 8) * BS, 8 * BS)


def test_write_same_errors() -> None:
    thick = Disk(thin=False, size=1 << 30)
    assert sense_of(thick.cmd(write_same16(0, 1, flags=0x08), bytes(BS))) == INVALID_FIELD  # UNMAP, not thin
    assert sense_of(thick.cmd(write_same16(0, 1, flags=0x18), bytes(BS))) == INVALID_FIELD  # ANCHOR
    assert sense_of(thick.cmd(write_same16(0, 1), bytes(BS // 2))) == INVALID_FIELD  # short data block
    assert sense_of(thick.cmd(write_same16(0, 1), bytes(2 * BS))) == INVALID_FIELD  # too much data
    assert sense_of(thick.cmd(write_same10(0, 1, flags=0x01), bytes(BS))) == INVALID_FIELD  # NDOB in WS10
    assert sense_of(thick.cmd(write_same16((1 << 30) // BS, 1), bytes(BS))) == LBA_OOB
    assert sense_of(thick.cmd(write_same16(0, (1 << 16) + 1), bytes(BS))) == INVALID_FIELD  # > max WS length
    thick.close()


def test_unmap(disk: Disk) -> None:
    good(disk.cmd(write10(0, 64), b"\x01" * 64 * BS))
    params = unmap_params((0, 8), (20, 3), (BLOCKS, 0))
    good(disk.cmd(unmap_cdb(len(params)), params))
    got = good(disk.cmd(read10(0, 64)))
    assert got[: 8 * BS] == bytes(8 * BS) and got[20 * BS : 23 * BS] == bytes(3 * BS)
    assert got[8 * BS : 20 * BS] == b"\x01" * 12 * BS
    assert disk.backend.unmaps == [(0, 8 * BS), (20 * BS, 3 * BS)]
    good(disk.cmd(unmap_cdb(0)))  # no parameter list: nothing to do


def test_unmap_errors() -> None:
    thin = Disk(thin=True)
    params = unmap_params((BLOCKS - 1, 2))
    assert sense_of(thin.cmd(unmap_cdb(len(params)), params)) == LBA_OOB
    assert sense_of(thin.cmd(unmap_cdb(4), bytes(4))) == (5, 0x1A, 0)
    many = unmap_params(*[(i, 1) for i in range(257)])
    assert sense_of(thin.cmd(unmap_cdb(len(many)), many)) == (5, 0x26, 0)
    assert thin.backend.unmaps == []  # nothing half done
    thin.close()
    thick = Disk(thin=False)
    assert sense_of(thick.cmd(unmap_cdb(24), unmap_params((0, 1)))) == (5, 0x20, 0)
    thick.close()


def test_synchronize_cache(disk: Disk) -> None:
    good(disk.cmd(bytes([0x35]) + bytes(9)))
    good(disk.cmd(bytes([0x91, 0x02]) + struct.pack(">QIBB", 0, 8, 0, 0)))
    assert disk.backend.flushes == 2
    assert sense_of(disk.cmd(bytes([0x35, 0]) + struct.pack(">IBHB", BLOCKS, 0, 1, 0))) == LBA_OOB


def test_pre_fetch(disk: Disk) -> None:
    good(disk.cmd(bytes([0x34, 0x02]) + struct.pack(">IBHB", BLOCKS - 1, 3, 1, 0)))
    assert sense_of(disk.cmd(bytes([0x90, 0]) + struct.pack(">QIBB", BLOCKS, 1, 0, 0))) == LBA_OOB


def test_get_lba_status(disk: Disk) -> None:
    from .helpers import get_lba_status

    chunk = (64 << 10) // BS  # the memory backend's allocation unit
    good(disk.cmd(write10(0, 2 * chunk), b"\x01" * 2 * chunk * BS))
    data = good(disk.cmd(get_lba_status(0, alloc=8 + 3 * 16)))
    assert struct.unpack(">I", data[:4])[0] == len(data) - 4
    first = struct.unpack(">QIB", data[8:21])
    second = struct.unpack(">QIB", data[24:37])
    assert first == (0, 2 * chunk, 0) and second == (2 * chunk, BLOCKS - 2 * chunk, 1)
    # the first descriptor starts at the requested LBA, whatever it is
    assert struct.unpack(">Q", good(disk.cmd(get_lba_status(5)))[8:16])[0] == 5
    assert sense_of(disk.cmd(get_lba_status(BLOCKS))) == LBA_OOB
    assert sense_of(disk.cmd(get_lba_status(2**64 - 1))) == LBA_OOB


def test_backend_errors_become_sense() -> None:
    from iscsikit.target.backend import BackendError

    class Failing(RecordingBackend):
        async def readv(self, offset: int, length: int) -> list[Buffer]:
            raise BackendError("replica gone", "unavailable")

        async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
            raise BackendError("disk full", "space")

    d = Disk({1: LogicalUnit(Failing(1 << 20), identity=LuIdentity.from_name("f"))})
    assert sense_of(d.cmd(read10(0, 1))) == (2, 0x08, 0)
    assert sense_of(d.cmd(write10(0, 1), bytes(BS))) == (7, 0x27, 7)
    d.close()
