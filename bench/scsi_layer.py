"""Per-command cost of the SCSI layer alone: LunMap.execute for 4 KiB READ(16)/WRITE(16) on a memory backend.

    .venv/bin/python -m bench.scsi_layer

No network, no iSCSI: this is the ceiling the SCSI code puts on the target's IOPS.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import struct
import time

from iscsikit.target.backends import MemoryBackend
from iscsikit.target.scsi import LogicalUnit, LuIdentity, LunMap, Nexus

READ16, WRITE16 = 0x88, 0x8A
SIZE = 64 << 20


async def commands_per_second(op: int, n: int = 100_000) -> float:
    luns = LunMap({1: LogicalUnit(MemoryBackend(SIZE), identity=LuIdentity.from_name("bench"))})
    nexus = Nexus("iqn.2026-11.bench:i", bytes(6), "iqn.2026-11.bench:t", 1, 1)
    await luns.execute(1, bytes(16), None, nexus)  # consume the power-on unit attention
    data = bytes(4096)
    blocks = SIZE // 512 - 8
    cdbs = [struct.pack(">BBQIBB", op, 0, random.randrange(0, blocks), 8, 0, 0) for _ in range(1024)]
    started = time.perf_counter()
    for i in range(n):
        await luns.execute(1, cdbs[i & 1023], data if op == WRITE16 else None, nexus)
    return n / (time.perf_counter() - started)


async def main() -> None:
    for name, op in (("READ(16) 4 KiB", READ16), ("WRITE(16) 4 KiB", WRITE16)):
        runs = [await commands_per_second(op) for _ in range(5)]
        print(f"{name}: {statistics.median(runs):,.0f} commands/s (median of 5)")


if __name__ == "__main__":
    asyncio.run(main())
