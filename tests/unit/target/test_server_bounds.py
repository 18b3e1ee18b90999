"""The server's bounds on peers, over real loopback sockets: timeouts, limits, reaping, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from typing import Any

import pytest

from iscsikit.target.limits import RefusalLog, ServerLimits
from iscsikit.target.proto import InitiatorConnection
from iscsikit.target.proto.initiator import LoginFailed
from iscsikit.target.proto.pdu import R2T
from tests.support import tiers

from .proto.aclient import WRITE10, Client, rw10
from .test_server import I, SlowFlushBackend, T, client, port, run, serving


def reset(c: Client) -> None:
    """Leave abruptly: RST."""
    sock = c.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.writer.transport.abort()


async def fill_past_max_buffered(c: Client) -> None:
    """Two complete 1 MiB writes the (stopped) backend holds, then a third command nobody reads."""
    data = os.urandom(1 << 20)
    for i in range(2):  # two complete 1 MiB writes wait for the backend: over max_buffered_bytes
        itt, wire = c.ini.scsi_command(rw10(WRITE10, i * 2048, 2048), lun=1, write_data=data)
        await c.send(wire)
        p = await c.pdu()
        assert isinstance(p, R2T), p
        off, end, sn = p.offset, p.offset + p.length, 0
        while off < end:
            n = min(c.ini.target_mrdsl, end - off)
            await c.send(c.ini.data_out(itt, p.ttt, sn, off, data[off : off + n], off + n == end, lun=1))
            off, sn = off + n, sn + 1
    _itt, wire = c.ini.scsi_command(rw10(WRITE10, 8192, 2048), lun=1, write_data=data)
    await c.send(wire)  # not read any more


async def until(cond: Any, timeout: float = 20.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond() and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return bool(cond())


def run_on(request: pytest.FixtureRequest, loop: str, coro: Any) -> None:
    if loop == "uvloop":
        uvloop = tiers.require_module(request, "uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(asyncio.wait_for(coro, 60))
    else:
        run(coro)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_paused_connection_whose_peer_resets_is_reaped_and_its_buffers_freed(
    request: pytest.FixtureRequest, loop: str
) -> None:
    """Writes wait for a stuck backend: reading pauses; the peer then vanishes with an RST.

    asyncio does not read a paused socket, so without the housekeeping poll nobody would see it.
    """

    async def main() -> None:
        backend = SlowFlushBackend(64 << 20)
        async with serving(backend, max_buffered_bytes=1 << 20, nop_interval=0) as server:
            c = await client(server)
            backend.gate.clear()
            await fill_past_max_buffered(c)
            (conn,) = server.connections
            assert await until(lambda: conn._paused_read)
            assert server.budget.used > 0
            reset(c)
            assert await until(lambda: not server.connections), "a peer gone behind a pause was not noticed"
            backend.gate.set()
            assert await until(lambda: server.budget.used == 0)

    run_on(request, loop, main())


def test_a_login_that_does_not_finish_is_dropped_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(server_limits=ServerLimits(login_timeout=0.5), nop_interval=0) as server:
            conns = [await asyncio.open_connection("127.0.0.1", port(server)) for _ in range(5)]
            for reader, _writer in conns:
                assert await asyncio.wait_for(reader.read(100), 20) == b""  # closed by the target
            good = await client(server)  # a login that finishes stays
            await asyncio.sleep(1.5)
            assert (await good.read(1, 0, 1))[0].status == 0

    with caplog.at_level(logging.WARNING, logger="iscsikit.target"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "login timeout" in r.getMessage()]
    assert len(lines) == 1, lines


def test_connections_over_the_per_address_limit_are_refused_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        limits = ServerLimits(max_connections_per_address=3)
        async with serving(server_limits=limits, nop_interval=0) as server:
            held = [await asyncio.open_connection("127.0.0.1", port(server)) for _ in range(3)]
            await until(lambda: len(server.connections) == 3)
            for _ in range(10):
                reader, _w = await asyncio.open_connection("127.0.0.1", port(server))
                try:
                    assert await asyncio.wait_for(reader.read(100), 20) == b""
                except ConnectionResetError:
                    pass
            assert len(server.connections) == 3
            # Another address is not affected.
            reader, writer = await asyncio.open_connection("127.0.0.1", port(server), local_addr=("127.0.0.2", 0))
            other = Client(InitiatorConnection(I, target=T), reader, writer)
            await other.login()
            assert (await other.read(1, 0, 1))[0].status in (0, 2)
            for _r, w in held:
                w.close()

    with caplog.at_level(logging.WARNING, logger="iscsikit.target"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "max_connections_per_address" in r.getMessage()]
    assert len(lines) == 1, lines


def test_sessions_over_the_per_target_limit_are_refused_at_login() -> None:
    async def main() -> None:
        async with serving(server_limits=ServerLimits(max_sessions_per_target=2), nop_interval=0) as server:
            a = await client(server, isid=b"\x80\0\0\0\0\x01")
            b = await client(server, isid=b"\x80\0\0\0\0\x02")
            with pytest.raises(LoginFailed) as exc:
                await client(server, isid=b"\x80\0\0\0\0\x03")
            assert exc.value.status == 0x0302  # OUT OF RESOURCES
            # Reinstating an existing session adds none: allowed.
            again = await client(server, isid=b"\x80\0\0\0\0\x01")
            assert await a.closed_by_target()
            assert (await again.read(1, 0, 1))[0].status == 0 and (await b.read(1, 0, 1))[0].status == 0

    run(main())


def test_an_idle_discovery_session_is_closed() -> None:
    async def main() -> None:
        async with serving(server_limits=ServerLimits(idle_timeout=0.5), nop_interval=0) as server:
            d = await Client.connect("127.0.0.1", port(server), InitiatorConnection(I))
            assert await d.closed_by_target(timeout=20)
            assert not server.connections

    run(main())


def test_stop_ends_within_the_shutdown_timeout_whatever_peers_left() -> None:
    """A write stuck in the backend, writes waiting for data, a peer that reads nothing."""

    async def main() -> None:
        backend = SlowFlushBackend(64 << 20)
        server_cm = serving(backend, shutdown_timeout=0.5, nop_interval=0)
        server = await server_cm.__aenter__()
        c = await client(server)
        backend.gate.clear()
        stuck = asyncio.ensure_future(c.write(1, 0, os.urandom(4096)))
        await backend.writes_started.wait()
        w = await client(server, isid=b"\x80\0\0\0\0\x02")
        for i in range(4):  # R2Ts nobody answers
            _itt, wire = w.ini.scsi_command(rw10(WRITE10, i * 2048, 2048), lun=1, write_data=b"\0" * (1 << 20),
                                            immediate_length=0)  # fmt: skip
            await w.send(wire)
        deaf = await client(server, isid=b"\x80\0\0\0\0\x03")  # asks for 32 MiB, reads none of it
        deaf.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for i in range(8):
            _itt, wire = deaf.ini.scsi_command(rw10(0x28, i * 8192, 8192), lun=1, read_length=4 << 20)
            await deaf.send(wire)
        deaf.reader._transport.pause_reading()  # type: ignore[attr-defined]
        half = await asyncio.open_connection("127.0.0.1", port(server))
        await asyncio.wait_for(server_cm.__aexit__(None, None, None), 30)
        assert not server.connections
        assert server.budget.used == 0
        stuck.cancel()
        half[1].close()

    run(main())


def test_refusal_log_counts_what_it_does_not_print(caplog: pytest.LogCaptureFixture) -> None:
    log = RefusalLog(logging.getLogger("iscsikit.target.test"), interval=60)
    with caplog.at_level(logging.WARNING, logger="iscsikit.target.test"):
        assert log.note("192.0.2.1", "max_connections", "4096 open", now=0.0)
        assert not any(log.note("192.0.2.1", "max_connections", "4096 open", now=float(t)) for t in range(1, 50))
        assert log.note("192.0.2.2", "max_connections", "4096 open", now=50.0)  # another address
        assert log.note("192.0.2.1", "max_connections", "4096 open", now=61.0)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3 and "49 more" in messages[2]
    assert log.counts["max_connections"] == 52


def test_refusal_log_memory_is_bounded() -> None:
    log = RefusalLog(logging.getLogger("iscsikit.target.test"), max_keys=10)
    for i in range(1000):
        log.note(f"10.0.{i >> 8}.{i & 255}", "k", "r", now=0.0)
    assert len(log._seen) <= 10


@pytest.mark.parametrize("field", ["login_timeout", "max_connections", "write_buffer_budget"])
def test_server_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ServerLimits(**{field: 0})


def test_reads_sent_in_one_burst_and_never_read_back_stay_bounded(tmp_path: Any) -> None:
    """128 x 1 MiB READs in one send, no answer read: the target stops at its high-water mark."""
    from iscsikit.target.backends import FileBackend
    from iscsikit.target.buffers import BufferPool

    async def main() -> None:
        backend = FileBackend(tmp_path / "r.img", size=256 << 20, buffers=BufferPool())
        async with serving(backend, nop_interval=0, shutdown_timeout=1) as server:
            c = await client(server)
            c.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            wire = b"".join(
                c.ini.scsi_command(rw10(0x28, i * 2048, 2048), lun=1, read_length=1 << 20)[1] for i in range(128)
            )
            c.writer.transport.pause_reading()  # type: ignore[attr-defined]
            c.writer.write(wire)
            await asyncio.sleep(1.0)
            (conn,) = server.connections
            assert conn.transport is not None
            queued = conn.transport.get_write_buffer_size() + sum(len(b) for _, bufs in conn._sending for b in bufs)
            assert conn.transport.get_write_buffer_size() < 32 << 20, queued
            assert len(conn._deferred) > 64  # most reads wait for the peer to read
            # Once it reads, every answer comes, in order.
            c.writer.transport.resume_reading()  # type: ignore[attr-defined]
            for _ in range(128):
                got = 0
                while True:
                    p = await c.pdu(timeout=30)
                    got += sum(len(d) for d in p.data)  # type: ignore[attr-defined]
                    if p.status_present:  # type: ignore[attr-defined]
                        break
                assert got == 1 << 20

    run(main())


def test_a_paused_connection_whose_peer_half_closes_reads_to_the_end_and_finishes() -> None:
    """A FIN behind a pause: the rest of the stream is read; the connection ends as at any EOF."""

    async def main() -> None:
        backend = SlowFlushBackend(64 << 20)
        async with serving(backend, max_buffered_bytes=1 << 20, nop_interval=0) as server:
            c = await client(server)
            backend.gate.clear()
            await fill_past_max_buffered(c)
            (conn,) = server.connections
            assert await until(lambda: conn._paused_read)
            c.writer.write_eof()
            assert await until(lambda: conn._peer_eof and not conn._paused_read), "the FIN was not noticed"
            # As at any end of stream (ErrorRecoveryLevel 0) its tasks are aborted and it closes;
            # the writes already in the backend give their buffers back when they finish.
            assert await c.closed_by_target()
            backend.gate.set()
            assert await until(lambda: not server.connections and server.budget.used == 0)

    run(main())


def test_commands_waiting_for_data_that_never_comes_lose_their_connection(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with serving(server_limits=ServerLimits(data_timeout=1.0), nop_interval=0) as server:
            c = await client(server)  # alive, it just sends no data
            for i in range(4):
                _itt, wire = c.ini.scsi_command(rw10(WRITE10, i * 2048, 2048), lun=1, write_data=b"\0" * (1 << 20),
                                                immediate_length=0)  # fmt: skip
                await c.send(wire)
            assert isinstance(await c.pdu(), R2T)
            assert server.budget.used == 4 << 20
            assert await c.closed_by_target(timeout=20)
            assert await until(lambda: not server.connections and server.budget.used == 0)
            good = await client(server, isid=b"\x80\0\0\0\0\x02")  # sending its data in time is fine
            assert (await good.write(1, 0, b"\1" * (1 << 20))).status == 0

    with caplog.at_level(logging.WARNING, logger="iscsikit.target"):
        run(main())
    assert len([r for r in caplog.records if "data timeout" in r.getMessage()]) == 1
