"""SPC commands: unit attentions, INQUIRY and VPD, REQUEST SENSE, READ CAPACITY, opcode reporting."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from iscsikit.target.backends import MemoryBackend
from iscsikit.target.scsi import LogicalUnit, LuIdentity
from iscsikit.target.scsi.opcodes import CDB_USAGE

from .helpers import (
    CHECK_CONDITION,
    NEXUS,
    NEXUS2,
    TARGET,
    Disk,
    good,
    inquiry,
    make_lu,
    rc16,
    sense_of,
)

TUR = bytes(6)
BS = 512


@pytest.fixture
def disk() -> Iterator[Disk]:
    d = Disk()
    yield d
    d.close()


def test_first_command_of_a_nexus_gets_power_on_reset() -> None:
    d = Disk(clear_ua=False)
    rsp = d.cmd(TUR)
    assert rsp.status == CHECK_CONDITION
    assert rsp.sense == bytes.fromhex("700006000000000a00000000290000000000")
    good(d.cmd(TUR))
    # the other nexus still has its own
    assert sense_of(d.cmd(TUR, nexus=NEXUS2)) == (6, 0x29, 0)
    d.close()


def test_inquiry_and_report_luns_do_not_consume_the_unit_attention() -> None:
    d = Disk(clear_ua=False)
    good(d.cmd(inquiry()))
    good(d.cmd(bytes([0xA0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0])))
    assert sense_of(d.cmd(TUR)) == (6, 0x29, 0)
    d.close()


def test_request_sense_returns_and_clears_the_unit_attention() -> None:
    d = Disk(clear_ua=False)
    sense = good(d.cmd(bytes([0x03, 0, 0, 0, 18, 0])))
    assert sense == bytes.fromhex("700006000000000a00000000290000000000")
    assert good(d.cmd(bytes([0x03, 0, 0, 0, 18, 0])))[12:14] == b"\x00\x00"  # now NO SENSE
    good(d.cmd(TUR))
    d.close()


def test_request_sense_descriptor_format_and_allocation_length(disk: Disk) -> None:
    assert good(disk.cmd(bytes([0x03, 1, 0, 0, 252, 0]))) == bytes([0x72, 0, 0, 0, 0, 0, 0, 0])
    assert good(disk.cmd(bytes([0x03, 0, 0, 0, 3, 0]))) == bytes([0x70, 0, 0])


def test_unknown_opcode(disk: Disk) -> None:
    rsp = disk.cmd(bytes([0xC5]) + bytes(15))
    assert rsp.sense == bytes.fromhex("700005000000000a0000000020000000cf0000")[:15] + bytes([0xCF, 0x00, 0x00])


def test_standard_inquiry_bytes(disk: Disk) -> None:
    data = good(disk.cmd(inquiry(alloc=96)))
    assert len(data) == 96
    assert data[0] == 0x00  # peripheral qualifier 0, direct access
    assert data[2] == 0x06 and data[3] == 0x12 and data[4] == 91 and data[7] == 0x02
    assert data[8:16] == b"ISCSIKIT" and data[16:32] == b"iscsikit disk   " and data[32:36] == b"0001"
    versions = struct.unpack(">4H", data[58:66])
    assert versions == (0x00A0, 0x0960, 0x0460, 0x04C0)


@pytest.mark.parametrize("alloc", [0, 1, 5, 36, 511, 512, 65535])
def test_inquiry_never_returns_more_than_the_allocation_length(disk: Disk, alloc: int) -> None:
    assert good(disk.cmd(inquiry(alloc=alloc))) == good(disk.cmd(inquiry(alloc=96)))[:alloc]


@pytest.mark.parametrize("cdb", [inquiry(evpd=2), inquiry(evpd=0, page=0x80), inquiry(evpd=1, page=0x42)])
def test_inquiry_bad_fields(disk: Disk, cdb: bytes) -> None:
    assert sense_of(disk.cmd(cdb)) == (5, 0x24, 0)


def test_supported_vpd_pages_follow_provisioning() -> None:
    thin, thick = Disk(thin=True), Disk(thin=False)
    assert good(thin.cmd(inquiry(1, 0x00))) == bytes([0, 0, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2])
    assert good(thick.cmd(inquiry(1, 0x00))) == bytes([0, 0, 0, 5, 0x00, 0x80, 0x83, 0xB0, 0xB1])
    assert good(thin.cmd(inquiry(1, 0xB2))) == bytes([0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0])
    assert sense_of(thick.cmd(inquiry(1, 0xB2))) == (5, 0x24, 0)
    thin.close()
    thick.close()


def test_serial_and_naa_come_from_the_identity(disk: Disk) -> None:
    ident = LuIdentity.from_name(f"{TARGET}/1")
    serial = good(disk.cmd(inquiry(1, 0x80)))
    assert serial == bytes([0, 0x80, 0, 32]) + ident.serial.encode()
    page = good(disk.cmd(inquiry(1, 0x83)))
    assert page[:2] == bytes([0, 0x83]) and struct.unpack(">H", page[2:4])[0] == len(page) - 4
    # first designator: NAA, binary, LU association
    assert page[4:8] == bytes([0x01, 0x03, 0x00, 0x10]) and page[8:24] == ident.naa
    assert ident.naa[0] >> 4 == 0x6  # outranks the T10 designator in Linux's choice of device/wwid


def test_lu_designators_are_identical_across_restarts_and_portals() -> None:
    """Multipath needs the same NAA on every portal and after the target restarts."""

    def lu_part(page: bytes) -> bytes:
        out, pos = b"", 4
        while pos < len(page):
            length = page[pos + 3]
            if page[pos + 1] & 0x30 == 0:  # association: logical unit
                out += page[pos : pos + 4 + length]
            pos += 4 + length
        return out

    first, restarted = Disk(), Disk()
    portal2 = NEXUS.__class__(NEXUS.initiator_name, NEXUS.isid, TARGET, 2, session_id=9)
    restarted.cmd(TUR, nexus=portal2)
    a = good(first.cmd(inquiry(1, 0x83)))
    b = good(restarted.cmd(inquiry(1, 0x83), nexus=portal2))
    assert lu_part(a) == lu_part(b) and lu_part(a)
    assert a != b  # the target port designators do differ
    assert b"iqn.2026-11.org.example:disk,t,0x0002\x00" in b
    first.close()
    restarted.close()


def test_block_limits_page(disk: Disk) -> None:
    page = good(disk.cmd(inquiry(1, 0xB0)))
    assert page[:4] == bytes([0, 0xB0, 0, 0x3C]) and len(page) == 64
    assert page[5] == 1  # maximum COMPARE AND WRITE length
    max_xfer, opt_xfer = struct.unpack(">II", page[8:16])
    assert opt_xfer == (1 << 20) // BS and max_xfer >= opt_xfer
    max_unmap, max_descs = struct.unpack(">II", page[20:28])
    assert max_unmap > 0 and 0 < max_descs <= 1024
    # maximum WRITE SAME length: within the maximum transfer length (libiscsi WRITEs that much)
    assert struct.unpack(">Q", page[36:44])[0] == min(1 << 16, max_xfer)


def test_read_capacity(disk: Disk) -> None:
    blocks = (8 << 20) // 512
    assert good(disk.cmd(bytes([0x25]) + bytes(9))) == struct.pack(">II", blocks - 1, 512)
    data = good(disk.cmd(rc16()))
    assert data[:12] == struct.pack(">QI", blocks - 1, 512)
    assert data[13] == 3 and data[14] & 0xC0 == 0xC0  # 8 blocks per physical block, LBPME, LBPRZ
    assert len(data) == 32 and good(disk.cmd(rc16(alloc=12))) == data[:12]
    # READ CAPACITY(10) with an LBA but no PMI
    assert sense_of(disk.cmd(bytes([0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]))) == (5, 0x24, 0)


def test_read_capacity_10_saturates_above_2_tib() -> None:
    d = Disk({1: LogicalUnit(MemoryBackend(4 << 40), identity=LuIdentity.from_name("big"))})
    assert good(d.cmd(bytes([0x25]) + bytes(9))) == struct.pack(">II", 0xFFFFFFFF, 512)
    assert struct.unpack(">Q", good(d.cmd(rc16()))[:8])[0] == (4 << 40) // 512 - 1
    d.close()


def test_thick_lu_has_no_lbpme() -> None:
    d = Disk(thin=False)
    assert good(d.cmd(rc16()))[14] & 0xC0 == 0
    d.close()


def _rsoc(options: int, op: int = 0, sa: int = 0, rctd: bool = False, alloc: int = 65535) -> bytes:
    return struct.pack(">BBBBHIBB", 0xA3, 0x0C, (0x80 if rctd else 0) | options, op, sa, alloc, 0, 0)


def test_report_supported_opcodes_lists_every_command() -> None:
    d = Disk(thin=True)
    data = good(d.cmd(_rsoc(0)))
    length = struct.unpack(">I", data[:4])[0]
    assert length == len(data) - 4
    listed = set()
    for pos in range(4, len(data), 8):
        op, _, sa, _, flags, cdb_len = struct.unpack(">BBHBBH", data[pos : pos + 8])
        listed.add((op, sa if flags & 1 else None))
        assert cdb_len == len(CDB_USAGE[(op, sa if flags & 1 else None)])
    assert listed == set(CDB_USAGE)
    d.close()
    thick = Disk(thin=False)
    data = good(thick.cmd(_rsoc(0)))
    assert 0x42 not in {data[pos] for pos in range(4, len(data), 8)}  # UNMAP only on thin LUs
    assert good(thick.cmd(_rsoc(1, 0x42)))[1] & 0x07 == 1  # "not supported"
    thick.close()


def test_report_supported_opcodes_one_command(disk: Disk) -> None:
    data = good(disk.cmd(_rsoc(1, 0x28)))
    assert data[1] & 0x07 == 3 and data[4] == 0x28 and struct.unpack(">H", data[2:4])[0] == 10
    data = good(disk.cmd(_rsoc(2, 0x9E, 0x10, rctd=True)))
    assert data[1] == 0x83 and data[4:6] == bytes([0x9E, 0x10]) and len(data) == 4 + 16 + 12
    assert sense_of(disk.cmd(_rsoc(1, 0x9E))) == (5, 0x24, 0)  # has service actions: use 2
    assert sense_of(disk.cmd(_rsoc(2, 0x28))) == (5, 0x24, 0)  # has none: use 1
    assert sense_of(disk.cmd(_rsoc(5))) == (5, 0x24, 0)


def test_every_reported_opcode_has_a_handler() -> None:
    from iscsikit.target.scsi.lu import _handlers

    handlers = _handlers()
    assert {op for op, _ in CDB_USAGE} == set(handlers) | {0xA0}  # REPORT LUNS: answered by the LunMap


@pytest.mark.parametrize(("op", "sa"), sorted(CDB_USAGE, key=lambda k: (k[0], k[1] or 0)))
def test_cdb_usage_data_is_as_long_as_the_cdb(op: int, sa: int | None) -> None:
    from iscsikit.target.scsi.cdb import cdb_length

    usage = CDB_USAGE[(op, sa)]
    assert len(usage) == cdb_length(op) and usage[0] == op
    if sa is not None:
        assert usage[1] == sa


def test_start_stop_and_prevent_allow(disk: Disk) -> None:
    good(disk.cmd(bytes([0x1B, 0, 0, 0, 0x00, 0])))  # STOP: flushes
    assert disk.backend.flushes == 1
    good(disk.cmd(bytes([0x1B, 0, 0, 0, 0x01, 0])))
    good(disk.cmd(TUR))
    good(disk.cmd(bytes([0x1E, 0, 0, 0, 1, 0])))
    assert sense_of(disk.cmd(bytes([0x1E, 0, 0, 0, 4, 0]))) == (5, 0x24, 0)


def test_describe_names_the_identity() -> None:
    lu = make_lu()
    info = lu.describe()
    assert info["wwn"] == lu.identity.wwn and info["backend"] == "memory" and info["thin"] is True


def test_read_defect_data_is_an_empty_list(disk: Disk) -> None:
    assert good(disk.cmd(bytes([0x37, 0, 0x18 | 0x05, 0, 0, 0, 0, 0, 32, 0]))) == bytes([0, 0x1D, 0, 0])
    assert good(disk.cmd(bytes([0xB7, 0x18, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]))) == bytes([0, 0x18]) + bytes(6)
    assert good(disk.cmd(bytes([0x37, 0, 0x18, 0, 0, 0, 0, 0, 2, 0]))) == bytes([0, 0x18])


@pytest.mark.parametrize("lun_bits", [0x20, 0x40, 0xE0])
def test_inquiry_ignores_the_scsi2_lun_field(disk: Disk, lun_bits: int) -> None:
    """Linux fills CDB byte 1 bits 7-5 with the LUN when it scans one LUN (node.session.scan = manual)."""
    cdb = bytearray(inquiry(alloc=96))
    cdb[1] |= lun_bits
    assert good(disk.cmd(bytes(cdb))) == good(disk.cmd(inquiry(alloc=96)))
    vpd = bytearray(inquiry(1, 0x80))
    vpd[1] |= lun_bits
    assert good(disk.cmd(bytes(vpd))) == good(disk.cmd(inquiry(1, 0x80)))
