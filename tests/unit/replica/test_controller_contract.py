"""What the replicated controller tells its users: configuration errors, I/O errors (their SCSI
kind and the facts in their messages), ``describe()`` (what ``iscsikit replica status`` shows),
and which replica serves a read. Real replica servers on loopback, as in test_controller.py; a
client subclass only where a replica must answer what a real one cannot be made to here (a full
file system)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from iscsikit.errors import ReplicaError, ReplicaRemoteError
from iscsikit.replica import protocol as p
from iscsikit.replica.client import ReplicaClient
from iscsikit.replica.controller import MAX_IO, Mode, RebuildProgress, ReplicatedBackend
from iscsikit.target.backend import BackendError
from tests.unit.replica.cluster import LocalCluster
from tests.unit.replica.conftest import all_rw, fast, run, wait_until

MiB = 1 << 20
SIZE = 16 * MiB


def block(tag: int, n: int = 4096) -> bytes:
    return random.Random(tag).randbytes(n)


class Counting(ReplicaClient):
    """Counts the requests each replica gets, by address and kind (shared by all its clients)."""

    seen: dict[tuple[str, str], list[tuple[int, int | None]]]

    async def _call(self, op: p.Op, **kw: Any) -> p.Response:
        self.seen.setdefault((self.address, op.name), []).append((kw.get("offset", 0), kw.get("length")))
        if op == p.Op.WRITE:
            self.seen.setdefault((self.address, "FUA"), []).append((kw["fua"], None))
        return await super()._call(op, **kw)


def counting(addresses: list[str], **kw: Any) -> tuple[ReplicatedBackend, dict[tuple[str, str], list[Any]]]:
    seen: dict[tuple[str, str], list[Any]] = {}
    b = fast(addresses, **kw)

    def factory(a: str) -> ReplicaClient:
        client = Counting(a, timeout=5.0)
        client.seen = seen
        return client

    b._client_factory = factory
    return b, seen


@pytest.mark.parametrize(
    ("addresses", "kw", "message"),
    [
        ([], {}, "a replicated volume needs at least one replica address"),
        (["tcp://h:1", "tcp://h:2", "tcp://h:1"], {}, "replica addresses repeat: tcp://h:1, tcp://h:2, tcp://h:1"),
        (["tcp://h:1"], {"min_replicas": 0}, "min_replicas must be >= 1, got 0"),
        (["tcp://h:1"], {"min_replicas": -3}, "min_replicas must be >= 1, got -3"),
    ],
    ids=["no-address", "repeated-address", "min-replicas-0", "min-replicas-negative"],
)
def test_a_bad_configuration_is_refused_naming_what_is_wrong(addresses: list[str], kw: Any, message: str) -> None:
    with pytest.raises(ReplicaError) as exc:
        ReplicatedBackend(addresses, **kw)
    assert str(exc.value) == message


def test_the_defaults_are_the_documented_ones() -> None:
    """docs/replication.md's table of the ``replicated:`` options, for a volume made in code: one
    replica is enough to acknowledge, timeouts 2 s (30 s for flushes and start-up), rebuilds start
    by themselves and copy replica to replica; a failed replica is retried every second."""
    b = ReplicatedBackend(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"])
    assert (b.min_replicas, b.timeout, b.flush_timeout, b.start_timeout) == (1, 2.0, 30.0, 30.0)
    assert (b.auto_rebuild, b.force_start, b.rebuild_pull, b.block_size) == (True, False, True, 512)
    assert (b.reconnect_interval, b.ping_interval) == (1.0, 1.0)
    assert (b.size, b.volume_id, b.epoch, b.credentials) == (0, None, 0, None)
    assert [(r.address, r.mode, r.client) for r in b.replicas] == [
        ("tcp://127.0.0.1:1", Mode.ERR, None),
        ("tcp://127.0.0.1:2", Mode.ERR, None),
    ]
    client = b._client_factory("tcp://127.0.0.1:3")  # what the controller connects with
    assert (client.address, client.timeout, client.flush_timeout, client.credentials) == (
        "tcp://127.0.0.1:3", 2.0, 30.0, None,
    )  # fmt: skip
    assert ReplicatedBackend(["tcp://h:1"], size=8192).size == 8192


@run
async def test_closing_a_volume_that_never_opened_does_nothing(tmp_path: Path) -> None:
    b = ReplicatedBackend(["tcp://127.0.0.1:1"])
    await b.close()
    with pytest.raises(BackendError, match="not open"):
        await b.read(0, 512)


def test_rebuild_progress_fraction_and_report() -> None:
    empty = RebuildProgress("tcp://src:1")
    assert empty.fraction == 1.0  # nothing to copy is done
    half = RebuildProgress("tcp://src:1", total_bytes=8192, done_bytes=4096, copied_bytes=1024, skipped_bytes=3072)
    assert half.fraction == 0.5
    half.finished = half.started + 2.5
    assert half.to_json() == {
        "source": "tcp://src:1",
        "total_bytes": 8192,
        "done_bytes": 4096,
        "copied_bytes": 1024,
        "skipped_bytes": 3072,
        "via": "relay",
        "fraction": 0.5,
        "seconds": 2.5,
    }
    over = RebuildProgress("s", total_bytes=3, done_bytes=7, via="pull")
    assert over.fraction == 1.0 and over.to_json()["fraction"] == 1.0 and over.to_json()["via"] == "pull"
    assert RebuildProgress("s", total_bytes=3, done_bytes=1).to_json()["fraction"] == 0.3333
    running = RebuildProgress("s")
    assert 0 <= running.to_json()["seconds"] < 60  # still running: time so far


@run
async def test_io_outside_the_volume_or_while_closed_fails_and_reaches_no_replica(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b, seen = counting(c.addresses)
    with pytest.raises(BackendError, match="the replicated volume is not open") as exc:
        await b.write(0, block(1))
    assert exc.value.kind == "unavailable"
    for call in (b.read(0, 4096), b.readv(0, 4096), b.unmap(0, 4096), b.flush()):
        with pytest.raises(BackendError) as exc:
            await call
        assert str(exc.value) == "the replicated volume is not open" and exc.value.kind == "unavailable"
    await b.open()
    seen.clear()
    bad = [(SIZE - 4096, 8192), (SIZE, 1), (-4096, 4096), (0, -1), (-1, 0)]
    for off, n in bad:
        want = f"range {off}+{n} outside the volume of {SIZE} bytes"
        for call in (b.read(off, n), b.readv(off, n), b.unmap(off, n)):
            with pytest.raises(BackendError) as exc:
                await call
            assert str(exc.value) == want and exc.value.kind == "medium"
        if n >= 0:
            with pytest.raises(BackendError, match=want.replace("+", r"\+")):
                await b.write(off, bytes(n))
    assert not {k for k in seen if k[1] != "PING"}, "a refused request reached a replica"
    await b.write(SIZE - 4096, block(2))  # the last block is inside
    assert await b.read(SIZE - 4096, 4096) == block(2)
    assert await b.read(SIZE, 0) == b""  # an empty range at the end is inside too
    await b.close()
    for call in (b.write(0, block(1)), b.read(0, 4096), b.flush()):
        with pytest.raises(BackendError, match="the replicated volume is not open") as exc:
            await call
        assert exc.value.kind == "unavailable"
    await b.close()  # a second close does nothing
    await c.stop()


@run
async def test_too_few_replicas_names_the_counts_in_the_error(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses, min_replicas=3, auto_rebuild=False, ping_interval=600)
    await b.open()
    await c.kill(1)
    with pytest.raises(BackendError) as exc:
        await b.write(MiB, block(1))
    # The write reached two replicas, one failed on the way: that is fewer than 3.
    assert str(exc.value) == "write 1048576+4096: acknowledged by 2 replica(s), min_replicas is 3 (2 RW, 0 WO of 3)"
    assert exc.value.kind == "unavailable"
    for call, what in ((b.write(0, block(2)), "write 0+4096"), (b.unmap(0, 4096), "unmap 0+4096"),
                       (b.flush(), "flush")):  # fmt: skip
        with pytest.raises(BackendError) as exc:
            await call
        assert str(exc.value) == f"{what}: acknowledged by 0 replica(s), min_replicas is 3 (2 RW, 0 WO of 3)"
        assert exc.value.kind == "unavailable"
    await b.close()
    await c.stop()


@run
async def test_a_full_replica_file_system_is_a_space_error(tmp_path: Path) -> None:
    # A replica's file system is full (status ENOSPC): the initiator gets the SCSI "space" error
    # (not a generic one) when no other replica took the write, and the replica is dropped.
    full: set[str] = set()

    class Full(ReplicaClient):
        async def _call(self, op: p.Op, **kw: Any) -> p.Response:
            if op in (p.Op.WRITE, p.Op.UNMAP) and self.address in full:
                raise ReplicaRemoteError("no space left on device", "ENOSPC", self.address)
            return await super()._call(op, **kw)

    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses, auto_rebuild=False, ping_interval=600)
    b._client_factory = lambda a: Full(a, timeout=5.0)
    await b.open()
    # One full replica, two that took the write: acknowledged; the full one is dropped.
    full.add(c.addresses[0])
    await b.write(0, block(1))
    assert [r.mode for r in b.replicas] == [Mode.ERR, Mode.RW, Mode.RW]
    assert "ENOSPC" in (b.replicas[0].last_error or "")
    # The last two fail together, one full, one gone: the error says why it matters.
    await c.kill(2)
    full.add(c.addresses[1])
    with pytest.raises(BackendError) as exc:
        await b.unmap(0, 4096)
    assert exc.value.kind == "space" and str(exc.value) == "unmap 0+4096: a replica's filesystem is full"
    assert [r.mode for r in b.replicas] == [Mode.ERR, Mode.ERR, Mode.ERR]
    await b.close()
    await c.stop()


@run
async def test_reads_take_turns_over_the_rw_replicas_and_skip_a_failed_one(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b, seen = counting(c.addresses, auto_rebuild=False, ping_interval=600)
    await b.open()
    await b.write(0, block(1))
    for _ in range(6):
        assert await b.read(0, 4096) == block(1)
    assert [len(seen.get((a, "READ"), [])) for a in c.addresses] == [2, 2, 2]
    # FUA (the initiator wants it on stable storage before the answer) reaches every replica.
    seen.clear()
    await b.write(8192, block(2), fua=True)
    await b.write(8192, block(3))
    assert [seen[(a, "FUA")] for a in c.addresses] == [[(True, None), (False, None)]] * 3
    await c.kill(1)
    seen.clear()
    for _ in range(4):  # the read that meets the dead replica is served by another one
        assert await b.read(0, 4096) == block(1)
    assert b.replicas[1].mode == Mode.ERR and c.addresses[1] in (b.replicas[1].last_error or "")
    assert len(seen.get((c.addresses[0], "READ"), [])) + len(seen.get((c.addresses[2], "READ"), [])) == 4
    await c.kill(0)
    await c.kill(2)
    with pytest.raises(BackendError) as exc:
        await b.read(8192, 512)
    assert str(exc.value) == "read 8192+512: no RW replica left to read from" and exc.value.kind == "unavailable"
    await b.close()


@run
async def test_large_io_is_split_into_max_io_requests(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 1, SIZE)
    await c.start()
    b, seen = counting(c.addresses, ping_interval=600)
    await b.open()
    a = c.addresses[0]
    seen.clear()
    data = block(1, MAX_IO + 3 * 4096)
    await b.write(4096, data)
    await b.write(MAX_IO + 3 * 4096 + 4096, block(2, MAX_IO))  # exactly one request's worth
    assert seen[(a, "WRITE")] == [(4096, None), (4096 + MAX_IO, None), (MAX_IO + 4 * 4096, None)]
    assert b.replicas[0].revision == 3  # counted per request
    assert await b.read(4096, MAX_IO + 3 * 4096) == data
    pieces = await b.readv(4096, MAX_IO + 3 * 4096)
    assert [len(x) for x in pieces] == [MAX_IO, 3 * 4096] and b"".join(pieces) == data
    assert [len(x) for x in await b.readv(0, MAX_IO)] == [MAX_IO]
    seen.clear()
    assert await b.read(0, MAX_IO) == bytes(4096) + data[: MAX_IO - 4096]
    assert seen[(a, "READ")] == [(0, MAX_IO)]
    await b.flush()
    assert b.replicas[0].revision == 3  # a flush changes no data
    await b.unmap(0, 8 * 4096)
    assert b.replicas[0].revision == 4
    await b.close()
    await c.stop()


@run
async def test_describe_reports_every_replica(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    await c.kill(1)
    b = fast(c.addresses, min_replicas=1, start_timeout=5.0, force_start=True)
    await b.open()
    await b.write(0, block(1))
    d = b.describe()
    rid = c.meta(0)["replica_id"]
    assert d == {
        "backend": "replicated",
        "size_bytes": SIZE,
        "volume_id": c.meta(0)["volume_id"],
        "epoch": b.epoch,
        "min_replicas": 1,
        "replicas": [
            {"address": c.addresses[0], "mode": "rw", "replica_id": rid, "revision": 1, "rebuild_progress": None,
             "rebuild": None, "last_error": None, "fenced": False},
            {"address": c.addresses[1], "mode": "err", "replica_id": None, "revision": 0, "rebuild_progress": None,
             "rebuild": None, "last_error": d["replicas"][1]["last_error"], "fenced": False},
        ],
    }  # fmt: skip
    assert "cannot connect" in d["replicas"][1]["last_error"]
    assert b.epoch == c.meta(0)["epoch"] and isinstance(b.volume_id, str)
    await c.start(1)
    await all_rw(b)
    # RW comes before the rebuild's end (its new membership is persisted after): wait for both
    await wait_until(lambda: b.replicas[1].rebuild is not None and b.replicas[1].rebuild.finished is not None, "end")
    d = b.describe()["replicas"][1]
    assert (d["mode"], d["replica_id"], d["revision"], d["last_error"]) == ("rw", c.meta(1)["replica_id"], 1, None)
    assert d["rebuild_progress"] == 1.0 and d["rebuild"]["source"] == c.addresses[0]
    assert b.replicas[1].rebuild is not None and d["rebuild"] == b.replicas[1].rebuild.to_json()
    await b.close()
    await c.stop()


@run
async def test_find_and_remove_name_the_replica(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    with pytest.raises(ReplicaError) as exc:
        b.find("tcp://127.0.0.1:9")
    assert str(exc.value) == "replica tcp://127.0.0.1:9: not a replica of this volume"
    with pytest.raises(ReplicaError) as exc:
        await b.remove_replica("tcp://127.0.0.1:9")
    assert exc.value.address == "tcp://127.0.0.1:9"
    assert b.find(c.addresses[1]) is b.replicas[1]
    epoch = b.epoch
    await b.remove_replica(c.addresses[1])
    assert [r.address for r in b.replicas] == c.addresses[:1]
    assert b.epoch == epoch + 1 and c.meta(0)["epoch"] == epoch + 1  # persisted before it returns
    assert [(e["event"], e["detail"]) for e in b.events if e["address"] == c.addresses[1]][-2:] == [
        ("err", f"replica {c.addresses[1]}: removed by the administrator"),
        ("removed", ""),
    ]
    with pytest.raises(ReplicaError) as exc:
        await b.remove_replica(c.addresses[0])
    want = "it is the only RW replica; add another and let it rebuild first"
    assert str(exc.value) == f"replica {c.addresses[0]}: {want}"
    await b.close()
    await c.stop()


@run
async def test_close_marks_members_clean_even_if_one_cannot(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses, ping_interval=600)
    await b.open()
    await b.write(0, block(1))
    c.freeze(1)  # hangs: its clean close times out; the others are still closed cleanly
    b.replicas[1].client.flush_timeout = 0.2  # type: ignore[union-attr]
    await b.close()
    assert [bool(c.meta(i)["clean"]) for i in range(3)] == [True, False, True]
    assert all(r.client is None for r in b.replicas)
    await c.stop()
    await asyncio.sleep(0)


@run
async def test_start_up_waits_for_replicas_that_come_up_within_the_start_timeout(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    await c.stop()  # the ports are known, nothing listens
    b = fast(c.addresses, start_timeout=20.0, reconnect_interval=0.05)
    opening = asyncio.create_task(b.open())
    await asyncio.sleep(0.3)
    assert not opening.done()  # no replica at all: it waits
    await c.start(0)
    await asyncio.sleep(0.3)
    assert not opening.done()  # a new volume needs every configured replica
    await c.start(1)
    await opening
    assert [r.mode for r in b.replicas] == [Mode.RW, Mode.RW]
    assert [(e["event"], e["detail"]) for e in b.events if e["event"] == "rw"] == [("rw", "new volume")] * 2
    assert c.meta(0)["volume_id"] == c.meta(1)["volume_id"] == b.volume_id
    await b.close()
    # Clean members of the newest epoch start RW at once, and say so.
    b = fast(c.addresses)
    await b.open()
    epoch = c.meta(0)["epoch"]
    details = [e["detail"] for e in b.events if e["event"] == "rw"]
    assert details == [f"member of epoch {epoch - 1}, clean"] * 2 or details == [f"member of epoch {epoch}, clean"] * 2
    await b.close()
    await c.stop()


@run
async def test_start_up_gives_up_after_the_start_timeout_with_the_reason(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    await c.stop()
    b = fast(c.addresses, start_timeout=0.3)
    with pytest.raises(ReplicaError) as exc:
        await b.open()
    assert str(exc.value) == "cannot start the volume: no replica is reachable"
    await c.start()
    b = fast(c.addresses)
    await b.open()
    await b.close()
    await c.kill(1)
    b = fast(c.addresses, start_timeout=0.3)
    with pytest.raises(ReplicaError) as exc:
        await b.open()
    assert str(exc.value).startswith(f"cannot start the volume: members of epoch {c.meta(0)['epoch']} are unreachable")
    assert all(r.client is None for r in b.replicas)  # nothing left connected (or claimed)
    await c.stop()


@run
async def test_a_member_of_the_newest_epoch_missing_from_the_config_is_found(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    await b.write(0, block(1))
    await b.close()
    b = fast(c.addresses[:2])  # the config forgot one
    await b.open()
    assert [r.address for r in b.replicas] == c.addresses
    assert [r.mode for r in b.replicas] == [Mode.RW] * 3
    found = [(e["address"], e["detail"]) for e in b.events if e["event"] == "discovered"]
    assert found == [(c.addresses[2], "member of the newest epoch, not in the config")]
    await b.write(MiB, block(2))
    await b.flush()
    c.assert_identical({0: block(1), MiB: block(2)})
    await b.close()
    await c.stop()


@run
async def test_a_volume_never_starts_empty_while_the_replica_holding_its_data_is_down(tmp_path: Path) -> None:
    # Replica 0 holds the volume; replica 1's disk was replaced (fresh). The target restarts while
    # replica 0 is down: starting "a new volume" on replica 1 alone would serve zeros where
    # acknowledged writes are (and refuse replica 0 when it returns, as another volume's).
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start(0)
    b = fast(c.addresses[:1])
    await b.open()
    await b.write(0, block(1))
    await b.close()
    await c.kill(0)
    await c.start(1)
    b = fast(c.addresses, start_timeout=0.3)
    with pytest.raises(ReplicaError) as exc:
        await b.open()
    assert str(exc.value) == (
        f"cannot start the volume: the reachable replicas are all fresh and {c.addresses[0]} cannot be reached: "
        "it may hold the volume. Start it, or start with force_start=yes to make a new volume without it"
    )
    assert c.meta(1).get("volume_id") is None  # replica 1 was not made part of a new volume
    # When it comes back within the start timeout, the volume starts with its data.
    b = fast(c.addresses, start_timeout=20.0)
    opening = asyncio.create_task(b.open())
    await asyncio.sleep(0.3)
    assert not opening.done()
    await c.start(0)
    await opening
    assert await b.read(0, 4096) == block(1)
    await all_rw(b)
    await b.flush()
    c.assert_identical({0: block(1)})
    await b.close()
    # A new volume with a replica that never comes up starts only when forced to.
    d = LocalCluster(tmp_path / "new", 3, SIZE)
    await d.start()
    await d.kill(1)
    await d.kill(2)
    with pytest.raises(ReplicaError, match=f"{d.addresses[1]}, {d.addresses[2]} cannot be reached: "):
        await fast(d.addresses, start_timeout=0.3).open()
    forced = fast(d.addresses, force_start=True)
    await forced.open()
    assert [r.mode for r in forced.replicas] == [Mode.RW, Mode.ERR, Mode.ERR]
    await forced.close()
    await d.stop()
    await c.stop()


@run
async def test_without_auto_rebuild_a_stale_replica_stays_out_and_says_why(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses, ping_interval=600)
    await b.open()
    await c.kill(1)
    await b.write(0, block(1))  # replica 1 misses it: the epoch moves on without it
    epoch = b.epoch
    await b.close()
    await c.start(1)
    b = fast(c.addresses, auto_rebuild=False, ping_interval=600, reconnect_interval=600)
    await b.open()
    r0, r1 = b.replicas
    assert (r0.mode, r1.mode, r1.client) == (Mode.RW, Mode.ERR, None)
    assert r1.last_error == f"replica {c.addresses[1]}: epoch {c.meta(1)['epoch']} < {epoch}: it missed writes"
    assert [(e["event"], e["detail"]) for e in b.events if e["address"] == c.addresses[1]] == [("err", r1.last_error)]
    assert [e["detail"] for e in b.events if e["event"] == "rw"] == [f"member of epoch {epoch}, clean"]
    for _ in range(3):
        assert await b.read(0, 4096) == block(1)
    await b.close()
    await c.stop()


def test_the_event_history_is_bounded() -> None:
    b = ReplicatedBackend(["tcp://127.0.0.1:1"])
    r = b.replicas[0]
    for i in range(250):
        b._fail(r, ReplicaError(f"attempt {i}", r.address))
    assert len(b.events) == 200
    assert b.events[0]["detail"] == "replica tcp://127.0.0.1:1: attempt 50"
    assert b.events[-1]["detail"] == "replica tcp://127.0.0.1:1: attempt 249"
    assert {e["event"] for e in b.events} == {"err"} and {e["address"] for e in b.events} == {r.address}
    assert r.last_error == "replica tcp://127.0.0.1:1: attempt 249"


@run
async def test_a_failed_replica_is_retried_only_every_reconnect_interval(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses, ping_interval=0.02, reconnect_interval=600)
    await b.open()
    await c.kill(1)
    await b.write(0, block(1))
    assert b.replicas[1].mode == Mode.ERR
    await c.start(1)
    await asyncio.sleep(0.3)  # many monitor rounds, none of them due to retry it
    assert b.replicas[1].client is None and b.replicas[1].mode == Mode.ERR
    assert not [e for e in b.events if e["event"] == "reconnected"]
    # Every replica gone: the volume tries to come back at most once per interval as well.
    await c.kill(0)
    await c.kill(1)
    with pytest.raises(BackendError):
        await b.write(0, block(2))
    await asyncio.sleep(0.1)  # the first recovery attempt happens, finds nothing
    await c.start(0)
    await c.start(1)
    await asyncio.sleep(0.3)
    assert not any(r.mode == Mode.RW for r in b.replicas)
    assert not [e for e in b.events if e["event"] == "recover"]
    await b.close()
    await c.stop()


@run
async def test_the_only_rw_replica_dying_mid_rebuild_stops_the_volume_until_it_returns(tmp_path: Path) -> None:
    # The half-rebuilt (WO) replica must not become the volume: I/O fails, the rebuild stops, and
    # when the RW replica is back the volume serves its data and rebuilds the other one again.
    hold = asyncio.Event()

    refuse = False

    class Held(ReplicaClient):
        async def _call(self, op: p.Op, **kw: Any) -> p.Response:
            if op == p.Op.EXTENTS and self.address == c.addresses[1] and not hold.is_set():
                await hold.wait()
            if op == p.Op.HELLO and self.address == c.addresses[1] and refuse:
                raise ReplicaError("test: refused", self.address)
            return await super()._call(op, **kw)

    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses[:1], rebuild_pull=False)
    b._client_factory = lambda a: Held(a, timeout=5.0)
    await b.open()
    await b.write(MiB, block(1))
    r = await b.add_replica(c.addresses[1])
    assert r.mode == Mode.WO and r.rebuild_task is not None
    task = r.rebuild_task
    refuse = True  # and, while the volume is down, the rebuilding replica cannot be reached either
    await c.kill(0)
    with pytest.raises(BackendError) as exc:
        await b.write(0, block(2))
    assert str(exc.value) == "write 0+4096: acknowledged by 1 replica(s), min_replicas is 1 (0 RW, 1 WO of 2)"
    await wait_until(lambda: r.mode == Mode.ERR, "the rebuilding replica to be stopped too")
    hold.set()
    await asyncio.sleep(0.2)
    assert task.done() and r.mode == Mode.ERR
    events = [(e["event"], e["detail"]) for e in b.events if e["address"] == r.address]
    # Stopped by whichever comes first: the monitor finding no complete replica, or the rebuild
    # looking for another source after losing its own and finding none.
    stopped = {("err", "no complete replica left"), ("err", f"replica {r.address}: no RW replica to rebuild from")}
    assert stopped & set(events), events
    with pytest.raises(BackendError, match="no RW replica left"):
        await b.read(MiB, 4096)
    await c.start(0)
    await all_rw(b, 1)  # back from the complete replica alone
    recovered = [(e["address"], e["detail"]) for e in b.events if e["event"] == "recover"]
    assert recovered == [("", c.addresses[0])] and b.replicas[0].mode == Mode.RW and r.mode != Mode.RW
    refuse = False
    await all_rw(b)
    assert await b.read(MiB, 4096) == block(1)
    await b.flush()
    c.assert_identical({MiB: block(1)})
    await b.close()
    await c.stop()


@run
async def test_adding_a_replica_names_it_in_errors_and_events(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    await c.kill(1)
    b = fast(c.addresses[:1])
    await b.open()
    with pytest.raises(ReplicaError) as exc:
        await b.add_replica(c.addresses[0])
    assert str(exc.value) == f"replica {c.addresses[0]}: already a replica of this volume (rw)"
    with pytest.raises(ReplicaError) as exc:  # nothing listens there
        await b.add_replica(c.addresses[1])
    assert exc.value.address == c.addresses[1]
    assert str(exc.value).startswith(f"replica {c.addresses[1]}: cannot connect: ")
    assert str(exc.value).count(c.addresses[1]) == 1
    assert [r.address for r in b.replicas] == c.addresses[:1]  # not added
    await c.start(1)
    r = await b.add_replica(c.addresses[1])
    assert r.mode in (Mode.WO, Mode.RW) and b.replicas[1] is r
    assert ("added", "") in [(e["event"], e["detail"]) for e in b.events if e["address"] == c.addresses[1]]
    await all_rw(b)
    await b.close()
    await c.stop()


@run
async def test_start_up_fails_at_once_when_every_replica_answers_and_none_is_complete(tmp_path: Path) -> None:
    # Both replicas answer, neither holds a complete copy (a rebuild that never finished on the
    # only one that had been made RW is not a copy): waiting cannot help, so it does not wait.
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    volume = b.volume_id
    await b.close()
    for i in (0, 1):  # as a controller that died while rebuilding both leaves them
        server = c.servers[i]
        assert server is not None
        server.store.update_meta({"state": "rebuilding"})
    b = fast(c.addresses, start_timeout=600)
    with pytest.raises(ReplicaError) as exc:
        await asyncio.wait_for(b.open(), 30)  # far less than the start timeout
    assert str(exc.value).startswith(f"cannot start the volume: no reachable replica of volume {volume} holds")
    await c.stop()


@run
async def test_two_replicas_take_turns_too(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b, seen = counting(c.addresses, ping_interval=600)
    await b.open()
    await b.write(0, block(1))
    for _ in range(4):
        assert await b.read(0, 4096) == block(1)
    assert [len(seen.get((a, "READ"), [])) for a in c.addresses] == [2, 2]
    await b.close()
    await c.stop()


@run
async def test_a_replica_found_dead_by_a_ping_leaves_the_membership_without_any_write(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses, ping_interval=0.02, reconnect_interval=600)
    await b.open()
    epoch = b.epoch
    await c.kill(2)
    await wait_until(lambda: b.replicas[2].mode == Mode.ERR, "the ping to notice")
    await wait_until(lambda: b.epoch == epoch + 1, "the new membership")
    for i in (0, 1):
        assert c.meta(i)["epoch"] == epoch + 1
        assert {m["address"] for m in c.meta(i)["members"]} == set(c.addresses[:2])  # type: ignore[attr-defined]
    epochs = [(e["address"], e["detail"]) for e in b.events if e["event"] == "epoch"]
    assert epochs[-1] == ("", f"{epoch + 1}: {c.addresses[0]}, {c.addresses[1]}") and len(epochs) == 2
    await b.close()
    await c.stop()


@run
async def test_a_returning_replica_is_reported_reconnected_with_its_id(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    rid = c.meta(1)["replica_id"]
    await c.kill(1)
    await b.write(0, block(1))
    await c.start(1)
    await all_rw(b)
    events = [(e["event"], e["detail"]) for e in b.events if e["address"] == c.addresses[1]]
    assert ("reconnected", f"replica {rid}") in events
    assert all(set(e) == {"time", "address", "event", "detail"} for e in b.events)
    assert all(isinstance(e["time"], float) and e["time"] > 1.7e9 for e in b.events)  # wall clock, for people
    await b.close()
    await c.stop()


@run
async def test_a_volume_whose_replicas_all_went_at_once_comes_back_when_all_return(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses, ping_interval=600)  # nothing notices before the write
    await b.open()
    await b.write(0, block(1))
    epoch = b.epoch
    await c.kill(0)
    await c.kill(1)
    with pytest.raises(BackendError):
        await b.write(0, block(2))
    assert b.epoch == epoch  # nobody left to persist a new membership on
    await c.start(0)
    await asyncio.sleep(0.3)
    assert not any(r.mode == Mode.RW for r in b.replicas)  # a member of the newest epoch is missing
    await c.start(1)
    await all_rw(b)
    # Neither was shut down cleanly: one serves (the newest revision) and the other is resynced.
    recovered = [e["detail"] for e in b.events if e["event"] == "recover"]
    assert len(recovered) == 1 and recovered[0] in c.addresses
    data = await b.read(0, 4096)
    assert data in (block(1), block(2))  # the failed write may or may not have landed, on both alike
    await b.flush()
    c.assert_identical({0: data})
    await b.close()
    await c.stop()


@run
async def test_overlapping_writes_and_unmaps_in_flight_together_leave_replicas_identical(tmp_path: Path) -> None:
    # Each replica must apply overlapping requests in the same order: the controller holds each
    # request's range until every replica answered, so they never race each other.
    c = LocalCluster(tmp_path, 3, SIZE)
    await c.start()
    b = fast(c.addresses, ping_interval=600)
    await b.open()
    rng = random.Random(5)

    async def op(i: int) -> None:
        off = rng.randrange(0, 16) * 4096
        if i % 3 == 0:
            await b.unmap(off, 4096 * rng.randrange(1, 4))
        else:
            await b.write(off, block(i, 4096 * rng.randrange(1, 4)))

    for _ in range(5):
        await asyncio.gather(*(op(i) for i in range(30)))
    await b.flush()
    c.assert_identical({})
    await b.close()
    await c.stop()


@run
async def test_a_missing_member_without_a_recorded_address_is_named_by_its_id(tmp_path: Path) -> None:
    # Metadata written before members carried addresses: the missing member cannot be looked for,
    # so start-up waits for it by id and then names it.
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses)
    await b.open()
    await b.close()
    await c.kill(1)
    server = c.servers[0]
    assert server is not None
    members = [{"id": m["id"]} for m in c.meta(0)["members"]]  # type: ignore[attr-defined]
    server.store.update_meta({"members": members})
    b = fast(c.addresses[:1], start_timeout=0.3)
    with pytest.raises(ReplicaError) as exc:
        await b.open()
    epoch = c.meta(0)["epoch"]
    assert str(exc.value).startswith(
        f"cannot start the volume: members of epoch {epoch} are unreachable ({c.meta(1)['replica_id']} at ?)"
    )
    assert [r.address for r in b.replicas] == c.addresses[:1]
    assert not [e for e in b.events if e["event"] == "discovered"]
    await c.stop()
