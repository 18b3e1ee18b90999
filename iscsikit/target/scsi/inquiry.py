"""INQUIRY (SPC-4 6.6): standard data and the vital product data pages.

VPD pages: 0x00 supported pages, 0x80 unit serial number, 0x83 device identification,
0xB0 block limits, 0xB1 block device characteristics, 0xB2 logical block provisioning
(listed only when the LU is thin, matching READ CAPACITY(16) LBPME).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from iscsikit.target.scsi import sense
from iscsikit.target.scsi.core import Nexus, ScsiResponse

if TYPE_CHECKING:
    from iscsikit.target.scsi.lu import LogicalUnit

__all__ = ["absent_inquiry", "inquiry", "standard_inquiry", "vpd_page"]

TYPE_DISK = 0x00
TYPE_CONTROLLER = 0x0C  # storage array controller: what an unconfigured LUN 0 reports (as tgt)
TYPE_UNKNOWN = 0x1F

# Version descriptors (SPC-4 table 29): SAM-5, iSCSI, SPC-4, SBC-3
VERSION_DESCRIPTORS = (0x00A0, 0x0960, 0x0460, 0x04C0)

#: UNMAP limits reported in the block limits page; UNMAP checks them.
MAX_UNMAP_BLOCKS = 1 << 20  # per command (a 512 MiB hole per UNMAP with 512-byte blocks)
MAX_UNMAP_DESCRIPTORS = 256
MAX_WRITE_SAME_BLOCKS = 1 << 16
MAX_COMPARE_AND_WRITE_BLOCKS = 1
#: Physical block: 4 KiB, the page and file-system block the backends allocate and punch holes in.
PHYSICAL_BLOCK_BYTES = 4096


def physical_block_exponent(block_size: int) -> int:
    """LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (SBC-3 5.16.2): 3 for 512-byte blocks (as tgt
    reports), 0 for 4 KiB blocks (one logical block is one physical block, not eight)."""
    return max(0, (PHYSICAL_BLOCK_BYTES // block_size).bit_length() - 1)


def max_write_same_blocks(lu: LogicalUnit) -> int:
    """MAXIMUM WRITE SAME LENGTH: at most the maximum transfer length too.

    WRITE SAME carries one block, but initiators size other commands by it: libiscsi's
    WriteSame tests first WRITE that many blocks, which must stay within the transfer limit.
    """
    return min(MAX_WRITE_SAME_BLOCKS, lu.max_transfer_blocks)


# Designator codes
_ASSOC_LU, _ASSOC_PORT, _ASSOC_TARGET = 0x00, 0x10, 0x20
_CODESET_BINARY, _CODESET_ASCII, _CODESET_UTF8 = 1, 2, 3
_PROTO_ISCSI = 5


def _pad(text: str, width: int) -> bytes:
    return text.encode("ascii", "replace")[:width].ljust(width, b" ")


def standard_inquiry(lu: LogicalUnit) -> bytes:
    """96 bytes of standard INQUIRY data for a direct-access block device."""
    buf = bytearray(96)
    buf[0] = TYPE_DISK
    buf[2] = 0x06  # SPC-4
    buf[3] = 0x12  # HISUP, response data format 2
    buf[4] = len(buf) - 5
    buf[5] = 0x00
    buf[6] = 0x00
    buf[7] = 0x02  # CMDQUE
    buf[8:16] = _pad(lu.vendor, 8)
    buf[16:32] = _pad(lu.product, 16)
    buf[32:36] = _pad(lu.revision, 4)
    buf[36:44] = _pad(lu.identity.serial[:8], 8)  # vendor specific: short serial, as many arrays do
    for i, desc in enumerate(VERSION_DESCRIPTORS):
        struct.pack_into(">H", buf, 58 + 2 * i, desc)
    return bytes(buf)


def _designator(assoc_type: int, code_set: int, value: bytes, *, proto: int = 0, piv: bool = False) -> bytes:
    head = bytes([(proto << 4) | code_set, (0x80 if piv else 0) | assoc_type, 0, len(value)])
    return head + value


def _utf8_name(name: str) -> bytes:
    raw = name.encode() + b"\x00"
    return raw + bytes(-len(raw) % 4)


def device_identification(lu: LogicalUnit, nexus: Nexus | None) -> bytes:
    """VPD 0x83 designators: NAA and T10 vendor id of the LU, then the target port and device."""
    ident = lu.identity
    descs = [
        _designator(_ASSOC_LU | 0x03, _CODESET_BINARY, ident.naa),
        _designator(_ASSOC_LU | 0x01, _CODESET_ASCII, _pad(lu.vendor, 8) + ident.serial.encode()),
    ]
    if nexus is not None:
        port = f"{nexus.target_name},t,0x{nexus.tpgt:04x}"
        descs += [
            # relative target port identifier and target port group: one port per portal group
            _designator(
                _ASSOC_PORT | 0x04, _CODESET_BINARY, struct.pack(">HH", 0, nexus.tpgt & 0xFFFF),
                proto=_PROTO_ISCSI, piv=True,
            ),
            _designator(
                _ASSOC_PORT | 0x05, _CODESET_BINARY, struct.pack(">HH", 0, nexus.tpgt & 0xFFFF),
                proto=_PROTO_ISCSI, piv=True,
            ),
            _designator(_ASSOC_PORT | 0x08, _CODESET_UTF8, _utf8_name(port), proto=_PROTO_ISCSI, piv=True),
            _designator(
                _ASSOC_TARGET | 0x08, _CODESET_UTF8, _utf8_name(nexus.target_name), proto=_PROTO_ISCSI, piv=True
            ),
        ]  # fmt: skip
    return b"".join(descs)


def block_limits(lu: LogicalUnit) -> bytes:
    """VPD 0xB0 (SBC-3 6.5.3), page length 0x3C."""
    body = bytearray(0x3C)
    body[1] = MAX_COMPARE_AND_WRITE_BLOCKS
    struct.pack_into(">H", body, 2, 1 << physical_block_exponent(lu.block_size))  # optimal transfer length granularity
    # maximum transfer length: enforced (block.py and, for the EDTL, the protocol core)
    struct.pack_into(">I", body, 4, lu.max_transfer_blocks)
    # optimal transfer length: 1 MiB, one default MaxBurstLength (Linux turns it into io_opt)
    struct.pack_into(">I", body, 8, min(lu.max_transfer_blocks, max(1, (1 << 20) // lu.block_size)))
    struct.pack_into(">I", body, 12, 0)  # maximum prefetch length (0: no limit stated)
    if lu.thin:
        struct.pack_into(">I", body, 16, MAX_UNMAP_BLOCKS)
        struct.pack_into(">I", body, 20, MAX_UNMAP_DESCRIPTORS)
        struct.pack_into(">I", body, 24, 1 << physical_block_exponent(lu.block_size))  # optimal unmap granularity
        struct.pack_into(">I", body, 28, 0x80000000)  # UGAVALID, alignment 0
    struct.pack_into(">Q", body, 32, max_write_same_blocks(lu))
    return bytes([0, 0xB0]) + struct.pack(">H", len(body)) + bytes(body)


def block_device_characteristics(lu: LogicalUnit) -> bytes:
    """VPD 0xB1: non-rotating medium."""
    body = bytearray(0x3C)
    struct.pack_into(">H", body, 0, 1)  # MEDIUM ROTATION RATE: 1 = non-rotating (solid state)
    return bytes([0, 0xB1]) + struct.pack(">H", len(body)) + bytes(body)


def logical_block_provisioning(lu: LogicalUnit) -> bytes:
    """VPD 0xB2: UNMAP and WRITE SAME(10/16) with UNMAP deallocate, reading zeros (LBPRZ)."""
    flags = 0xE0 | 0x04 if lu.thin else 0x00  # LBPU LBPWS LBPWS10 | LBPRZ
    ptype = 0x02 if lu.thin else 0x00  # thin provisioned / full
    return bytes([0, 0xB2, 0, 4, 0, flags, ptype, 0])


def supported_pages(lu: LogicalUnit) -> list[int]:
    pages = [0x00, 0x80, 0x83, 0xB0, 0xB1]
    if lu.thin:
        pages.append(0xB2)
    return pages


def vpd_page(lu: LogicalUnit, code: int, nexus: Nexus | None) -> bytes:
    """The whole VPD page ``code``, or INVALID FIELD IN CDB if not supported."""
    if code not in supported_pages(lu):
        raise sense.INVALID_FIELD_IN_CDB.error(field=2)
    if code == 0x00:
        pages = supported_pages(lu)
        return bytes([0, 0x00]) + struct.pack(">H", len(pages)) + bytes(pages)
    if code == 0x80:
        serial = lu.identity.serial.encode()
        return bytes([0, 0x80]) + struct.pack(">H", len(serial)) + serial
    if code == 0x83:
        body = device_identification(lu, nexus)
        return bytes([0, 0x83]) + struct.pack(">H", len(body)) + body
    if code == 0xB0:
        return block_limits(lu)
    if code == 0xB1:
        return block_device_characteristics(lu)
    return logical_block_provisioning(lu)


def inquiry(lu: LogicalUnit, cdb: bytes, nexus: Nexus | None) -> ScsiResponse:
    evpd = cdb[1] & 0x01
    # Bits 7-5 are the SCSI-2 LUN field, which Linux still fills in when it scans one LUN
    # (scsi_probe_lun): ignore them as tgt and LIO do; reject CMDDT and the reserved bits.
    if cdb[1] & 0x1E:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1)
    alloc = struct.unpack_from(">H", cdb, 3)[0]
    if evpd:
        data = vpd_page(lu, cdb[2], nexus)
    else:
        if cdb[2]:
            raise sense.INVALID_FIELD_IN_CDB.error(field=2)
        data = standard_inquiry(lu)
    return ScsiResponse.good(data[:alloc])


def absent_inquiry(cdb: bytes, *, well_known: bool) -> ScsiResponse:
    """INQUIRY to a LUN with no logical unit.

    LUN 0 (``well_known``) answers as a storage array controller with peripheral qualifier 0,
    as tgt does, so initiators that insist on LUN 0 find one and attach no disk to it; any
    other LUN answers peripheral qualifier 3, device type 0x1F (SPC-4 6.6.2).
    """
    alloc = struct.unpack_from(">H", cdb, 3)[0] if len(cdb) >= 5 else 0
    if cdb[1] & 0x1E:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1)
    peripheral = TYPE_CONTROLLER if well_known else (0x60 | TYPE_UNKNOWN)
    if cdb[1] & 0x01:
        code = cdb[2]
        if code == 0x00:
            data = bytes([peripheral, 0x00, 0, 1, 0x00])
        else:
            raise sense.INVALID_FIELD_IN_CDB.error(field=2)
        return ScsiResponse.good(data[:alloc])
    if cdb[2]:
        raise sense.INVALID_FIELD_IN_CDB.error(field=2)
    buf = bytearray(36)
    buf[0] = peripheral
    buf[2] = 0x06
    buf[3] = 0x12
    buf[4] = len(buf) - 5
    buf[7] = 0x02
    buf[8:16] = _pad("ISCSIKIT", 8)
    buf[16:32] = _pad("controller", 16)
    buf[32:36] = _pad("0001", 4)
    return ScsiResponse.good(bytes(buf[:alloc]))
