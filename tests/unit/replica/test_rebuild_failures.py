"""How a rebuild ends when it cannot finish: the rebuilding replica is failed (never left WO or
shown RW half-copied), the volume goes on from its RW replicas, and nothing else is disturbed.
Real replica servers on loopback; the failure is injected in the controller's client of the
rebuilding replica only."""

from __future__ import annotations

import random
from pathlib import Path

from iscsikit.errors import ReplicaRemoteError
from iscsikit.replica import protocol as p
from iscsikit.replica.client import ReplicaClient
from iscsikit.replica.controller import Mode
from tests.unit.replica.cluster import LocalCluster
from tests.unit.replica.conftest import fast, run, wait_until

MiB = 1 << 20
SIZE = 16 * MiB


def block(tag: int, n: int = 4096) -> bytes:
    return random.Random(tag).randbytes(n)


class BuggyExtents(ReplicaClient):
    """A programming error in the middle of a rebuild (not a replica error)."""

    async def extents(self, offset: int, length: int) -> list[tuple[int, int]]:
        raise RuntimeError("a bug in the rebuild")


class PullFails(ReplicaClient):
    """The rebuilding replica answers its PULL with a disk error (EIO), not a link problem (PEER)."""

    async def pull(self, offset: int, length: int) -> p.PullResult:
        raise ReplicaRemoteError(f"PULL {offset}+{length} failed: disk error", "EIO", self.address)


async def _rebuild_with(tmp_path: Path, client: type[ReplicaClient]) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses[:1], auto_rebuild=False)
    await b.open()
    await b.write(0, block(1), fua=True)
    b._client_factory = lambda a: client(a, timeout=5.0)  # the new replica's client only
    r = await b.add_replica(c.addresses[1])
    assert r.rebuild_task is not None
    await wait_until(lambda: r.rebuild_task is not None and r.rebuild_task.done(), "the rebuild to end")
    assert (r.mode, r.client) == (Mode.ERR, None), "a rebuild that failed left its replica in use"
    assert r.last_error is not None
    meta = c.meta(1)
    assert meta["state"] == "rebuilding", "a failed rebuild must stay marked unfinished on the replica"
    assert b.replicas[0].mode == Mode.RW
    await b.write(4096, block(2))  # the volume goes on from its RW replica
    assert await b.read(0, 8192) == block(1) + block(2)
    members = {m["id"] for m in c.meta(0)["members"]}  # type: ignore[attr-defined]
    assert meta["replica_id"] not in members
    await b.close()
    await c.stop()
    return None


@run
async def test_a_bug_in_a_rebuild_fails_the_replica_instead_of_leaving_it_half_copied(tmp_path: Path) -> None:
    await _rebuild_with(tmp_path, BuggyExtents)


@run
async def test_a_disk_error_on_the_rebuilding_replica_fails_it(tmp_path: Path) -> None:
    await _rebuild_with(tmp_path, PullFails)


@run
async def test_a_rebuild_of_an_unreachable_replica_does_nothing(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses, auto_rebuild=False)
    await b.open()
    await c.kill(1)
    with_client = b.replicas[1]
    await wait_until(lambda: with_client.client is None, "the controller to see replica 1 gone")
    b.start_rebuild(with_client)
    assert with_client.rebuild_task is not None
    await with_client.rebuild_task
    assert (with_client.mode, with_client.rebuild) == (Mode.ERR, None)
    await b.write(0, block(3))
    await b.close()
    await c.stop()
