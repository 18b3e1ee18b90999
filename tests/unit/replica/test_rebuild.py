"""Rebuild (iscsikit.replica.rebuild): what a returning replica is sent, what the progress report
says, and the state a rebuild leaves on the replicas. Real replica servers on loopback; the
data files are on the test's file system, whose extents are exact for 4 KiB-aligned writes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from iscsikit.replica import protocol as p
from iscsikit.replica.client import ReplicaClient
from iscsikit.replica.controller import Mode
from iscsikit.replica.extents import GRANULE
from tests.unit.replica.cluster import LocalCluster
from tests.unit.replica.conftest import all_rw, crash, fast, run, wait_until

KiB = 1 << 10
MiB = 1 << 20
SIZE = 16 * MiB


def block(tag: int, n: int = 4096) -> bytes:
    return random.Random(tag).randbytes(n)


class Recording(ReplicaClient):
    """Records the requests each replica gets (address, kind, offset, length), in order."""

    log: list[tuple[str, str, int, int]]

    async def _call(self, op: p.Op, **kw: Any) -> p.Response:
        n = kw.get("length")
        self.log.append((self.address, op.name, kw.get("offset", 0), len(kw.get("payload", b"")) if n is None else n))
        return await super()._call(op, **kw)


@pytest.mark.parametrize("via", ["relay", "pull"])
@run
async def test_a_returning_replica_gets_only_what_it_missed(tmp_path: Path, via: str) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    log: list[tuple[str, str, int, int]] = []

    def factory(a: str) -> ReplicaClient:
        client = Recording(a, timeout=5.0)
        client.log = log
        return client

    b = fast(c.addresses, auto_rebuild=False, rebuild_pull=via == "pull", rebuild_parallel=1)
    b._client_factory = factory
    await b.open()
    acked = {0: block(1, 64 * KiB), MiB: block(2, 4 * GRANULE)}
    for off, data in acked.items():
        await b.write(off, data)
    await c.kill(1)
    await b.unmap(0, 64 * KiB)  # replica 1 keeps data where the source now has a hole
    acked[0] = bytes(64 * KiB)
    await b.write(MiB + GRANULE + 4096, block(3))  # one granule of the shared range differs
    acked[MiB] = acked[MiB][: GRANULE + 4096] + block(3) + acked[MiB][GRANULE + 8192 :]
    acked[2 * MiB] = block(4)  # a range replica 1 never had
    await b.write(2 * MiB, acked[2 * MiB])
    source = b.replicas[0]
    await c.start(1)
    log.clear()
    r = await b.add_replica(c.addresses[1])
    assert r.mode == Mode.WO and r.rebuild is not None and r.rebuild.source == c.addresses[0]
    assert c.meta(1)["state"] == "rebuilding"  # a controller restarting now would not trust it
    await all_rw(b)
    progress = r.rebuild
    await wait_until(lambda: progress.finished is not None, "the rebuild to finish")
    assert progress.via == via
    assert progress.total_bytes == progress.done_bytes == 64 * KiB + 4 * GRANULE + 4096
    assert (progress.copied_bytes, progress.skipped_bytes) == (GRANULE + 4096, 3 * GRANULE)
    if via == "relay":  # the controller copied exactly the differing granule and the new range
        writes = sorted((off, n) for a, op, off, n in log if a == c.addresses[1] and op == "WRITE")
        assert writes == [(MiB + GRANULE, GRANULE), (2 * MiB, 4096)]
        assert [(off, n) for a, op, off, n in log if a == c.addresses[1] and op == "UNMAP"] == [(0, 64 * KiB)]
    else:
        assert not [x for x in log if x[0] == c.addresses[1] and x[1] in ("WRITE", "UNMAP")]
        assert [x[1] for x in log if x[0] == c.addresses[0] and x[1] == "GRANT"] == ["GRANT", "GRANT"]  # and revoked
        assert [x[1] for x in log if x[0] == c.addresses[1] and x[1] == "SOURCE"] == ["SOURCE", "SOURCE"]  # and forgot
    assert r.revision == source.revision and c.meta(1)["revision"] == source.revision
    assert r.last_error is None and c.meta(1)["state"] == "rw"
    assert {m["address"] for m in c.meta(1)["members"]} == set(c.addresses)  # type: ignore[attr-defined]
    assert c.meta(0)["epoch"] == c.meta(1)["epoch"] == b.epoch
    events = [(e["event"], e["detail"]) for e in b.events if e["address"] == c.addresses[1]]
    assert events[-2:] == [("wo", f"rebuilding from {c.addresses[0]}"), ("rw", f"rebuilt from {c.addresses[0]}")]
    await b.flush()
    c.assert_identical(acked)
    await b.close()
    await c.stop()


@run
async def test_a_fresh_replica_is_copied_without_comparing(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start(0)
    b = fast(c.addresses[:1], rebuild_pull=False, rebuild_chunk=MiB, rebuild_parallel=0)
    log: list[tuple[str, str, int, int]] = []

    def factory(a: str) -> ReplicaClient:
        client = Recording(a, timeout=5.0)
        client.log = log
        return client

    b._client_factory = factory
    await b.open()
    acked = {512 * KiB: block(1, MiB), 5 * MiB: block(2, 3 * 4096)}
    for off, data in acked.items():
        await b.write(off, data)
    await c.start(1)
    log.clear()
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None
    assert (r.rebuild.total_bytes, r.rebuild.copied_bytes, r.rebuild.skipped_bytes) == (MiB + 12288, MiB + 12288, 0)
    kinds = {op for a, op, _, _ in log if a == c.addresses[1]}
    assert "CHECKSUM" not in kinds and "UNMAP" not in kinds  # nothing to compare, no holes to punch
    # Relay chunks never cross a rebuild_chunk boundary (each is synced under its own range lock).
    writes = sorted((off, n) for a, op, off, n in log if a == c.addresses[1] and op == "WRITE")
    assert writes == [(512 * KiB, 512 * KiB), (MiB, 512 * KiB), (5 * MiB, 12288)]
    await b.flush()
    c.assert_identical(acked)
    await b.close()
    await c.stop()


@run
async def test_a_controller_that_dies_mid_rebuild_never_trusts_the_half_rebuilt_replica(tmp_path: Path) -> None:
    hold = asyncio.Event()
    held = asyncio.Event()

    class Held(ReplicaClient):
        async def _call(self, op: p.Op, **kw: Any) -> p.Response:
            if op in (p.Op.WRITE, p.Op.PULL) and self.address == c.addresses[1] and not hold.is_set():
                held.set()
                await hold.wait()
            return await super()._call(op, **kw)

    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses, auto_rebuild=False, ping_interval=600, reconnect_interval=600)
    b._client_factory = lambda a: Held(a, timeout=5.0)
    hold.set()  # not yet
    await b.open()
    await c.kill(1)
    acked = {i * MiB: block(i, 64 * KiB) for i in range(4)}
    for off, data in acked.items():
        await b.write(off, data)
    await c.start(1)
    hold.clear()
    r = await b.add_replica(c.addresses[1])
    await held.wait()  # copying has begun
    assert r.mode == Mode.WO and c.meta(1)["state"] == "rebuilding"
    await crash(b)
    hold.set()
    b2 = fast(c.addresses)
    await b2.open()
    assert b2.replicas[1].mode != Mode.RW
    for off, data in acked.items():
        for _ in range(2):
            assert await b2.read(off, len(data)) == data
    await all_rw(b2)
    await b2.flush()
    c.assert_identical(acked)
    await b2.close()
    await c.stop()


@run
async def test_a_rebuild_with_no_source_left_fails_the_replica_it_was_rebuilding(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses, auto_rebuild=False, ping_interval=600, reconnect_interval=600)
    await b.open()
    r0, r1 = b.replicas
    await b.write(0, block(1))
    b._fail(r1, RuntimeError("test: dropped"))
    assert r1.last_error == "test: dropped"
    await b._connect(r1)  # connected again, not rebuilt yet
    b._fail(r0, RuntimeError())  # and now the only source is gone too
    assert r0.last_error == "RuntimeError"
    b.start_rebuild(r1)
    task = r1.rebuild_task
    assert task is not None
    await task  # never raises
    assert r1.mode == Mode.ERR and r1.client is None
    assert r1.last_error == f"replica {c.addresses[1]}: no RW replica to rebuild from"
    await crash(b)
    await c.stop()


@run
async def test_rebuild_of_a_healthy_replica_leaves_it_alone(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 1, SIZE)
    await c.start()
    b = fast(c.addresses, ping_interval=600)
    await b.open()
    r = b.replicas[0]
    b.start_rebuild(r)
    first = r.rebuild_task
    b.start_rebuild(r)  # one rebuild at a time per replica
    assert r.rebuild_task is first and first is not None
    await first
    assert r.mode == Mode.RW and r.client is not None and r.last_error is None
    await b.write(0, block(1))
    await b.close()
    await c.stop()
    await wait_until(lambda: True, "nothing")


@run
async def test_a_half_rebuilt_fresh_replica_does_not_let_a_restart_skip_the_missing_source(tmp_path: Path) -> None:
    # A fresh replica was being rebuilt when the controller died; at the restart the source is
    # down. Start-up waits for the source (the half copy is not the volume) and then serves it.
    hold = asyncio.Event()

    class Held(ReplicaClient):
        async def _call(self, op: p.Op, **kw: Any) -> p.Response:
            if op == p.Op.EXTENTS and self.address == c.addresses[1] and not hold.is_set():
                await hold.wait()
            return await super()._call(op, **kw)

    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses[:1], ping_interval=600)
    b._client_factory = lambda a: Held(a, timeout=5.0)
    await b.open()
    await b.write(0, block(1))
    r = await b.add_replica(c.addresses[1])
    assert r.mode == Mode.WO and c.meta(1)["state"] == "rebuilding"
    await crash(b)
    hold.set()
    await c.kill(0)
    b = fast(c.addresses, start_timeout=20.0)
    opening = asyncio.create_task(b.open())
    await asyncio.sleep(0.3)
    assert not opening.done()
    await c.start(0)
    await opening
    assert b.replicas[0].mode == Mode.RW
    for _ in range(2):
        assert await b.read(0, 4096) == block(1)
    await all_rw(b)
    await b.flush()
    c.assert_identical({0: block(1)})
    await b.close()
    await c.stop()


@pytest.mark.parametrize("via", ["pull", "relay"])
@run
async def test_a_source_lost_while_the_target_is_listed_restarts_the_rebuild_from_another(
    tmp_path: Path, via: str
) -> None:
    # The source leaves the volume (a write to it failed) just as the rebuilding replica's
    # extents are listed: the rebuild starts again from the other RW replica. The rebuilding
    # replica did nothing wrong: it is not failed, and says no error.
    armed = True

    class LoseSource(ReplicaClient):
        async def _call(self, op: p.Op, **kw: Any) -> p.Response:
            nonlocal armed
            resp = await super()._call(op, **kw)
            if op == p.Op.EXTENTS and self.address == c.addresses[2] and armed:
                armed = False
                await c.kill(0)
                await b.write(0, block(2))  # replica 0 fails it: it leaves the membership
            return resp

    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses[:2], ping_interval=600, rebuild_pull=via == "pull")
    b._client_factory = lambda a: LoseSource(a, timeout=5.0)
    await b.open()
    await b.write(MiB, block(1))
    r = await b.add_replica(c.addresses[2])
    await wait_until(lambda: r.mode == Mode.RW, "the rebuild from replica 1")
    assert not armed and b.replicas[0].mode == Mode.ERR
    assert r.rebuild is not None and r.rebuild.source == c.addresses[1] and r.rebuild.via == via
    assert [e["event"] for e in b.events if e["address"] == r.address] == ["added", "wo", "rw"]
    assert r.last_error is None
    await b.flush()
    for i in (1, 2):
        assert c.data(i)[:4096] == block(2) and c.data(i)[MiB : MiB + 4096] == block(1)
    await b.close()
    await c.stop()
