"""The replicated controller against real replica servers (in-process, loopback)."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from iscsikit.errors import ReplicaError, VolumeStartError
from iscsikit.replica.controller import Mode
from iscsikit.target.backend import BackendError
from tests.unit.replica.cluster import LocalCluster
from tests.unit.replica.conftest import all_rw, crash, fast, run, wait_until

MiB = 1 << 20
SIZE = 16 * MiB


def block(tag: int, n: int = 4096) -> bytes:
    return random.Random(tag).randbytes(n)


@run
async def test_writes_fan_out_and_reads_come_back(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    assert b.size == SIZE and [r.mode for r in b.replicas] == [Mode.RW] * 3
    await b.write(MiB, block(1), fua=True)
    await b.write(5 * MiB, block(2, 6 * MiB))  # bigger than one replica request: split
    for _ in range(3):  # round robin over all three
        assert await b.read(MiB, 4096) == block(1)
    assert b"".join(await b.readv(5 * MiB, 6 * MiB)) == block(2, 6 * MiB)
    await b.unmap(MiB, 4096)
    assert await b.read(MiB, 4096) == bytes(4096)
    await b.flush()
    c.assert_identical({5 * MiB: block(2, 6 * MiB)})
    assert b.describe()["replicas"][0]["revision"] == 4  # the 6 MiB write went as two requests
    await b.close()
    assert all(c.meta(i)["clean"] for i in range(3))
    await c.stop()


@run
async def test_killed_replica_is_dropped_then_rebuilt_and_identical(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    acked: dict[int, bytes] = {}
    for i in range(8):
        acked[i * MiB] = block(i, 64 << 10)
        await b.write(i * MiB, acked[i * MiB])
    await c.kill(1)
    for i in range(8, 14):  # no error for the initiator
        acked[i * MiB] = block(i, 64 << 10)
        await b.write(i * MiB, acked[i * MiB])
    assert b.replicas[1].mode == Mode.ERR
    assert c.meta(0)["epoch"] > c.meta(1)["epoch"]  # survivors moved on before acknowledging
    await c.start(1)
    await all_rw(b)
    progress = b.replicas[1].rebuild
    assert progress is not None and progress.fraction == 1.0
    assert progress.skipped_bytes >= 8 * (64 << 10)  # what it already had was not copied again
    await b.flush()
    c.assert_identical(acked)
    events = [e["event"] for e in b.events if e["address"] == c.addresses[1]]
    assert events[-3:] == ["reconnected", "wo", "rw"]
    await b.close()
    await c.stop()


@run
async def test_hung_replica_times_out_and_io_goes_on(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses, timeout=0.3, auto_rebuild=False)
    await b.open()
    c.freeze(2)
    await b.write(0, block(1))
    assert b.replicas[2].mode == Mode.ERR
    assert "not answered within its timeout" in (b.replicas[2].last_error or "")
    assert await b.read(0, 4096) == block(1)
    await b.close()
    await c.stop()


@run
async def test_fewer_than_min_replicas_fails_writes_with_a_scsi_error(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses, min_replicas=2, auto_rebuild=False)
    await b.open()
    await c.kill(0)
    await b.write(0, block(1))  # two left: fine
    await c.kill(1)
    with pytest.raises(BackendError) as exc:
        await b.write(0, block(2))
    assert exc.value.kind == "unavailable"
    assert "min_replicas is 2" in str(exc.value)
    assert await b.read(0, 4096) == block(2) or await b.read(0, 4096) == block(1)
    with pytest.raises(BackendError):
        await b.flush()
    await c.kill(2)
    with pytest.raises(BackendError, match="no RW replica left"):
        await b.read(0, 4096)
    await b.close()


@run
async def test_stale_replica_is_never_a_source_after_controller_restart(tmp_path: Path) -> None:
    # Replica killed, writes go on, controller killed, everything restarted. No pings: only the
    # write path itself may record that replica 0 left before the writes are acknowledged.
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses, auto_rebuild=False, ping_interval=600)
    await b.open()
    await b.write(0, block(1))
    await b.flush()  # every replica persists the same revision
    # The victim is the replica the revision tie-break would prefer: only the epoch protects it.
    victim = max(range(3), key=lambda i: c.addresses[i])
    await c.kill(victim)
    await b.write(0, block(2))
    await b.write(MiB, block(3))
    await crash(b)
    await c.stop()
    await c.start()
    b2 = fast(c.addresses)
    await b2.open()
    assert b2.replicas[victim].mode in (Mode.WO, Mode.ERR)  # never RW before a rebuild
    for _ in range(6):
        assert await b2.read(0, 4096) == block(2)
        assert await b2.read(MiB, 4096) == block(3)
    await all_rw(b2)
    await b2.flush()
    c.assert_identical({0: block(2), MiB: block(3)})
    await b2.close()
    await c.stop()


@run
async def test_missing_member_blocks_start_until_it_returns(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    await b.write(0, block(1))
    await crash(b)
    await c.kill(1)
    with pytest.raises(VolumeStartError, match=r"members of epoch .* are unreachable"):
        await fast(c.addresses, start_timeout=0.3).open()
    forced = fast(c.addresses, start_timeout=0.3, force_start=True)
    await forced.open()
    assert await forced.read(0, 4096) == block(1)
    await forced.close()
    await c.stop()


@pytest.mark.parametrize("via", ["pull", "relay"])
@run
async def test_rebuild_under_continuous_writes_never_loses_newer_data(tmp_path: Path, via: str) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start(0)
    b = fast(c.addresses[:1], rebuild_chunk=256 << 10, rebuild_pull_chunk=256 << 10, rebuild_parallel=2,
             rebuild_pull=via == "pull")  # fmt: skip
    await b.open()
    rng = random.Random(7)
    acked: dict[int, bytes] = {}
    for i in range(0, SIZE, 128 << 10):
        acked[i] = rng.randbytes(4096)
        await b.write(i, acked[i])
    await b.unmap(0, 128 << 10)  # source hole
    del acked[0]
    await c.start(1)
    stop = asyncio.Event()

    async def writer() -> None:
        n = 0
        while not stop.is_set():
            off = rng.randrange(0, SIZE // 4096) * 4096
            data = rng.randbytes(4096)
            await b.write(off, data)
            acked = {k: v for k, v in acked_ref.items() if not (off <= k < off + 4096)}
            acked[off] = data
            acked_ref.clear()
            acked_ref.update(acked)
            n += 1
            if n % 8 == 0:
                await asyncio.sleep(0)

    acked_ref = acked
    task = asyncio.create_task(writer())
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    stop.set()
    await task
    assert r.rebuild is not None and r.rebuild.copied_bytes > 0 and r.rebuild.via == via
    await b.flush()
    c.assert_identical(acked_ref)
    await b.close()
    await c.stop()


@run
async def test_rebuild_punches_holes_where_the_source_has_none(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses, auto_rebuild=False)
    await b.open()
    await b.write(2 * MiB, block(1, MiB))
    await c.kill(1)
    await b.unmap(2 * MiB, MiB)  # replica 1 misses the unmap
    await c.start(1)
    await b._connect(b.replicas[1])
    b.start_rebuild(b.replicas[1])
    await all_rw(b)
    fd = os.open(c.dirs[1] / "volume.img", os.O_RDONLY)
    try:
        with pytest.raises(OSError):  # no data anywhere: ENXIO
            os.lseek(fd, 0, os.SEEK_DATA)
    finally:
        os.close(fd)
    await b.close()
    await c.stop()


@run
async def test_add_and_remove_replicas(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses[:1])
    await b.open()
    await b.write(0, block(1))
    with pytest.raises(ReplicaError, match="only RW replica"):
        await b.remove_replica(c.addresses[0])
    await b.add_replica(c.addresses[1])
    await b.add_replica(c.addresses[2])
    with pytest.raises(ReplicaError, match="already a replica"):
        await b.add_replica(c.addresses[2])
    await all_rw(b, 3)
    await b.remove_replica(c.addresses[0])
    assert [r.address for r in b.replicas] == c.addresses[1:]
    assert await b.read(0, 4096) == block(1)
    ids = {m["id"] for m in c.meta(1)["members"]}  # type: ignore[union-attr]
    assert c.meta(0)["replica_id"] not in ids
    await b.close()
    # The removed replica belongs to this volume at an old epoch: a new controller over all three
    # treats it as stale and rebuilds it.
    b2 = fast(c.addresses)
    await b2.open()
    assert b2.replicas[0].mode != Mode.RW
    await all_rw(b2)
    await b2.close()
    await c.stop()


async def _forwarder(host: str, port: int) -> asyncio.Server:
    """A second address (127.0.0.2) for the server at host:port: bytes are passed both ways."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(serve, "127.0.0.2", 0)


@run
async def test_adding_a_second_address_of_a_member_leaves_the_member_serving(tmp_path: Path) -> None:
    # The same replica reached at another address is refused as a duplicate, and looking at it
    # must not claim it: a claim would close the connection that serves the volume.
    c = LocalCluster(tmp_path, 1, SIZE)
    await c.start()
    alias = await _forwarder("127.0.0.1", c.ports[0])
    b = fast(c.addresses, auto_rebuild=False)
    await b.open()
    await b.write(0, block(1))
    member = b.replicas[0].client
    with pytest.raises(ReplicaError, match="it is the same replica"):
        await b.add_replica(f"tcp://127.0.0.2:{alias.sockets[0].getsockname()[1]}")
    await b.write(4096, block(2))
    assert b.replicas[0].client is member and b.replicas[0].mode == Mode.RW
    assert [e for e in b.events if e["address"] == c.addresses[0] and e["event"] == "err"] == []
    assert await b.read(0, 8192) == block(1) + block(2)
    await b.close()
    alias.close()
    await c.stop()


@run
async def test_replica_of_another_volume_or_size_is_refused(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b1 = fast(c.addresses[:1])
    await b1.open()
    await b1.close()
    b2 = fast(c.addresses[1:])
    await b2.open()
    with pytest.raises(ReplicaError, match="belongs to volume"):
        await b2.add_replica(c.addresses[0])
    await b2.close()
    other = LocalCluster(tmp_path / "o", 1, 2 * SIZE)
    await other.start()
    b3 = fast(c.addresses[1:])
    await b3.open()
    with pytest.raises(ReplicaError, match="size 33554432 differs"):
        await b3.add_replica(other.addresses[0])
    await b3.close()
    with pytest.raises(VolumeStartError, match="replicas disagree on the volume size"):
        await fast([c.addresses[1], other.addresses[0]], start_timeout=0.2).open()
    await c.stop()
    await other.stop()


@run
async def test_a_second_controller_fences_the_first_and_it_never_takes_the_replica_back(tmp_path: Path) -> None:
    # b1 keeps reconnecting every 50 ms: it must not claim the replica back from b2 (which would
    # then claim it back in turn: two live controllers writing by turns).
    c = LocalCluster(tmp_path, 1, SIZE)
    await c.start()
    b1 = fast(c.addresses, auto_rebuild=False)
    await b1.open()
    b2 = fast(c.addresses, force_start=True)
    await b2.open()
    with pytest.raises(BackendError):
        await b1.write(0, block(1))
    await wait_until(lambda: b1.replicas[0].fenced, "b1 sees its claim refused", timeout=10)
    row = b1.describe()["replicas"][0]
    assert (row["mode"], row["fenced"]) == ("err", True)
    assert "claim refused" in row["last_error"] and b1.controller_id in row["last_error"]
    assert [e["event"] for e in b1.events].count("fenced") == 1
    for i in range(20):  # a second of b1's reconnect attempts (it makes none any more)
        await b2.write(0, block(2 + i))
        await asyncio.sleep(0.05)
    assert await b2.read(0, 4096) == block(21)
    assert b2.replicas[0].mode == Mode.RW and not b2.replicas[0].fenced
    assert [e["event"] for e in b2.events if e["event"] in ("err", "fenced")] == []
    await b2.close()
    await b1.close()
    await c.stop()


@run
async def test_a_restarted_replica_still_refuses_the_fenced_controller(tmp_path: Path) -> None:
    from iscsikit.errors import ReplicaFencedError
    from iscsikit.replica.client import ReplicaClient

    c = LocalCluster(tmp_path, 1, SIZE)
    await c.start()
    b1 = fast(c.addresses, auto_rebuild=False)
    await b1.open()
    b2 = fast(c.addresses, force_start=True)
    await b2.open()
    await crash(b1)
    await b2.close()
    await c.kill(0)
    assert (c.meta(0)["controller"], c.meta(0)["fenced_controllers"]) == (b2.controller_id, [b1.controller_id])
    await c.start(0)
    client = ReplicaClient(c.addresses[0])
    with pytest.raises(ReplicaFencedError, match=f"controller {b1.controller_id} was fenced"):
        await client.connect(claim=True, controller=b1.controller_id)
    client.close()
    again = ReplicaClient(c.addresses[0])  # the newest controller may reconnect; a new one may take over
    assert (await again.connect(claim=True, controller=b2.controller_id))["controller"] == b2.controller_id
    again.close()
    b3 = fast(c.addresses)
    await b3.open()
    await b3.write(0, block(3))
    assert c.meta(0)["fenced_controllers"] == [b1.controller_id, b2.controller_id]
    await b3.close()
    await c.stop()


@run
async def test_a_connection_that_does_not_own_the_replica_cannot_change_it(tmp_path: Path) -> None:
    # Another peer says HELLO without claiming the replica (or kept a connection from before a
    # claim): its WRITE and UNMAP are refused, and what the owner wrote is still there.
    from iscsikit.replica import protocol as p
    from tests.support.replicawire import RawPeer

    c = LocalCluster(tmp_path, 1, SIZE)
    await c.start()
    b = fast(c.addresses, auto_rebuild=False)
    await b.open()
    await b.write(0, block(1), fua=True)
    server = c.servers[0]
    assert server is not None
    host, port = "127.0.0.1", server.port

    def intruder() -> list[p.Status]:
        peer = RawPeer(host, port, timeout=10.0)
        try:
            hello = peer.call(p.Op.HELLO)
            write = peer.call(p.Op.WRITE, offset=0, length=4096, payload=block(2))
            unmap = peer.call(p.Op.UNMAP, offset=0, length=4096)
            return [hello.status, write.status, unmap.status]
        finally:
            peer.close()

    assert await asyncio.to_thread(intruder) == [p.Status.OK, p.Status.FENCED, p.Status.FENCED]
    assert await b.read(0, 4096) == block(1)
    await b.write(4096, block(3))  # the owner is not disturbed
    await b.close()
    assert c.data(0)[:8192] == block(1) + block(3)
    await c.stop()


@run
async def test_write_in_flight_when_a_rebuild_starts_reaches_the_new_replica(tmp_path: Path) -> None:
    # A write to a never-written range is on its way to the source (not to the new replica, which
    # is not WO yet) when the rebuild lists extents: the rebuild must wait for it, or the new
    # replica never gets that data (holes on both sides are not copied).
    from typing import Any

    from iscsikit.replica import protocol as p
    from iscsikit.replica.client import ReplicaClient

    gate = asyncio.Event()
    entered = asyncio.Event()

    class SlowWrites(ReplicaClient):
        async def _call(self, op: p.Op, **kw: Any) -> p.Response:
            if op == p.Op.WRITE and kw.get("offset") == 3 * MiB:
                entered.set()
                await gate.wait()
            return await super()._call(op, **kw)

    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses[:1])
    b._client_factory = lambda a: SlowWrites(a, timeout=5.0)
    await b.open()
    write = asyncio.create_task(b.write(3 * MiB, block(9)))
    await entered.wait()
    r = await b.add_replica(c.addresses[1])
    await wait_until(lambda: r.mode in (Mode.WO, Mode.RW), "the rebuild to start")
    await asyncio.sleep(0.1)  # the rebuild is at its barrier now
    gate.set()
    await write
    await all_rw(b)
    await b.flush()
    c.assert_identical({3 * MiB: block(9)})
    await b.close()
    await c.stop()


@run
async def test_a_write_only_a_rebuilding_replica_took_is_not_acknowledged(tmp_path: Path) -> None:
    # The only RW replica dies in the middle of a write while the other one is still being
    # rebuilt (WO). The WO replica took the write, and min_replicas is 1, but it holds only part
    # of the volume: acknowledging would promise a write that no complete copy has.
    from typing import Any

    from iscsikit.replica import protocol as p
    from iscsikit.replica.client import ReplicaClient

    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    source, rebuilding = c.addresses
    hold_rebuild = asyncio.Event()

    class Hooked(ReplicaClient):
        async def _call(self, op: p.Op, **kw: Any) -> p.Response:
            if op == p.Op.EXTENTS and self.address == rebuilding:
                await hold_rebuild.wait()  # the rebuild stays WO, before copying anything
            if op == p.Op.WRITE and self.address == source and kw.get("offset") == 7 * MiB:
                await c.kill(0)  # the RW replica dies while this write is on its way
            return await super()._call(op, **kw)

    b = fast([source], min_replicas=1)
    b._client_factory = lambda a: Hooked(a, timeout=5.0)
    await b.open()
    await b.write(0, block(1))
    r = await b.add_replica(rebuilding)
    assert r.mode == Mode.WO
    with pytest.raises(BackendError) as exc:
        await b.write(7 * MiB, block(2))
    assert exc.value.kind == "unavailable" and "acknowledged by 1 replica(s)" in str(exc.value)
    assert b.replicas[0].mode == Mode.ERR and r.mode == Mode.WO  # never promoted by the write
    hold_rebuild.set()
    await crash(b)
    await c.stop()


@run
async def test_volume_with_every_replica_gone_fails_io_then_comes_back_by_itself(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    await b.write(0, block(1))
    await c.kill(2)
    await b.write(MiB, block(2))  # replica 2 misses this one
    await c.kill(0)
    await c.kill(1)
    with pytest.raises(BackendError) as exc:
        await b.write(2 * MiB, block(3))
    assert exc.value.kind == "unavailable"
    await c.start(2)  # the stale one alone must not bring the volume back
    await asyncio.sleep(0.3)
    assert not any(r.mode == Mode.RW for r in b.replicas)
    with pytest.raises(BackendError):
        await b.read(MiB, 4096)
    await c.start(0)
    await c.start(1)
    await all_rw(b)
    assert await b.read(0, 4096) == block(1)
    assert await b.read(MiB, 4096) == block(2)
    await b.flush()
    c.assert_identical({0: block(1), MiB: block(2)})
    await b.close()
    await c.stop()


@run
async def test_without_auto_rebuild_a_failed_replica_waits_for_replica_add(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses, auto_rebuild=False)
    await b.open()
    await c.kill(1)
    await b.write(0, block(1))
    await c.start(1)
    await asyncio.sleep(0.3)  # reconnect attempts happen, but nothing rebuilds it
    assert b.replicas[1].mode == Mode.ERR
    with pytest.raises(ReplicaError, match=r"already a replica of this volume \(rw\)"):
        await b.add_replica(c.addresses[0])
    await b.add_replica(c.addresses[1])
    await all_rw(b)
    await b.flush()
    c.assert_identical({0: block(1)})
    await b.close()
    await c.stop()


@run
async def test_a_volume_over_4_gib_is_rebuilt(tmp_path: Path) -> None:
    """A frame's length is a u32 and an EXTENTS answer is bounded: listing a large volume's
    extents for a rebuild goes window by window (it raised struct.error over 4 GiB)."""
    gib = 1 << 30
    c = LocalCluster(tmp_path, 2, 8 * gib)  # sparse files: only the written blocks take space
    await c.start()
    b = fast(c.addresses)
    await b.open()
    acked = {gib - 4096: block(1, 8192), 5 * gib: block(2)}  # the first one spans a window edge
    for off, data in acked.items():
        await b.write(off, data)
    await c.kill(1)
    acked[6 * gib + 4096] = block(3)
    await b.write(6 * gib + 4096, acked[6 * gib + 4096])
    await c.start(1)
    await all_rw(b)
    await b.flush()
    for off, data in acked.items():
        for i in range(2):
            with open(c.dirs[i] / "volume.img", "rb") as f:
                f.seek(off)
                assert f.read(len(data)) == data, f"replica {i} lacks the write at {off}"
    server = c.servers[1]
    assert server is not None
    assert server.store.extents(0, 8 * gib) == [(gib - 4096, 8192), (5 * gib, 4096), (6 * gib + 4096, 4096)]
    await b.close()
    await c.stop()
