"""CPU per command of the whole target path, in-process: no sockets, no scheduler, no initiator.

    .venv/bin/python -m bench.target_core [--backend file|memory] [--n 50000] [--profile]

A real :class:`~iscsikit.target.server._Connection` (the asyncio driver), the protocol core,
the SCSI layer and a backend are driven with pre-encoded SCSI Command PDUs, ``QD`` per
``buffer_updated`` (what one ``recv`` brings at that queue depth), through a transport that
only counts what it is given. What is left is the Python work per command (plus the backend's
``preadv``/``pwritev``): the ceiling the target's own code puts on IOPS, and a steady metric on
a noisy machine, where wall-clock runs against tgtd depend on the scheduler. ``--profile`` runs
cProfile over one workload and prints the top functions. A run without ``--profile`` writes
bench/results/target_core.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import Result  # noqa: E402
from iscsikit.target.backends import FileBackend, MemoryBackend  # noqa: E402
from iscsikit.target.proto import InitiatorConnection, PortalInfo, TargetInfo  # noqa: E402
from iscsikit.target.scsi import LogicalUnit, LuIdentity, LunMap  # noqa: E402
from iscsikit.target.server import ServerOptions, TargetRuntime, TargetServer, _Connection  # noqa: E402

TARGET = "iqn.2026-11.org.iscsikit.bench:core"
INITIATOR = "iqn.2026-11.org.iscsikit.bench:ini"
READ16, WRITE16 = 0x88, 0x8A


class CountingTransport:
    """Enough of ``asyncio.Transport`` for ``_Connection``: counts bytes and write calls."""

    def __init__(self) -> None:
        self.bytes = 0
        self.calls = 0
        self.closing = False
        self.last: list[Any] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 3260)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def writelines(self, pieces: list[Any]) -> None:
        self.calls += 1
        for p in pieces:
            self.bytes += len(p)
        self.last = pieces

    def write(self, data: Any) -> None:
        self.writelines([data])

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def feed(conn: _Connection, wire: bytes) -> None:
    view = memoryview(wire)
    while len(view):
        buf = conn.get_buffer(-1)
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        conn.buffer_updated(n)
        view = view[n:]


async def run_workload(
    backend_kind: str, op: int, block: int, qd: int, n: int, rand: bool, path: Path, *, build_only: bool = False
) -> float:
    """CPU microseconds per command (process time, all threads)."""
    size = 64 << 20
    fresh = not path.exists()
    backend: Any = FileBackend(path, size=size) if backend_kind == "file" else MemoryBackend(size)
    luns = LunMap({1: LogicalUnit(backend, identity=LuIdentity.from_name(TARGET + "/1"))})
    server = TargetServer([TargetRuntime(TargetInfo(TARGET), luns)], [PortalInfo("127.0.0.1", 3260, 1)],
                          ServerOptions(nop_interval=0))  # fmt: skip
    server.scatter_gather = True
    await luns.open()
    if backend_kind == "file" and fresh:
        chunk = os.urandom(1 << 20)
        for off in range(0, size, 1 << 20):
            await backend.write(off, chunk)
    conn = _Connection(server, server.portals[0])
    transport = CountingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    ini = InitiatorConnection(INITIATOR, target=TARGET)
    wire: bytes | None = ini.login_request()
    while wire is not None:
        transport.last = []
        feed(conn, wire)
        out = b"".join(bytes(p) for p in transport.last)
        (resp,) = ini.feed(out)
        wire = ini.login_response(resp)  # type: ignore[arg-type]
    blocks = block // 512
    span = size // 512 - blocks
    payload = os.urandom(block) if op == WRITE16 else b""

    def batch(start: int) -> bytes:
        parts = []
        for i in range(qd):
            lba = random.randrange(0, span // blocks) * blocks if rand else ((start + i) * blocks) % span
            cdb = struct.pack(">BBQIBB", op, 0, lba, blocks, 0, 0)
            _itt, pdu = ini.scsi_command(
                cdb, lun=1, read_length=block if op == READ16 else 0, write_data=payload
            )  # fmt: skip
            parts.append(pdu)
        return b"".join(parts)

    async def one(wire: bytes) -> None:
        feed(conn, wire)
        while conn.running:  # writes wait for the thread pool
            await asyncio.wait(list(conn.running.values()))

    await one(batch(0))  # the power-on unit attention goes to the first command
    batches = [batch(k * qd) for k in range(max(1, n // qd))]
    if build_only:  # the initiator side alone, to subtract from an instruction count
        batches = []
    before_calls = transport.calls
    started = time.process_time()
    for wire in batches:
        await one(wire)
    elapsed = time.process_time() - started
    commands = max(1, len(batches) * qd)
    assert transport.calls > before_calls or build_only
    conn.connection_lost(None)
    await luns.close()
    return elapsed / commands * 1e6


WORKLOADS = [
    ("4 KiB random read", READ16, 4096, True, (1, 8, 32)),
    ("4 KiB random write", WRITE16, 4096, True, (1, 8, 32)),
    ("1 MiB sequential read", READ16, 1 << 20, False, (1, 8)),
    ("1 MiB sequential write", WRITE16, 1 << 20, False, (8,)),
]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("file", "memory"), default="file")
    ap.add_argument("--n", type=int, default=40_000, help="commands per 4 KiB run (1 MiB runs use n/40)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", default="", help="substring of a workload name, e.g. '4 KiB random read'")
    ap.add_argument("--qd", type=int, default=0, help="only this queue depth")
    ap.add_argument(
        "--build-only",
        action="store_true",
        help="encode the commands but do not run them (the initiator's share of an instruction count)",
    )
    ap.add_argument("--profile", action="store_true", help="cProfile the first selected workload at its last QD")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "core.img"
        chosen = [
            (name, op, block, rand, tuple(q for q in qds if args.qd in (0, q)))
            for name, op, block, rand, qds in WORKLOADS
            if args.only in name and args.qd in (0, *qds)
        ]
        if args.profile:
            import cProfile
            import pstats

            name, op, block, rand, qds = chosen[0]
            n = args.n if block <= 65536 else max(200, args.n // 40)
            prof = cProfile.Profile()
            prof.enable()
            await run_workload(args.backend, op, block, qds[-1], n, rand, path)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return 0
        result = Result("target_core", vars(args))
        print(f"backend={args.backend}, {args.runs} runs (median), load avg {os.getloadavg()[0]:.1f}\n")
        print("| workload | QD | CPU us/command (median) | min | commands/s of CPU (median) |\n|---|---|---|---|---|")
        for name, op, block, rand, qds in chosen:
            n = args.n if block <= 65536 else max(200, args.n // 40)
            for qd in qds:
                runs = [
                    await run_workload(args.backend, op, block, qd, n, rand, path, build_only=args.build_only)
                    for _ in range(args.runs)
                ]
                us = result.add(f"{name}, QD{qd}", runs, "us/command")
                print(f"| {name} | {qd} | {us:.1f} | {min(runs):.1f} | {1e6 / us:,.0f} |", flush=True)
        result.write()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
