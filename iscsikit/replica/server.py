"""The replica server: a thin asyncio driver around :class:`ServerSession` and :class:`ReplicaStore`.

One TCP listener; each connection gets its own :class:`~iscsikit.replica.protocol.ServerSession`.
Requests are handled concurrently and answered as they finish, so responses come back out of
order: small reads and writes, and plain writes of whole pages up to 1 MiB, run inline on the
event loop (a page-cache copy is cheaper than a thread hop); larger ones, FUA writes, flushes,
unmaps, checksums and metadata updates run in a small thread pool (``os.pread``/``os.pwrite``/
``fsync`` release the GIL). Overlapping writes never race: the controller holds a range lock
for each write until every replica has answered it.

Fencing: a controller sends ``HELLO {"claim": true}``; the newest claim wins and every older
claimed connection is answered ``FENCED`` and closed, so a controller that was cut off and
replaced can never write again through its old connection. The new claim is answered only after
every disk write started for older owners (thread-pool writes, pulls) has finished.

Bounds: every request's answer is bounded before the request is started
(:func:`~iscsikit.replica.protocol.response_bound`; an answer that could not be sent, a READ
over 16 MiB say, is answered ``EINVAL``), and a connection holds at most ``response_budget``
bytes of answers being computed or waiting to be sent. A request that would go over it is not
started, and the connection is not read, until its peer has taken enough of them: a peer that
pipelines requests and never reads the answers holds that much of the server's memory, no more.

Rebuild by pull (protocol revision 2, :mod:`iscsikit.replica.pull`): the owner may GRANT a token
with which another replica reads this one (its HELLO shows the token; the connection is then
served by a blocking thread with ``sendfile``), and may point this replica at a SOURCE and PULL
ranges from it. Grants and pullers belong to the owner connection and end with it.

Example::

    store = ReplicaStore.open(Path("/srv/r0"), size=1 << 30)
    server = ReplicaServer(store)
    await server.start("127.0.0.1", 9700)
    await server.serve_forever()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from iscsikit.errors import ReplicaError, ReplicaPeerError, ReplicaProtocolError
from iscsikit.replica import protocol as p
from iscsikit.replica.pull import Grant, Puller, serve_reads
from iscsikit.replica.store import ReplicaStore

log = logging.getLogger("iscsikit.replica.server")

#: Reads and plain writes up to this size run inline on the event loop.
INLINE_MAX = 128 << 10
#: Plain writes of whole pages run inline up to this size: their page-cache copy never has to
#: read a page first, and it costs less than the thread hop it replaces. Measured with three
#: replicas and the target on two cores (1 MiB writes): 1.2-1.7 ms of replica CPU per MiB
#: through the pool, 0.85-1.1 ms inline, 30% more throughput.
INLINE_WRITE_MAX = 1 << 20
PAGE = 4096
#: PULLs (of one owner) run at once.
PULL_THREADS = 2
#: Bytes of answers one connection may have in progress or unsent (twice what a controller keeps
#: in flight, so it never waits for it). At least ``MAX_PAYLOAD``, and the transports' high-water
#: mark (64 KiB) must stay under ``RESPONSE_BUDGET - MAX_PAYLOAD``: a request waiting for the
#: budget then always has a running request or a paused transport to wake it.
RESPONSE_BUDGET = 32 << 20


class ReplicaServer:
    """Serves one :class:`ReplicaStore` over the replica protocol."""

    def __init__(
        self,
        store: ReplicaStore,
        *,
        io_threads: int = 4,
        inline_max: int = INLINE_MAX,
        inline_write_max: int = INLINE_WRITE_MAX,
        response_budget: int = RESPONSE_BUDGET,
    ) -> None:
        self.store = store
        self.response_budget = max(response_budget, p.MAX_PAYLOAD)
        self.inline_max = inline_max
        self.inline_write_max = inline_write_max
        self._pool = concurrent.futures.ThreadPoolExecutor(io_threads, thread_name_prefix="replica-io")
        # Pulls (rebuild by pull) get their own threads, so a slow source never holds up writes;
        # two, so one pull's round trips overlap the other's data (more only fight over the GIL).
        self._pull_pool = concurrent.futures.ThreadPoolExecutor(PULL_THREADS, thread_name_prefix="replica-pull")
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._owner: _Connection | None = None
        self._grants: dict[str, Grant] = {}
        #: Disk work in the thread pool, by the connection it was started for.
        self.busy: dict[asyncio.Future[Any], _Connection] = {}
        self.address = ""
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        self.address, self.port = sock[0], sock[1]
        log.info(
            "replica %s (volume %s, %d bytes, epoch %d, state %s) listening on %s:%d",
            self.store.meta.replica_id, self.store.meta.volume_id, self.store.size, self.store.meta.epoch,
            self.store.meta.state, host, self.port,
        )  # fmt: skip

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        """Stop listening, drop connections, flush and release the store."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
            self._release(conn)
        if self._server is not None:
            await self._server.wait_closed()
        self._pull_pool.shutdown(wait=True)
        await asyncio.get_running_loop().run_in_executor(self._pool, self.store.close)
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ ownership

    def claim(self, conn: _Connection) -> list[asyncio.Future[Any]]:
        """Make ``conn`` the owner; returns the older owners' disk work still running."""
        old = self._owner
        self._owner = conn
        if old is not None and old is not conn:
            log.warning("replica claimed by %s; fencing the older controller connection %s", conn.peer, old.peer)
            old.fenced = True
            old.abort()
            self._release(old)
        return [f for f, c in self.busy.items() if c is not conn and not f.done()]

    def is_owner(self, conn: _Connection) -> bool:
        return self._owner is conn

    def forget(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        self._release(conn)
        if self._owner is conn:
            self._owner = None

    def _release(self, conn: _Connection) -> None:
        """End what ``conn`` set up as owner: its read grants and its puller."""
        for token, grant in list(self._grants.items()):
            if grant.owner is conn:
                del self._grants[token]
                grant.revoke()
        conn.drop_puller()

    def grant(self, conn: _Connection, token: str) -> None:
        old = self._grants.get(token)
        if old is not None and old.owner is not conn:
            raise ReplicaError("that token is already granted by another connection")
        self._grants[token] = Grant(token, conn)

    def revoke(self, conn: _Connection, token: str) -> None:
        grant = self._grants.get(token)
        if grant is not None and grant.owner is conn:
            del self._grants[token]
            grant.revoke()

    def find_grant(self, token: Any) -> Grant | None:
        grant = self._grants.get(token) if isinstance(token, str) else None
        return None if grant is None or grant.revoked or not self.is_owner(grant.owner) else grant  # type: ignore[arg-type]

    def hello_payload(self) -> bytes:
        info = self.store.meta.to_json()
        info["revision"] = self.store.revision
        info["allocated_bytes"] = self.store.allocated_bytes()
        info["protocol_version"] = p.VERSION
        info["protocol_revision"] = p.PROTOCOL_REVISION
        return p.pack_json(info)

    def write_inline(self, offset: int, length: int, fua: bool) -> bool:
        """Copy this write into the page cache on the event loop (not FUA; small, or whole pages)."""
        if fua:
            return False
        whole_pages = offset % PAGE == 0 and length % PAGE == 0
        return length <= self.inline_max or (whole_pages and length <= self.inline_write_max)

    def run_blocking(self, fn: Callable[..., Any], *args: Any, pull: bool = False) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._pull_pool if pull else self._pool, fn, *args)


class _Connection(asyncio.Protocol):
    def __init__(self, server: ReplicaServer) -> None:
        self.server = server
        self.session = p.ServerSession()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.fenced = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.puller: Puller | None = None
        self._handed_off = False
        #: Answer bytes reserved by requests started and not answered yet (response_bound each).
        self._reserved = 0
        #: A decoded request waiting for the response budget (nothing after it is decoded meanwhile).
        self._waiting: p.Frame | None = None
        self._write_paused = False
        self._reading = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.server._conns.add(self)
        log.debug("connection from %s", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._handed_off:
            log.debug("connection from %s closed (%s)", self.peer, exc or "EOF")
        self.server.forget(self)
        self.transport = None
        self._waiting = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def drop_puller(self) -> None:
        puller, self.puller = self.puller, None
        if puller is not None:
            puller.close()

    def run_blocking(self, fn: Callable[..., Any], *args: Any, pull: bool = False) -> asyncio.Future[Any]:
        """Run ``fn`` in the server's pool; a new claim waits for it (``ReplicaServer.busy``)."""
        busy = self.server.busy
        fut = self.server.run_blocking(fn, *args, pull=pull)
        busy[fut] = self
        fut.add_done_callback(lambda f: busy.pop(f, None))
        return fut

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data)
        self._serve_received()

    def _serve_received(self) -> None:
        """Start the requests received, in order, until one has to wait for the response budget."""
        while self.transport is not None and self._waiting is None:
            try:
                req = self.session.next_request()
            except p.PayloadChecksumError as exc:
                self._send(self.session.respond_error(exc.frame, p.Status.BADCRC, str(exc)))
                continue
            except ReplicaProtocolError as exc:
                log.warning("closing connection from %s: %s", self.peer, exc)
                self.abort()
                return
            if req is None:
                break
            self._start(req)
        self._update_reading()

    def _start(self, req: p.Frame) -> None:
        try:
            need = p.response_bound(req)
        except ReplicaProtocolError as exc:  # its answer could not be sent: refuse it before any work
            self._send(self.session.respond_error(req, p.Status.EINVAL, str(exc)))
            return
        if not self._admits(need):
            self._waiting = req
            return
        self._dispatch(req)

    def _admits(self, need: int) -> bool:
        """Whether an answer of ``need`` bytes fits the budget beside those in progress and unsent."""
        assert self.transport is not None
        held = self._reserved + self.transport.get_write_buffer_size()
        return held == 0 or held + need <= self.server.response_budget

    def _budget_freed(self) -> None:
        """A request ended or the transport drained: start the waiting request if it fits now."""
        req = self._waiting
        if req is None or self.transport is None or self.transport.is_closing():
            return
        if self._admits(p.response_bound(req)):
            self._waiting = None
            self._dispatch(req)
            self._serve_received()

    def _update_reading(self) -> None:
        """Read while answers flow out and nothing waits for the budget; otherwise leave the
        requests in the socket (the peer's sending stalls instead of our memory growing)."""
        t = self.transport
        if t is None or t.is_closing():
            return
        want = not self._write_paused and self._waiting is None
        if want != self._reading:
            self._reading = want
            if want:
                t.resume_reading()
            else:
                t.pause_reading()

    def eof_received(self) -> bool | None:
        return None

    # Back-pressure: while responses pile up unsent, stop reading requests.
    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._budget_freed()
        self._update_reading()

    def _send(self, buffers: list[bytes]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(buffers)

    # ------------------------------------------------------------------ requests

    def _dispatch(self, req: p.Frame) -> None:
        srv = self.server
        store = srv.store
        if req.op == p.Op.PING:
            self._send(self.session.respond(req))
            return
        if req.op == p.Op.HELLO:
            try:
                hello = p.unpack_json(req.payload, "HELLO") if req.payload else {}
            except ReplicaProtocolError as exc:
                self._send(self.session.respond_error(req, p.Status.EINVAL, str(exc)))
                return
            if "grant" in hello:
                self._hand_off(req, hello["grant"])
                return
            if hello.get("claim"):
                older = srv.claim(self)
                if older:  # answer once no disk write of an older owner can land any more
                    self._spawn(self._answer_claim(req, older))
                    return
            self._send(self.session.respond(req, srv.hello_payload()))
            return
        if self.fenced or not srv.is_owner(self):
            self._send(self.session.respond_error(req, p.Status.FENCED, "this connection does not own the replica"))
            return
        if p.is_range_op(req.op):
            try:
                store.check_range(req.offset, req.length)
            except ValueError as exc:
                self._send(self.session.respond_error(req, p.Status.EINVAL, str(exc)))
                return
        if req.op == p.Op.READ and req.length <= srv.inline_max and not req.fua:
            self._finish(req, lambda: store.read(req.offset, req.length))
        elif req.op == p.Op.WRITE and srv.write_inline(req.offset, req.length, req.fua):
            self._finish(req, lambda: store.write(req.offset, req.payload))
        elif req.op == p.Op.GRANT:
            self._finish(req, lambda: self._grant(req))
        else:
            self._spawn(self._run(req), p.response_bound(req))

    def _spawn(self, coro: Any, reserve: int = 0) -> None:
        """Run ``coro`` as a task holding ``reserve`` bytes of the response budget until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        self._reserved += reserve
        task.add_done_callback(lambda t: self._task_done(t, reserve))

    def _task_done(self, task: asyncio.Task[None], reserve: int) -> None:
        self._tasks.discard(task)
        self._reserved -= reserve
        self._budget_freed()

    async def _answer_claim(self, req: p.Frame, older: list[asyncio.Future[Any]]) -> None:
        await asyncio.wait(older)
        if self.server.is_owner(self):
            self._send(self.session.respond(req, self.server.hello_payload()))

    def _hand_off(self, req: p.Frame, token: Any) -> None:
        """A peer with a read grant: serve it from a blocking thread on its own socket."""
        grant = self.server.find_grant(token)
        if grant is None:
            self._send(self.session.respond_error(req, p.Status.FENCED, "no such read grant (revoked or never given)"))
            return
        if self.session.buffered or self.transport is None:
            self._send(self.session.respond_error(req, p.Status.EINVAL, "requests sent before the HELLO answer"))
            return
        sock = self.transport.get_extra_info("socket")
        raw = socket.socket(fileno=os.dup(sock.fileno()))
        self._handed_off = True
        self.transport.pause_reading()
        self.abort()  # the loop lets go of its descriptor; the connection lives on in ``raw``
        self.transport = None
        threading.Thread(
            target=serve_reads, args=(raw, self.server.store, grant, req, self.server.hello_payload()),
            name=f"replica-peer {self.peer}", daemon=True,
        ).start()  # fmt: skip

    def _grant(self, req: p.Frame) -> bytes:
        fields = p.unpack_json(req.payload, "GRANT")
        token = fields.get("token")
        if not isinstance(token, str) or not 16 <= len(token) <= 256:
            raise ValueError('GRANT needs a "token" string of 16 to 256 characters')
        if fields.get("revoke"):
            self.server.revoke(self, token)
        else:
            self.server.grant(self, token)
        return b""

    async def _source(self, req: p.Frame) -> bytes:
        fields = p.unpack_json(req.payload, "SOURCE")
        self.drop_puller()
        address = fields.get("address")
        if address is None:
            return b""
        store = self.server.store
        volume_id, token, timeout = fields.get("volume_id"), fields.get("token"), fields.get("timeout", 2.0)
        if not isinstance(address, str) or not isinstance(token, str) or not isinstance(timeout, int | float):
            raise ValueError('SOURCE needs "address" and "token" strings and a numeric "timeout"')
        if volume_id is None or volume_id != store.meta.volume_id:
            raise ReplicaError(f"SOURCE names volume {volume_id}; this replica holds {store.meta.volume_id}")
        puller = Puller(store, address, token, volume_id, float(timeout))
        self.puller = puller
        try:
            meta = await self.run_blocking(puller.open, pull=True)
        except BaseException:
            if self.puller is puller:
                self.drop_puller()
            raise
        log.info("pulling from %s (replica %s) for %s", address, meta.get("replica_id"), self.peer)
        return p.pack_json({"replica_id": meta.get("replica_id"), "revision": meta.get("revision")})

    async def _pull(self, req: p.Frame) -> bytes:
        puller = self.puller
        if puller is None:
            raise ReplicaError("PULL before a SOURCE")
        result: p.PullResult = await self.run_blocking(puller.pull, req.offset, req.length, pull=True)
        return result.pack()

    def _finish(self, req: p.Frame, fn: Callable[[], Any]) -> None:
        try:
            result = fn()
        except Exception as exc:
            self._send(self._error(req, exc))
            return
        self._send(self.session.respond(req, result if isinstance(result, bytes) else b""))

    async def _run(self, req: p.Frame) -> None:
        store = self.server.store
        op = req.op
        try:
            if op == p.Op.READ:
                payload = await self.run_blocking(store.read, req.offset, req.length)
            elif op == p.Op.WRITE:
                await self.run_blocking(store.write, req.offset, req.payload, req.fua)
                payload = b""
            elif op == p.Op.UNMAP:
                await self.run_blocking(store.unmap, req.offset, req.length)
                payload = b""
            elif op == p.Op.FLUSH:
                await self.run_blocking(store.flush)
                payload = b""
            elif op == p.Op.EXTENTS:
                payload = await self.run_blocking(_pack_extents, store, req.offset, req.length)
            elif op == p.Op.CHECKSUM:
                granule = p.parse_granule(req.payload)
                sums = await self.run_blocking(store.checksum_array, req.offset, req.length, granule)
                payload = p.pack_checksums(sums)
            elif op == p.Op.SET_META:
                fields = p.unpack_json(req.payload, "SET_META")
                await self.run_blocking(store.update_meta, fields)
                log.info("metadata set by %s: %s", self.peer, fields)
                payload = self.server.hello_payload()
            elif op == p.Op.SOURCE:
                payload = await self._source(req)
            elif op == p.Op.PULL:
                payload = await self._pull(req)
            elif op == p.Op.CLOSE:
                await self.run_blocking(store.flush)
                await self.run_blocking(store.update_meta, {"clean": True})
                log.info("clean close by %s (revision %d)", self.peer, store.revision)
                payload = b""
            else:  # pragma: no cover - every Op is handled above
                self._send(self.session.respond_error(req, p.Status.UNSUPPORTED, f"op {op.name}"))
                return
        except Exception as exc:
            self._send(self._error(req, exc))
            return
        self._send(self.session.respond(req, payload))

    def _error(self, req: p.Frame, exc: Exception) -> list[bytes]:
        if isinstance(exc, ReplicaPeerError):
            status = p.Status.PEER
            log.warning("%s %d+%d: %s", req.op.name, req.offset, req.length, exc)
        elif isinstance(exc, OSError):
            status = p.Status.ENOSPC if exc.errno in (errno.ENOSPC, errno.EDQUOT) else p.Status.EIO
            log.error("%s seq=%d at %d+%d failed: %s", req.op.name, req.seq, req.offset, req.length, exc)
        elif isinstance(exc, ValueError | ReplicaProtocolError):
            status = p.Status.EINVAL
        elif isinstance(exc, ReplicaError):
            status = p.Status.STATE
        else:
            log.exception("unexpected error in %s seq=%d", req.op.name, req.seq)
            status = p.Status.EIO
        return self.session.respond_error(req, status, str(exc))


def _pack_extents(store: ReplicaStore, offset: int, length: int) -> bytes:
    """An EXTENTS answer, packed as the extents are found (at most ``MAX_EXTENTS`` of them)."""
    return p.pack_extents(store.iter_extents(offset, length))
