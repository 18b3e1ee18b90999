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
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from iscsikit.errors import ReplicaError

if TYPE_CHECKING:
    from iscsikit.replica.controller import Replica, ReplicatedBackend

log = logging.getLogger("iscsikit.replica.rebuild")
T = TypeVar("T")

GRANULE = 64 << 10
Extents = list[tuple[int, int]]


class _SourceLost(Exception):
    """The replica being copied from failed; the rebuild restarts from another one."""


def merge(extents: Extents) -> Extents:
    """Sorted, non-overlapping union of (start, length) extents."""
    out: Extents = []
    for s, n in sorted(e for e in extents if e[1] > 0):
        if out and s <= out[-1][0] + out[-1][1]:
            ps, pn = out[-1]
            out[-1] = (ps, max(ps + pn, s + n) - ps)
        else:
            out.append((s, n))
    return out


def chunked(extents: Extents, chunk: int) -> Extents:
    """Extents cut at multiples of ``chunk``, so each piece lies in one chunk."""
    out: Extents = []
    for s, n in extents:
        pos, end = s, s + n
        while pos < end:
            stop = min(end, (pos // chunk + 1) * chunk)
            out.append((pos, stop - pos))
            pos = stop
    return out


def holes(extents: Extents, start: int, end: int) -> Extents:
    """The gaps of sorted ``extents`` within [start, end)."""
    out: Extents = []
    pos = start
    for s, n in extents:
        if s > pos:
            out.append((pos, min(s, end) - pos))
        pos = max(pos, s + n)
        if pos >= end:
            break
    if pos < end:
        out.append((pos, end - pos))
    return [(s, n) for s, n in out if n > 0]


def intersect(a: Extents, b: Extents) -> Extents:
    out: Extents = []
    for s1, n1 in a:
        for s2, n2 in b:
            s, e = max(s1, s2), min(s1 + n1, s2 + n2)
            if s < e:
                out.append((s, e - s))
    return merge(out)


def differing_runs(start: int, length: int, granule: int, a: list[int], b: list[int]) -> Extents:
    """Runs of granules whose checksums differ, as byte extents."""
    runs: Extents = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x == y:
            continue
        s = start + i * granule
        n = min(granule, start + length - s)
        if runs and runs[-1][0] + runs[-1][1] == s:
            runs[-1] = (runs[-1][0], runs[-1][1] + n)
        else:
            runs.append((s, n))
    return runs


async def rebuild(ctrl: ReplicatedBackend, r: Replica) -> None:
    """Rebuild ``r`` until it is RW, it fails, or the controller stops. Never raises."""
    from iscsikit.replica.controller import Mode

    try:
        while True:
            try:
                await _rebuild_once(ctrl, r)
                return
            except _SourceLost:
                if r.client is None:
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
    work = chunked(merge(src_ext + tgt_ext), ctrl.rebuild_chunk)
    progress.total_bytes = sum(n for _, n in work)
    log.info(
        "rebuild of %s from %s: %d bytes to check (%d allocated on the source)",
        r.address, source.address, progress.total_bytes, sum(n for _, n in src_ext),
    )  # fmt: skip

    target_had = merge(tgt_ext)

    async def sync(start: int, length: int) -> None:
        end = start + length
        async with ctrl.ranges.hold(start, end):
            still_valid()
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
        progress.done_bytes += length

    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for item in work:
        queue.put_nowait(item)

    async def worker() -> None:
        while True:
            try:
                start, length = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await sync(start, length)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, ctrl.rebuild_parallel))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    still_valid()
    await client.flush()
    still_valid()
    await client.set_meta(revision=source.revision)
    r.revision = source.revision
    r.last_error = None
    ctrl._set_mode(r, Mode.RW, f"rebuilt from {source.address}")
    await ctrl._settle()
    progress.finished = time.monotonic()
    log.info(
        "rebuild of %s done in %.2f s: %d bytes copied, %d skipped (checksums matched)",
        r.address, progress.finished - progress.started, progress.copied_bytes, progress.skipped_bytes,
    )  # fmt: skip
