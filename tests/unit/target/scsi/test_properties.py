"""Property tests: arbitrary CDBs never crash the disk, and data behaves like a byte array."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iscsikit.target.scsi.sense import parse_sense
from tests.support.profiles import examples

from .helpers import NEXUS, NEXUS2, Disk, good, read16, write16

BS = 512
SIZE_BLOCKS = 256
VALID_STATUS = {0x00, 0x02, 0x18}


def _check(rsp_status: int, sense: bytes, length: int, cdb: bytes) -> None:
    assert rsp_status in VALID_STATUS
    if rsp_status == 0x02:
        key, asc, _ = parse_sense(sense)
        assert key in (0x2, 0x3, 0x5, 0x6, 0x7, 0x0E) and asc
        assert sense[0] & 0x7F == 0x70 and len(sense) == 18
    else:
        assert sense == b""


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cdb=st.binary(min_size=0, max_size=16),
    data=st.one_of(st.none(), st.binary(max_size=3 * BS)),
    lun=st.sampled_from([0, 1, 9]),
)
def test_arbitrary_cdbs_get_a_valid_answer(cdb: bytes, data: bytes | None, lun: int) -> None:
    disk = Disk(size=SIZE_BLOCKS * BS)
    try:
        rsp = disk.cmd(cdb, data, lun=lun)
        _check(rsp.status, rsp.sense, rsp.data_length, cdb)
        if lun == 1 and rsp.status == 0 and cdb and cdb[0] in (0x08, 0x28, 0xA8, 0x88):
            assert rsp.data_length % BS == 0
    finally:
        disk.close()


_known_ops = st.sampled_from(
    [0x00, 0x03, 0x08, 0x0A, 0x12, 0x15, 0x16, 0x17, 0x1A, 0x1B, 0x25, 0x28, 0x2A, 0x2E, 0x2F, 0x34, 0x35, 0x41,
     0x42, 0x55, 0x5A, 0x5E, 0x5F, 0x88, 0x89, 0x8A, 0x8B, 0x8E, 0x8F, 0x90, 0x91, 0x93, 0x9E, 0xA0, 0xA3, 0xA8,
     0xAA, 0xAE, 0xAF]
)  # fmt: skip


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(op=_known_ops, rest=st.binary(min_size=15, max_size=15), data=st.binary(max_size=2 * BS))
def test_known_opcodes_with_random_fields(op: int, rest: bytes, data: bytes) -> None:
    disk = Disk(size=SIZE_BLOCKS * BS)
    try:
        for nexus in (NEXUS, NEXUS2):
            rsp = disk.cmd(bytes([op]) + rest, data, nexus=nexus)
            _check(rsp.status, rsp.sense, rsp.data_length, bytes([op]) + rest)
    finally:
        disk.close()


@settings(max_examples=examples(60), deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["write", "unmap", "ws"]),
            st.integers(0, SIZE_BLOCKS - 1),
            st.integers(1, 16),
            st.integers(0, 255),
        ),
        max_size=25,
    )
)
def test_reads_match_a_byte_array_model(ops: list[tuple[str, int, int, int]]) -> None:
    disk = Disk(size=SIZE_BLOCKS * BS)
    model = bytearray(SIZE_BLOCKS * BS)
    try:
        for kind, lba, blocks, fill in ops:
            blocks = min(blocks, SIZE_BLOCKS - lba)
            span = slice(lba * BS, (lba + blocks) * BS)
            if kind == "write":
                payload = bytes([fill]) * (blocks * BS)
                good(disk.cmd(write16(lba, blocks), payload))
                model[span] = payload
            elif kind == "unmap":
                params = struct.pack(">HH4xQI4x", 22, 16, lba, blocks)
                good(disk.cmd(bytes([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]), params))
                model[span] = bytes(blocks * BS)
            else:
                good(disk.cmd(struct.pack(">BBQIBB", 0x93, 0, lba, blocks, 0, 0), bytes([fill]) * BS))
                model[span] = bytes([fill]) * (blocks * BS)
        assert good(disk.cmd(read16(0, SIZE_BLOCKS))) == bytes(model)
    finally:
        disk.close()
