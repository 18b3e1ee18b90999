"""The physical block the target reports, and GET LBA STATUS after UNMAP of one physical block.

An initiator aligns I/O and UNMAP to the physical block READ CAPACITY(16) reports (LOGICAL BLOCKS
PER PHYSICAL BLOCK EXPONENT) and the granularities of the Block Limits page. The backends allocate
and punch holes in 4 KiB, so a 4 KiB-block LU has one logical block per physical block: it used
to report eight (32 KiB), which made libiscsi's GetLBAStatus.UnmapSingle step by eight blocks and
fail on a thin 4 KiB LUN where tgt passes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from iscsikit.target.backends import FileBackend
from iscsikit.target.scsi import LogicalUnit, LuIdentity

from .helpers import TARGET, Disk, get_lba_status, good, inquiry, rc16, read10, unmap_cdb, unmap_params, write10

MAPPED, DEALLOCATED = 0, 1


@pytest.mark.parametrize(("block_size", "per_physical"), [(512, 8), (1024, 4), (2048, 2), (4096, 1)])
def test_one_physical_block_is_4k_whatever_the_logical_block(block_size: int, per_physical: int) -> None:
    disk = Disk(block_size=block_size)
    try:
        capacity = good(disk.cmd(rc16()))
        assert struct.unpack_from(">I", capacity, 8)[0] == block_size
        assert 1 << (capacity[13] & 0x0F) == per_physical  # LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT
        limits = good(disk.cmd(inquiry(evpd=1, page=0xB0)))
        assert struct.unpack_from(">H", limits, 6)[0] == per_physical  # optimal transfer length granularity
        assert struct.unpack_from(">I", limits, 28)[0] == per_physical  # optimal unmap granularity
    finally:
        disk.close()


def _status(disk: Disk, lba: int) -> tuple[int, int, int]:
    """(descriptor LBA, blocks, provisioning status) of the first descriptor for ``lba``."""
    lba_, blocks, status = struct.unpack_from(">QIB", good(disk.cmd(get_lba_status(lba))), 8)
    return lba_, blocks, status & 0x0F


@pytest.fixture(params=[512, 4096], ids=["512", "4k"])
def file_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Disk]:
    block_size: int = request.param
    backend = FileBackend(tmp_path / "thin.img", size=4 << 20, block_size=block_size, thin=True)
    disk = Disk({1: LogicalUnit(backend, identity=LuIdentity.from_name(f"{TARGET}/1"))})
    disk.run(backend.open())
    yield disk
    disk.close()


def test_unmap_of_one_physical_block_is_reported_deallocated_and_its_neighbours_mapped(file_disk: Disk) -> None:
    disk = file_disk
    bs = disk.lu.block_size
    per = 4096 // bs  # logical blocks per physical block
    blocks = 256 + per
    good(disk.cmd(write10(0, blocks), b"A" * blocks * bs))
    for lba in range(0, 256, per * 16):
        params = unmap_params((lba, per))
        good(disk.cmd(unmap_cdb(len(params)), params))
        # the unmapped physical block reads back as a hole, exactly that long ...
        assert _status(disk, lba) == (lba, per, DEALLOCATED)
        # ... the next one is still mapped; each answer starts at the LBA asked for (SBC-4)
        assert _status(disk, lba + per)[::2] == (lba + per, MAPPED)
        assert _status(disk, lba + per + 1)[::2] == (lba + per + 1, MAPPED)
        assert good(disk.cmd(read10(lba, per))) == bytes(per * bs)  # LBPRZ: zeros
        assert good(disk.cmd(read10(lba + per, 1))) == b"A" * bs
