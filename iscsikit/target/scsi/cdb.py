"""CDB layouts: opcode numbers and the field decoders shared by several commands.

Only what more than one command needs lives here; command-specific fields are read where
the command is implemented. Big-endian everywhere (SPC-4 3.1).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from iscsikit.target.scsi import sense

__all__ = ["Op", "RwCdb", "cdb_length", "decode_rw"]


class Op(enum.IntEnum):
    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    MODE_SENSE_6 = 0x1A
    START_STOP_UNIT = 0x1B
    SEND_DIAGNOSTIC = 0x1D
    PREVENT_ALLOW = 0x1E
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    WRITE_VERIFY_10 = 0x2E
    VERIFY_10 = 0x2F
    PRE_FETCH_10 = 0x34
    SYNCHRONIZE_CACHE_10 = 0x35
    READ_DEFECT_DATA_10 = 0x37
    WRITE_BUFFER = 0x3B
    READ_BUFFER = 0x3C
    WRITE_SAME_10 = 0x41
    UNMAP = 0x42
    MODE_SELECT_10 = 0x55
    RESERVE_10 = 0x56
    RELEASE_10 = 0x57
    MODE_SENSE_10 = 0x5A
    PERSISTENT_RESERVE_IN = 0x5E
    PERSISTENT_RESERVE_OUT = 0x5F
    EXTENDED_COPY = 0x83
    RECEIVE_COPY_RESULTS = 0x84
    READ_16 = 0x88
    COMPARE_AND_WRITE = 0x89
    WRITE_16 = 0x8A
    ORWRITE_16 = 0x8B
    WRITE_VERIFY_16 = 0x8E
    VERIFY_16 = 0x8F
    PRE_FETCH_16 = 0x90
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    SERVICE_ACTION_IN_16 = 0x9E
    REPORT_LUNS = 0xA0
    MAINTENANCE_IN = 0xA3
    READ_12 = 0xA8
    READ_DEFECT_DATA_12 = 0xB7
    WRITE_12 = 0xAA
    WRITE_VERIFY_12 = 0xAE
    VERIFY_12 = 0xAF


# SERVICE ACTION IN(16) service actions
SAI_READ_CAPACITY_16 = 0x10
SAI_GET_LBA_STATUS = 0x12
# MAINTENANCE IN service actions
MI_REPORT_TARGET_PORT_GROUPS = 0x0A
MI_REPORT_SUPPORTED_OPCODES = 0x0C
MI_REPORT_SUPPORTED_TMFS = 0x0D


def cdb_length(opcode: int) -> int:
    """CDB length from the opcode's group code (SPC-4 4.2.5.1); 0 for vendor/reserved groups."""
    return (6, 10, 10, 0, 16, 12, 0, 0)[opcode >> 5]


@dataclass(frozen=True, slots=True)
class RwCdb:
    """The fields READ/WRITE/VERIFY-style CDBs share."""

    lba: int
    blocks: int
    flags: int  # byte 1: RDPROTECT/WRPROTECT(7-5), DPO(4), FUA(3), ...
    group: int  # group number byte

    @property
    def fua(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def dpo(self) -> bool:
        return bool(self.flags & 0x10)

    @property
    def protect(self) -> int:
        return self.flags >> 5


def decode_rw(cdb: bytes) -> RwCdb:
    """LBA, transfer length and flags of a 6/10/12/16-byte block command.

    READ(6)/WRITE(6): 21-bit LBA, and a transfer length of 0 means 256 blocks (SBC-3 5.8).
    """
    op = cdb[0]
    size = cdb_length(op)
    if len(cdb) < size:
        raise sense.INVALID_FIELD_IN_CDB.error(field=0)
    if size == 6:
        lba = ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3]
        blocks = cdb[4] or 256
        return RwCdb(lba, blocks, 0, 0)
    if size == 10:
        lba, group, blocks = struct.unpack_from(">IBH", cdb, 2)
        return RwCdb(lba, blocks, cdb[1], group & 0x3F)
    if size == 12:
        lba, blocks, group = struct.unpack_from(">IIB", cdb, 2)
        return RwCdb(lba, blocks, cdb[1], group & 0x3F)
    lba, blocks, group = struct.unpack_from(">QIB", cdb, 2)
    return RwCdb(lba, blocks, cdb[1], group & 0x3F)


def alloc_len(cdb: bytes, offset: int, width: int) -> int:
    """An allocation/parameter list length field of ``width`` bytes at ``offset``."""
    return int.from_bytes(cdb[offset : offset + width], "big")
