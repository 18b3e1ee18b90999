"""MODE SENSE/SELECT, descriptor sense, REPORT LUNS, absent LUNs, resets and unit attentions."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from iscsikit.target.scsi import Nexus, ScsiResponse, TmfFunction, TmfResponse

from .helpers import NEXUS, NEXUS2, Disk, good, inquiry, make_lu, mode_select6, mode_sense6, read16, sense_of

BS = 512
BLOCKS = (8 << 20) // BS


@pytest.fixture
def disk() -> Iterator[Disk]:
    d = Disk()
    yield d
    d.close()


def _pages(data: bytes, header: int = 4) -> dict[tuple[int, int], bytes]:
    pos = header + (data[3] if header == 4 else struct.unpack(">H", data[6:8])[0])
    out = {}
    while pos < len(data):
        if data[pos] & 0x40:
            key, length, start = (data[pos] & 0x3F, data[pos + 1]), struct.unpack(">H", data[pos + 2 : pos + 4])[0], 4
        else:
            key, length, start = (data[pos] & 0x3F, 0), data[pos + 1], 2
        out[key] = data[pos + start : pos + start + length]
        pos += start + length
    return out


def test_mode_sense6_all_pages(disk: Disk) -> None:
    data = good(disk.cmd(mode_sense6()))
    assert data[0] == len(data) - 1
    assert data[1:4] == bytes([0, 0x10, 8])  # medium type, DPOFUA (not WP), block descriptor length
    assert data[4:12] == struct.pack(">II", BLOCKS, BS)
    pages = _pages(data)
    assert set(pages) == {(0x01, 0), (0x08, 0), (0x0A, 0), (0x1C, 0)}
    assert pages[(0x08, 0)][0] & 0x04  # WCE
    assert pages[(0x0A, 0)][0] & 0x04 == 0  # D_SENSE off
    with_sub = _pages(good(disk.cmd(mode_sense6(subpage=0xFF))))
    assert (0x0A, 1) in with_sub


def test_mode_sense10_and_dbd(disk: Disk) -> None:
    data = good(disk.cmd(bytes([0x5A, 0x10, 0x08, 0, 0, 0, 0, 0x10, 0, 0])))  # LLBAA
    assert struct.unpack(">H", data[:2])[0] == len(data) - 2 and data[4] == 1
    assert struct.unpack(">H", data[6:8])[0] == 16 and data[8:24] == struct.pack(">QII", BLOCKS, 0, BS)
    no_desc = good(disk.cmd(mode_sense6(page=0x08, dbd=True)))
    assert no_desc[3] == 0 and no_desc[4] == 0x08 and no_desc[5] == 0x12


def test_mode_sense_page_controls(disk: Disk) -> None:
    changeable = _pages(good(disk.cmd(mode_sense6(page=0x0A, pc=1))))[(0x0A, 0)]
    assert changeable[0] == 0x04 and changeable[2] == 0x08  # D_SENSE and SWP may change
    assert sense_of(disk.cmd(mode_sense6(pc=3))) == (5, 0x39, 0)  # saved values
    assert sense_of(disk.cmd(mode_sense6(page=0x19))) == (5, 0x24, 0)
    assert good(disk.cmd(mode_sense6(alloc=7))) == good(disk.cmd(mode_sense6()))[:7]


def _select_page(disk: Disk, code: int, change: dict[int, int], nexus: Nexus = NEXUS) -> ScsiResponse:
    page = bytearray(_pages(good(disk.cmd(mode_sense6(page=code, dbd=True))))[(code, 0)])
    for index, value in change.items():
        page[index] = value
    params = bytes(4) + bytes([code, len(page)]) + bytes(page)
    return disk.cmd(mode_select6(len(params)), params, nexus=nexus)


def test_mode_select_write_cache_and_ua_to_others(disk: Disk) -> None:
    good(_select_page(disk, 0x08, {0: 0x00}))
    assert not disk.lu.mode.wce
    assert _pages(good(disk.cmd(mode_sense6(page=0x08))))[(0x08, 0)][0] & 0x04 == 0
    assert sense_of(disk.cmd(bytes(6), nexus=NEXUS2)) == (6, 0x2A, 0x01)  # mode parameters changed
    good(disk.cmd(bytes(6)))  # not for the nexus that changed them


def test_mode_select_refuses_what_cannot_change(disk: Disk) -> None:
    rsp = _select_page(disk, 0x08, {2: 0x12})
    assert sense_of(rsp) == (5, 0x26, 0)
    assert disk.lu.mode.wce  # nothing half-applied
    assert sense_of(disk.cmd(mode_select6(0, sp=True))) == (5, 0x39, 0)
    assert sense_of(disk.cmd(mode_select6(12, pf=False), bytes(12))) == (5, 0x24, 0)
    assert sense_of(disk.cmd(mode_select6(12), bytes(4) + bytes([0x19, 6]) + bytes(6))) == (5, 0x26, 0)


def test_swp_write_protects(disk: Disk) -> None:
    good(_select_page(disk, 0x0A, {2: 0x08}))
    assert good(disk.cmd(mode_sense6()))[2] & 0x80  # WP
    assert sense_of(disk.cmd(bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0]), bytes(BS))) == (7, 0x27, 0)
    # LU reset puts the mode pages back
    assert disk.run(disk.luns.task_management(TmfFunction.LOGICAL_UNIT_RESET, 1, NEXUS)) == TmfResponse.COMPLETE
    assert not disk.lu.mode.swp


def test_d_sense_switches_to_descriptor_format(disk: Disk) -> None:
    good(_select_page(disk, 0x0A, {0: 0x02 | 0x04}))
    rsp = disk.cmd(read16(BLOCKS, 1))
    info = struct.pack(">Q", BLOCKS)
    assert rsp.sense == bytes([0x72, 0x05, 0x21, 0x00, 0, 0, 0, 12, 0x00, 0x0A, 0x80, 0]) + info


def test_report_luns_always_lists_lun_0() -> None:
    d = Disk({1: make_lu(), 300: make_lu()})
    cdb = bytes([0xA0, 0, 0, 0, 0, 0]) + struct.pack(">I", 4096) + bytes(2)
    data = good(d.cmd(cdb))
    assert data == struct.pack(">I4x", 24) + bytes(8) + bytes([0, 1]) + bytes(6) + bytes([0x41, 0x2C]) + bytes(6)
    assert good(d.cmd(bytes([0xA0, 0, 1, 0, 0, 0]) + struct.pack(">I", 16) + bytes(2))) == bytes(8)
    assert sense_of(d.cmd(bytes([0xA0, 0, 0, 0, 0, 0]) + struct.pack(">I", 8) + bytes(2))) == (5, 0x24, 0)
    assert sense_of(d.cmd(bytes([0xA0, 0, 7, 0, 0, 0]) + struct.pack(">I", 64) + bytes(2))) == (5, 0x24, 0)
    # sent to an absent LUN it still works
    assert good(d.cmd(cdb, lun=5)) == data
    d.close()


def test_unconfigured_lun_0_is_a_controller_and_other_absent_luns_are_not_there(disk: Disk) -> None:
    lun0 = good(disk.cmd(inquiry(), lun=0))
    assert lun0[0] == 0x0C and lun0[8:16] == b"ISCSIKIT"
    good(disk.cmd(bytes(6), lun=0))
    lun7 = good(disk.cmd(inquiry(), lun=7))
    assert lun7[0] == 0x7F
    assert sense_of(disk.cmd(bytes(6), lun=7)) == (5, 0x25, 0)
    assert sense_of(disk.cmd(bytes([0x28]) + bytes(9), lun=7)) == (5, 0x25, 0)
    assert good(disk.cmd(bytes([0x03, 0, 0, 0, 18, 0]), lun=7))[12] == 0x25
    assert disk.run(disk.luns.task_management(TmfFunction.LOGICAL_UNIT_RESET, 7, NEXUS)) == TmfResponse.NO_SUCH_LUN


def test_lu_reset_posts_a_unit_attention_to_every_nexus(disk: Disk) -> None:
    disk.run(disk.luns.task_management(TmfFunction.LOGICAL_UNIT_RESET, 1, NEXUS))
    assert sense_of(disk.cmd(bytes(6))) == (6, 0x29, 0x03)
    assert sense_of(disk.cmd(bytes(6), nexus=NEXUS2)) == (6, 0x29, 0x03)
    good(disk.cmd(bytes(6)))


def test_capacity_change_unit_attention(disk: Disk) -> None:
    disk.luns.unit_attention_all(0x2A, 0x09)
    rsp = disk.cmd(bytes(6))
    assert rsp.sense == bytes.fromhex("700006000000000a000000002a0900000000")


def test_a_new_session_is_a_new_nexus_and_a_lost_one_is_forgotten(disk: Disk) -> None:
    disk.luns.nexus_lost(NEXUS)
    assert sense_of(disk.cmd(bytes(6))) == (6, 0x29, 0)  # same session id after a loss: a new nexus
    relogin = NEXUS.__class__(NEXUS.initiator_name, NEXUS.isid, NEXUS.target_name, 1, session_id=77)
    assert sense_of(disk.cmd(bytes(6), nexus=relogin)) == (6, 0x29, 0)
