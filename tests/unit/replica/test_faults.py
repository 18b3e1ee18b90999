"""A replica fails at every single step of a scripted life (start-up, writes, metadata updates,
flushes, unmaps, reads, a rebuild, close), in turn. Whatever step it is:

* the initiator never sees an error while enough replicas remain, and sees a SCSI error (never
  a silent success) when fewer than ``min_replicas`` remain;
* every acknowledged write reads back, through a new controller started after the first one
  stopped (or died), and all replicas end byte-identical once rebuilt.

The fault is injected in the client (the request is not sent and the connection is dropped, or
the request is sent and the connection dropped before the answer is read), against real
replica servers; "hung replica" faults are covered with a frozen real server elsewhere.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from iscsikit.errors import ReplicaError
from iscsikit.replica import protocol as p
from iscsikit.replica.client import ReplicaClient
from iscsikit.replica.controller import ReplicatedBackend
from iscsikit.target.backend import BackendError
from tests.unit.replica.cluster import LocalCluster
from tests.unit.replica.conftest import all_rw, crash, fast, run

MiB = 1 << 20
SIZE = 8 * MiB


class FaultPlan:
    """Fail the ``at``-th request (counting from 0) sent to ``address``; before or after sending.

    With ``only``, count requests of that kind only (the ``at``-th PULL, say).
    """

    def __init__(self, address: str, at: int, after_send: bool, only: str | None = None) -> None:
        self.address = address
        self.at = at
        self.after_send = after_send
        self.only = only
        self.count = 0
        self.fired: str | None = None


class FaultyClient(ReplicaClient):
    def __init__(self, address: str, plan: FaultPlan, **kw: Any) -> None:
        super().__init__(address, **kw)
        self.plan = plan

    async def _call(self, op: p.Op, **kw: Any) -> p.Response:
        plan = self.plan
        if self.address == plan.address and self.failed is None and op != p.Op.PING and plan.only in (None, op.name):
            n = plan.count
            plan.count += 1
            if n == plan.at:
                plan.fired = op.name
                if not plan.after_send:
                    self._fail(ReplicaError(f"injected fault before {op.name}", self.address))
                    raise self._failure  # type: ignore[misc]
                call = super()._call(op, **kw)
                # Send, then drop the connection before the answer can be read.
                import asyncio

                task = asyncio.ensure_future(call)
                await asyncio.sleep(0)
                self._fail(ReplicaError(f"injected fault after sending {op.name}", self.address))
                return await task
        return await super()._call(op, **kw)


def faulty(addresses: list[str], plan: FaultPlan, **kw: Any) -> ReplicatedBackend:
    backend = fast(addresses, **kw)
    backend._client_factory = lambda a: FaultyClient(a, plan, timeout=1.0, flush_timeout=5.0)
    return backend


async def life(b: ReplicatedBackend, c: LocalCluster, acked: dict[int, bytes], rng: random.Random) -> list[str]:
    """Open, write, flush, unmap, read, force a rebuild, close. Returns the errors the initiator saw."""
    errors: list[str] = []

    async def io(kind: str, off: int, data: bytes = b"") -> None:
        try:
            if kind == "write":
                await b.write(off, data, fua=rng.random() < 0.3)
                acked[off] = data
            elif kind == "unmap":
                await b.unmap(off, 4096)
                acked[off] = bytes(4096)
            elif kind == "flush":
                await b.flush()
            else:
                got = await b.read(off, 4096)
                if off in acked:
                    assert got == acked[off], f"read at {off} returned other data than acknowledged"
        except BackendError as exc:
            errors.append(f"{kind}: {exc}")
            if kind in ("write", "unmap"):
                acked.pop(off, None)  # a failed write leaves the range undefined (old or new)

    try:
        await b.open()
    except (ReplicaError, BackendError) as exc:  # the fault hit start-up: with min_replicas=3 it may fail
        return [f"open: {exc}"]
    for i in range(6):
        await io("write", i * MiB, rng.randbytes(4096))
    await io("flush", 0)
    await io("unmap", 2 * MiB)
    for i in range(6):
        await io("read", i * MiB)
    # Drop replica 2 by hand and let it rebuild while writes go on.
    r2 = b.replicas[2]
    if r2.client is not None:
        b._fail(r2, ReplicaError("test: dropped", r2.address))
    for i in range(6, 8):
        await io("write", i * MiB, rng.randbytes(4096))
    try:
        await all_rw(b)
    except AssertionError:
        pass  # fewer than all may come back; the new controller below rebuilds them
    for i in range(3):
        await io("write", i * MiB + 8192, rng.randbytes(4096))
        await io("read", i * MiB + 8192)
    await io("flush", 0)
    return errors


@pytest.mark.slow
@pytest.mark.parametrize(
    ("after_send", "min_replicas", "ending", "victim"),
    [(False, 1, "close", 0), (True, 1, "crash", 0), (True, 3, "close", 0), (False, 3, "crash", 0),
     (False, 1, "close", 2), (True, 1, "crash", 2)],
    ids=["before-send-min1-close", "after-send-min1-crash", "after-send-min3-close", "before-send-min3-crash",
         "rebuilt-replica-before-send-min1-close", "rebuilt-replica-after-send-min1-crash"],
)  # fmt: skip
@run
async def test_a_replica_failing_at_any_step_loses_no_acknowledged_write(
    tmp_path: Path, after_send: bool, min_replicas: int, ending: str, victim: int
) -> None:
    async def one_life(plan: FaultPlan, seed: int) -> str | None:
        """The scripted life with ``plan``'s fault, then the checks; which request it hit (None: none)."""
        c = LocalCluster(tmp_path / f"life{seed}-{plan.only or 'any'}", 3, SIZE)
        await c.start()
        plan.address = c.addresses[victim]
        b = faulty(c.addresses, plan, min_replicas=min_replicas)
        acked: dict[int, bytes] = {}
        # Anything but a refused start-up (a wrong read, a stray exception) fails the test here.
        errors = await life(b, c, acked, random.Random(seed))
        if ending == "close":
            await b.close()
        else:
            await crash(b)
        if plan.fired is None:
            await c.stop()
            return None
        where = f"fault at request {plan.at} of {plan.only or 'any kind'} ({plan.fired})"
        if min_replicas == 1:
            assert errors == [], f"{where} reached the initiator: {errors}"
        else:
            # min_replicas=3 with one replica down: writes may fail (loudly), never succeed silently.
            assert all("min_replicas is 3" in e or "open:" in e or "unavailable" in e for e in errors), errors
        # A new controller, no faults: every acknowledged write is there and replicas converge.
        b2 = fast(c.addresses)
        await b2.open()
        for off, data in acked.items():
            assert await b2.read(off, len(data)) == data, f"{where}: write at {off} lost"
        await all_rw(b2)
        await b2.flush()
        images = [c.data(i) for i in range(3)]
        assert images[0] == images[1] == images[2], f"{where}: replicas differ"
        await b2.close()
        await c.stop()
        return plan.fired

    steps_seen = set()
    at = 0
    while (fired := await one_life(FaultPlan("", at, after_send), at)) is not None:
        steps_seen.add(fired)
        at += 1
    # Every kind of request the faulty replica gets must have been hit at least once: replica 0
    # is the source of the rebuild in the script (GRANT), replica 2 the one rebuilt by pull. The
    # rebuild runs beside the writes, so which kind comes n-th varies from run to run; a kind the
    # sweep above happened to miss is hit on purpose (its first request of that kind).
    rebuild_side = {"READ", "GRANT"} if victim == 0 else {"SOURCE", "PULL"}
    required = {"HELLO", "SET_META", "WRITE", "FLUSH", "UNMAP"} | rebuild_side
    for kind in sorted(required - steps_seen):
        assert await one_life(FaultPlan("", 0, after_send, only=kind), at) == kind, f"no {kind} reached the replica"
