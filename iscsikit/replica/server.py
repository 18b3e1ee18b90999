"""The replica server: a thin asyncio driver around :class:`ServerSession` and :class:`ReplicaStore`.

One TCP listener; each connection gets its own :class:`~iscsikit.replica.protocol.ServerSession`.
Requests are handled concurrently and answered as they finish, so responses come back out of
order: small reads and writes, and plain writes of whole pages up to 1 MiB, run inline on the
event loop (a page-cache copy is cheaper than a thread hop); larger ones, FUA writes, flushes,
unmaps, checksums and metadata updates run in a small thread pool (``os.pread``/``os.pwrite``/
``fsync`` release the GIL). Overlapping writes never race: the controller holds a range lock
for each write until every replica has answered it.

Fencing: a controller sends ``HELLO {"claim": true, "controller": ID}``; the newest claim wins
and every older claimed connection is closed, so a controller that was cut off and replaced can
never write again through its old connection. The controller it replaced is remembered (in the
replica's metadata, so across restarts too) and its later claims are answered ``FENCED``: it
cannot reconnect and take the replica back. The new claim is answered only after every disk
write started for older owners (thread-pool writes, pulls) has finished.

Bounds: every request's answer is bounded before the request is started
(:func:`~iscsikit.replica.protocol.response_bound`; an answer that could not be sent, a READ
over 16 MiB say, is answered ``EINVAL``), and a connection holds at most ``response_budget``
bytes of answers being computed or waiting to be sent. A request that would go over it is not
started, and the connection is not read, until its peer has taken enough of them: a peer that
pipelines requests and never reads the answers holds that much of the server's memory, no more.

Rebuild by pull (protocol revision 2, :mod:`iscsikit.replica.pull`): the owner may GRANT a token
with which another replica reads this one (its HELLO shows the token; the connection is then
served by a blocking thread with ``sendfile``, or on the event loop when it is TLS), and may point
this replica at a SOURCE and PULL ranges from it. Grants and pullers belong to the owner
connection and end with it.

Authentication (protocol revision 3, :mod:`iscsikit.replica.auth`): with a secret, a connection
is served nothing but the AUTH handshake until it has proved that it knows the secret; with TLS,
the TLS handshake (client certificate required) comes first. A connection in its handshakes is
*pending*: at most ``max_pending`` at once, each for at most ``auth_timeout`` seconds; every
refusal is logged once with its reason. The handshake swaps the connection's dispatcher once, so
the READ/WRITE path pays nothing for it.

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
import re
import socket
import ssl
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from iscsikit.errors import ReplicaError, ReplicaPeerError, ReplicaProtocolError
from iscsikit.replica import auth
from iscsikit.replica import protocol as p
from iscsikit.replica.pull import MAX_PEER_PAYLOAD, Grant, Puller, serve_reads
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
#: Controllers a replica remembers as fenced (the oldest is forgotten first).
MAX_FENCED_CONTROLLERS = 64
#: A controller's id in HELLO ``{"claim": true, "controller": ID}``.
CONTROLLER_ID = re.compile(r"[0-9A-Za-z._-]{1,64}")
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
        security: auth.ServerSecurity | None = None,
        max_pending: int = auth.MAX_PENDING,
        auth_timeout: float = auth.AUTH_TIMEOUT,
        response_budget: int = RESPONSE_BUDGET,
    ) -> None:
        self.store = store
        self.response_budget = max(response_budget, p.MAX_PAYLOAD)
        self.security = security or auth.ServerSecurity()
        self.max_pending = max_pending
        self.auth_timeout = auth_timeout
        #: Connections still in their TLS/AUTH handshakes (only when ``security.guarded``).
        self.pending: set[_Connection] = set()
        self.inline_max = inline_max
        self.inline_write_max = inline_write_max
        self._pool = concurrent.futures.ThreadPoolExecutor(io_threads, thread_name_prefix="replica-io")
        # Pulls (rebuild by pull) get their own threads, so a slow source never holds up writes;
        # two, so one pull's round trips overlap the other's data (more only fight over the GIL).
        self._pull_pool = concurrent.futures.ThreadPoolExecutor(PULL_THREADS, thread_name_prefix="replica-pull")
        self._server: asyncio.Server | None = None
        self._conns: set[_Connection] = set()
        self._owner: _Connection | None = None
        #: The HELLO ``controller`` id of the last claim, and the ids it superseded (persisted).
        self._controller: str | None = store.meta.controller
        self._fenced: list[str] = list(store.meta.fenced_controllers)
        self._claims_lock = asyncio.Lock()
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
            "replica %s (volume %s, %d bytes, epoch %d, state %s) listening on %s:%d%s",
            self.store.meta.replica_id, self.store.meta.volume_id, self.store.size, self.store.meta.epoch,
            self.store.meta.state, host, self.port, self._security_note(),
        )  # fmt: skip

    def _security_note(self) -> str:
        sec = self.security
        parts = (["shared secret"] if sec.secret else []) + (["TLS, client certificates required"] if sec.tls else [])
        return f" ({' and '.join(parts)})" if parts else " (no authentication)"

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

    def claim_refused(self, controller: str | None) -> bool:
        """Whether ``controller`` was fenced by a newer claim (it may never claim again)."""
        return controller is not None and controller in self._fenced

    def claim(self, conn: _Connection, controller: str | None = None) -> tuple[list[asyncio.Future[Any]], bool]:
        """Make ``conn`` the owner; returns the older owners' disk work still running, and whether
        the owning controller changed (then :meth:`persist_claims` must run before answering).

        A claim by another controller than the last one fences the last one for good, also when
        its connection is gone already: a controller that was cut off and replaced cannot take the
        replica back when it reconnects (two controllers would otherwise fence each other in turn).
        """
        old = self._owner
        self._owner = conn
        if old is not None and old is not conn:
            log.warning("replica claimed by %s; fencing the older controller connection %s", conn.peer, old.peer)
            old.fenced = True
            old.abort()
            self._release(old)
        changed = controller != self._controller
        if changed:
            if self._controller is not None:
                log.warning("controller %s claimed the replica; controller %s may not claim it again",
                            controller or "(without an id)", self._controller)  # fmt: skip
                self._fenced = [c for c in self._fenced if c != self._controller][1 - MAX_FENCED_CONTROLLERS :]
                self._fenced.append(self._controller)
            self._controller = controller
        return [f for f, c in self.busy.items() if c is not conn and not f.done()], changed

    async def persist_claims(self) -> None:
        """Write the owning controller and the fenced ones to the replica's metadata (the newest
        state wins: each write takes its snapshot once the one before has finished)."""
        async with self._claims_lock:
            snapshot = (self._controller, list(self._fenced))
            await asyncio.get_running_loop().run_in_executor(self._pool, self.store.record_claim, *snapshot)

    def is_owner(self, conn: _Connection) -> bool:
        return self._owner is conn

    def forget(self, conn: _Connection) -> None:
        self._conns.discard(conn)
        self.settled(conn)
        self._release(conn)
        if self._owner is conn:
            self._owner = None

    def _release(self, conn: _Connection) -> None:
        """End what ``conn`` set up as owner: its read grants and its puller."""
        for token, grant in list(self._grants.items()):
            if grant.owner is conn:
                del self._grants[token]
                grant.revoke()
                for peer in [c for c in self._conns if c.granted is grant]:  # TLS peers served on the loop
                    peer.abort()
        conn.drop_puller()

    # ------------------------------------------------------------------ handshakes (pending connections)

    def admit(self, conn: _Connection) -> bool:
        """Count a new connection as pending; False (logged once) when too many already are."""
        if len(self.pending) >= self.max_pending:
            log.warning(
                "refused connection from %s: %d connections are already in their handshakes (limit %d)",
                conn.peer, len(self.pending), self.max_pending,
            )  # fmt: skip
            return False
        self.pending.add(conn)
        return True

    def settled(self, conn: _Connection) -> None:
        """``conn`` finished its handshakes or went away: it no longer counts as pending."""
        self.pending.discard(conn)
        conn.cancel_auth_timer()

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
        #: Handles each request: the handshake first (when the server has a secret), then
        #: :meth:`_dispatch`; swapped once, so authenticated requests pay nothing for it.
        self.dispatch: Callable[[p.Frame], None] = self._dispatch_open
        self.auth: auth.ServerAuth | None = None
        self._tls_pending = False
        self._auth_timer: asyncio.TimerHandle | None = None
        #: A TLS peer with a read grant, served on the event loop in order (see :meth:`_serve_granted`).
        self.granted: Grant | None = None
        self._granted_queue: deque[p.Frame] = deque()
        self._granted_wake: asyncio.Event | None = None
        self._refused = False  # a refusal was logged: log no second one for this connection
        self._early: list[p.Frame] = []
        self._after_tls: Callable[[p.Frame], None] = self._dispatch_open
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
        security = self.server.security
        if not security.guarded:
            return
        if not self.server.admit(self):
            self._refused = True
            self.dispatch = self._dropped
            self.abort()
            return
        self._auth_timer = asyncio.get_running_loop().call_later(self.server.auth_timeout, self._auth_expired)
        if security.secret is not None:
            self.auth = auth.ServerAuth(security.secret, lambda: self.server.store.meta.volume_id)
            self.dispatch = self._handshake
            self.session.limit_payload(auth.MAX_AUTH_PAYLOAD)
        if security.tls is not None:
            self._tls_pending = True
            assert self.transport is not None
            self.transport.pause_reading()  # the TLS layer reads the ClientHello, not the frame decoder
            # Requests can arrive before start_tls() hands over the TLS transport: they wait for it.
            self._after_tls, self.dispatch = self.dispatch, self._early.append
            self._spawn(self._start_tls(security.tls))

    async def _start_tls(self, ctx: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        raw = self.transport
        assert raw is not None
        try:
            tls = await loop.start_tls(raw, self, ctx, server_side=True, ssl_handshake_timeout=self.server.auth_timeout)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError) as exc:
            if not self._refused:  # the peer left (a port probe, a client that gave up): not a refusal
                self._refused = True
                log.info("connection from %s closed during its TLS handshake (%s)", self.peer, exc or "EOF")
            raw.abort()
            self.server.forget(self)
            return
        except (OSError, TimeoutError, RuntimeError) as exc:
            self._refuse(f"TLS handshake failed: {exc or type(exc).__name__}")
            raw.abort()
            self.server.forget(self)
            return
        if tls is None or self.transport is None:  # timed out or closed meanwhile
            if tls is not None:
                tls.abort()
            return
        self.transport = tls
        self._tls_pending = False
        if self.auth is None:
            self.server.settled(self)  # TLS alone: the client certificate was verified
        self.dispatch = self._after_tls
        early, self._early = self._early, []
        for req in early:
            self.dispatch(req)

    def _refuse(self, reason: str) -> None:
        """Log why this connection is refused, once, and stop serving it."""
        if not self._refused:
            self._refused = True
            log.warning("refused connection from %s: %s", self.peer, reason)
        self.dispatch = self._dropped

    def _auth_expired(self) -> None:
        self._auth_timer = None
        if self.transport is not None:
            what = "TLS handshake" if self._tls_pending else "AUTH handshake"
            self._refuse(f"its {what} did not finish within {self.server.auth_timeout:g} s")
            self.abort()
        self.server.forget(self)

    def cancel_auth_timer(self) -> None:
        if self._auth_timer is not None:
            self._auth_timer.cancel()
            self._auth_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._handed_off:
            log.debug("connection from %s closed (%s)", self.peer, exc or "EOF")
        if self in self.server.pending and not self._refused:
            log.info("connection from %s closed during its handshake (%s)", self.peer, exc or "EOF")
        self.server.forget(self)
        self.transport = None
        self._waiting = None
        if self._granted_wake is not None:
            self._granted_wake.set()  # let the granted peer's task end

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
            if not self._admits(_need(req)):
                self._waiting = req
                break
            self.dispatch(req)
        self._update_reading()

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
        if self._admits(_need(req)):
            self._waiting = None
            self.dispatch(req)
            self._serve_received()

    def _update_reading(self) -> None:
        """Read while answers flow out and nothing waits for the budget; otherwise leave the
        requests in the socket (the peer's sending stalls instead of our memory growing)."""
        t = self.transport
        if t is None or t.is_closing() or self._tls_pending:
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

    def _dispatch_open(self, req: p.Frame) -> None:
        """The first request on a server without a secret: AUTH is refused, all else served as before."""
        self.dispatch = self._dispatch
        if req.op == p.Op.AUTH:
            self._send(
                self.session.respond_error(
                    req, p.Status.UNSUPPORTED,
                    "this replica server has no secret (start it with --secret-file), but the controller has one",
                )
            )  # fmt: skip
            self._refuse("AUTH, but this server has no secret")
            self._close_after_answer()
            return
        self._dispatch(req)

    def _handshake(self, req: p.Frame) -> None:
        """Requests before the connection proved that it knows the secret."""
        assert self.auth is not None
        answer = self.auth.receive(req)
        if answer.status == p.Status.OK:
            self._send(self.session.respond(req, answer.payload))
        else:
            self._send(self.session.respond_error(req, answer.status, answer.payload.decode()))
        if answer.close:
            self._refuse(answer.reason)
            self._close_after_answer()
        elif answer.done:
            self.session.limit_payload(p.MAX_PAYLOAD)
            self.dispatch = self._dispatch
            if not self._tls_pending:
                self.server.settled(self)
            log.debug("connection from %s authenticated", self.peer)

    def _close_after_answer(self) -> None:
        """Send what is queued, then close; nothing more is read from this connection."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.dispatch = self._dropped

    def _dropped(self, req: p.Frame) -> None:
        """Requests that arrived after a refusal, in the same read: ignored (the connection is closing)."""

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
                controller = hello.get("controller")
                if controller is not None and not (isinstance(controller, str) and CONTROLLER_ID.fullmatch(controller)):
                    self._send(self.session.respond_error(
                        req, p.Status.EINVAL,
                        f"HELLO field controller: expected 1 to 64 of [0-9A-Za-z._-], got {str(controller)[:80]!r}",
                    ))  # fmt: skip
                    return
                if srv.claim_refused(controller):
                    log.warning("refused a claim by controller %s from %s: a newer controller fenced it", controller,
                                self.peer)  # fmt: skip
                    self._send(self.session.respond_error(
                        req, p.Status.FENCED,
                        f"claim refused: controller {controller} was fenced by a newer controller's claim and may "
                        "not claim this replica again (stop it; a newly started controller can take over)",
                    ))  # fmt: skip
                    return
                older, changed = srv.claim(self, controller)
                if older or changed:  # answer once no disk write of an older owner can land any more
                    self._spawn(self._answer_claim(req, older, changed))
                    return
            self._send(self.session.respond(req, srv.hello_payload()))
            return
        if self.fenced or not srv.is_owner(self):
            self._send(self.session.respond_error(req, p.Status.FENCED, "this connection does not own the replica"))
            return
        try:
            if p.is_range_op(req.op):
                store.check_range(req.offset, req.length)
            reserve = p.response_bound(req)  # an answer that could not be sent: refused before any work
        except (ValueError, ReplicaProtocolError) as exc:
            self._send(self.session.respond_error(req, p.Status.EINVAL, str(exc)))
            return
        if req.op == p.Op.READ and req.length <= srv.inline_max and not req.fua:
            self._finish(req, lambda: store.read(req.offset, req.length))
        elif req.op == p.Op.WRITE and srv.write_inline(req.offset, req.length, req.fua):
            self._finish(req, lambda: store.write(req.offset, req.payload))
        elif req.op == p.Op.GRANT:
            self._finish(req, lambda: self._grant(req))
        else:
            self._spawn(self._run(req), reserve)

    def _spawn(self, coro: Any, reserve: int = 0) -> None:
        """Run ``coro`` as a task holding ``reserve`` bytes of the response budget until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        self._reserved += reserve
        task.add_done_callback(lambda t: self._task_done(t, reserve))

    def _task_done(self, task: asyncio.Task[None], reserve: int) -> None:
        self._tasks.discard(task)
        self._release(reserve)

    def _release(self, reserve: int) -> None:
        self._reserved -= reserve
        self._budget_freed()

    async def _answer_claim(self, req: p.Frame, older: list[asyncio.Future[Any]], changed: bool) -> None:
        if older:
            await asyncio.wait(older)
        if changed:
            try:
                await self.server.persist_claims()
            except (OSError, ReplicaError) as exc:
                log.error("cannot record the claim of %s in the replica's metadata: %s", self.peer, exc)
                self._send(self.session.respond_error(req, p.Status.EIO, f"cannot record the claim: {exc}"))
                return
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
        if self.server.security.tls is not None:  # TLS lives in the event loop's transport: serve it here
            self._serve_on_loop(req, grant)
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

    def _serve_on_loop(self, req: p.Frame, grant: Grant) -> None:
        """A granted peer on a TLS connection: answered in order from the event loop (no ``sendfile``)."""
        self.granted = grant
        self.session.limit_payload(MAX_PEER_PAYLOAD)
        self._granted_wake = asyncio.Event()
        self.dispatch = self._queue_granted
        self._send(self.session.respond(req, self.server.hello_payload()))
        log.info("peer %s reads with a grant (TLS)", self.peer)
        self._spawn(self._serve_granted(grant))

    def _queue_granted(self, req: p.Frame) -> None:
        self._reserved += _need(req)  # released once answered: the queue holds at most the budget
        self._granted_queue.append(req)
        assert self._granted_wake is not None
        self._granted_wake.set()

    async def _serve_granted(self, grant: Grant) -> None:
        queue, wake = self._granted_queue, self._granted_wake
        assert wake is not None
        while self.transport is not None:
            if not queue:
                wake.clear()
                await wake.wait()
                continue
            req = queue.popleft()
            try:
                await self._answer_granted(req, grant)
            finally:
                self._release(_need(req))
            if grant.revoked:
                return

    async def _answer_granted(self, req: p.Frame, grant: Grant) -> None:
        store = self.server.store
        if grant.revoked:
            self._send(self.session.respond_error(req, p.Status.FENCED, "the read grant was revoked"))
            self._close_after_answer()
            return
        if req.op not in p.GRANTED_OPS:
            message = f"a peer with a read grant may not send {req.op.name}"
            self._send(self.session.respond_error(req, p.Status.FENCED, message))
            return
        try:
            if p.is_range_op(req.op):
                store.check_range(req.offset, req.length)
            p.response_bound(req)  # an answer that could not be sent: refused before any work
            if req.op == p.Op.READ:
                payload = await self.run_blocking(store.read, req.offset, req.length)
            elif req.op == p.Op.EXTENTS:
                payload = await self.run_blocking(_pack_extents, store, req.offset, req.length)
            elif req.op == p.Op.CHECKSUM:
                granule = p.parse_granule(req.payload)
                payload = p.pack_checksums(
                    await self.run_blocking(store.checksum_array, req.offset, req.length, granule)
                )
            else:  # PING
                payload = b""
        except Exception as exc:
            self._send(self._error(req, exc))
            return
        self._send(self.session.respond(req, payload))

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
        puller = Puller(store, address, token, volume_id, float(timeout), self.server.security.peer)
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
            elif op == p.Op.AUTH:
                self._send(self.session.respond_error(req, p.Status.EINVAL, "this connection is already authenticated"))
                return
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


def _need(req: p.Frame) -> int:
    """What ``req``'s answer may take, for the response budget (a refused one: its error answer)."""
    try:
        return p.response_bound(req)
    except ReplicaProtocolError:
        return p.SMALL_ANSWER


def _pack_extents(store: ReplicaStore, offset: int, length: int) -> bytes:
    """An EXTENTS answer, packed as the extents are found (at most ``MAX_EXTENTS`` of them)."""
    return p.pack_extents(store.iter_extents(offset, length))
