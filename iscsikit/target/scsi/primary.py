"""SPC commands every device type has: TEST UNIT READY, REQUEST SENSE, INQUIRY, MODE SENSE/SELECT,
START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL, REPORT SUPPORTED OPERATION CODES and TASK MANAGEMENT
FUNCTIONS.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from iscsikit.target.scsi import inquiry as inq
from iscsikit.target.scsi import sense
from iscsikit.target.scsi.cdb import MI_REPORT_SUPPORTED_OPCODES, MI_REPORT_SUPPORTED_TMFS, Op
from iscsikit.target.scsi.core import ScsiResponse
from iscsikit.target.scsi.opcodes import CDB_USAGE, SERVICE_ACTIONS

if TYPE_CHECKING:
    from iscsikit.target.scsi.lu import Handler, LogicalUnit, Request

__all__ = ["HANDLERS"]


def _reserved(cdb: bytes, byte: int, mask: int = 0xFF) -> None:
    """Fail with INVALID FIELD IN CDB if reserved bits in ``cdb[byte]`` are set."""
    if cdb[byte] & mask:
        raise sense.INVALID_FIELD_IN_CDB.error(field=byte)


async def test_unit_ready(lu: LogicalUnit, req: Request) -> ScsiResponse:
    return ScsiResponse.good()


async def request_sense(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """Pending unit attention as data (and cleared), else NO SENSE (SPC-4 6.39)."""
    cdb = req.cdb
    descriptor = bool(cdb[1] & 0x01)
    alloc = cdb[4]
    code = lu.ua.pop(req.nexus.session_id) or sense.NO_SENSE
    return ScsiResponse.good(sense.build_sense(code, descriptor)[:alloc])


async def inquiry_cmd(lu: LogicalUnit, req: Request) -> ScsiResponse:
    return inq.inquiry(lu, req.cdb, req.nexus)


async def mode_sense(lu: LogicalUnit, req: Request) -> ScsiResponse:
    cdb = req.cdb
    ten = cdb[0] == Op.MODE_SENSE_10
    data = lu.mode.sense_data(
        cdb, ten=ten, num_blocks=lu.num_blocks, block_size=lu.block_size, write_protected=lu.write_protected
    )
    alloc = struct.unpack_from(">H", cdb, 7)[0] if ten else cdb[4]
    return ScsiResponse.good(data[:alloc])


async def mode_select(lu: LogicalUnit, req: Request) -> ScsiResponse:
    cdb = req.cdb
    ten = cdb[0] == Op.MODE_SELECT_10
    length = struct.unpack_from(">H", cdb, 7)[0] if ten else cdb[4]
    if not cdb[1] & 0x10 and length:  # PF=0: vendor-specific page format, which we do not have
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=4)
    data = bytes(req.data_out[:length])
    if len(data) < length:
        raise sense.PARAM_LIST_LENGTH_ERROR.error()
    if lu.mode.select(cdb, data, ten=ten):
        lu.ua.post_all(sense.MODE_PARAMETERS_CHANGED, except_session=req.nexus.session_id)
    return ScsiResponse.good()


async def start_stop_unit(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """Power conditions and LOEJ mean nothing for a virtual, non-removable disk: accept, and flush on STOP."""
    cdb = req.cdb
    start = cdb[4] & 0x01
    no_flush = cdb[4] & 0x04
    if not start and not no_flush and not cdb[4] & 0xF0:
        await lu.backend.flush()
    return ScsiResponse.good()


async def prevent_allow(lu: LogicalUnit, req: Request) -> ScsiResponse:
    _reserved(req.cdb, 4, 0xFC)
    return ScsiResponse.good()


async def maintenance_in(lu: LogicalUnit, req: Request) -> ScsiResponse:
    sa = req.cdb[1] & 0x1F
    if sa == MI_REPORT_SUPPORTED_OPCODES:
        return report_supported_opcodes(lu, req.cdb)
    if sa == MI_REPORT_SUPPORTED_TMFS:
        return report_supported_tmfs(req.cdb)
    raise sense.INVALID_FIELD_IN_CDB.error(field=1)


def _timeouts() -> bytes:
    # Command timeouts descriptor (SPC-4 6.35.4): length 0x0A, nominal and recommended 0 (unknown).
    return struct.pack(">HBBII", 0x0A, 0, 0, 0, 0)


def _supported(lu: LogicalUnit, op: int) -> bool:
    """UNMAP exists only on thin LUs (elsewhere it is INVALID OPERATION CODE, as on tgt)."""
    return op != Op.UNMAP or lu.thin


def report_supported_opcodes(lu: LogicalUnit, cdb: bytes) -> ScsiResponse:
    """REPORT SUPPORTED OPERATION CODES (SPC-4 6.35), options 000b, 001b, 002b."""
    rctd = bool(cdb[2] & 0x80)
    options = cdb[2] & 0x07
    req_op = cdb[3]
    req_sa = struct.unpack_from(">H", cdb, 4)[0]
    alloc = struct.unpack_from(">I", cdb, 6)[0]
    if options == 0:
        out = bytearray()
        for (op, sa), usage in sorted(CDB_USAGE.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
            if not _supported(lu, op):
                continue
            flags = (0x02 if rctd else 0) | (0x01 if sa is not None else 0)
            out += struct.pack(">BBHBBH", op, 0, sa or 0, 0, flags, len(usage))
            if rctd:
                out += _timeouts()
        data = struct.pack(">I", len(out)) + bytes(out)
        return ScsiResponse.good(data[:alloc])
    if options in (1, 2):
        has_sa = req_op in SERVICE_ACTIONS
        if (options == 1 and has_sa) or (options == 2 and not has_sa):
            raise sense.INVALID_FIELD_IN_CDB.error(field=2)
        found = CDB_USAGE.get((req_op, req_sa if has_sa else None)) if _supported(lu, req_op) else None
        if found is None:
            # SUPPORT 001b: not supported (SPC-4 table 213)
            data = bytes([0, 0x01, 0, 0])
        else:
            data = bytes([0, (0x80 if rctd else 0) | 0x03]) + struct.pack(">H", len(found)) + found
            if rctd:
                data += _timeouts()
        return ScsiResponse.good(data[:alloc])
    raise sense.INVALID_FIELD_IN_CDB.error(field=2)


async def read_defect_data(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """READ DEFECT DATA(10/12) (SBC-3 5.18/5.19): a virtual disk has no defects; an empty list.

    The header echoes the lists and the format asked for (PLISTV/GLISTV say "this list is valid").
    """
    cdb = req.cdb
    # REQ_PLIST, REQ_GLIST, DEFECT LIST FORMAT: byte 2 of the 10-byte CDB, byte 1 of the 12-byte one
    if cdb[0] == Op.READ_DEFECT_DATA_10:
        alloc = struct.unpack_from(">H", cdb, 7)[0]
        data = bytes([0, cdb[2] & 0x1F, 0, 0])
    else:
        alloc = struct.unpack_from(">I", cdb, 6)[0]
        data = bytes([0, cdb[1] & 0x1F, 0, 0, 0, 0, 0, 0])
    return ScsiResponse.good(data[:alloc])


def report_supported_tmfs(cdb: bytes) -> ScsiResponse:
    """ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, I_T NEXUS RESET."""
    alloc = struct.unpack_from(">I", cdb, 6)[0]
    data = bytes([0x80 | 0x40 | 0x20 | 0x08, 0x01, 0, 0])  # ATS ATSS CTSS LURS | ITNRS
    return ScsiResponse.good(data[:alloc])


HANDLERS: dict[int, Handler] = {
    Op.TEST_UNIT_READY: test_unit_ready,
    Op.REQUEST_SENSE: request_sense,
    Op.INQUIRY: inquiry_cmd,
    Op.MODE_SENSE_6: mode_sense,
    Op.MODE_SENSE_10: mode_sense,
    Op.MODE_SELECT_6: mode_select,
    Op.MODE_SELECT_10: mode_select,
    Op.START_STOP_UNIT: start_stop_unit,
    Op.PREVENT_ALLOW: prevent_allow,
    Op.MAINTENANCE_IN: maintenance_in,
    Op.READ_DEFECT_DATA_10: read_defect_data,
    Op.READ_DEFECT_DATA_12: read_defect_data,
}
