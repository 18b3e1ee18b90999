"""Drive a LunMap synchronously with raw CDB bytes, as the protocol layer would."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Sequence
from typing import Any

from iscsikit.target.backend import Buffer
from iscsikit.target.backends import MemoryBackend
from iscsikit.target.scsi import LogicalUnit, LuIdentity, LunMap, Nexus, ScsiResponse
from iscsikit.target.scsi.sense import parse_sense

TARGET = "iqn.2026-11.org.example:disk"
NEXUS = Nexus("iqn.2026-11.org.example:host1", bytes.fromhex("400001370000"), TARGET, 1, session_id=1)
NEXUS2 = Nexus("iqn.2026-11.org.example:host2", bytes.fromhex("400001370001"), TARGET, 1, session_id=2)

GOOD, CHECK_CONDITION, RESERVATION_CONFLICT = 0x00, 0x02, 0x18


class RecordingBackend(MemoryBackend):
    """A real memory backend that also remembers how it was called (fua flags, flushes)."""

    def __init__(self, size: int, **kw: Any) -> None:
        super().__init__(size, **kw)
        self.writes: list[tuple[int, int, bool]] = []
        self.flushes = 0
        self.unmaps: list[tuple[int, int]] = []

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        self.writes.append((offset, len(data), fua))
        await super().write(offset, data, fua=fua)

    async def flush(self) -> None:
        self.flushes += 1

    async def unmap(self, offset: int, length: int) -> None:
        self.unmaps.append((offset, length))
        await super().unmap(offset, length)


def make_lu(size: int = 8 << 20, *, thin: bool = True, block_size: int = 512, **kw: Any) -> LogicalUnit:
    return LogicalUnit(
        RecordingBackend(size, thin=thin, block_size=block_size), identity=LuIdentity.from_name(f"{TARGET}/1"), **kw
    )


class Disk:
    """A LunMap plus an event loop; ``cmd`` runs one command to completion."""

    def __init__(self, luns: dict[int, LogicalUnit] | None = None, *, clear_ua: bool = True, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.luns = LunMap(luns if luns is not None else {1: make_lu(**kw)})
        if clear_ua:
            for lun in self.luns:
                for nexus in (NEXUS, NEXUS2):
                    self.cmd(bytes(6), lun=lun, nexus=nexus)

    @property
    def lu(self) -> LogicalUnit:
        return self.luns[next(iter(self.luns))]

    @property
    def backend(self) -> RecordingBackend:
        backend = self.lu.backend
        assert isinstance(backend, RecordingBackend)
        return backend

    def cmd(
        self, cdb: bytes | Sequence[int], data: Buffer | None = None, *, lun: int = 1, nexus: Nexus = NEXUS
    ) -> ScsiResponse:
        return self.loop.run_until_complete(self.luns.execute(lun, bytes(cdb), data, nexus))

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.run_until_complete(self.luns.close())
        self.loop.close()


def data(rsp: ScsiResponse) -> bytes:
    return b"".join(bytes(p) for p in rsp.data)


def sense_of(rsp: ScsiResponse) -> tuple[int, int, int]:
    assert rsp.status == CHECK_CONDITION, rsp
    return parse_sense(rsp.sense)


def good(rsp: ScsiResponse) -> bytes:
    assert rsp.status == GOOD, f"{rsp} {parse_sense(rsp.sense) if rsp.sense else ''}"
    return data(rsp)


# CDB builders -------------------------------------------------------------------------------


def read10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x28, flags, lba & 0xFFFFFFFF, 0, blocks, 0)


def write10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, flags, lba & 0xFFFFFFFF, 0, blocks, 0)


def read16(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x88, flags, lba & 0xFFFFFFFFFFFFFFFF, blocks, 0, 0)


def write16(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x8A, flags, lba & 0xFFFFFFFFFFFFFFFF, blocks, 0, 0)


def inquiry(evpd: int = 0, page: int = 0, alloc: int = 255) -> bytes:
    return struct.pack(">BBBHB", 0x12, evpd, page, alloc, 0)


def caw(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQ3xBBB", 0x89, flags, lba, blocks, 0, 0)


def write_same16(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", 0x93, flags, lba, blocks, 0, 0)


def write_same10(lba: int, blocks: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", 0x41, flags, lba, 0, blocks, 0)


def unmap_cdb(length: int) -> bytes:
    return struct.pack(">BB4xBHB", 0x42, 0, 0, length, 0)


def unmap_params(*ranges: tuple[int, int]) -> bytes:
    descs = b"".join(struct.pack(">QI4x", lba, n) for lba, n in ranges)
    return struct.pack(">HH4x", len(descs) + 6, len(descs)) + descs


def mode_sense6(page: int = 0x3F, pc: int = 0, dbd: bool = False, alloc: int = 255, subpage: int = 0) -> bytes:
    return bytes([0x1A, 0x08 if dbd else 0, (pc << 6) | page, subpage, alloc, 0])


def mode_select6(length: int, pf: bool = True, sp: bool = False) -> bytes:
    return bytes([0x15, (0x10 if pf else 0) | (0x01 if sp else 0), 0, 0, length, 0])


def rc16(alloc: int = 32) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x10, 0, alloc, 0, 0)


def get_lba_status(lba: int, alloc: int = 24) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0)


def pr_out(sa: int, key: int = 0, sa_key: int = 0, ptype: int = 0, flags: int = 0) -> tuple[bytes, bytes]:
    cdb = struct.pack(">BBB2xIB", 0x5F, sa, ptype, 24, 0)
    params = struct.pack(">QQ4xBBH", key, sa_key, flags, 0, 0)
    return cdb, params


def pr_in(sa: int, alloc: int = 1024) -> bytes:
    return struct.pack(">BB5xHB", 0x5E, sa, alloc, 0)
