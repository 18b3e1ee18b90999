"""The asyncio driver of the built-in target: sockets in, :class:`TargetConnection` events out.

One :class:`TargetServer` serves many targets on many portals. Each accepted socket gets a
:class:`_Connection` (an ``asyncio.BufferedProtocol``): the loop ``recv_into``\\ s straight into
the buffer the protocol core hands out (a Data-Out payload lands in its task's buffer), and
responses leave with ``writelines`` (scatter-gather under uvloop) without joining payloads.

A command without Data-Out is first offered to :meth:`LunMap.execute_now
<iscsikit.target.scsi.LunMap.execute_now>`: a READ whose data is in the page cache is answered
synchronously, with no coroutine at all. Everything else runs as a coroutine started *eagerly*:
it runs at once, and only if it has to wait (a thread-pool read, a replica round trip) is it
wrapped in an asyncio Task. Either way a quick answer costs no Task and no extra loop iteration;
it joins the same ``writelines`` as the other answers of that ``recv``.

Large reads arrive in pooled buffers (:mod:`iscsikit.target.buffers`); each connection gives
them back once its transport has handed their bytes to the kernel (``_release_sent``).

Back-pressure: the CmdSN window (``queue_depth``) bounds commands per session; reading from a
socket pauses while its transport's write buffer is over the high-water mark (the initiator is
not reading its answers) or while more than ``max_buffered_bytes`` of complete write data waits
for the backend (data still to come from the initiator never pauses its own connection).

Bounds on peers (:class:`~iscsikit.target.limits.ServerLimits`, docs/target.md "Limits"):
connections per process and per source address are checked at accept, sessions per target and
per address when a login completes (the core's ``admit`` hook); write buffers come from one
:class:`~iscsikit.target.buffers.WriteBudget`. A housekeeping timer (once a second) drops
logins slower than ``login_timeout``, discovery sessions idle for ``idle_timeout`` and
connections whose commands wait ``data_timeout`` for Data-Out that does not come, and
looks at every connection whose reading is paused: asyncio does not read a paused socket, so
it would never see the peer leave; ``poll`` does (a reset or a hang-up aborts the connection,
a FIN resumes reading so the end of the stream is processed as usual). A connection asked to
close that has not gone ``_LINGER`` seconds later (its peer does not read) is aborted. Each
refusal is logged once per peer and reason per minute (:class:`~iscsikit.target.limits.RefusalLog`).

Shutdown (:meth:`TargetServer.stop`): stop listening, refuse new commands, let every command
already received finish (writes included), send their responses, close the connections, then
flush and close every LUN. After ``shutdown_timeout`` whatever is left (commands waiting for
data that never comes, peers that do not read) is aborted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from iscsikit.target.buffers import READ_POOL, PoolBuffer, WriteBudget, pooled
from iscsikit.target.limits import RefusalLog, ServerLimits
from iscsikit.target.proto import (
    NEED_DATA,
    CommandReady,
    ConnectionClosed,
    PortalInfo,
    SessionStarted,
    SessionTable,
    TargetConnection,
    TargetDirectory,
    TargetInfo,
    TargetLimits,
    Task,
    TaskManagement,
    TaskState,
)
from iscsikit.target.proto.connection import ProtocolIssue
from iscsikit.target.proto.errors import LocalProtocolError
from iscsikit.target.proto.session import AuthConfig, Session, acl_map
from iscsikit.target.scsi import LunMap, Nexus, ScsiResponse

if TYPE_CHECKING:
    from iscsikit.target.config import ServeConfig

__all__ = ["ServerOptions", "TargetRuntime", "TargetServer", "server_from_config"]

log = logging.getLogger("iscsikit.target")

# CHECK CONDITION, HARDWARE ERROR / INTERNAL TARGET FAILURE (fixed format): when the SCSI layer raised.
_INTERNAL_FAILURE_SENSE = bytes([0x70, 0, 0x04, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x44, 0, 0, 0, 0, 0])
#: Seconds a connection we closed may take to go (its unsent answers flushing) before it is aborted.
_LINGER = 10.0
#: Bytes of read data answered but not yet handed to the transport before a flush mid-batch:
#: a batch of large reads reaches the transport's high-water mark (and pauses) as it goes.
_FLUSH_AT = 8 << 20
#: Something is wrong with a socket asyncio is not reading: reset, hang-up, or the peer's FIN.
_GONE = select.POLLHUP | select.POLLERR
_EOF = select.POLLRDHUP


@dataclass(slots=True)
class TargetRuntime:
    """One target: what the protocol sees (``info``) and its LUNs."""

    info: TargetInfo
    luns: LunMap


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Tunables of the driver (the protocol limits live in :class:`TargetLimits`)."""

    limits: TargetLimits = field(default_factory=TargetLimits)
    discovery_auth: AuthConfig = field(default_factory=AuthConfig)
    #: Seconds of silence before a NOP-In ping; a second silent interval drops the connection.
    nop_interval: float = 5.0
    #: Complete write data waiting for the backend, per connection, before reading pauses.
    max_buffered_bytes: int = 256 << 20
    #: Seconds :meth:`TargetServer.stop` waits for in-flight commands.
    shutdown_timeout: float = 30.0
    #: Started with ``--insecure-open``: every login is logged as a warning.
    insecure_open: bool = False
    #: Connection and session limits, timeouts, the write buffer budget.
    server_limits: ServerLimits = field(default_factory=ServerLimits)


class _Resume:
    """Continue driving a coroutine that already ran up to its first suspension.

    ``coro.send(None)`` returned ``future`` (an asyncio future it awaits, flagged as blocking);
    wrapping this in a Task yields that same future to the loop, then keeps sending into the
    coroutine. This is Python 3.12's eager task start, for 3.11.
    """

    __slots__ = ("coro", "future")

    def __init__(self, coro: Coroutine[Any, Any, None], future: Any) -> None:
        self.coro = coro
        self.future = future

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self.coro, self.future
        while True:
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation or an exception thrown into the task
                try:
                    value = coro.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                value = coro.send(sent)
            except StopIteration:
                return


async def _drive(resume: _Resume) -> None:
    await resume


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run ``coro`` now; None if it finished without waiting, else the Task that finishes it."""
    try:
        fut = coro.send(None)
    except StopIteration:
        return None
    task = asyncio.ensure_future(_drive(_Resume(coro, fut)))
    # A Task cancelled before its first step never runs its coroutine: close ours so its
    # finally blocks (locks, buffers) still run.
    task.add_done_callback(lambda t: coro.close() if t.cancelled() else None)
    return task


class _Connection(asyncio.BufferedProtocol):
    """One TCP connection: feeds the sans-IO core and runs what it asks for."""

    def __init__(self, server: TargetServer, portal: PortalInfo) -> None:
        self.server = server
        self.portal = portal
        self.conn = TargetConnection(server.directory, server.sessions, portal, budget=server.budget)
        self.conn.admit = self._admit_session
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        #: The peer's address without the port: what per-address limits count.
        self.address = "?"
        self._counted = False
        self._idle_seen = -1
        self._idle_since = 0.0
        self._data_seen = -1
        self._data_since = 0.0
        self._closed_at: float | None = None
        self._peer_eof = False
        self.runtime: TargetRuntime | None = None
        self.nexus: Nexus | None = None
        self.session: Session | None = None
        self.running: dict[Task, asyncio.Future[None]] = {}
        self._closing = False
        self._paused_write = False
        self._paused_read = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_in = -1
        self._pinged = False
        self._idle: asyncio.Event | None = None
        # Pool buffers of answered reads: ``_lent`` not yet handed to the transport, ``_sending``
        # (end offset in ``_wrote``, buffers) handed over and given back once the transport has
        # passed that offset to the kernel (see _release_sent).
        self._lent: list[PoolBuffer] = []
        self._lent_bytes = 0
        self._sending: deque[tuple[int, list[PoolBuffer]]] = deque()
        #: Commands without Data-Out that arrived while the peer was not reading our answers:
        #: started once it reads again, so unread answers cannot pile up past the high-water mark.
        self._deferred: deque[Task] = deque()
        self._wrote = 0
        self.started = time.monotonic()
        self._debug = log.isEnabledFor(logging.DEBUG)

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses of it
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.address = str(peer[0]) if peer else "?"
        refusal = self.server._admit_connection(self.address)
        if refusal is not None:
            kind, reason = refusal
            self.server.refusals.note(self.address, kind, reason, now=time.monotonic())
            self._closing = True
            transport.abort()
            return
        self._counted = True
        self.server._per_address[self.address] = self.server._per_address.get(self.address, 0) + 1
        local = transport.get_extra_info("sockname")
        if local and self.portal.address in ("0.0.0.0", "::"):
            # A wildcard listener: this connection's portal is the address the initiator used.
            self.portal = PortalInfo(str(local[0]), self.portal.port, self.portal.tpgt)
            self.conn.portal = self.portal
        transport.set_write_buffer_limits(high=8 << 20, low=1 << 20)
        self.server._connections.add(self)
        self._arm_timer()
        log.debug("connection from %s on %s", self.peer, self.portal.target_address())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.buffer_updated(nbytes)
        self._process()

    def eof_received(self) -> bool:
        self.conn.eof_received()
        self._process()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            self.conn.close()  # refused at accept: nothing else was started
            return
        self._counted = False
        self.server._connections.discard(self)
        per = self.server._per_address
        left = per.get(self.address, 1) - 1
        if left > 0:
            per[self.address] = left
        else:
            per.pop(self.address, None)
        # Buffers the closed transport may still reference are dropped, never reused.
        self._lent = []
        self._sending.clear()
        self._deferred.clear()
        if self._timer is not None:
            self._timer.cancel()
        aborted = self.conn.abort_all()
        session = self.session
        # The nexus is gone unless the session moved to another connection (reinstatement).
        owned = session is not None and session.connection in (None, self.conn)
        self.conn.close()
        if owned and self.runtime is not None and self.nexus is not None:
            self.runtime.luns.nexus_lost(self.nexus)
        log.info(
            "connection %s closed (%s)%s",
            self.peer,
            exc or "normally",
            f", {len(aborted)} task(s) aborted" if aborted else "",
        )
        self._check_idle()

    def pause_writing(self) -> None:
        self._paused_write = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_write = False
        if self._sending:
            self._release_sent([])
        if self._deferred:
            self._run_deferred()
        self._update_reading()

    def _run_deferred(self) -> None:
        deferred = self._deferred
        while deferred and not self._paused_write:
            task = deferred.popleft()
            if task.state is TaskState.ABORTED:
                self.conn.complete_command(task, 0x02, _INTERNAL_FAILURE_SENSE)  # forgets it, sends nothing
            else:
                self._start(task)
        if not self._in_process:
            self._process()

    # -- core events -------------------------------------------------------------------------

    def _process(self) -> None:
        conn = self.conn
        self._in_process = True
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            if type(event) is CommandReady:
                self._start(event.task)
            elif isinstance(event, SessionStarted):
                self._session_started(event)
            elif isinstance(event, TaskManagement):
                fut = asyncio.ensure_future(self._task_management(event))
                fut.add_done_callback(_log_failure)
            elif isinstance(event, ProtocolIssue):
                self.server.issues.note(self.address, event.kind, f"{self.peer}: {event.message}",
                                        now=time.monotonic())  # fmt: skip
            elif isinstance(event, ConnectionClosed):
                if isinstance(event.error, LocalProtocolError):
                    log.error("connection %s: %s", self.peer, event.error, exc_info=event.error.__cause__)
                elif event.error is not None:
                    log.warning("connection %s: %s", self.peer, event.error)
                self._closing = True
        self._in_process = False
        self._flush()
        self._update_reading()

    def _session_started(self, event: SessionStarted) -> None:
        session = event.session
        self.session = session
        kind = "discovery" if session.discovery else "normal"
        if not session.discovery:
            self.runtime = self.server.targets.get(session.target_name)
            self.nexus = Nexus(session.initiator_name, bytes(session.isid), session.target_name, self.portal.tpgt,
                               session.session_id)  # fmt: skip
        if event.replaced is not None:
            self.server._reinstate(self, event.replaced)
        if self.server.options.insecure_open:
            log.warning(
                "insecure-open: %s logged in from %s to %s %s", session.initiator_name, self.peer,
                session.target_name or "discovery",
                f"as CHAP user {session.chap_user!r}" if session.chap_user else "without CHAP",
            )  # fmt: skip
        log.info(
            "%s session tsih=%d from %s (%s) to %s",
            kind, session.tsih, session.initiator_name, self.peer, session.target_name or "discovery",
        )  # fmt: skip

    def _start(self, task: Task) -> None:
        if self._paused_write and task.buffer is None:
            self._deferred.append(task)
            return
        runtime = self.runtime
        if runtime is None:
            self.conn.complete_command(task, 0x02, _INTERNAL_FAILURE_SENSE)
            return
        luns = runtime.luns
        if task.buffer is None:
            # A command without Data-Out (every READ): try the synchronous path first.
            assert self.nexus is not None
            try:
                rsp = luns.execute_now(task.lun, task.cdb, self.nexus)
                if rsp is not None:
                    self._complete(task, rsp, luns)
                    return
            except Exception:
                log.exception("SCSI command %r failed inside the target", task)
                self.conn.complete_command(task, 0x02, _INTERNAL_FAILURE_SENSE)
                return
        fut = start_eagerly(self._execute(task, luns))
        if fut is not None:
            self.running[task] = fut

    def _complete(self, task: Task, rsp: ScsiResponse, luns: LunMap) -> None:
        if self._debug:
            log.debug(
                "%s: LUN %d CDB %s EDTL %d -> status 0x%02x sense %s data %d", self.peer, task.lun,
                task.cdb.hex(), task.expected_length, rsp.status, rsp.sense.hex() or "-", rsp.data_length,
            )  # fmt: skip
        expected = None if task.read else luns.data_out_length(task.lun, task.cdb)
        data = rsp.data
        self.conn.complete_command(task, rsp.status, rsp.sense, data, expected_data_out=expected)
        for piece in data:
            if type(piece) is memoryview and (buf := pooled(piece)) is not None:
                self._lent.append(buf)
                self._lent_bytes += len(buf)
                if self._lent_bytes > _FLUSH_AT:
                    self._flush()

    async def _execute(self, task: Task, luns: LunMap) -> None:
        nexus = self.nexus
        assert nexus is not None
        try:
            rsp: ScsiResponse = await luns.execute(task.lun, task.cdb, task.data_out, nexus)
            self._complete(task, rsp, luns)
        except asyncio.CancelledError:
            # Cancelled by stop() after its connection was aborted: nothing is sent, the buffer
            # goes back to the budget.
            self.conn.complete_command(task, 0x02, _INTERNAL_FAILURE_SENSE)
            raise
        except Exception:
            log.exception("SCSI command %r failed inside the target", task)
            self.conn.complete_command(task, 0x02, _INTERNAL_FAILURE_SENSE)
        finally:
            self.running.pop(task, None)
        # A command that finished after waiting: collect the core's events (a pending logout may
        # have completed) and flush. Eager completions are handled by the running _process.
        if not self._in_process:
            self._process()

    _in_process = False

    async def _task_management(self, event: TaskManagement) -> None:
        assert self.runtime is not None and self.nexus is not None
        req = event.request
        waits = [self.running[t] for t in event.tasks if t in self.running]
        if req.function == 5:  # LOGICAL UNIT RESET: every session's tasks on that LU
            for other in list(self.server._connections):
                if other is not self and other.runtime is self.runtime:
                    for t in other.conn.abort_lun(event.lun):
                        if t in other.running:
                            waits.append(other.running[t])
                    other._flush()
        if waits:
            await asyncio.wait(waits)
        code = await self.runtime.luns.task_management(req.function, event.lun, self.nexus)
        self.conn.complete_task_management(req, code)
        self._process()

    # -- output and flow control -------------------------------------------------------------

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        transport = self.transport
        if transport is not None and out and not transport.is_closing():
            if self.server.scatter_gather:
                transport.writelines(out)
            else:
                total = 0
                for piece in out:
                    total += len(piece)
                if total <= 65536 or len(out) == 1:
                    transport.write(b"".join(out) if len(out) > 1 else out[0])
                else:
                    for piece in out:
                        transport.write(piece)
        if self._lent or self._sending:
            if transport is None or transport.is_closing():
                self._lent = []  # dropped, never reused: a closing transport may still hold views
                self._lent_bytes = 0
                self._sending.clear()
            else:
                self._release_sent(out)
        if self._closing and not self.running and transport is not None and not transport.is_closing():
            transport.close()
        self._check_idle()

    def _release_sent(self, out: list[Any]) -> None:
        """Give back the pool buffers the transport has passed to the kernel.

        ``_wrote`` counts bytes handed to the transport while buffers are out; the transport's
        queue holds the newest ``get_write_buffer_size()`` of them, so everything before
        ``_wrote - queued`` has been sent (bytes queued from before counting began only make
        this smaller: never early). uvloop queues ``writelines`` until the end of the loop
        iteration, so this run's buffers are typically given back at the next flush.
        """
        assert self.transport is not None
        wrote = self._wrote
        for piece in out:
            wrote += len(piece)
        if self._lent:
            self._sending.append((wrote, self._lent))
            self._lent = []
            self._lent_bytes = 0
        sent = wrote - self.transport.get_write_buffer_size()
        sending = self._sending
        while sending and sending[0][0] <= sent:
            for buf in sending.popleft()[1]:
                buf.pool.give(buf)
        if sending:
            self._wrote = wrote
            if len(sending) > 256:  # a transport that never drains: stop tracking, let the GC unmap them
                sending.popleft()
        else:
            self._wrote = 0

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        pause = (
            self._paused_write or self.conn.ready_bytes > self.server.options.max_buffered_bytes
        ) and not self._peer_eof
        if pause and not self._paused_read:
            transport.pause_reading()
            self._paused_read = True
        elif not pause and self._paused_read:
            transport.resume_reading()
            self._paused_read = False

    def _arm_timer(self) -> None:
        interval = self.server.options.nop_interval
        if interval > 0:
            self._timer = asyncio.get_running_loop().call_later(interval, self._on_timer)

    def _on_timer(self) -> None:
        """Keep-alive: ping after a silent interval; drop the connection after two."""
        if self.transport is None or self.transport.is_closing():
            return
        seen = self.conn.pdus_in
        if seen == self._last_in and not self.running and not self._paused_read:
            if self._pinged:
                log.warning("connection %s: no answer to NOP-In, closing", self.peer)
                self.transport.abort()
                return
            if self.conn.session is not None:
                self.conn.ping()
                self._pinged = True
                self._flush()
        else:
            self._pinged = False
        self._last_in = seen
        self._arm_timer()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection now (unsent answers too): connection_lost frees what it held."""
        if self.transport is not None:
            self.transport.abort()

    def _admit_session(self, session: Session, replaced: Session | None) -> str | None:
        """The core's ``admit`` hook: refuse a login over the session limits (a reason) or None."""
        refusal = self.server._admit_session(self, session, replaced)
        if refusal is None:
            return None
        kind, reason = refusal
        self.server.refusals.note(self.address, kind, reason, now=time.monotonic())
        return reason

    def watch(self, now: float) -> None:
        """Housekeeping (once a second): login, idle and data timeouts, peers gone behind a pause."""
        transport = self.transport
        if transport is None:
            return
        limits = self.server.options.server_limits
        if transport.is_closing():
            if self._closed_at is None:
                self._closed_at = now
            elif now - self._closed_at > _LINGER:
                transport.abort()  # the peer does not take the answers we still had to send
            return
        session = self.session
        if session is None:
            if now - self.started > limits.login_timeout:
                self.server.refusals.note(self.address, "login timeout",
                                          f"{self.peer} did not finish its login in {limits.login_timeout:g} s",
                                          now=now)  # fmt: skip
                transport.abort()
                return
        elif session.discovery:
            seen = self.conn.pdus_in
            if seen != self._idle_seen:
                self._idle_seen, self._idle_since = seen, now
            elif now - self._idle_since > limits.idle_timeout and not self.busy:
                log.info("connection %s: discovery session idle for %g s, closing", self.peer, limits.idle_timeout)
                transport.close()
                return
        else:
            conn = self.conn
            if conn.buffered_bytes > conn.ready_bytes and not self._paused_read:
                # Buffers wait for Data-Out: it must keep coming (a stalled peer holds them).
                seen = conn.data_outs_in
                if seen != self._data_seen:
                    self._data_seen, self._data_since = seen, now
                elif now - self._data_since > limits.data_timeout:
                    self.server.refusals.note(self.address, "data timeout",
                                              f"{self.peer}: no Data-Out for {limits.data_timeout:g} s while "
                                              f"{conn.buffered_bytes - conn.ready_bytes} bytes waited for it",
                                              now=now)  # fmt: skip
                    transport.abort()
                    return
            else:
                self._data_seen = -1
        if self._paused_read or self._paused_write:
            self._check_peer(transport)

    def _check_peer(self, transport: asyncio.Transport) -> None:
        """A paused transport reads nothing, so it would never see the peer leave: ask poll()."""
        sock = transport.get_extra_info("socket")
        try:
            fd = sock.fileno() if sock is not None else -1
        except OSError:
            fd = -1
        if fd < 0:
            return
        poller = select.poll()
        poller.register(fd, _EOF)
        events = 0
        for _fd, ev in poller.poll(0):
            events |= ev
        if events & _GONE:
            log.info("connection %s: peer gone (reset or hung up) while paused, aborting", self.peer)
            transport.abort()
        elif events & _EOF and not self._peer_eof:
            # The peer will send nothing more: read what it sent and its end of stream as usual.
            self._peer_eof = True
            if self._paused_read:
                transport.resume_reading()
                self._paused_read = False

    @property
    def busy(self) -> bool:
        return bool(self.running) or bool(self.conn.tasks)

    def _check_idle(self) -> None:
        if self._idle is not None and not self.busy:
            self._idle.set()

    async def drained(self) -> None:
        """Wait until every task this connection received is answered."""
        if not self.busy:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()

    def status(self) -> dict[str, Any]:
        out = self.conn.status()
        out.update(peer=self.peer, portal=self.portal.target_address(), running=len(self.running))
        return out


def _log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("task management failed", exc_info=fut.exception())


class TargetServer:
    """Targets, LUNs and portals of one process.

    >>> # server = TargetServer([TargetRuntime(info, luns)], [PortalInfo("127.0.0.1", 3260, 1)])
    >>> # await server.start(); await server.wait_stopped()
    """

    def __init__(
        self,
        targets: Sequence[TargetRuntime],
        portals: Sequence[PortalInfo],
        options: ServerOptions | None = None,
    ) -> None:
        if not portals:
            raise ValueError("at least one portal is needed")
        self.options = options or ServerOptions()
        self.portals = list(portals)
        self.targets: dict[str, TargetRuntime] = {t.info.name: t for t in targets}
        limit = self.options.limits.max_transfer_length
        for runtime in self.targets.values():
            for _lun, lu in runtime.luns.items():
                lu.max_transfer_blocks = max(1, limit // lu.block_size)
        #: One budget for the write buffers of every connection of this server (this process).
        self.budget = WriteBudget(self.options.server_limits.write_buffer_budget)
        #: Connections, logins and sessions refused, logged once per peer, reason and minute.
        self.refusals = RefusalLog(log)
        #: Protocol issues of peers (bad DataSN, refused commands), rate-limited the same way.
        self.issues = RefusalLog(log, prefix="peer")
        self._per_address: dict[str, int] = {}
        self.sessions = SessionTable()
        self.directory = self._directory()
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self._stopped = asyncio.Event()
        self._stopping = False
        self._housekeeping: asyncio.TimerHandle | None = None
        self.started_at = time.time()
        # writelines() is scatter-gather (writev) under uvloop and on Python >= 3.12.
        self.scatter_gather = False
        #: Extra control-socket commands: name -> async handler(server, args) -> JSON-able.
        self.control_handlers: dict[str, Callable[[TargetServer, dict[str, Any]], Awaitable[Any]]] = {}

    def _directory(self) -> TargetDirectory:
        targets = {name: replace(t.info, portals=tuple(self.portals)) for name, t in self.targets.items()}
        return TargetDirectory(
            targets, limits=self.options.limits, discovery_auth=self.options.discovery_auth,
            nop_interval=self.options.nop_interval,
        )  # fmt: skip

    def refresh_directory(self) -> None:
        """Rebuild what the protocol sees (portals, ACLs) and hand it to every connection."""
        self.directory = self._directory()
        for c in self._connections:
            c.conn.directory = self.directory
            if c.conn.login is not None:
                c.conn.login.directory = self.directory

    async def start(self) -> None:
        """Open every LUN, then listen on every portal (port 0 picks a free port)."""
        loop = asyncio.get_running_loop()
        self.scatter_gather = _loop_has_scatter_gather(loop)
        _raise_open_files(self.options.server_limits.max_connections + 256)
        for runtime in self.targets.values():
            await runtime.luns.open()
        bound: list[PortalInfo] = []
        try:
            for portal in self.portals:
                srv = await loop.create_server(
                    lambda p=portal: _Connection(self, p),  # type: ignore[misc]
                    host=portal.address,
                    port=portal.port,
                    reuse_address=True,
                    backlog=128,
                )
                self._servers.append(srv)
                port = srv.sockets[0].getsockname()[1]
                bound.append(replace(portal, port=port))
        except OSError:
            for srv in self._servers:
                srv.close()
            raise
        # Ports chosen by the kernel (port 0) are what SendTargets must report.
        self.portals = bound
        self.refresh_directory()
        log.info(
            "serving %s on %s", ", ".join(self.targets) or "no targets", ", ".join(p.target_address() for p in bound)
        )
        self._housekeep()

    def _housekeep(self) -> None:
        """Once a second: unmap idle read buffers (RSS falls back after a burst); watch connections."""
        READ_POOL.trim()
        now = time.monotonic()
        for c in list(self._connections):
            c.watch(now)
        if not self._stopping:
            self._housekeeping = asyncio.get_running_loop().call_later(1.0, self._housekeep)

    def _admit_connection(self, address: str) -> tuple[str, str] | None:
        """(kind, reason) to refuse a new connection from ``address``, or None."""
        limits = self.options.server_limits
        if self._stopping:
            return "stopping", "the target is shutting down"
        if len(self._connections) >= limits.max_connections:
            return "max_connections", f"{len(self._connections)} connections open in all"
        n = self._per_address.get(address, 0)
        if n >= limits.max_connections_per_address:
            return "max_connections_per_address", f"{n} connections open from this address"
        return None

    def _admit_session(self, conn: _Connection, session: Session, replaced: Session | None) -> tuple[str, str] | None:
        """(kind, reason) to refuse a completing login, or None. A reinstatement adds no session."""
        if replaced is not None:
            return None
        limits = self.options.server_limits
        per_target = per_address = 0
        for c in self._connections:
            other = c.session
            if other is None or c is conn:
                continue
            if c.address == conn.address:
                per_address += 1
            if not session.discovery and not other.discovery and other.target_name == session.target_name:
                per_target += 1
        if not session.discovery and per_target >= limits.max_sessions_per_target:
            return "max_sessions_per_target", f"{per_target} sessions to {session.target_name} already"
        if per_address >= limits.max_sessions_per_address:
            return "max_sessions_per_address", f"{per_address} sessions from this address already"
        return None

    def _reinstate(self, new: _Connection, old_session: Session) -> None:
        for c in list(self._connections):
            if c is not new and c.session is old_session:
                log.info("session tsih=%d reinstated by %s: closing %s", old_session.tsih, new.peer, c.peer)
                c.conn.abort_all()
                if c.runtime is not None and c.nexus is not None:
                    c.runtime.luns.nexus_lost(c.nexus)
                c.close()

    async def stop(self) -> None:
        """Stop cleanly: no new connections or commands; finish, answer and flush what is in flight.

        Bounded by ``shutdown_timeout`` whatever the peers do: commands still waiting for data,
        running commands and connections whose peer does not read are aborted when it is over.
        """
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        for srv in self._servers:
            srv.close()
        for c in list(self._connections):
            c.conn.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.shutdown_timeout
        pending = [asyncio.ensure_future(c.drained()) for c in list(self._connections)]
        if pending:
            _done, not_done = await asyncio.wait(pending, timeout=self.options.shutdown_timeout)
            for f in not_done:
                f.cancel()
            if not_done:
                log.warning("%d connection(s) still busy after %.0f s; closing anyway", len(not_done),
                            self.options.shutdown_timeout)  # fmt: skip
        # Commands still running past the deadline are cancelled once their connection is gone.
        late = [fut for c in self._connections for fut in c.running.values()]
        for c in list(self._connections):
            c._flush()
            if c.busy:
                c.abort()  # its commands cannot finish any more: free what they hold now
            else:
                c.close()
        # Answers still queued get until the deadline (at least a moment) to reach their peers.
        grace = max(deadline - loop.time(), 1.0)
        while self._connections and grace > 0:
            await asyncio.sleep(0.01)
            grace -= 0.01
        for c in list(self._connections):
            c.abort()
        for fut in late:
            fut.cancel()
        await asyncio.sleep(0)
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        errors = []
        for runtime in self.targets.values():
            try:
                await runtime.luns.close()
            except Exception as exc:  # report every LUN's failure, keep closing the others
                errors.append(exc)
                log.error("closing %s: %s", runtime.info.name, exc)
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except TimeoutError:
                pass  # connections aborted above; nothing is left to wait for
        self._stopped.set()
        if errors:
            raise errors[0]

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    @property
    def connections(self) -> list[_Connection]:
        return list(self._connections)

    def status(self) -> dict[str, Any]:
        """The ``target status`` document (see ``docs/target.md`` and CLI.md)."""
        targets = []
        for name, runtime in self.targets.items():
            conns = [c for c in self._connections if c.runtime is runtime and c.session is not None]
            luns = []
            for lun, lu in runtime.luns.items():
                desc = lu.backend.describe()
                entry: dict[str, Any] = {
                    "lun": lun,
                    "size_bytes": lu.backend.size,
                    "backend": desc.get("backend", lu.backend.kind),
                    "replicas": desc.get("replicas", []),
                }
                entry.update({k: v for k, v in lu.describe().items() if k not in entry})
                luns.append(entry)
            targets.append(
                {
                    "iqn": name,
                    "portal": self.portals[0].target_address().rsplit(",", 1)[0],
                    "portals": [p.target_address() for p in self.portals],
                    "sessions": len(conns),
                    "session_list": [c.status() for c in conns],
                    "luns": luns,
                }
            )
        return {
            "targets": targets,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "connections": len(self._connections),
            "discovery_sessions": sum(1 for c in self._connections if c.session is not None and c.session.discovery),
        }


def _raise_open_files(wanted: int) -> None:
    """Raise the soft open-files limit towards ``wanted`` (within the hard limit).

    With the usual soft limit of 1024, accept() would fail long before ``max_connections``.
    """
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open-files limit to %d: %s", wanted, exc)


def _loop_has_scatter_gather(loop: asyncio.AbstractEventLoop) -> bool:
    import sys

    if sys.version_info >= (3, 12):
        return True
    return type(loop).__module__.startswith("uvloop")


def server_from_config(cfg: ServeConfig) -> TargetServer:
    """Build backends, LUs and the server for a validated config (nothing is opened yet)."""
    from pathlib import Path

    from iscsikit.errors import ConfigError
    from iscsikit.target.backends import open_backend, parse_backend_spec
    from iscsikit.target.scsi import LogicalUnit, LuIdentity, identity_path_for

    runtimes = []
    for target in cfg.targets:
        lus = {}
        for lc in target.luns:
            kind, options = parse_backend_spec(lc.spec, where=lc.where)
            backend = open_backend(kind, options, where=lc.where)
            if lc.identity:
                identity = LuIdentity.parse(lc.identity, where=f"{lc.where}.identity")
            elif kind == "file":
                side = identity_path_for(Path(options["path"]))
                try:
                    identity = LuIdentity.load_or_create(side)
                except (OSError, ConfigError) as exc:
                    log.warning("%s: cannot keep the LU identity in %s (%s); deriving it from the name", lc.where,
                                side, exc)  # fmt: skip
                    identity = LuIdentity.from_name(f"{target.iqn}/{lc.lun}")
            else:
                identity = LuIdentity.from_name(f"{target.iqn}/{lc.lun}")
            lus[lc.lun] = LogicalUnit(backend, identity=identity, read_only=lc.read_only)
        info = TargetInfo(target.iqn, alias=target.alias, acls=acl_map(target.acls), auth=target.auth)
        runtimes.append(TargetRuntime(info, LunMap(lus)))
    server_options = ServerOptions(
        limits=cfg.limits,
        discovery_auth=cfg.discovery_auth,
        nop_interval=cfg.nop_interval,
        shutdown_timeout=cfg.shutdown_timeout,
        insecure_open=cfg.insecure_open,
        server_limits=cfg.server_limits,
    )
    return TargetServer(runtimes, cfg.portals, server_options)
