"""The commands this disk supports, as data: for REPORT SUPPORTED OPERATION CODES and EDTL checks.

``CDB_USAGE`` holds, per (opcode, service action), the CDB usage bitmap SPC-4 6.35.3 asks for:
byte 0 is the opcode, then for each CDB byte the bits the device looks at. The handlers in
:mod:`.primary`, :mod:`.block` and :mod:`.reservations` are the behaviour; a test checks that
every opcode here has a handler and vice versa.
"""

from __future__ import annotations

import struct

from iscsikit.target.scsi.cdb import Op

__all__ = ["CDB_USAGE", "SERVICE_ACTIONS", "data_out_length"]

_RW10 = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0xFF, 0xFF, 0x07])
_RW12 = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x3F, 0x07])
_RW16 = bytes([0xFF] * 12 + [0x3F, 0x07])


def _u(op: int, *rest: int | bytes) -> bytes:
    out = bytearray([op])
    for item in rest:
        out += item if isinstance(item, bytes) else bytes([item])
    return bytes(out)


#: (opcode, service action or None) -> CDB usage data
CDB_USAGE: dict[tuple[int, int | None], bytes] = {
    (Op.TEST_UNIT_READY, None): _u(0x00, 0, 0, 0, 0, 0x07),
    (Op.REQUEST_SENSE, None): _u(0x03, 0x01, 0, 0, 0xFF, 0x07),
    (Op.READ_6, None): _u(0x08, 0x1F, 0xFF, 0xFF, 0xFF, 0x07),
    (Op.WRITE_6, None): _u(0x0A, 0x1F, 0xFF, 0xFF, 0xFF, 0x07),
    (Op.INQUIRY, None): _u(0x12, 0x01, 0xFF, 0xFF, 0xFF, 0x07),
    (Op.MODE_SELECT_6, None): _u(0x15, 0x11, 0, 0, 0xFF, 0x07),
    (Op.RESERVE_6, None): _u(0x16, 0, 0, 0, 0, 0x07),
    (Op.RELEASE_6, None): _u(0x17, 0, 0, 0, 0, 0x07),
    (Op.MODE_SENSE_6, None): _u(0x1A, 0x08, 0xFF, 0xFF, 0xFF, 0x07),
    (Op.START_STOP_UNIT, None): _u(0x1B, 0x01, 0, 0x0F, 0xF7, 0x07),
    (Op.PREVENT_ALLOW, None): _u(0x1E, 0, 0, 0, 0x03, 0x07),
    (Op.READ_CAPACITY_10, None): _u(0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0x07),
    (Op.READ_10, None): _u(0x28, 0xF8, _RW10),
    (Op.WRITE_10, None): _u(0x2A, 0xF8, _RW10),
    (Op.WRITE_VERIFY_10, None): _u(0x2E, 0xF6, _RW10),
    (Op.VERIFY_10, None): _u(0x2F, 0xF6, _RW10),
    (Op.PRE_FETCH_10, None): _u(0x34, 0x02, _RW10),
    (Op.READ_DEFECT_DATA_10, None): _u(0x37, 0, 0x1F, 0, 0, 0, 0, 0xFF, 0xFF, 0x07),
    (Op.SYNCHRONIZE_CACHE_10, None): _u(0x35, 0x02, _RW10),
    (Op.WRITE_SAME_10, None): _u(0x41, 0xF8, _RW10),
    (Op.UNMAP, None): _u(0x42, 0x01, 0, 0, 0, 0, 0x3F, 0xFF, 0xFF, 0x07),
    (Op.MODE_SELECT_10, None): _u(0x55, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07),
    (Op.RESERVE_10, None): _u(0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0x07),
    (Op.RELEASE_10, None): _u(0x57, 0, 0, 0, 0, 0, 0, 0, 0, 0x07),
    (Op.MODE_SENSE_10, None): _u(0x5A, 0x18, 0xFF, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0x07),
    (Op.READ_16, None): _u(0x88, 0xF8, _RW16),
    (Op.COMPARE_AND_WRITE, None): _u(0x89, 0xF8, bytes([0xFF] * 8), 0, 0, 0, 0xFF, 0x3F, 0x07),
    (Op.WRITE_16, None): _u(0x8A, 0xF8, _RW16),
    (Op.ORWRITE_16, None): _u(0x8B, 0xF8, _RW16),
    (Op.WRITE_VERIFY_16, None): _u(0x8E, 0xF6, _RW16),
    (Op.VERIFY_16, None): _u(0x8F, 0xF6, _RW16),
    (Op.PRE_FETCH_16, None): _u(0x90, 0x02, _RW16),
    (Op.SYNCHRONIZE_CACHE_16, None): _u(0x91, 0x02, _RW16),
    (Op.WRITE_SAME_16, None): _u(0x93, 0xF9, _RW16),
    (Op.REPORT_LUNS, None): _u(0xA0, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07),
    (Op.READ_12, None): _u(0xA8, 0xF8, _RW12),
    (Op.WRITE_12, None): _u(0xAA, 0xF8, _RW12),
    (Op.WRITE_VERIFY_12, None): _u(0xAE, 0xF6, _RW12),
    (Op.VERIFY_12, None): _u(0xAF, 0xF6, _RW12),
    (Op.READ_DEFECT_DATA_12, None): _u(0xB7, 0x1F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07),
    # service-action commands
    (Op.SERVICE_ACTION_IN_16, 0x10): _u(0x9E, 0x10, bytes([0xFF] * 8), 0xFF, 0xFF, 0xFF, 0xFF, 0x01, 0x07),
    (Op.SERVICE_ACTION_IN_16, 0x12): _u(0x9E, 0x12, bytes([0xFF] * 8), 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07),
    (Op.MAINTENANCE_IN, 0x0C): _u(0xA3, 0x0C, 0x87, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07),
    (Op.MAINTENANCE_IN, 0x0D): _u(0xA3, 0x0D, 0x80, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07),
    **{
        (Op.PERSISTENT_RESERVE_IN, sa): _u(0x5E, sa, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07) for sa in (0x00, 0x01, 0x02, 0x03)
    },
    **{
        (Op.PERSISTENT_RESERVE_OUT, sa): _u(0x5F, sa, 0xFF, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0x07)
        for sa in (0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06)
    },
}

#: opcodes whose behaviour is chosen by a service action in the low 5 bits of CDB byte 1
SERVICE_ACTIONS = frozenset(op for (op, sa) in CDB_USAGE if sa is not None)

_WRITES_BLOCKS = {
    Op.WRITE_6,
    Op.WRITE_10,
    Op.WRITE_12,
    Op.WRITE_16,
    Op.WRITE_VERIFY_10,
    Op.WRITE_VERIFY_12,
    Op.WRITE_VERIFY_16,
    Op.ORWRITE_16,
}
_VERIFY = {Op.VERIFY_10, Op.VERIFY_12, Op.VERIFY_16}


def data_out_length(cdb: bytes, block_size: int) -> int | None:
    """Bytes of Data-Out the CDB calls for; None for commands that carry no Data-Out."""
    from iscsikit.target.scsi.cdb import cdb_length, decode_rw

    op = cdb[0]
    if len(cdb) < max(cdb_length(op), 6):
        return None
    if op in _WRITES_BLOCKS:
        return decode_rw(cdb).blocks * block_size
    if op in _VERIFY:
        bytchk = (cdb[1] >> 1) & 0x03
        if bytchk == 0:
            return None
        blocks = decode_rw(cdb).blocks
        return block_size if bytchk == 3 else blocks * block_size
    if op in (Op.WRITE_SAME_10, Op.WRITE_SAME_16):
        if op == Op.WRITE_SAME_16 and cdb[1] & 0x01:  # NDOB
            return None
        return block_size
    if op == Op.COMPARE_AND_WRITE:
        return 2 * cdb[13] * block_size
    if op in (Op.UNMAP, Op.MODE_SELECT_10, Op.RESERVE_10, Op.RELEASE_10):
        return int(struct.unpack_from(">H", cdb, 7)[0])
    if op == Op.MODE_SELECT_6:
        return cdb[4]
    if op == Op.PERSISTENT_RESERVE_OUT:
        return int(struct.unpack_from(">I", cdb, 5)[0])
    return None
