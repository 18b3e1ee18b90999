"""SPC-2 RESERVE/RELEASE and persistent reservations, with two initiators."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from iscsikit.target.scsi import Nexus, ScsiResponse, TmfFunction

from .helpers import (
    NEXUS,
    NEXUS2,
    RESERVATION_CONFLICT,
    Disk,
    good,
    inquiry,
    mode_sense6,
    pr_in,
    pr_out,
    read10,
    sense_of,
    write10,
)

BS = 512
RESERVE6, RELEASE6 = bytes([0x16, 0, 0, 0, 0, 0]), bytes([0x17, 0, 0, 0, 0, 0])
K1, K2 = 0x1111_2222_3333_4444, 0xAAAA_BBBB_CCCC_DDDD


@pytest.fixture
def disk() -> Iterator[Disk]:
    d = Disk()
    yield d
    d.close()


def conflict(disk: Disk, cdb: bytes, data: bytes | None = None, nexus: Nexus = NEXUS2) -> bool:
    return disk.cmd(cdb, data, nexus=nexus).status == RESERVATION_CONFLICT


def test_reserve6_between_two_initiators(disk: Disk) -> None:
    good(disk.cmd(RESERVE6))
    good(disk.cmd(RESERVE6))  # the holder may reserve again
    assert conflict(disk, RESERVE6)
    good(disk.cmd(RELEASE6, nexus=NEXUS2))  # a no-op for non-holders
    good(disk.cmd(mode_sense6()))
    assert conflict(disk, mode_sense6())
    assert conflict(disk, read10(0, 1))
    assert conflict(disk, bytes(6))
    good(disk.cmd(inquiry(), nexus=NEXUS2))  # INQUIRY is always allowed
    good(disk.cmd(RELEASE6))
    good(disk.cmd(RESERVE6, nexus=NEXUS2))
    assert conflict(disk, read10(0, 1), nexus=NEXUS)


@pytest.mark.parametrize("how", ["nexus_lost", "lu_reset"])
def test_reserve6_ends_with_the_nexus_or_a_reset(disk: Disk, how: str) -> None:
    good(disk.cmd(RESERVE6))
    if how == "nexus_lost":
        disk.luns.nexus_lost(NEXUS)
    else:
        disk.run(disk.luns.task_management(TmfFunction.LOGICAL_UNIT_RESET, 1, NEXUS2))
        disk.cmd(bytes(6), nexus=NEXUS2)  # consume the reset unit attention
    good(disk.cmd(RESERVE6, nexus=NEXUS2))


def _out(
    disk: Disk, sa: int, key: int = 0, sa_key: int = 0, ptype: int = 0, nexus: Nexus = NEXUS, flags: int = 0
) -> ScsiResponse:
    cdb, params = pr_out(sa, key, sa_key, ptype, flags)
    return disk.cmd(cdb, params, nexus=nexus)


def _keys(disk: Disk) -> tuple[int, list[int]]:
    data = good(disk.cmd(pr_in(0)))
    generation, length = struct.unpack(">II", data[:8])
    return generation, [struct.unpack(">Q", data[8 + i : 16 + i])[0] for i in range(0, length, 8)]


def _reservation(disk: Disk, nexus: Nexus = NEXUS) -> tuple[int, int] | None:
    data = good(disk.cmd(pr_in(1), nexus=nexus))
    if struct.unpack(">I", data[4:8])[0] == 0:
        return None
    return struct.unpack(">Q", data[8:16])[0], data[21] & 0x0F


def test_register_reserve_release(disk: Disk) -> None:
    good(_out(disk, 0, sa_key=K1))
    good(_out(disk, 6, sa_key=K2, nexus=NEXUS2))
    generation, keys = _keys(disk)
    assert sorted(keys) == sorted([K1, K2]) and generation == 2
    assert _out(disk, 1, key=K2 + 1, ptype=1, nexus=NEXUS2).status == RESERVATION_CONFLICT  # wrong key
    good(_out(disk, 1, key=K1, ptype=1))
    assert _reservation(disk) == (K1, 1)
    assert _out(disk, 1, key=K2, ptype=1, nexus=NEXUS2).status == RESERVATION_CONFLICT
    assert sense_of(_out(disk, 2, key=K1, ptype=3)) == (5, 0x26, 0x04)  # release with the wrong type
    good(_out(disk, 2, key=K1, ptype=1))
    assert _reservation(disk) is None
    assert _keys(disk)[0] == 2  # RESERVE and RELEASE do not bump the generation


@pytest.mark.parametrize(
    ("ptype", "reg_read", "reg_write", "unreg_read", "unreg_write"),
    [
        (1, True, False, True, False),  # Write Exclusive
        (3, False, False, False, False),  # Exclusive Access
        (5, True, True, True, False),  # Write Exclusive, registrants only
        (6, True, True, False, False),  # Exclusive Access, registrants only
        (7, True, True, True, False),  # Write Exclusive, all registrants
        (8, True, True, False, False),  # Exclusive Access, all registrants
    ],
)
def test_access_by_reservation_type(
    disk: Disk, ptype: int, reg_read: bool, reg_write: bool, unreg_read: bool, unreg_write: bool
) -> None:
    """libiscsi's ProutReserve.Access* matrix."""
    good(_out(disk, 6, sa_key=K1))
    good(_out(disk, 6, sa_key=K2, nexus=NEXUS2))
    good(_out(disk, 1, key=K1, ptype=ptype))
    assert _reservation(disk) == (0 if ptype in (7, 8) else K1, ptype)
    good(disk.cmd(read10(0, 1)))
    good(disk.cmd(write10(0, 1), bytes(BS)))
    assert conflict(disk, read10(0, 1)) is not reg_read
    assert conflict(disk, write10(0, 1), bytes(BS)) is not reg_write
    good(_out(disk, 0, key=K2, sa_key=0, nexus=NEXUS2))  # unregister the second initiator
    assert conflict(disk, read10(0, 1)) is not unreg_read
    assert conflict(disk, write10(0, 1), bytes(BS)) is not unreg_write
    good(disk.cmd(bytes(6), nexus=NEXUS2))  # TEST UNIT READY is always allowed
    assert conflict(disk, bytes([0x16, 0, 0, 0, 0, 0]), nexus=NEXUS)  # SPC-2 RESERVE conflicts with any PR


@pytest.mark.parametrize("ptype", [1, 3, 5, 6])
def test_holder_unregistering_releases_and_tells_only_the_others(disk: Disk, ptype: int) -> None:
    """libiscsi's ProutReserve.Ownership*: tgt wrongly sends 2A/04 to the initiator that unregistered."""
    good(_out(disk, 6, sa_key=K1))
    good(_out(disk, 6, sa_key=K2, nexus=NEXUS2))
    good(_out(disk, 1, key=K1, ptype=ptype))
    good(_out(disk, 0, key=K1, sa_key=0))
    assert _reservation(disk) is None  # PR IN from the nexus that unregistered: no unit attention
    if ptype in (5, 6):
        assert sense_of(disk.cmd(bytes(6), nexus=NEXUS2)) == (6, 0x2A, 0x04)
    good(disk.cmd(bytes(6), nexus=NEXUS2))


@pytest.mark.parametrize("ptype", [7, 8])
def test_all_registrants_reservation_survives_one_registrant_leaving(disk: Disk, ptype: int) -> None:
    good(_out(disk, 6, sa_key=K1))
    good(_out(disk, 6, sa_key=K2, nexus=NEXUS2))
    good(_out(disk, 1, key=K1, ptype=ptype))
    good(_out(disk, 0, key=K1, sa_key=0))
    assert _reservation(disk) == (0, ptype)
    good(_out(disk, 2, key=K2, ptype=ptype, nexus=NEXUS2))
    assert _reservation(disk) is None


def test_preempt_removes_a_registration(disk: Disk) -> None:
    good(_out(disk, 6, sa_key=K1))
    good(_out(disk, 6, sa_key=K2, nexus=NEXUS2))
    generation, _ = _keys(disk)
    good(_out(disk, 4, key=K2, sa_key=K1, ptype=3, nexus=NEXUS2))
    assert sense_of(disk.cmd(bytes(6))) == (6, 0x2A, 0x05)  # registrations preempted
    assert _keys(disk) == (generation + 1, [K2])
    assert _reservation(disk) is None  # no reservation existed: none is created
    assert sense_of(_out(disk, 4, key=K2, sa_key=0, ptype=3, nexus=NEXUS2)) == (5, 0x26, 0)


def test_preempt_the_holder_takes_over(disk: Disk) -> None:
    good(_out(disk, 6, sa_key=K1))
    good(_out(disk, 6, sa_key=K2, nexus=NEXUS2))
    good(_out(disk, 1, key=K1, ptype=1))
    good(_out(disk, 4, key=K2, sa_key=K1, ptype=3, nexus=NEXUS2))
    assert _reservation(disk, NEXUS2) == (K2, 3)
    assert sense_of(disk.cmd(bytes(6))) == (6, 0x2A, 0x05)
    assert conflict(disk, read10(0, 1), nexus=NEXUS)


def test_clear(disk: Disk) -> None:
    good(_out(disk, 6, sa_key=K1))
    good(_out(disk, 6, sa_key=K2, nexus=NEXUS2))
    good(_out(disk, 1, key=K1, ptype=3))
    assert _out(disk, 3, key=K1 + 5).status == RESERVATION_CONFLICT
    good(_out(disk, 3, key=K1))
    assert _keys(disk)[1] == [] and _reservation(disk) is None
    assert sense_of(disk.cmd(bytes(6), nexus=NEXUS2)) == (6, 0x2A, 0x03)


def test_register_rules(disk: Disk) -> None:
    assert _out(disk, 0, key=K1, sa_key=K2).status == RESERVATION_CONFLICT  # not registered, key given
    good(_out(disk, 0, sa_key=0))  # unregistered and key 0: nothing, no generation bump
    assert _keys(disk) == (0, [])
    good(_out(disk, 0, sa_key=K1))
    assert _out(disk, 0, key=K2, sa_key=K2).status == RESERVATION_CONFLICT
    good(_out(disk, 6, key=0, sa_key=K2))  # ignore existing key
    assert _keys(disk) == (2, [K2])
    # APTPL, ALL_TG_PT, SPEC_I_PT are not supported
    for flags in (0x01, 0x04, 0x08):
        assert sense_of(_out(disk, 6, sa_key=K1, flags=flags)) == (5, 0x26, 0)
    cdb, params = pr_out(0, 0, K1)
    bad_len = cdb[:5] + struct.pack(">I", 20) + cdb[9:]
    assert sense_of(disk.cmd(bad_len, params[:20])) == (5, 0x1A, 0)
    assert sense_of(_out(disk, 7, key=K2)) == (5, 0x24, 0)  # REGISTER AND MOVE
    assert sense_of(_out(disk, 1, key=K2, ptype=2)) == (5, 0x24, 0)  # no such type


def test_registration_survives_relogin_with_the_same_isid(disk: Disk) -> None:
    good(_out(disk, 6, sa_key=K1))
    good(_out(disk, 1, key=K1, ptype=3))
    disk.luns.nexus_lost(NEXUS)
    again = Nexus(NEXUS.initiator_name, NEXUS.isid, NEXUS.target_name, NEXUS.tpgt, session_id=42)
    disk.cmd(bytes(6), nexus=again)  # power-on unit attention of the new session
    good(disk.cmd(read10(0, 1), nexus=again))


def test_report_capabilities_and_full_status(disk: Disk) -> None:
    caps = good(disk.cmd(pr_in(2)))
    assert caps == bytes([0, 8, 0x00, 0x80, 0xEA, 0x01, 0, 0])
    good(_out(disk, 6, sa_key=K1))
    good(_out(disk, 1, key=K1, ptype=5))
    full = good(disk.cmd(pr_in(3)))
    generation, length = struct.unpack(">II", full[:8])
    assert generation == 1
    assert length == len(full) - 8
    key, holder, scope_type, rel_port, tid_len = struct.unpack(">Q4xBB4xHI", full[8:32])
    assert (key, holder, scope_type, rel_port) == (K1, 1, 5, 1)
    tid = full[32 : 32 + tid_len]
    assert tid[0] == 0x45 and b"iqn.2026-11.org.example:host1,i,0x400001370000\x00" in tid
    assert sense_of(disk.cmd(pr_in(4))) == (5, 0x24, 0)
    assert good(disk.cmd(pr_in(0, alloc=6))) == good(disk.cmd(pr_in(0)))[:6]
