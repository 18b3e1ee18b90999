"""The replicated controller: the ``replicated:`` LUN backend that fans I/O out to replica servers.

Durability promise (also in ``docs/replication.md``): a write, unmap or flush is acknowledged
only after *every* replica in RW or WO mode acknowledged it; a replica that fails or times out
is dropped first, and the new membership (epoch) is persisted on the remaining RW replicas
before the acknowledgement. With ``min_replicas=M``, an operation that fewer than ``M`` replicas
acknowledged, or no RW replica, fails with a SCSI error (:class:`BackendError` ``unavailable``),
never a silent success.

Replica modes:

``rw``      holds every acknowledged write; gets all writes; serves reads.
``wo``      rebuilding: gets all writes, serves no reads, copied from an RW replica meanwhile.
``err``     failed or unreachable; the monitor reconnects it and starts a rebuild.

Example::

    backend = ReplicatedBackend(["tcp://10.0.0.1:9700", "tcp://10.0.0.2:9700"], min_replicas=2)
    await backend.open()
    await backend.write(0, b"x" * 4096, fua=True)
    print(backend.describe()["replicas"])
    await backend.close()
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from crc32c import crc32c as _crc32c

from iscsikit.errors import ReplicaError, ReplicaFencedError, ReplicaRemoteError, VolumeStartError
from iscsikit.replica.client import DEFAULT_FLUSH_TIMEOUT, DEFAULT_TIMEOUT, ReplicaClient
from iscsikit.replica.rangelock import RangeLock
from iscsikit.replica.startup import StartPlan, plan_start
from iscsikit.target.backend import Backend, BackendError, Buffer

if TYPE_CHECKING:
    from iscsikit.replica.auth import Credentials

log = logging.getLogger("iscsikit.replica.controller")

T = TypeVar("T")
#: The largest single request sent to a replica; bigger I/O is split.
MAX_IO = 4 << 20


class Mode(enum.StrEnum):
    RW = "rw"
    WO = "wo"
    ERR = "err"


@dataclass(slots=True)
class RebuildProgress:
    source: str
    total_bytes: int = 0
    done_bytes: int = 0
    copied_bytes: int = 0
    skipped_bytes: int = 0
    #: "pull" (the target copies straight from the source) or "relay" (through the controller).
    via: str = "relay"
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def fraction(self) -> float:
        return 1.0 if self.total_bytes == 0 else min(1.0, self.done_bytes / self.total_bytes)

    def to_json(self) -> dict[str, Any]:
        end = self.finished or time.monotonic()
        return {
            "source": self.source,
            "total_bytes": self.total_bytes,
            "done_bytes": self.done_bytes,
            "copied_bytes": self.copied_bytes,
            "skipped_bytes": self.skipped_bytes,
            "via": self.via,
            "fraction": round(self.fraction, 4),
            "seconds": round(end - self.started, 3),
        }


@dataclass(eq=False, slots=True)
class Replica:
    """The controller's view of one replica."""

    address: str
    mode: Mode = Mode.ERR
    client: ReplicaClient | None = None
    replica_id: str | None = None
    revision: int = 0
    last_error: str | None = None
    rebuild: RebuildProgress | None = None
    rebuild_task: asyncio.Task[None] | None = None
    next_attempt: float = 0.0
    #: The replica refused our claim: a newer controller took it over. Never tried again.
    fenced: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "mode": self.mode.value,
            "replica_id": self.replica_id,
            "revision": self.revision,
            "rebuild_progress": None if self.rebuild is None else self.rebuild.fraction,
            "rebuild": None if self.rebuild is None else self.rebuild.to_json(),
            "last_error": self.last_error,
            "fenced": self.fenced,
        }


class ReplicatedBackend(Backend):
    """A volume stored on N replica servers. See the module docstring for the promise."""

    kind = "replicated"
    thin = True

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        size: int | None = None,
        min_replicas: int = 1,
        timeout: float = DEFAULT_TIMEOUT,
        flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
        start_timeout: float = 30.0,
        auto_rebuild: bool = True,
        force_start: bool = False,
        ping_interval: float = 1.0,
        reconnect_interval: float = 1.0,
        block_size: int = 512,
        rebuild_chunk: int = 4 << 20,
        rebuild_parallel: int = 4,
        rebuild_pull: bool = True,
        rebuild_pull_chunk: int = 16 << 20,
        client_factory: Callable[[str], ReplicaClient] | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        if not addresses:
            raise ReplicaError("a replicated volume needs at least one replica address")
        if len(set(addresses)) != len(addresses):
            raise ReplicaError(f"replica addresses repeat: {', '.join(addresses)}")
        if min_replicas < 1:
            raise ReplicaError(f"min_replicas must be >= 1, got {min_replicas}")
        self.replicas: list[Replica] = [Replica(a) for a in addresses]
        self.size = size or 0
        self._want_size = size
        self.block_size = block_size
        self.min_replicas = min_replicas
        self.timeout = timeout
        self.flush_timeout = flush_timeout
        self.start_timeout = start_timeout
        self.auto_rebuild = auto_rebuild
        self.force_start = force_start
        self.ping_interval = ping_interval
        self.reconnect_interval = reconnect_interval
        self.rebuild_chunk = rebuild_chunk
        self.rebuild_parallel = rebuild_parallel
        self.rebuild_pull = rebuild_pull
        self.rebuild_pull_chunk = rebuild_pull_chunk
        self._client_factory = client_factory or self._default_client
        #: Sent with every claim: once a newer controller claims a replica, this one never can again.
        self.controller_id = uuid.uuid4().hex
        #: The shared secret and/or TLS context for every replica connection (docs/replica-protocol.md).
        self.credentials = credentials
        self.volume_id: str | None = None
        self.epoch = 0
        self.ranges = RangeLock()
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self._members_version = 0  # bumped whenever the RW set changes
        self._persisted_version = 0  # the version whose (epoch, members) is on every RW replica
        self._meta_lock = asyncio.Lock()
        self._next_reader = 0
        self._monitor: asyncio.Task[None] | None = None
        self._next_recover = 0.0
        self._opened = False
        self._closing = False

    def _default_client(self, address: str) -> ReplicaClient:
        return ReplicaClient(
            address, timeout=self.timeout, flush_timeout=self.flush_timeout, credentials=self.credentials
        )

    # ------------------------------------------------------------------ start-up

    async def open(self) -> None:
        """Connect, choose consistent replicas, persist the new epoch, start rebuilds and the monitor."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            await asyncio.gather(*(self._connect(r) for r in self.replicas if r.client is None))
            found = {r.address: r.client.meta for r in self.replicas if r.client is not None}
            try:
                plan = plan_start(found, size=self._want_size, force=self.force_start)
                self._check_new_volume(plan)
                break
            except VolumeStartError as exc:
                missing = self._missing_members(found)
                for addr in missing:
                    if addr and not any(r.address == addr for r in self.replicas):
                        self.replicas.append(Replica(addr))
                        self._event(addr, "discovered", "member of the newest epoch, not in the config")
                if time.monotonic() >= deadline or not (missing or not found):
                    self._close_clients()
                    raise VolumeStartError(f"cannot start the volume: {exc}") from None
                log.warning("waiting for replicas: %s", exc)
                await asyncio.sleep(min(self.reconnect_interval, max(0.0, deadline - time.monotonic())))
        await self._apply_plan(plan)
        self._opened = True
        self._monitor = asyncio.get_running_loop().create_task(self._monitor_loop(), name="replica-monitor")

    def _check_new_volume(self, plan: StartPlan) -> None:
        """A new volume starts only on every configured replica (or when forced).

        The reachable replicas being all fresh does not prove the volume is new: the replicas
        holding it may be the unreachable ones, and starting "a new volume" then would serve
        zeros where acknowledged writes are, and refuse those replicas later as another volume's.
        """
        absent = [r.address for r in self.replicas if r.client is None]
        if plan.volume_id is None and absent and not self.force_start:
            raise VolumeStartError(
                f"the reachable replicas are all fresh and {', '.join(absent)} cannot be reached: "
                "it may hold the volume. Start it, or start with force_start=yes to make a new volume without it"
            )

    def _missing_members(self, found: dict[str, dict[str, Any]]) -> list[str]:
        """Addresses of members of the newest epoch seen that are not connected."""
        complete = [m for m in found.values() if m.get("state") == "rw" and m.get("volume_id")]
        if not complete:
            return [r.address for r in self.replicas if r.client is None]
        newest = max(complete, key=lambda m: int(m["epoch"]))
        ids = {m["replica_id"] for m in found.values()}
        return [str(m.get("address", "")) for m in newest["members"] if m["id"] not in ids]

    async def _apply_plan(self, plan: StartPlan) -> None:
        self.size = plan.size
        self.volume_id = plan.volume_id or str(uuid.uuid4())
        self.epoch = plan.epoch
        by_addr = {r.address: r for r in self.replicas}
        for addr, why in plan.reasons.items():
            log.info("start-up: %s: %s", addr, why)
        for addr in plan.rw:
            self._set_mode(by_addr[addr], Mode.RW, plan.reasons.get(addr, ""))
        self._members_version += 1
        await self._settle()
        if not any(r.mode == Mode.RW for r in self.replicas):
            self._close_clients()
            raise VolumeStartError("cannot start the volume: every chosen replica failed while starting")
        for addr in plan.resync + plan.stale:
            r = by_addr[addr]
            if r.client is not None and self.auto_rebuild:
                self.start_rebuild(r)
            elif r.client is not None:
                self._fail(r, ReplicaError(plan.reasons.get(addr, "stale"), addr), quiet=True)
        for r in self.replicas:
            if r.client is None:
                self._event(r.address, "err", r.last_error or "unreachable at start-up")
        log.info(
            "volume %s started at epoch %d: %s", self.volume_id, self.epoch,
            ", ".join(f"{r.address}={r.mode.value}" for r in self.replicas),
        )  # fmt: skip

    async def _connect(self, r: Replica) -> bool:
        if r.fenced:
            return False
        client = self._client_factory(r.address)
        try:
            # Once serving, look before claiming: a second address of a replica we already use must
            # not claim it (the claim would close the connection that serves it).
            meta = await client.connect(claim=not self._opened, controller=self.controller_id)
            problem = self._incompatible(r, meta)
            if problem is None and self._opened:
                meta = await client.claim(self.controller_id)
        except ReplicaFencedError as exc:
            client.close()
            r.fenced = True
            r.last_error = exc.reason
            log.error("replica %s: %s; it is not tried again", r.address, exc.reason)
            self._event(r.address, "fenced", exc.reason)
            return False
        except ReplicaError as exc:
            # the replica's row and events name it already
            r.last_error = exc.reason if exc.address == r.address else str(exc)
            r.next_attempt = time.monotonic() + self.reconnect_interval
            client.close()
            return False
        if problem:
            r.last_error = problem
            r.next_attempt = time.monotonic() + self.reconnect_interval
            client.close()
            log.error("replica %s refused: %s", r.address, problem)
            return False
        r.client = client
        r.replica_id = str(meta["replica_id"])
        r.revision = int(meta.get("revision", 0))
        return True

    def _incompatible(self, r: Replica, meta: dict[str, Any]) -> str | None:
        if not self._opened:
            return None  # plan_start checks sizes and volumes across all replicas
        if int(meta["size"]) != self.size:
            return f"its size {meta['size']} differs from the volume's {self.size}"
        if meta.get("volume_id") not in (None, self.volume_id):
            return f"it belongs to volume {meta['volume_id']}, not {self.volume_id}"
        for other in self.replicas:
            if other is not r and other.client is not None and other.replica_id == meta["replica_id"]:
                return f"it is the same replica ({meta['replica_id']}) as {other.address}"
        return None

    # ------------------------------------------------------------------ membership

    def _event(self, address: str, what: str, detail: str = "") -> None:
        self.events.append({"time": time.time(), "address": address, "event": what, "detail": detail})

    def _set_mode(self, r: Replica, mode: Mode, why: str = "") -> None:
        if r.mode == mode:
            return
        old = r.mode
        r.mode = mode
        if Mode.RW in (old, mode):
            self._members_version += 1
        log.warning("replica %s: %s -> %s%s", r.address, old.value, mode.value, f" ({why})" if why else "")
        self._event(r.address, mode.value, why)

    def _fail(self, r: Replica, exc: BaseException, quiet: bool = False) -> None:
        """Drop a replica from I/O now (the caller settles membership before acknowledging)."""
        reason = str(exc) or type(exc).__name__
        if r.client is not None:
            r.client.close()
            r.client = None
        r.last_error = reason
        r.next_attempt = time.monotonic() + self.reconnect_interval
        if r.rebuild_task is not None and r.rebuild_task is not asyncio.current_task():
            r.rebuild_task.cancel()
        if r.mode != Mode.ERR:
            self._set_mode(r, Mode.ERR, reason)
        elif not quiet:
            self._event(r.address, "err", reason)

    def _members(self) -> list[Replica]:
        return [r for r in self.replicas if r.mode == Mode.RW and r.client is not None]

    async def _settle(self) -> None:
        """Persist (epoch, members) on every RW replica if the RW set changed since the last time.

        Called before acknowledging any write, so an acknowledged write is on every member of the
        newest persisted epoch.
        """
        while self._persisted_version != self._members_version:
            async with self._meta_lock:
                version = self._members_version
                if self._persisted_version == version:
                    return
                members = self._members()
                if not members:
                    return  # nothing to persist to; callers see no RW replica and fail
                epoch = self.epoch + 1
                listing = [{"id": r.replica_id or "", "address": r.address} for r in members]
                results = await asyncio.gather(
                    *(r.client.set_meta(  # type: ignore[union-attr]
                        volume_id=self.volume_id, epoch=epoch, members=listing, state="rw", clean=False,
                    ) for r in members),
                    return_exceptions=True,
                )  # fmt: skip
                ok = [r for r, res in zip(members, results, strict=True) if not isinstance(res, BaseException)]
                for r, res in zip(members, results, strict=True):
                    if isinstance(res, BaseException):
                        self._fail(r, res)
                if ok:
                    self.epoch = epoch
                    log.info("epoch %d: members %s", epoch, ", ".join(r.address for r in members if r in ok))
                    self._event("", "epoch", f"{epoch}: {', '.join(r.address for r in ok)}")
                if self._members_version == version:
                    self._persisted_version = version

    # ------------------------------------------------------------------ I/O

    def _check(self, offset: int, length: int) -> None:
        if not self._opened or self._closing:
            raise BackendError("the replicated volume is not open", kind="unavailable")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise BackendError(f"range {offset}+{length} outside the volume of {self.size} bytes")

    def _unavailable(self, what: str, acked: int) -> BackendError:
        rw = sum(1 for r in self.replicas if r.mode == Mode.RW)
        wo = sum(1 for r in self.replicas if r.mode == Mode.WO)
        return BackendError(
            f"{what}: acknowledged by {acked} replica(s), min_replicas is {self.min_replicas} "
            f"({rw} RW, {wo} WO of {len(self.replicas)})",
            kind="unavailable",
        )

    async def _fanout(self, what: str, call: Callable[[ReplicaClient], Awaitable[None]], counts: bool = False) -> None:
        """Run ``call`` on every RW and WO replica; succeed only under the durability promise."""
        targets = [r for r in self.replicas if r.mode in (Mode.RW, Mode.WO) and r.client is not None]
        if not any(r.mode == Mode.RW for r in targets) or len(targets) < self.min_replicas:
            await self._settle()
            raise self._unavailable(what, 0)
        clients = [r.client for r in targets]
        results = await asyncio.gather(*(call(c) for c in clients if c is not None), return_exceptions=True)
        acked_rw = 0
        acked = 0
        space = False
        for r, client, res in zip(targets, clients, results, strict=True):
            if isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                space = space or (isinstance(res, ReplicaRemoteError) and res.status == "ENOSPC")
                if r.client is client:
                    self._fail(r, res)
            else:
                acked += 1
                acked_rw += r.mode == Mode.RW
                r.revision += counts
        await self._settle()
        if acked_rw == 0 or acked < self.min_replicas:
            if space:
                raise BackendError(f"{what}: a replica's filesystem is full", kind="space")
            raise self._unavailable(what, acked)

    async def read(self, offset: int, length: int) -> Buffer:
        self._check(offset, length)
        if length <= MAX_IO:
            return await self._read(offset, length)
        parts = [await self._read(o, min(MAX_IO, offset + length - o)) for o in range(offset, offset + length, MAX_IO)]
        return b"".join(parts)

    async def readv(self, offset: int, length: int) -> Sequence[Buffer]:
        self._check(offset, length)
        return [await self._read(o, min(MAX_IO, offset + length - o)) for o in range(offset, offset + length, MAX_IO)]

    async def _read(self, offset: int, length: int) -> bytes:
        tried: set[int] = set()
        while True:
            readers = [r for r in self.replicas if r.mode == Mode.RW and r.client is not None and id(r) not in tried]
            if not readers:
                raise BackendError(f"read {offset}+{length}: no RW replica left to read from", kind="unavailable")
            self._next_reader = (self._next_reader + 1) % len(readers)
            r = readers[self._next_reader]
            tried.add(id(r))
            client = r.client
            assert client is not None
            try:
                return await client.read(offset, length)
            except ReplicaError as exc:
                log.warning("read %d+%d from %s failed, trying another replica: %s", offset, length, r.address, exc)
                if r.client is client:
                    self._fail(r, exc)

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        self._check(offset, len(data))
        payload = data if isinstance(data, bytes) else bytes(data)
        async with self.ranges.hold(offset, offset + len(payload)):
            for pos in range(0, len(payload), MAX_IO):
                piece = payload[pos : pos + MAX_IO] if len(payload) > MAX_IO else payload
                await self._fanout(f"write {offset + pos}+{len(piece)}", _writer(offset + pos, piece, fua), True)

    async def unmap(self, offset: int, length: int) -> None:
        self._check(offset, length)
        async with self.ranges.hold(offset, offset + length):
            await self._fanout(f"unmap {offset}+{length}", lambda c: c.unmap(offset, length), True)

    async def flush(self) -> None:
        if not self._opened or self._closing:
            raise BackendError("the replicated volume is not open", kind="unavailable")
        await self._fanout("flush", lambda c: c.flush())

    async def close(self) -> None:
        """Stop the monitor and rebuilds, flush, and mark RW replicas cleanly shut down."""
        if self._closing:
            return
        self._closing = True
        tasks = [t for t in [self._monitor, *(r.rebuild_task for r in self.replicas)] if t is not None]
        await _cancel_all(tasks)
        if self._opened:
            members = self._members()
            results = await asyncio.gather(
                *(r.client.close_clean() for r in members if r.client is not None), return_exceptions=True
            )
            for r, res in zip(members, results, strict=True):
                if isinstance(res, BaseException):
                    log.error("clean close of %s failed: %s", r.address, res)
        self._close_clients()
        log.info("volume %s closed", self.volume_id)

    def _close_clients(self) -> None:
        for r in self.replicas:
            if r.client is not None:
                r.client.close()
                r.client = None

    # ------------------------------------------------------------------ monitor, rebuild, admin

    async def _monitor_loop(self) -> None:
        next_ping = 0.0
        while not self._closing:
            await asyncio.sleep(min(self.ping_interval, self.reconnect_interval))
            if time.monotonic() >= next_ping:
                next_ping = time.monotonic() + self.ping_interval
                await self._ping_all()
            await self._reconnect_failed()

    async def _ping_all(self) -> None:
        live = [r for r in self.replicas if r.client is not None]
        results = await asyncio.gather(*(r.client.ping() for r in live if r.client is not None), return_exceptions=True)
        changed = False
        for r, res in zip(live, results, strict=True):
            if isinstance(res, BaseException) and r.client is not None:
                self._fail(r, res)
                changed = True
        if changed:
            await self._settle()

    async def _reconnect_failed(self) -> None:
        if not any(r.mode == Mode.RW for r in self.replicas):
            await self._recover()
            return
        now = time.monotonic()
        for r in self.replicas:
            if r.client is None and r.mode == Mode.ERR and now >= r.next_attempt and await self._connect(r):
                self._event(r.address, "reconnected", f"replica {r.replica_id}")
                log.info("replica %s reconnected", r.address)
                if self.auto_rebuild:
                    self.start_rebuild(r)

    async def _recover(self) -> None:
        """No complete replica is left: choose again as at start-up once enough of them are back.

        The same rules as :meth:`open` (members of the newest epoch, all of them reachable), so
        a volume whose replicas all went away comes back by itself when they return, and never
        from a replica that missed acknowledged writes.
        """
        now = time.monotonic()
        if now < self._next_recover:
            return
        self._next_recover = now + self.reconnect_interval
        for r in self.replicas:
            if r.rebuild_task is not None:
                r.rebuild_task.cancel()
            if r.client is not None:
                r.client.close()
                r.client = None
            if r.mode != Mode.ERR:
                self._set_mode(r, Mode.ERR, "no complete replica left")
        await asyncio.gather(*(self._connect(r) for r in self.replicas))
        found = {r.address: r.client.meta for r in self.replicas if r.client is not None}
        try:
            if not found:
                raise VolumeStartError("no replica is reachable")
            plan = plan_start(found, size=self.size, force=False)
            if plan.volume_id != self.volume_id:
                raise VolumeStartError(f"the reachable replicas do not hold volume {self.volume_id}")
        except VolumeStartError as exc:
            log.warning("volume %s is down: %s", self.volume_id, exc)
            self._close_clients()
            return
        log.warning("volume %s: recovering from %s", self.volume_id, ", ".join(plan.rw))
        self._event("", "recover", ", ".join(plan.rw))
        try:
            await self._apply_plan(plan)
        except VolumeStartError as exc:
            log.warning("volume %s is still down: %s", self.volume_id, exc)

    def start_rebuild(self, r: Replica) -> None:
        """Put a connected replica in WO mode and copy an RW replica onto it in the background."""
        from iscsikit.replica.rebuild import rebuild

        if r.rebuild_task is not None and not r.rebuild_task.done():
            return
        r.rebuild_task = asyncio.get_running_loop().create_task(rebuild(self, r), name=f"rebuild {r.address}")

    def find(self, address: str) -> Replica:
        for r in self.replicas:
            if r.address == address:
                return r
        raise ReplicaError("not a replica of this volume", address)

    async def add_replica(self, address: str) -> Replica:
        """Add a replica server (fresh, or an old replica of this volume) and start its rebuild.

        Adding a replica that is already listed but failed (``err``) rebuilds it now; that is how
        a failed replica comes back when ``auto_rebuild`` is off.
        """
        known = next((r for r in self.replicas if r.address == address), None)
        if known is not None and known.mode != Mode.ERR:
            raise ReplicaError(f"already a replica of this volume ({known.mode.value})", address)
        r = known or Replica(address)
        if r.client is None and not await self._connect(r):
            raise ReplicaError(r.last_error or "cannot connect", address)
        if known is None:
            self.replicas.append(r)
        self._event(address, "added")
        self.start_rebuild(r)
        task = r.rebuild_task
        while r.mode == Mode.ERR and task is not None and not task.done():  # until it is WO (or failed)
            await asyncio.sleep(0.002)
        return r

    async def remove_replica(self, address: str) -> None:
        """Stop using a replica (it keeps its data but is no longer a member)."""
        r = self.find(address)
        if r.mode == Mode.RW and sum(1 for x in self.replicas if x.mode == Mode.RW) == 1:
            raise ReplicaError("it is the only RW replica; add another and let it rebuild first", address)
        self._fail(r, ReplicaError("removed by the administrator", address))
        self.replicas.remove(r)
        self._event(address, "removed")
        await self._settle()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.kind,
            "size_bytes": self.size,
            "volume_id": self.volume_id,
            "epoch": self.epoch,
            "min_replicas": self.min_replicas,
            "replicas": [r.to_json() for r in self.replicas],
        }


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait until they ended. Python 3.11's ``wait_for`` can swallow a
    cancellation that lands just as what it waits for completes, so cancel again until done."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.5)


def _writer(offset: int, data: bytes, fua: bool) -> Callable[[ReplicaClient], Awaitable[None]]:
    crc = _crc32c(data)  # once, not once per replica
    return lambda c: c.write(offset, data, fua, crc)
