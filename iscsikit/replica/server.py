"""The replica server: a thin asyncio driver around :class:`ServerSession` and :class:`ReplicaStore`.

One TCP listener; each connection gets its own :class:`~iscsikit.replica.protocol.ServerSession`.
Requests are handled concurrently and answered as they finish, so responses come back out of
order: small reads and writes run inline on the event loop (a page-cache copy is cheaper than
a thread hop), large ones, FUA writes, flushes, unmaps, checksums and metadata updates run in
a small thread pool (``os.pread``/``os.pwrite``/``fsync`` release the GIL).

Fencing: a controller sends ``HELLO {"claim": true}``; the newest claim wins and every older
claimed connection is answered ``FENCED`` and closed, so a controller that was cut off and
replaced can never write again through its old connection.

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
import socket
from collections.abc import Callable
from typing import Any

from iscsikit.errors import ReplicaError, ReplicaProtocolError
from iscsikit.replica import protocol as p
from iscsikit.replica.store import ReplicaStore

log = logging.getLogger("iscsikit.replica.server")

#: Reads and plain writes up to this size run inline on the event loop.
INLINE_MAX = 128 << 10


class ReplicaServer:
    """Serves one :class:`ReplicaStore` over the replica protocol."""

    def __init__(self, store: ReplicaStore, *, io_threads: int = 4, inline_max: int = INLINE_MAX) -> None:
        self.store = store
        self.inline_max = inline_max
        self._pool = concurrent.futures.ThreadPoolExecutor(io_threads, thread_name_prefix="replica-io")
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._owner: _Connection | None = None
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
        if self._server is not None:
            await self._server.wait_closed()
        await asyncio.get_running_loop().run_in_executor(self._pool, self.store.close)
        self._pool.shutdown(wait=True)

    # ------------------------------------------------------------------ ownership

    def claim(self, conn: _Connection) -> None:
        old = self._owner
        self._owner = conn
        if old is not None and old is not conn:
            log.warning("replica claimed by %s; fencing the older controller connection %s", conn.peer, old.peer)
            old.fenced = True
            old.abort()

    def is_owner(self, conn: _Connection) -> bool:
        return self._owner is conn

    def forget(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        if self._owner is conn:
            self._owner = None

    def hello_payload(self) -> bytes:
        info = self.store.meta.to_json()
        info["revision"] = self.store.revision
        info["allocated_bytes"] = self.store.allocated_bytes()
        info["protocol_version"] = p.VERSION
        return p.pack_json(info)

    def run_blocking(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


class _Connection(asyncio.Protocol):
    def __init__(self, server: ReplicaServer) -> None:
        self.server = server
        self.session = p.ServerSession()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.fenced = False
        self._tasks: set[asyncio.Task[None]] = set()

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
        log.debug("connection from %s closed (%s)", self.peer, exc or "EOF")
        self.server.forget(self)
        self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data)
        while self.transport is not None:
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
                return
            self._dispatch(req)

    def eof_received(self) -> bool | None:
        return None

    # Back-pressure: while responses pile up unsent, stop reading requests.
    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

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
            if hello.get("claim"):
                srv.claim(self)
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
        inline = req.length <= srv.inline_max and not req.fua
        if req.op == p.Op.READ and inline:
            self._finish(req, lambda: store.read(req.offset, req.length))
        elif req.op == p.Op.WRITE and inline:
            self._finish(req, lambda: store.write(req.offset, req.payload))
        else:
            task = asyncio.get_running_loop().create_task(self._run(req))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
                payload = await self.server.run_blocking(store.read, req.offset, req.length)
            elif op == p.Op.WRITE:
                await self.server.run_blocking(store.write, req.offset, req.payload, req.fua)
                payload = b""
            elif op == p.Op.UNMAP:
                await self.server.run_blocking(store.unmap, req.offset, req.length)
                payload = b""
            elif op == p.Op.FLUSH:
                await self.server.run_blocking(store.flush)
                payload = b""
            elif op == p.Op.EXTENTS:
                payload = p.pack_extents(await self.server.run_blocking(store.extents, req.offset, req.length))
            elif op == p.Op.CHECKSUM:
                granule = p.parse_granule(req.payload)
                sums = await self.server.run_blocking(store.checksums, req.offset, req.length, granule)
                payload = p.pack_checksums(sums)
            elif op == p.Op.SET_META:
                fields = p.unpack_json(req.payload, "SET_META")
                await self.server.run_blocking(store.update_meta, fields)
                log.info("metadata set by %s: %s", self.peer, fields)
                payload = self.server.hello_payload()
            elif op == p.Op.CLOSE:
                await self.server.run_blocking(store.flush)
                await self.server.run_blocking(store.update_meta, {"clean": True})
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
        if isinstance(exc, OSError):
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
