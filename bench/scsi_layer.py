"""Per-command cost of the SCSI layer alone: LunMap.execute for 4 KiB READ(16)/WRITE(16) on a memory backend.

    .venv/bin/python -m bench.scsi_layer [--runs 5] [--n 100000]

No network, no iSCSI: this is the ceiling the SCSI code puts on the target's IOPS. Writes
bench/results/scsi_layer.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import struct
import time

from bench.results import Result
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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n", type=int, default=100_000, help="commands per run")
    args = parser.parse_args()
    result = Result("scsi_layer", vars(args))
    for name, op in (("READ(16) 4 KiB", READ16), ("WRITE(16) 4 KiB", WRITE16)):
        runs = [await commands_per_second(op, args.n) for _ in range(args.runs)]
        med = result.add(name, runs, "commands/s")
        print(f"{name}: {med:,.0f} commands/s (median of {args.runs})")
    result.write()


if __name__ == "__main__":
    asyncio.run(main())
