"""The asyncio server over real loopback sockets, with the real SCSI layer on memory LUNs."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from iscsikit.target.backend import Backend, Buffer
from iscsikit.target.backends import FileBackend, MemoryBackend
from iscsikit.target.buffers import BufferPool
from iscsikit.target.control import ControlError, ControlServer, register_command, request
from iscsikit.target.proto import InitiatorConnection, PortalInfo, TargetInfo
from iscsikit.target.proto.pdu import DataIn, ScsiResponse
from iscsikit.target.scsi import LogicalUnit, LuIdentity, LunMap
from iscsikit.target.server import ServerOptions, TargetRuntime, TargetServer
from tests.support import tiers

from .proto.aclient import READ10, Client, rw10

T = "iqn.2026-11.org.example:srv"
I = "iqn.2026-11.org.example:ini"  # noqa: E741


class SlowFlushBackend(MemoryBackend):
    """A memory backend whose writes wait for a gate, and which counts flushes."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.gate = asyncio.Event()
        self.gate.set()
        self.writes_started = asyncio.Event()
        self.flushes = 0

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        self.writes_started.set()
        await self.gate.wait()
        await super().write(offset, data, fua=fua)

    async def flush(self) -> None:
        self.flushes += 1
        await super().flush()


@contextlib.asynccontextmanager
async def serving(backend: Backend | None = None, **opts: Any) -> AsyncIterator[TargetServer]:
    backend = backend or MemoryBackend(64 << 20)
    luns = LunMap({1: LogicalUnit(backend, identity=LuIdentity.from_name(T + "/1"))})
    server = TargetServer([TargetRuntime(TargetInfo(T), luns)], [PortalInfo("127.0.0.1", 0, 1)], ServerOptions(**opts))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def port(server: TargetServer) -> int:
    return server.portals[0].port


async def client(server: TargetServer, **kw: Any) -> Client:
    c = await Client.connect("127.0.0.1", port(server), InitiatorConnection(I, target=T, **kw))
    # The first command of a new nexus gets UNIT ATTENTION (power on); take it out of the way.
    rsp, _ = await c.read(1, 0, 1)
    assert rsp.status in (0, 2)
    return c


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_write_and_read_back_large_and_small() -> None:
    async def main() -> None:
        async with serving() as server:
            c = await client(server)
            big = os.urandom(3 << 20)
            rsp = await c.write(1, 2048, big)
            assert rsp.status == 0
            rsp2, data = await c.read(1, 2048, len(big) // 512)
            assert data == big and rsp2.status == 0
            small = os.urandom(4096)
            assert (await c.write(1, 7, small)).status == 0
            assert (await c.read(1, 7, 8))[1] == small
            await c.close()

    run(main())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_read_buffers_are_reused_only_after_the_transport_sent_them(
    request: pytest.FixtureRequest, tmp_path: Path, loop: str
) -> None:
    """Pooled read buffers come back for reuse, and never while their bytes may still be unsent.

    The initiator stops reading while 16 MiB of Data-In is queued (socket buffers full, the rest
    in the transport), then asks for more: a buffer reused too early would carry the later
    read's data in place of the earlier one's.
    """

    async def main() -> None:
        pool = BufferPool(max_idle_bytes=64 << 20)
        backend = FileBackend(tmp_path / "pool.img", size=64 << 20, buffers=pool)
        async with serving(backend) as server:
            c = await client(server)
            blocks = [os.urandom(1 << 20) for _ in range(32)]
            for i, blk in enumerate(blocks):
                assert (await c.write(1, i * 2048, blk)).status == 0
            for rnd in range(3):
                wanted: dict[int, int] = {}
                for batch in range(2):
                    for k in range(8):
                        i = (rnd * 5 + batch * 8 + k) % 32
                        itt, wire = c.ini.scsi_command(rw10(READ10, i * 2048, 2048), lun=1, read_length=1 << 20)
                        wanted[itt] = i
                        c.writer.write(wire)
                    await asyncio.sleep(0.3)  # nothing read: the target's output backs up
                got: dict[int, bytearray] = {itt: bytearray(1 << 20) for itt in wanted}
                done: set[int] = set()
                while len(done) < len(wanted):
                    pdu = await c.pdu()
                    assert isinstance(pdu, DataIn), pdu
                    piece = b"".join(bytes(d) for d in pdu.data)
                    got[pdu.itt][pdu.offset : pdu.offset + len(piece)] = piece
                    if pdu.status_present:
                        assert pdu.status == 0
                        done.add(pdu.itt)
                for itt, i in wanted.items():
                    assert got[itt] == blocks[i], f"read of block {i} returned other data"
            await c.close()
        assert pool.reused > 0 and pool.returned > 0

    if loop == "uvloop":
        uvloop = tiers.require_module(request, "uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(asyncio.wait_for(main(), 60))
    else:
        run(main())


def test_digests_end_to_end() -> None:
    async def main() -> None:
        async with serving() as server:
            c = await client(server, header_digest=True, data_digest=True)
            data = os.urandom(1 << 20)
            assert (await c.write(1, 0, data)).status == 0
            assert (await c.read(1, 0, 2048))[1] == data

    run(main())


def test_many_sessions_in_parallel() -> None:
    async def one(server: TargetServer, n: int) -> None:
        c = await Client.connect(
            "127.0.0.1", port(server), InitiatorConnection(I, target=T, isid=bytes([0x80, 0, 0, 0, 0, n + 1]))
        )
        await c.read(1, 0, 1)
        payload = bytes([n]) * (256 << 10)
        for rep in range(4):
            lba = (n * 4 + rep) * 512
            assert (await c.write(1, lba, payload)).status == 0
            assert (await c.read(1, lba, 512))[1] == payload
        await c.close()

    async def main() -> None:
        async with serving() as server:
            await asyncio.gather(*(one(server, n) for n in range(12)))
            assert server.status()["targets"][0]["sessions"] <= 12

    run(main())


def test_stop_finishes_in_flight_writes_and_flushes() -> None:
    async def main() -> None:
        backend = SlowFlushBackend(16 << 20)
        async with serving(backend) as server:
            c = await client(server)
            backend.gate.clear()
            data = os.urandom(64 << 10)
            write = asyncio.ensure_future(c.write(1, 100, data))
            await backend.writes_started.wait()
            stop = asyncio.ensure_future(server.stop())
            await asyncio.sleep(0.1)
            assert not stop.done()  # waiting for the write
            backend.gate.set()
            rsp = await write
            assert isinstance(rsp, ScsiResponse) and rsp.status == 0  # answered before the close
            await stop
            assert backend.flushes >= 1
            assert await c.closed_by_target()
            assert bytes(await backend.read(100 * 512, len(data))) == data

    run(main())


def test_reinstatement_closes_the_old_connection() -> None:
    async def main() -> None:
        async with serving() as server:
            first = await client(server)
            second = await client(server)  # same initiator name and ISID
            assert await first.closed_by_target()
            assert (await second.read(1, 0, 1))[0].status == 0

    run(main())


def test_keepalive_pings_and_drops_a_silent_initiator() -> None:
    async def main() -> None:
        async with serving(nop_interval=0.2) as server:
            c = await client(server)
            # Listen (and answer pings) for a second of otherwise idle time.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.pdu(), 1.0)
            assert c.pings >= 2
            assert (await c.read(1, 0, 1))[0].status == 0  # still logged in
            silent = await client(server, isid=b"\x80\0\0\0\0\x09")
            silent.answer_pings = False
            assert await silent.closed_by_target(timeout=5)

    run(main())


def test_unread_responses_pause_reading() -> None:
    """An initiator that never reads its Data-In cannot make the target buffer without bound."""

    async def main() -> None:
        async with serving(max_buffered_bytes=8 << 20) as server:
            c = await client(server)
            ini = c.ini
            for i in range(120):  # 120 MiB of reads requested, none read back
                _itt, wire = ini.scsi_command(bytes([0x28, 0, 0, 0, 0, 0, 0, 8, 0, 0]), lun=1, read_length=1 << 20)
                c.writer.write(wire)
                if i % 16 == 0:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            (conn,) = server.connections
            assert conn.transport is not None
            assert conn.transport.get_write_buffer_size() < 40 << 20
            assert conn._paused_read

    run(main())


def test_control_socket_status_and_extension(tmp_path: Path) -> None:
    async def ext(server: TargetServer, args: dict[str, Any]) -> Any:
        return {"echo": args.get("x")}

    register_command("test echo", ext)

    async def main() -> None:
        async with serving() as server:
            ctl = ControlServer(server, tmp_path / "ctl.sock")
            await ctl.start()
            try:
                c = await client(server)
                status = await asyncio.to_thread(request, tmp_path / "ctl.sock", "status")
                (target,) = status["targets"]
                assert target["iqn"] == T and target["sessions"] == 1
                assert target["portal"] == f"127.0.0.1:{port(server)}"
                (lun,) = target["luns"]
                assert lun["lun"] == 1 and lun["size_bytes"] == 64 << 20 and lun["backend"] == "memory"
                assert lun["replicas"] == []
                assert await asyncio.to_thread(request, tmp_path / "ctl.sock", "test echo", {"x": 5}) == {"echo": 5}
                with pytest.raises(ControlError, match="unknown command"):
                    await asyncio.to_thread(request, tmp_path / "ctl.sock", "nope")
                await c.close()
                assert oct((tmp_path / "ctl.sock").stat().st_mode & 0o777) == "0o600"
            finally:
                await ctl.stop()
            assert not (tmp_path / "ctl.sock").exists()

    run(main())


def test_control_request_without_a_server(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no control socket"):
        request(tmp_path / "missing.sock", "status")


def test_eager_start_runs_synchronous_work_without_a_task_and_resumes_waiting_work() -> None:
    from iscsikit.target.server import start_eagerly

    async def main() -> None:
        log: list[str] = []

        async def quick() -> None:
            log.append("quick")

        assert start_eagerly(quick()) is None and log == ["quick"]

        gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def slow() -> None:
            log.append(f"got {await gate}")
            await asyncio.sleep(0)
            log.append("after sleep")

        fut = start_eagerly(slow())
        assert fut is not None and not fut.done()
        gate.set_result(7)
        await fut
        assert log[-2:] == ["got 7", "after sleep"]

        async def fails_later() -> None:
            await asyncio.sleep(0)
            raise ValueError("boom")

        fut = start_eagerly(fails_later())
        assert fut is not None
        with pytest.raises(ValueError, match="boom"):
            await fut

        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def cancelled() -> None:
            try:
                await never
            finally:
                log.append("cleaned up")

        fut = start_eagerly(cancelled())
        assert fut is not None
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            await fut
        assert log[-1] == "cleaned up"

    run(main())
