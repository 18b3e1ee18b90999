"""Rebuild: make a new or stale replica identical to a healthy one while writes go on.

1. The target's metadata is set to ``state=rebuilding`` (persisted), so a controller that
   restarts mid-rebuild never trusts it; then it enters WO mode and receives every new write.
2. A barrier waits for writes that started before WO mode (they did not go to the target).
   Then the allocated extents of source and target are listed once (SEEK_DATA/SEEK_HOLE on each
   replica's data file). Ranges that are holes on both need nothing: every write since step 1
   went to both.
3. Each remaining chunk is synced under the controller's range lock, which waits for writes in
   flight to that chunk and holds new ones back until the chunk is done, so a copy can never
   overwrite newer data. Inside the lock, extents are listed again; the target's data where the
   source has a hole is unmapped; where both have data, CRC32C checksums per granule are
   compared and only differing granules are copied (a replica that was down for a minute
   copies little); where only the source has data it is copied without comparing.
4. The target is flushed, switched to RW, and the new membership is persisted on every RW
   replica (including it) before the controller calls it done.

Chunks are synced ``rebuild_parallel`` at a time to keep both replicas and the network busy.

How a chunk is synced (step 3) depends on the replicas. When both speak protocol revision 2, the
data goes **straight from the source to the target** (:mod:`iscsikit.replica.pull`): the source
gets a one-time read grant, the target is told the source's address and token (SOURCE), and for
each chunk, still under the range lock, the controller sends one PULL to the target, which does
the listing, the comparing and the copying itself. If the target cannot reach the source (status
PEER) while the controller still can, the rebuild goes on by **relay**: the controller reads
from the source and writes to the target, as with replicas that speak only revision 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from iscsikit.errors import ReplicaError, ReplicaRemoteError
from iscsikit.replica.extents import GRANULE, chunked, differing_runs, holes, intersect, merge, spans

if TYPE_CHECKING:
    from iscsikit.replica.client import ReplicaClient
    from iscsikit.replica.controller import Replica, ReplicatedBackend

log = logging.getLogger("iscsikit.replica.rebuild")
T = TypeVar("T")


class _SourceLost(Exception):
    """The replica being copied from failed; the rebuild restarts from another one."""


async def rebuild(ctrl: ReplicatedBackend, r: Replica) -> None:
    """Rebuild ``r`` until it is RW, it fails, or the controller stops. Never raises."""
    from iscsikit.replica.controller import Mode

    try:
        while True:
            try:
                await _rebuild_once(ctrl, r)
                return
            except _SourceLost:
                if r.client is None or ctrl._closing:
                    return
                log.warning("rebuild of %s lost its source; starting again from another replica", r.address)
                await asyncio.sleep(min(ctrl.reconnect_interval, 1.0))
    except asyncio.CancelledError:
        if r.rebuild is not None and r.rebuild.finished is None:
            log.info("rebuild of %s cancelled", r.address)
        raise
    except ReplicaError as exc:
        log.error("rebuild of %s failed: %s", r.address, exc)
        if r.client is not None and r.mode != Mode.RW:
            ctrl._fail(r, exc)
    except Exception as exc:  # a bug must not leave a half-rebuilt replica looking healthy
        log.exception("rebuild of %s failed unexpectedly", r.address)
        ctrl._fail(r, exc)


async def _rebuild_once(ctrl: ReplicatedBackend, r: Replica) -> None:
    from iscsikit.replica.controller import MAX_IO, Mode, RebuildProgress

    client = r.client
    if client is None:
        return
    sources = [s for s in ctrl.replicas if s.mode == Mode.RW and s.client is not None and s is not r]
    if not sources:
        raise ReplicaError("no RW replica to rebuild from", r.address)
    source = sources[0]
    src = source.client
    assert src is not None

    async def from_source(aw: Awaitable[T]) -> T:
        try:
            return await aw
        except ReplicaError as exc:
            if source.client is src:
                ctrl._fail(source, exc)
                await ctrl._settle()
            raise _SourceLost() from exc

    def still_valid() -> None:
        if r.client is not client or r.mode != Mode.WO:
            raise ReplicaError("left WO mode during the rebuild", r.address)
        if source.client is not src or source.mode != Mode.RW:
            raise _SourceLost()

    await client.set_meta(volume_id=ctrl.volume_id, state="rebuilding", clean=False)
    ctrl._set_mode(r, Mode.WO, f"rebuilding from {source.address}")
    progress = r.rebuild = RebuildProgress(source.address)
    size = ctrl.size
    # Barrier: writes that started before WO mode did not go to the target. Holding the whole
    # volume for an instant waits for them (the range lock is first come first served), so the
    # extents listed next include their data.
    async with ctrl.ranges.hold(0, size):
        still_valid()
    src_ext = await from_source(src.extents(0, size))
    tgt_ext = await client.extents(0, size)
    still_valid()  # either replica may have failed meanwhile (a write to it): start again, or stop
    allocated = merge(src_ext + tgt_ext)
    progress.total_bytes = sum(n for _, n in allocated)
    target_had = merge(tgt_ext)
    token = granted = await _start_pull(ctrl, r, source, from_source) if ctrl.rebuild_pull else None
    progress.via = "pull" if token else "relay"
    # A PULL covers a whole window of the volume (its extents and the holes between them), so the
    # target streams several READs per round trip; a relay chunk is one piece of one extent.
    if token is not None:
        work = spans(allocated, ctrl.rebuild_pull_chunk)
    else:
        work = [(s, n, n) for s, n in chunked(allocated, ctrl.rebuild_chunk)]
    log.info(
        "rebuild of %s from %s by %s: %d bytes to check (%d allocated on the source)",
        r.address, source.address, progress.via, progress.total_bytes, sum(n for _, n in src_ext),
    )  # fmt: skip

    async def sync(start: int, length: int, covered: int) -> None:
        nonlocal token, target_had
        end = start + length
        async with ctrl.ranges.hold(start, end):
            still_valid()
            if token is not None:
                try:
                    result = await client.pull(start, length)
                except ReplicaRemoteError as exc:
                    if exc.status != "PEER":
                        raise
                    await from_source(src.ping())  # the source itself is fine: only the link between them
                    if token is not None:
                        log.warning("rebuild of %s: pulling from %s failed (%s); going on by relay",
                                    r.address, source.address, exc)  # fmt: skip
                        ctrl._event(r.address, "relay", str(exc))
                        token, progress.via = None, "relay"
                        target_had = [(0, size)]  # a pull may have left partial data anywhere
                else:
                    progress.copied_bytes += result.copied
                    progress.skipped_bytes += result.skipped
                    progress.done_bytes += covered
                    return
            if intersect([(start, length)], target_had):
                s_ext, t_ext = await asyncio.gather(
                    from_source(src.extents(start, length)), client.extents(start, length)
                )
            else:
                # The target had nothing here when listed, so whatever it has now came from writes
                # the source got too: no holes to punch, nothing to compare; just copy.
                s_ext, t_ext = await from_source(src.extents(start, length)), []
            for hs, hn in intersect(holes(s_ext, start, end), t_ext):
                await client.unmap(hs, hn)
            for ds, dn in s_ext:
                if intersect([(ds, dn)], t_ext):
                    a, b = await asyncio.gather(
                        from_source(src.checksums(ds, dn, GRANULE)), client.checksums(ds, dn, GRANULE)
                    )
                    runs = differing_runs(ds, dn, GRANULE, a, b)
                else:
                    runs = [(ds, dn)]
                copied = 0
                for rs, rn in runs:
                    for pos in range(rs, rs + rn, MAX_IO):
                        n = min(MAX_IO, rs + rn - pos)
                        data = await from_source(src.read(pos, n))
                        await client.write(pos, data)
                        copied += n
                progress.copied_bytes += copied
                progress.skipped_bytes += dn - copied
        progress.done_bytes += covered

    queue: asyncio.Queue[tuple[int, int, int]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                start, length, covered = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await sync(start, length, covered)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, ctrl.rebuild_parallel))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        if granted is not None:
            await _end_pull(client, src, granted)
    still_valid()
    copied_at = time.monotonic()
    await client.flush()
    flushed_at = time.monotonic()
    log.info("rebuild of %s: copied in %.2f s, flushed in %.2f s", r.address, copied_at - progress.started,
             flushed_at - copied_at)  # fmt: skip
    still_valid()
    await client.set_meta(revision=source.revision)
    r.revision = source.revision
    r.last_error = None
    ctrl._set_mode(r, Mode.RW, f"rebuilt from {source.address}")
    await ctrl._settle()
    progress.finished = time.monotonic()
    log.info(
        "rebuild of %s done in %.2f s by %s: %d bytes copied, %d skipped (checksums matched)",
        r.address, progress.finished - progress.started, progress.via, progress.copied_bytes,
        progress.skipped_bytes,
    )  # fmt: skip


async def _start_pull(
    ctrl: ReplicatedBackend, r: Replica, source: Replica, from_source: Callable[[Awaitable[None]], Awaitable[None]]
) -> str | None:
    """Set up a direct source -> target copy; the grant's token, or None to copy by relay."""
    client, src = r.client, source.client
    assert client is not None and src is not None
    if client.protocol_revision < 2 or src.protocol_revision < 2:
        log.info("rebuild of %s by relay: a replica speaks only protocol revision 1", r.address)
        return None
    token = secrets.token_hex(16)
    await from_source(src.grant(token))
    try:
        await client.source(source.address, token, ctrl.volume_id or "", ctrl.timeout)
    except ReplicaError as exc:
        await _end_pull(None, src, token)
        if not isinstance(exc, ReplicaRemoteError) or exc.status != "PEER":
            raise
        log.warning("rebuild of %s: it cannot reach %s (%s); copying by relay", r.address, source.address, exc)
        ctrl._event(r.address, "relay", str(exc))
        return None
    return token


async def _end_pull(client: ReplicaClient | None, src: ReplicaClient, token: str) -> None:
    """Best effort: the grant and the puller also end with the controller's connections."""
    with contextlib.suppress(ReplicaError):
        if src.failed is None:
            await src.grant(token, revoke=True)
    with contextlib.suppress(ReplicaError):
        if client is not None and client.failed is None:
            await client.source(None)
