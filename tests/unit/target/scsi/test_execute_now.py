"""The synchronous READ fast path (LunMap.execute_now) against the ordinary path (execute).

execute_now may decline (None) whenever it likes; when it answers, the answer must be exactly
what execute gives for the same command, and it must never answer where execute would report a
unit attention or a reservation conflict.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iscsikit.target.backends import FileBackend, MemoryBackend
from iscsikit.target.scsi import LogicalUnit, LuIdentity, LunMap, ScsiResponse
from tests.support.profiles import examples

from .helpers import NEXUS, NEXUS2, TARGET

SIZE = 4 << 20
BLOCKS = SIZE // 512


class FileDisk:
    """A file-backed LunMap (the only backend with a synchronous read) and its event loop."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.backend = FileBackend(path, size=SIZE)
        self.lu = LogicalUnit(self.backend, identity=LuIdentity.from_name(f"{TARGET}/1"))
        self.luns = LunMap({1: self.lu})
        self.run(self.luns.open())
        self.run(self.backend.write(0, os.urandom(SIZE)))
        for nexus in (NEXUS, NEXUS2):  # take the power-on unit attention out of the way
            self.run(self.luns.execute(1, bytes(16), None, nexus))

    def run(self, coro: object) -> object:
        return self.loop.run_until_complete(coro)  # type: ignore[arg-type]

    def execute(self, cdb: bytes) -> ScsiResponse:
        rsp = self.run(self.luns.execute(1, cdb, None, NEXUS))
        assert isinstance(rsp, ScsiResponse)
        return rsp

    def close(self) -> None:
        self.run(self.luns.close())
        self.loop.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[FileDisk]:
    d = FileDisk(tmp_path / "now.img")
    yield d
    d.close()


def read10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x28, flags, lba, 0, blocks, 0).ljust(16, b"\0")


def read16(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x88, flags, lba, blocks, 0, 0)


def same(a: ScsiResponse, b: ScsiResponse) -> bool:
    return (a.status, a.sense, b"".join(bytes(p) for p in a.data)) == (
        b.status,
        b.sense,
        b"".join(bytes(p) for p in b.data),
    )


def test_a_page_cache_read_is_answered_at_once_and_equals_execute(disk: FileDisk) -> None:
    for cdb in (read10(8, 8), read16(100, 2048), read16(BLOCKS - 1, 1), read10(0, 0)):
        now = disk.luns.execute_now(1, cdb, NEXUS)
        assert now is not None, cdb.hex()
        assert same(now, disk.execute(cdb))


@pytest.mark.parametrize(
    "cdb",
    [read10(BLOCKS, 1), read16(BLOCKS - 1, 2), read16(1 << 63, 1), read10(0, 8, flags=0x20), read16(0, 8, flags=0xE0)],
    ids=["past-end", "straddles-end", "huge-lba", "rdprotect10", "rdprotect16"],
)
def test_field_and_range_errors_are_the_same_check_condition(disk: FileDisk, cdb: bytes) -> None:
    now = disk.luns.execute_now(1, cdb, NEXUS)
    assert now is not None and now.status == 0x02
    assert same(now, disk.execute(cdb))


@pytest.mark.parametrize("op", [0x00, 0x12, 0x25, 0x2A, 0x8A, 0x2F, 0xA0, 0x08, 0xA8])
def test_other_commands_are_declined(disk: FileDisk, op: int) -> None:
    assert disk.luns.execute_now(1, bytes([op]).ljust(16, b"\0"), NEXUS) is None


def test_declined_for_an_absent_lun_a_new_nexus_or_a_pending_unit_attention(disk: FileDisk) -> None:
    assert disk.luns.execute_now(7, read10(0, 1), NEXUS) is None
    stranger = type(NEXUS)("iqn.2026-11.org.example:new", bytes(6), TARGET, 1, session_id=99)
    assert disk.luns.execute_now(1, read10(0, 1), stranger) is None
    assert disk.execute(read10(0, 1)).status == 0  # still fine for the known nexus
    disk.luns.unit_attention_all(0x2A, 0x09)  # capacity data has changed
    assert disk.luns.execute_now(1, read10(0, 1), NEXUS) is None
    rsp = disk.execute(read10(0, 1))
    assert rsp.status == 0x02 and rsp.sense[12:14] == bytes([0x2A, 0x09])
    assert disk.luns.execute_now(1, read10(0, 1), NEXUS) is not None  # reported: fast again


def test_declined_under_a_reservation(disk: FileDisk) -> None:
    reserve6 = bytes([0x16]).ljust(16, b"\0")
    assert disk.run(disk.luns.execute(1, reserve6, None, NEXUS2)).status == 0  # type: ignore[attr-defined]
    assert disk.luns.execute_now(1, read10(0, 1), NEXUS) is None
    assert disk.execute(read10(0, 1)).status == 0x18  # RESERVATION CONFLICT, from the ordinary path


def test_declined_while_an_exclusive_range_hold_exists(disk: FileDisk) -> None:
    async def hold_and_try() -> ScsiResponse | None:
        hold = await disk.lu.ranges.acquire(0, 8, exclusive=True)
        try:
            return disk.luns.execute_now(1, read10(1000, 1), NEXUS)
        finally:
            disk.lu.ranges.release(hold)

    assert disk.run(hold_and_try()) is None


def test_declined_by_backends_without_a_synchronous_read() -> None:
    async def main() -> ScsiResponse | None:
        luns = LunMap({1: LogicalUnit(MemoryBackend(SIZE), identity=LuIdentity.from_name("m"))})
        await luns.execute(1, bytes(16), None, NEXUS)
        assert (await luns.execute(1, read10(0, 1), None, NEXUS)).status == 0
        return luns.execute_now(1, read10(0, 1), NEXUS)

    assert asyncio.run(main()) is None


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sixteen=st.booleans(),
    lba=st.one_of(st.integers(0, BLOCKS + 8), st.integers(0, (1 << 32) - 1)),
    blocks=st.integers(0, 4096),
    flags=st.sampled_from([0, 0x08, 0x10, 0x20, 0x40, 0x80, 0x02]),
)
def test_property_execute_now_never_disagrees_with_execute(
    disk: FileDisk, sixteen: bool, lba: int, blocks: int, flags: int
) -> None:
    cdb = read16(lba, blocks, flags) if sixteen else read10(lba, blocks & 0xFFFF, flags)
    now = disk.luns.execute_now(1, cdb, NEXUS)
    if now is not None:
        assert same(now, disk.execute(cdb)), cdb.hex()
