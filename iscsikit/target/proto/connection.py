"""``TargetConnection``: one iSCSI connection, target side, with no I/O (h11 style).

The driver (``iscsikit.target.server``) moves bytes; this object does everything else::

    conn = TargetConnection(directory, sessions, portal)
    buf = conn.get_buffer()          # recv_into this (BufferedProtocol.get_buffer)
    conn.buffer_updated(n)           # ... n bytes arrived
    while (event := conn.next_event()) is not NEED_DATA:
        ...                          # CommandReady, TaskManagement, SessionStarted, ConnectionClosed
    transport.writelines(conn.data_to_send())
    conn.complete_command(task, response)      # when the SCSI layer answers

Receiving is zero-copy where it matters: when a Data-Out (or immediate data) header has been
parsed, :meth:`get_buffer` hands out the slice of the task's own buffer at the PDU's
BufferOffset, so the kernel copies the payload straight to where the SCSI layer reads it. Small
PDUs are parsed from a scratch buffer, many per ``recv``.

The connection answers by itself everything that needs no SCSI work: login, text
(SendTargets), NOP-Out, R2T, Logout, Reject, and task-management functions other than ABORT
TASK and LOGICAL UNIT RESET ("not supported"). Events are frozen dataclasses; the queued
output is a list of buffers (headers as bytes, payloads as the SCSI layer's own buffers).

Errors follow h11: a :class:`RemoteProtocolError` the peer caused is answered (Reject, or a
failed Login Response) and, if it breaks framing or login, the connection moves to ERROR and
:class:`ConnectionClosed` is the last event. Calling into a closed connection raises
:class:`LocalProtocolError`.
"""

from __future__ import annotations

import mmap
import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from iscsikit.target.buffers import WriteBudget, write_buffer
from iscsikit.target.proto.digest import crc32c, data_digest, header_digest
from iscsikit.target.proto.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from iscsikit.target.proto.login import LoginMachine, LoginStatus
from iscsikit.target.proto.pdu import (
    BHS_LEN,
    PDU,
    R2T,
    READERS,
    RESERVED_TAG,
    AsyncMessage,
    Buffer,
    DataIn,
    LoginRequest,
    LogoutResponse,
    NopIn,
    Opcode,
    Reject,
    RejectReason,
    ScsiResponse,
    TaskMgmtRequest,
    TaskMgmtResponse,
    TextResponse,
    decode_lun,
    pad_len,
    write_pdu,
)
from iscsikit.target.proto.serial import sn_add, sn_between
from iscsikit.target.proto.session import PortalInfo, Session, SessionTable, TargetDirectory
from iscsikit.target.proto.state import DISCOVERY_ACCEPTS, PHASE_ACCEPTS, Phase, Trigger, next_phase
from iscsikit.target.proto.task import Task, TaskState
from iscsikit.target.proto.text import decode_text, encode_text, split_text

__all__ = [
    "NEED_DATA",
    "CommandReady",
    "ConnectionClosed",
    "ProtocolIssue",
    "SessionStarted",
    "TargetConnection",
    "TaskManagement",
]


class _NeedData:
    """Sentinel: feed more bytes before asking for the next event."""

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


@dataclass(frozen=True, slots=True)
class CommandReady:
    """A SCSI command with all its Data-Out: run it, then call ``complete_command``."""

    task: Task


@dataclass(frozen=True, slots=True)
class TaskManagement:
    """ABORT TASK or LOGICAL UNIT RESET. ``tasks`` (this connection's affected tasks) are already
    marked aborted: their responses will be dropped. Wait for the running ones, do the SCSI side,
    then call ``complete_task_management``."""

    request: TaskMgmtRequest
    lun: int
    tasks: tuple[Task, ...]


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """Login finished. ``replaced`` is the session this login reinstates (close its connection)."""

    session: Session
    replaced: Session | None


@dataclass(frozen=True, slots=True)
class ProtocolIssue:
    """Something the initiator did wrong, or was refused, handled without closing (for the log).

    ``kind`` groups issues for rate-limited logging: one peer cannot flood the log.
    """

    message: str
    kind: str = "protocol"


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is over: flush :meth:`data_to_send`, then close the socket."""

    reason: str
    error: ProtocolError | None = None


Event = CommandReady | TaskManagement | SessionStarted | ConnectionClosed | ProtocolIssue

# CommandReady(task) for the per-command path: the frozen dataclass's __init__ goes through
# object.__setattr__; filling the slot directly is the same object at a third of the cost.
_new_event = object.__new__
_set_ready_task: Callable[[CommandReady, Task], None] = vars(CommandReady)["task"].__set__

_S_DATAOUT_DEST = struct.Struct(">16xII16xI")  # itt @16, ttt @20, offset @40
_S_CMD_DEST = struct.Struct(">xB14xII")  # b1 @1, itt @16, edtl @20
_S_CMD = struct.Struct(">BBxxI Q IIII 16s")
_S_DATA_IN = struct.Struct(">BBBBI Q IIIIIIII")
_S_LENGTHS = struct.Struct(">I")  # TotalAHSLength (1 byte) + DataSegmentLength (3 bytes) @4
_OP_DATA_IN: Final = int(Opcode.DATA_IN)
_OP_SCSI_COMMAND: Final = int(Opcode.SCSI_COMMAND)
_READY: Final = TaskState.READY
_FULL_FEATURE: Final = Phase.FULL_FEATURE
_ABORTED: Final = TaskState.ABORTED
_DONE: Final = TaskState.DONE
_OVER: Final = (Phase.CLOSED, Phase.ERROR)
_PAD_BYTES: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # by length & 3
_MAX_AHS = 1020
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})
#: MaxRecvDataSegmentLength in force until login completes (RFC 7143 13.12: login PDUs use the
#: default), and the scratch buffer a connection starts with: a connection that never logs in
#: holds 16 KiB, not a full-size buffer.
_LOGIN_MRDSL: Final = 8192
_LOGIN_SCRATCH: Final = 16 << 10
#: Scratch of a logged-in Normal session: room for a largest PDU, and many small ones per recv.
_MIN_SCRATCH: Final = 64 << 10
_SCRATCH_SLACK: Final = BHS_LEN + _MAX_AHS + 16
_CHECK_CONDITION: Final = 0x02
_TASK_SET_FULL: Final = 0x28
#: ILLEGAL REQUEST / INVALID FIELD IN CDB (fixed format): a transfer over max_transfer_length.
_INVALID_FIELD_SENSE: Final = bytes([0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0])
#: A session-limit hook: (the new session, the one it replaces or None) -> a refusal reason or None.
Admit = Callable[[Session, Session | None], str | None]


class TargetConnection:
    """The target side of one iSCSI connection; see the module docstring."""

    def __init__(
        self,
        directory: TargetDirectory,
        sessions: SessionTable,
        portal: PortalInfo,
        *,
        budget: WriteBudget | None = None,
    ) -> None:
        self.directory = directory
        self.sessions = sessions
        self.portal = portal
        self.phase = Phase.LOGIN
        self.session: Session | None = None
        self.login: LoginMachine | None = LoginMachine(directory, sessions, portal)
        self.stat_sn = 0
        self.exp_stat_sn = 0
        limits = directory.limits
        self._max_recv = _LOGIN_MRDSL
        self._max_xfer = limits.max_transfer_length
        #: Bytes of Data-Out buffers the process may hold (shared by the server's connections).
        self._budget = budget if budget is not None else WriteBudget(1 << 62)
        #: What one connection may hold of it: a quarter (one peer cannot starve the others).
        self._budget_share = max(self._budget.limit // 4, self._max_xfer)
        self._max_send = 8192
        self._max_burst = 8192
        #: A Normal session is logged in on this connection (SCSI commands are accepted).
        self._normal = False
        self._luns: dict[int, int] = {}  # LUN field -> LUN number (decode_lun cache)
        self._buf = bytearray(_LOGIN_SCRATCH)
        self._mv = memoryview(self._buf)
        self._start = 0
        self._end = 0
        self._eof = False
        self._hdr: tuple[int, bytes, bytes, int] | None = None
        self._dest: memoryview | None = None
        self._dest_filled = 0
        self._direct: memoryview | None = None
        self._hdigest = False
        self._ddigest = False
        self._out: list[Buffer] = []
        self._events: deque[Event] = deque()
        self._closed_reported = False
        self.tasks: dict[int, Task] = {}
        self._waiting: dict[int, Callable[[], None]] = {}
        self._aborted: deque[int] = deque(maxlen=1024)
        self._next_ttt = 1
        self._ping_ttt: int | None = None
        self._text_pending: bytes = b""
        self._text_reply: tuple[int, list[bytes]] | None = None
        self._logout: tuple[int, int] | None = None
        self._hd: Callable[[Buffer], bytes] | None = None
        self._dd: Callable[[Sequence[Buffer]], bytes] | None = None
        #: Bytes of Data-Out buffers held by unfinished write tasks (status).
        self.buffered_bytes = 0
        #: Of those, the bytes of tasks with all their data, handed to the server (back-pressure:
        #: they drain by themselves, unlike buffers still waiting for the initiator's data).
        self.ready_bytes = 0
        #: Immediate SCSI commands accepted and not yet answered (they share queue_depth).
        self._imm = 0
        #: Called when a login is about to complete; a reason refuses it (OUT OF RESOURCES).
        self.admit: Admit | None = None
        #: Count of PDUs received (keep-alive, status).
        self.pdus_in = 0
        #: Count of Data-Out PDUs taken into a task (the driver's stalled-data check).
        self.data_outs_in = 0
        #: Set by the driver at shutdown: new SCSI commands are ignored, running ones finish.
        self.draining = False

    # -- receiving ---------------------------------------------------------------------------

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next received bytes must go (never empty)."""
        if self._direct is not None:
            return self._direct[self._dest_filled :]
        if self._end == len(self._buf):
            self._compact()
        return self._mv[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were written into the last :meth:`get_buffer`."""
        if self._direct is not None:
            self._dest_filled += nbytes
            if self._dest_filled >= len(self._direct):
                self._direct = None
        else:
            self._end += nbytes

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes (copying); ``b""`` means the peer closed. Convenience for tests and tools."""
        if not data:
            self._eof = True
            return
        view = memoryview(data)
        while len(view):
            buf = self.get_buffer()
            n = min(len(buf), len(view))
            buf[:n] = view[:n]
            self.buffer_updated(n)
            view = view[n:]

    def eof_received(self) -> None:
        self._eof = True

    def _compact(self) -> None:
        n = self._end - self._start
        if self._start:
            self._buf[:n] = self._buf[self._start : self._end]
        self._start, self._end = 0, n

    def _make_room(self, need: int) -> None:
        """Compact, and grow the scratch buffer if one PDU of ``need`` bytes cannot fit.

        ``need`` was checked against MaxRecvDataSegmentLength before, so the scratch never grows
        past one negotiated PDU; a connection grows it only once it sends such a PDU.
        """
        if need <= len(self._buf):
            self._compact()
        else:
            self._resize_scratch(need)

    def _resize_scratch(self, size: int) -> None:
        n = self._end - self._start
        new = bytearray(max(size, n))
        new[:n] = self._mv[self._start : self._end]
        self._buf, self._mv = new, memoryview(new)
        self._start, self._end = 0, n

    def next_event(self) -> Event | _NeedData:
        """The next event, or NEED_DATA. After ConnectionClosed nothing else comes."""
        while True:
            if self._events:
                return self._events.popleft()
            if self.phase in (Phase.CLOSED, Phase.ERROR):
                if not self._closed_reported:
                    self._closed_reported = True
                    return ConnectionClosed(self.phase.value)
                return NEED_DATA
            try:
                progressed = self._advance()
            except ProtocolError as e:
                self._on_error(e)
                continue
            except Exception as e:  # a bug in the core: end this connection, never the process
                err = LocalProtocolError(f"internal error while parsing a PDU: {e!r}", close=True)
                err.__cause__ = e
                self._hdr = self._dest = self._direct = None
                self._fail(err)
                continue
            if not progressed:
                if self._eof:
                    self._close(Trigger.EOF)
                    self._events.append(ConnectionClosed("peer closed the connection"))
                    self._closed_reported = True
                    continue
                return NEED_DATA

    def _advance(self) -> bool:
        if self._direct is not None:
            return False
        mv = self._mv
        if self._hdr is None:
            start = self._start
            avail = self._end - start
            if avail == 0:
                self._start = self._end = 0
                return False
            if avail < BHS_LEN:
                if self._start + BHS_LEN > len(self._buf):
                    self._compact()
                return False
            lengths = _S_LENGTHS.unpack_from(self._buf, start + 4)[0]
            ahs_len = (lengths >> 22) & 0x3FC  # TotalAHSLength words * 4
            dslen = lengths & 0xFFFFFF
            hlen = BHS_LEN + ahs_len + (4 if self._hdigest else 0)
            if avail < hlen:
                if self._start + hlen > len(self._buf):
                    self._compact()
                return False
            bhs = bytes(mv[start : start + BHS_LEN])
            ahs = bytes(mv[start + BHS_LEN : start + BHS_LEN + ahs_len]) if ahs_len else b""
            if self._hdigest:
                got = bytes(mv[start + BHS_LEN + ahs_len : start + hlen])
                if header_digest(bhs + ahs) != got:
                    raise RemoteProtocolError("header digest mismatch", close=True, header=bhs)
            self._start = start + hlen
            opcode = bhs[0] & 0x3F
            if not dslen:
                # No data segment (every read, TEST UNIT READY, NOP-Out ping...): dispatch now.
                self._dest = None
                self.pdus_in += 1
                self._dispatch(opcode, bhs, ahs, b"")
                return True
            if dslen > self._max_recv:
                raise RemoteProtocolError(
                    f"DataSegmentLength {dslen} exceeds MaxRecvDataSegmentLength {self._max_recv}",
                    reject_reason=RejectReason.PROTOCOL_ERROR,
                    close=True,
                    header=bhs,
                )
            self._hdr = (opcode, bhs, ahs, dslen)
            self._dest = self._destination(opcode, bhs, dslen)
            self._dest_filled = 0
        opcode, bhs, ahs, dslen = self._hdr
        data: Buffer = b""
        if dslen:
            trailer = pad_len(dslen) + (4 if self._ddigest else 0)
            dest = self._dest
            if dest is not None:
                if self._dest_filled < dslen:
                    take = min(self._end - self._start, dslen - self._dest_filled)
                    if take:
                        dest[self._dest_filled : self._dest_filled + take] = mv[self._start : self._start + take]
                        self._start += take
                        self._dest_filled += take
                    if self._dest_filled < dslen:
                        self._start = self._end = 0  # scratch is empty now
                        self._direct = dest
                        return False
                if self._end - self._start < trailer:
                    if self._start + trailer > len(self._buf):
                        self._compact()
                    return False
                data = dest
                at = self._start
                self._start += trailer
                self._hdr = None
                if self._ddigest:
                    self._check_data_digest(bhs, dest, at, dslen)
            else:
                total = dslen + trailer
                if self._end - self._start < total:
                    if self._start + total > len(self._buf):
                        self._make_room(total)
                    return False
                at = self._start
                data = mv[at : at + dslen]
                self._start += total
                self._hdr = None
                if self._ddigest:
                    self._check_data_digest(bhs, data, at + dslen, dslen)
        self._hdr = None
        self._dest = None
        self.pdus_in += 1
        self._dispatch(opcode, bhs, ahs, data)
        return True

    def _check_data_digest(self, bhs: bytes, data: Buffer, trailer_at: int, dslen: int) -> None:
        pad = pad_len(dslen)
        value = crc32c(data)
        if pad:
            value = crc32c(b"\0" * pad, value)
        got = int.from_bytes(self._mv[trailer_at + pad : trailer_at + pad + 4], "little")
        if value != got:
            opcode = bhs[0] & 0x3F
            # A lost payload of a command or Data-Out leaves a task that cannot finish at ERL 0.
            fatal = opcode in (Opcode.DATA_OUT, Opcode.SCSI_COMMAND)
            raise RemoteProtocolError(
                "data digest mismatch", reject_reason=RejectReason.DATA_DIGEST_ERROR, close=fatal, header=bhs
            )

    def _destination(self, opcode: int, bhs: bytes, dslen: int) -> memoryview | None:
        """A task-buffer slice for this PDU's payload, or None to receive it into scratch."""
        if opcode == Opcode.DATA_OUT and self.phase is not Phase.LOGIN:
            itt, _ttt, offset = _S_DATAOUT_DEST.unpack_from(bhs)
            task = self.tasks.get(itt)
            if task is None or task.buffer is None or task.state is not TaskState.COLLECTING:
                return None
            if offset + dslen > len(task.buffer):
                return None
            return memoryview(task.buffer)[offset : offset + dslen]
        if opcode == Opcode.SCSI_COMMAND and self.phase is Phase.FULL_FEATURE and not self._discovery:
            b1, itt, edtl = _S_CMD_DEST.unpack_from(bhs)
            if not (b1 & 0x20) or dslen > edtl or edtl > self._max_xfer or itt in self.tasks:
                return None  # refused or rejected: the immediate data goes to scratch, then away
            budget = self._budget
            if budget.used + edtl > budget.limit or self.buffered_bytes + edtl > self._budget_share:
                budget.refused += 1
                return None
            budget.used += edtl
            buf = write_buffer(edtl)
            self._cmd_task_buffer = buf
            return memoryview(buf)[:dslen]
        return None

    @property
    def _discovery(self) -> bool:
        return self.session is not None and self.session.discovery

    # -- dispatch ----------------------------------------------------------------------------

    def _dispatch(self, opcode: int, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        if opcode == _OP_SCSI_COMMAND and self.phase is _FULL_FEATURE and self._normal:
            self._on_scsi_command(bhs, ahs, data)
            return
        accepts = PHASE_ACCEPTS[self.phase]
        if self.phase is Phase.FULL_FEATURE and self._discovery:
            accepts = DISCOVERY_ACCEPTS
        if opcode not in accepts:
            if self.phase is Phase.LOGIN:
                raise RemoteProtocolError(
                    f"opcode 0x{opcode:02x} during login",
                    login_status=LoginStatus.INVALID_DURING_LOGIN if opcode in READERS else LoginStatus.INITIATOR_ERROR,
                    close=True,
                    header=bhs,
                )
            known = opcode in Opcode.INITIATOR
            raise RemoteProtocolError(
                f"opcode 0x{opcode:02x} not accepted in {self.phase.value}"
                + (" (discovery session)" if self._discovery else ""),
                reject_reason=RejectReason.PROTOCOL_ERROR if known else RejectReason.COMMAND_NOT_SUPPORTED,
                header=bhs,
            )
        self._HANDLERS[opcode](self, bhs, ahs, data)

    def _on_login(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        req: LoginRequest = READERS[Opcode.LOGIN_REQUEST](bhs, ahs, bytes(data))
        assert self.login is not None
        self._login_req = req
        resp = self.login.receive(req)
        result = self.login.result
        if result is None:
            self._send(resp)
            return
        session = result.session
        if self.admit is not None and not result.reused:
            why = self.admit(session, result.replaced)
            if why is not None:
                self.sessions.remove(session)
                self.login.result = None
                raise RemoteProtocolError(
                    f"login refused: {why}", login_status=LoginStatus.OUT_OF_RESOURCES, close=True, header=bhs
                )
        self._send(resp)
        self.stat_sn = self.login.stat_sn
        if result.reused and session.connection is not None and session.connection is not self:
            session.connection.abort_all()
        session.connection = self
        self.session = session
        self._normal = not session.discovery
        params = session.params
        self._max_send = params.max_send_data_segment_length
        self._max_recv = params.max_recv_data_segment_length
        self._max_burst = params.max_burst_length
        if self._normal:
            # Full size at once for Normal sessions (many PDUs per recv); a discovery session
            # keeps the login scratch and grows it only if it sends a larger PDU.
            self._resize_scratch(max(self._max_recv + _SCRATCH_SLACK, _MIN_SCRATCH))
        self.phase = next_phase(self.phase, Trigger.LOGIN_COMPLETE)
        # Digests start with the first PDU after the final Login Response (RFC 7143 13.1).
        self._hdigest = params.header_digest
        self._ddigest = params.data_digest
        self._hd = header_digest if self._hdigest else None
        self._dd = data_digest if self._ddigest else None
        self.login = None
        self._events.append(SessionStarted(session, result.replaced))

    def _ordered(self, cmd_sn: int, immediate: bool, action: Callable[[], None]) -> None:
        """Run ``action`` in CmdSN order; out-of-window commands are silently dropped (4.2.2.1)."""
        session = self.session
        assert session is not None
        if immediate:
            action()
            return
        if not sn_between(session.exp_cmd_sn, cmd_sn, session.max_cmd_sn):
            return
        if cmd_sn != session.exp_cmd_sn:
            if cmd_sn not in self._waiting:
                self._waiting[cmd_sn] = action
            return
        session.exp_cmd_sn = sn_add(cmd_sn, 1)
        action()
        while self._waiting and session.exp_cmd_sn in self._waiting:
            nxt = self._waiting.pop(session.exp_cmd_sn)
            session.exp_cmd_sn = sn_add(session.exp_cmd_sn, 1)
            nxt()

    def _on_scsi_command(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        # The hot path of every I/O: fields straight from the BHS, no intermediate event object.
        b0, b1, _lengths, lun_raw, itt, edtl, cmd_sn, exp_stat_sn, cdb = _S_CMD.unpack_from(bhs)
        if ahs:
            cmd = READERS[Opcode.SCSI_COMMAND](bhs, ahs, b"")
            cdb = cmd.cdb
        session = self.session
        assert session is not None
        self.exp_stat_sn = exp_stat_sn
        if (
            not data
            and not (b1 & 0x20)
            and b1 & 0x80
            and not (b0 & 0x40)
            and cmd_sn == session.exp_cmd_sn
            and session.active + self._imm < session.queue_depth
            and edtl <= self._max_xfer
            and itt not in self.tasks
            and itt != RESERVED_TAG
            and not self.draining
            and not self._waiting
        ):
            # In-order command without Data-Out (reads, TEST UNIT READY, INQUIRY, ...): ready now.
            lun = self._luns.get(lun_raw)
            if lun is None:
                lun = decode_lun(lun_raw)
                if len(self._luns) < 64:
                    self._luns[lun_raw] = lun
            task = Task(itt, lun_raw, lun, cdb, edtl, cmd_sn, bool(b1 & 0x40), False, False, _READY)
            self.tasks[itt] = task
            session.exp_cmd_sn = (cmd_sn + 1) & 0xFFFFFFFF
            session.active += 1
            event = _new_event(CommandReady)
            _set_ready_task(event, task)
            self._events.append(event)
            return
        self._on_scsi_command_general(bhs, ahs, data)

    def _on_scsi_command_general(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        cmd = READERS[Opcode.SCSI_COMMAND](bhs, ahs, b"")
        buffer = self._cmd_task_buffer if data else None
        self._cmd_task_buffer = None
        if buffer is not None:
            # Owned by this function from here: given back below unless a task keeps it.
            self._budget.used -= len(buffer)
        if self.draining:
            return  # shutting down: the initiator retries it after reconnecting
        dslen = len(data)
        session = self.session
        assert session is not None
        params = session.params
        edtl = cmd.expected_length
        if cmd.itt in self.tasks or cmd.itt == RESERVED_TAG:
            raise RemoteProtocolError(
                f"ITT 0x{cmd.itt:08x} is already in use", reject_reason=RejectReason.INVALID_PDU_FIELD, header=bhs
            )
        if dslen:
            if not cmd.write or dslen > edtl:
                raise RemoteProtocolError(
                    "immediate data on a command without the W bit, or longer than its EDTL",
                    reject_reason=RejectReason.INVALID_PDU_FIELD,
                    header=bhs,
                )
            if not params.immediate_data or dslen > params.first_burst_length:
                raise RemoteProtocolError(
                    "immediate data not allowed or beyond FirstBurstLength",
                    reject_reason=RejectReason.PROTOCOL_ERROR,
                    header=bhs,
                )
        if not cmd.final and (params.initial_r2t or not cmd.write):
            raise RemoteProtocolError(
                "unsolicited Data-Out announced (F=0) but InitialR2T=Yes or no W bit",
                reject_reason=RejectReason.PROTOCOL_ERROR,
                header=bhs,
            )
        # Refusals are answered in CmdSN order, like any response, with nothing allocated.
        refusal: tuple[int, bytes] | None = None
        if edtl > self._max_xfer:
            refusal = (_CHECK_CONDITION, _INVALID_FIELD_SENSE)
        task = Task(
            itt=cmd.itt, lun_raw=cmd.lun, lun=decode_lun(cmd.lun), cdb=cmd.cdb, expected_length=edtl,
            cmd_sn=cmd.cmd_sn, read=cmd.read, write=cmd.write, immediate=cmd.immediate,
        )  # fmt: skip
        if cmd.write and edtl and refusal is None:
            budget = self._budget
            if buffer is None and (dslen or self.buffered_bytes + edtl > self._budget_share):
                if not dslen:  # (with immediate data, _destination already counted it)
                    budget.refused += 1
                refusal = (_TASK_SET_FULL, b"")
            elif buffer is None and not budget.take(edtl):
                refusal = (_TASK_SET_FULL, b"")
            else:
                if buffer is None:
                    buffer = write_buffer(edtl)
                else:
                    budget.used += edtl
                task.buffer = buffer
                task.received = dslen
                self.buffered_bytes += edtl
                if not cmd.final:
                    task.unsol_done = False
                    task.unsol_limit = min(params.first_burst_length, edtl)
                    task.unsol_next = dslen
        self.exp_stat_sn = cmd.exp_stat_sn
        task.state = TaskState.WAITING
        self.tasks[cmd.itt] = task

        def accept() -> None:
            if task.state is not TaskState.WAITING:
                return
            if refusal is not None:
                self._refuse(task, *refusal)
            elif session.active + self._imm >= session.queue_depth:
                # Only immediate commands get here beyond the window: they share the queue depth.
                self._refuse(task, _TASK_SET_FULL, b"")
            else:
                if task.immediate:
                    self._imm += 1
                else:
                    session.active += 1
                task.state = TaskState.COLLECTING
                self._progress(task)

        self._ordered(cmd.cmd_sn, cmd.immediate, accept)
        if task.state is TaskState.WAITING and self._waiting.get(cmd.cmd_sn) is not accept:
            self._forget(task)  # outside the CmdSN window: silently ignored

    def _refuse(self, task: Task, status: int, sense: bytes) -> None:
        """Answer ``task`` with ``status`` at once; its buffer (if any) is freed, late data dropped."""
        self._forget(task)
        task.state = TaskState.DONE
        self._aborted.append(task.itt)  # unsolicited Data-Out still on its way is discarded
        session = self.session
        assert session is not None
        kind = "task set full" if status == _TASK_SET_FULL else "transfer too long"
        self._events.append(ProtocolIssue(_refusal_text(task, status, self._max_xfer), kind))
        seg = (len(sense).to_bytes(2, "big") + sense) if sense else b""
        self._send(ScsiResponse(
            task.itt, status, 0, self._take_stat_sn(), session.exp_cmd_sn, session.max_cmd_sn, 0, data=seg,
        ))  # fmt: skip

    def _progress(self, task: Task) -> None:
        """Ready the task if all data is in; otherwise solicit the next burst."""
        if task.buffer is None or task.received >= task.expected_length:
            task.state = TaskState.READY
            if task.buffer is not None:
                self.ready_bytes += task.expected_length
            self._events.append(CommandReady(task))
            return
        if not task.unsol_done:
            return
        if task.r2t_ttt == RESERVED_TAG:
            self._send_r2t(task)

    def _new_ttt(self) -> int:
        """The next Target Transfer Tag. R2Ts, pings and long text answers draw from this one
        counter, so no two of them share a tag; 0xffffffff is reserved (RFC 7143 11.8.4): the
        tags wrap to 1 before it."""
        ttt = self._next_ttt
        if ttt == RESERVED_TAG:
            ttt = 1
        self._next_ttt = ttt + 1
        return ttt

    def _send_r2t(self, task: Task) -> None:
        session = self.session
        assert session is not None
        offset = task.received
        length = min(session.params.max_burst_length, task.expected_length - offset)
        ttt = self._new_ttt()
        task.r2t_ttt = ttt
        task.r2t_offset = offset
        task.r2t_next_offset = offset
        task.r2t_burst_end = offset + length
        task.r2t_data_sn = 0
        self._send(
            R2T(
                task.itt,
                ttt,
                task.r2t_sn,
                offset,
                length,
                task.lun_raw,
                self.stat_sn,
                session.exp_cmd_sn,
                session.max_cmd_sn,
            )
        )
        task.r2t_sn += 1

    def _on_data_out(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        itt, ttt, offset = _S_DATAOUT_DEST.unpack_from(bhs)
        final = bool(bhs[1] & 0x80)
        data_sn = int.from_bytes(bhs[36:40])
        self.exp_stat_sn = int.from_bytes(bhs[28:32])
        task = self.tasks.get(itt)
        n = len(data)
        if task is None or task.state is not TaskState.COLLECTING:
            if itt in self._aborted or task is not None:
                return  # data still in flight for an aborted task: discard
            raise RemoteProtocolError(
                f"Data-Out for unknown task 0x{itt:08x}", reject_reason=RejectReason.INVALID_PDU_FIELD, header=bhs
            )
        assert task.buffer is not None
        in_place = isinstance(data, memoryview) and data.obj is task.buffer
        self.data_outs_in += 1
        if ttt == RESERVED_TAG:
            if task.unsol_done:
                raise RemoteProtocolError(
                    "unsolicited Data-Out after the unsolicited sequence ended", close=True,
                    reject_reason=RejectReason.PROTOCOL_ERROR, header=bhs,
                )  # fmt: skip
            if data_sn != task.unsol_data_sn:
                self._fail_task(task, f"unsolicited Data-Out DataSN {data_sn}, expected {task.unsol_data_sn}")
                return
            if offset != task.unsol_next or offset + n > task.unsol_limit:
                raise RemoteProtocolError(
                    f"unsolicited Data-Out DataSN {data_sn} offset {offset} len {n}: expected DataSN "
                    f"{task.unsol_data_sn} offset {task.unsol_next} within FirstBurstLength {task.unsol_limit}",
                    reject_reason=RejectReason.PROTOCOL_ERROR, close=True, header=bhs,
                )  # fmt: skip
            if not in_place:
                task.buffer[offset : offset + n] = data
            task.unsol_data_sn += 1
            task.unsol_next = offset + n
            task.received = offset + n
            if final or task.unsol_next >= task.unsol_limit:
                task.unsol_done = True
                if not final:
                    raise RemoteProtocolError(
                        "unsolicited data reached FirstBurstLength without the F bit",
                        reject_reason=RejectReason.PROTOCOL_ERROR, close=True, header=bhs,
                    )  # fmt: skip
                self._progress(task)
            return
        if ttt != task.r2t_ttt:
            raise RemoteProtocolError(
                f"Data-Out TTT 0x{ttt:08x} does not match the outstanding R2T",
                reject_reason=RejectReason.PROTOCOL_ERROR, close=True, header=bhs,
            )  # fmt: skip
        if data_sn != task.r2t_data_sn:
            self._fail_task(task, f"solicited Data-Out DataSN {data_sn}, expected {task.r2t_data_sn}")
            return
        if offset != task.r2t_next_offset or offset + n > task.r2t_burst_end:
            raise RemoteProtocolError(
                f"solicited Data-Out DataSN {data_sn} offset {offset} len {n}: expected DataSN {task.r2t_data_sn} "
                f"offset {task.r2t_next_offset}, burst ends at {task.r2t_burst_end}",
                reject_reason=RejectReason.PROTOCOL_ERROR, close=True, header=bhs,
            )  # fmt: skip
        if not in_place:
            task.buffer[offset : offset + n] = data
        task.r2t_data_sn += 1
        task.r2t_next_offset = offset + n
        task.received = offset + n
        if task.r2t_next_offset >= task.r2t_burst_end:
            if not final:
                raise RemoteProtocolError(
                    "R2T burst complete without the F bit",
                    reject_reason=RejectReason.PROTOCOL_ERROR, close=True, header=bhs,
                )  # fmt: skip
            task.r2t_ttt = RESERVED_TAG
            self._progress(task)
        elif final:
            raise RemoteProtocolError(
                "F bit before the end of the R2T burst",
                reject_reason=RejectReason.PROTOCOL_ERROR, close=True, header=bhs,
            )  # fmt: skip

    def _fail_task(self, task: Task, why: str) -> None:
        """End a task whose Data-Out sequence broke (a DataSN error) with CHECK CONDITION.

        ABORTED COMMAND / DATA PHASE ERROR; the connection stays up, later Data-Out for the task
        is discarded. (Offset or burst violations are framing errors and drop the connection.)
        """
        self._events.append(ProtocolIssue(why))
        self._abort(task)
        session = self.session
        assert session is not None
        sense = bytes([0x70, 0, 0x0B, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x4B, 0x00, 0, 0, 0, 0])
        rsp = ScsiResponse(
            task.itt, 2, 0, self._take_stat_sn(), session.exp_cmd_sn, session.max_cmd_sn, 0,
            data=len(sense).to_bytes(2, "big") + sense,
        )  # fmt: skip
        self._send(rsp)

    def _on_nop_out(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        immediate = bool(bhs[0] & 0x40)
        itt, ttt, cmd_sn, exp_stat_sn = struct.unpack_from(">II II", bhs, 16)
        self.exp_stat_sn = exp_stat_sn
        if itt == RESERVED_TAG:
            if ttt != RESERVED_TAG and ttt == self._ping_ttt:
                self._ping_ttt = None
            elif not immediate:
                raise RemoteProtocolError(
                    "NOP-Out with ITT 0xffffffff must be immediate", reject_reason=RejectReason.PROTOCOL_ERROR,
                    header=bhs,
                )  # fmt: skip
            return
        if ttt != RESERVED_TAG:
            raise RemoteProtocolError(
                "NOP-Out answering a ping must have ITT 0xffffffff", reject_reason=RejectReason.PROTOCOL_ERROR,
                header=bhs,
            )  # fmt: skip
        echo = bytes(data)
        lun = int.from_bytes(bhs[8:16])

        def answer() -> None:
            session = self.session
            assert session is not None
            self._send(
                NopIn(itt, RESERVED_TAG, self._take_stat_sn(), session.exp_cmd_sn, session.max_cmd_sn, lun, echo)
            )

        self._ordered(cmd_sn, immediate, answer)

    def _on_task_mgmt(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        req: TaskMgmtRequest = READERS[Opcode.TASK_MGMT_REQUEST](bhs, ahs, b"")
        self.exp_stat_sn = req.exp_stat_sn
        lun = decode_lun(req.lun)

        def run() -> None:
            if req.function == 1:  # ABORT TASK
                task = self.tasks.get(req.referenced_itt)
                if task is None or task.state in (TaskState.DONE, TaskState.ABORTED):
                    # Already answered, or never arrived: nothing left to abort (RFC 7143 11.5.1).
                    self.complete_task_management(req, 0 if task is None else 1)
                    return
                affected = [task]
            elif req.function == 5:  # LOGICAL UNIT RESET
                affected = [t for t in self.tasks.values() if t.lun == lun]
            else:
                self.complete_task_management(req, 5)  # Task management function not supported
                return
            for t in affected:
                self._abort(t)
            self._events.append(TaskManagement(req, lun, tuple(affected)))

        self._ordered(req.cmd_sn, req.immediate, run)

    def _on_text(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        immediate = bool(bhs[0] & 0x40)
        final, cont = bool(bhs[1] & 0x80), bool(bhs[1] & 0x40)
        itt, ttt, cmd_sn, exp_stat_sn = struct.unpack_from(">II II", bhs, 16)
        lun = int.from_bytes(bhs[8:16])
        self.exp_stat_sn = exp_stat_sn
        payload = bytes(data)

        def run() -> None:
            if ttt != RESERVED_TAG:
                # The initiator asks for the next piece of a long answer.
                if self._text_reply is None or self._text_reply[0] != ttt:
                    raise RemoteProtocolError(
                        "Text Request continues an unknown exchange", reject_reason=RejectReason.PROTOCOL_ERROR,
                        header=bhs,
                    )  # fmt: skip
                self._send_text_piece(itt, lun)
                return
            if cont or not final:
                self._text_pending += payload
                if len(self._text_pending) > 65536:
                    raise RemoteProtocolError(
                        "text longer than 64 KiB", reject_reason=RejectReason.PROTOCOL_ERROR, header=bhs
                    )
                self._send_text(itt, lun, b"")
                return
            text = self._text_pending + payload
            self._text_pending = b""
            pairs = decode_text(text)
            self._send_text(itt, lun, encode_text(self._text_answers(pairs, bhs)))

        self._ordered(cmd_sn, immediate, run)

    def _text_answers(self, pairs: list[tuple[str, str]], bhs: bytes) -> list[tuple[str, str]]:
        session = self.session
        assert session is not None
        out: list[tuple[str, str]] = []
        for key, value in pairs:
            if key == "SendTargets":
                out += self._send_targets(value, session, bhs)
            elif key in ("MaxRecvDataSegmentLength",):
                if value.isdigit() and 512 <= int(value) < (1 << 24):
                    self._max_send = session.params.max_send_data_segment_length = int(value)
                else:
                    out.append((key, "Reject"))
            else:
                out.append((key, "NotUnderstood"))
        return out

    def _send_targets(self, value: str, session: Session, bhs: bytes) -> list[tuple[str, str]]:
        if value == "All":
            if not session.discovery:
                # A Normal session may ask only for its own target (RFC 7143 Appendix C);
                # tolerate "All" by answering with the session's target, as LIO does.
                targets = [t for t in self.directory.targets.values() if t.name == session.target_name]
            else:
                targets = self.directory.visible_to(session.initiator_name)
        elif value == "":
            targets = [t for t in self.directory.targets.values() if t.name == session.target_name]
        else:
            t = self.directory.targets.get(value)
            if t is not None and not t.allows(session.initiator_name):
                t = None
            if t is not None and not session.discovery and t.name != session.target_name:
                t = None
            targets = [t] if t is not None else []
            if t is None and not _valid_target_name(value):
                raise RemoteProtocolError(
                    f"SendTargets={value[:64]!r} is not All, empty or a target name",
                    reject_reason=RejectReason.INVALID_PDU_FIELD, header=bhs,
                )  # fmt: skip
        out: list[tuple[str, str]] = []
        for t in targets:
            out.append(("TargetName", t.name))
            portals = t.portals or (self.portal,)
            for p in portals:
                if p.address in _WILDCARDS and self.portal.address not in _WILDCARDS:
                    # Listening on every address: tell the initiator the one it reached us on.
                    p = PortalInfo(self.portal.address, p.port, p.tpgt)
                out.append(("TargetAddress", p.target_address()))
        return out

    def _send_text(self, itt: int, lun: int, text: bytes) -> None:
        chunks = split_text(text, self._max_send)
        if len(chunks) > 1:
            ttt = self._new_ttt()
            self._text_reply = (ttt, chunks)
            self._send_text_piece(itt, lun)
            return
        session = self.session
        assert session is not None
        self._send(
            TextResponse(
                itt, RESERVED_TAG, True, False, self._take_stat_sn(), session.exp_cmd_sn, session.max_cmd_sn, lun, text
            )
        )

    def _send_text_piece(self, itt: int, lun: int) -> None:
        assert self._text_reply is not None
        session = self.session
        assert session is not None
        ttt, chunks = self._text_reply
        piece = chunks.pop(0)
        last = not chunks
        if last:
            self._text_reply = None
        self._send(
            TextResponse(
                itt,
                RESERVED_TAG if last else ttt,
                last,
                not last,
                self._take_stat_sn(),
                session.exp_cmd_sn,
                session.max_cmd_sn,
                lun,
                piece,
            )
        )

    def _on_logout(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        immediate = bool(bhs[0] & 0x40)
        reason = bhs[1] & 0x7F
        itt, w20, cmd_sn, exp_stat_sn = struct.unpack_from(">II II", bhs, 16)
        cid = w20 >> 16
        self.exp_stat_sn = exp_stat_sn

        def run() -> None:
            if reason == 2:
                response = 2  # connection recovery is not supported at ErrorRecoveryLevel 0
            elif reason in (0, 1):
                response = 0
            else:
                raise RemoteProtocolError(
                    f"logout reason {reason}", reject_reason=RejectReason.INVALID_PDU_FIELD, header=bhs
                )
            _ = cid
            if response != 0:
                self._send_logout(itt, response)
                return
            self.phase = next_phase(self.phase, Trigger.LOGOUT_REQUEST)
            self._logout = (itt, response)
            self._maybe_finish_logout()

        self._ordered(cmd_sn, immediate, run)

    def _send_logout(self, itt: int, response: int) -> None:
        session = self.session
        assert session is not None
        p = session.params
        self._send(
            LogoutResponse(
                itt,
                response,
                self._take_stat_sn(),
                session.exp_cmd_sn,
                session.max_cmd_sn,
                p.default_time2wait,
                p.default_time2retain,
            )
        )

    def _maybe_finish_logout(self) -> None:
        """Send the Logout Response once every task of this connection has been answered."""
        if self._logout is None or self.tasks:
            return
        itt, response = self._logout
        self._logout = None
        self._send_logout(itt, response)
        self._close(Trigger.LOGOUT_RESPONSE)
        self._events.append(ConnectionClosed("logged out"))
        self._closed_reported = True

    def _on_snack(self, bhs: bytes, ahs: bytes, data: Buffer) -> None:
        raise RemoteProtocolError(
            "SNACK is not supported at ErrorRecoveryLevel 0", reject_reason=RejectReason.PROTOCOL_ERROR, header=bhs
        )

    _HANDLERS: ClassVar[dict[int, Callable[[TargetConnection, bytes, bytes, Buffer], None]]] = {
        Opcode.LOGIN_REQUEST: _on_login,
        Opcode.SCSI_COMMAND: _on_scsi_command,
        Opcode.DATA_OUT: _on_data_out,
        Opcode.NOP_OUT: _on_nop_out,
        Opcode.TASK_MGMT_REQUEST: _on_task_mgmt,
        Opcode.TEXT_REQUEST: _on_text,
        Opcode.LOGOUT_REQUEST: _on_logout,
        Opcode.SNACK_REQUEST: _on_snack,
    }

    # -- errors ------------------------------------------------------------------------------

    def _on_error(self, e: ProtocolError) -> None:
        self._hdr = None
        self._dest = None
        self._direct = None
        if self._cmd_task_buffer is not None:
            self._budget.used -= len(self._cmd_task_buffer)
            self._cmd_task_buffer = None
        if self.phase is Phase.LOGIN:
            status = e.login_status if e.login_status is not None else LoginStatus.INITIATOR_ERROR
            assert self.login is not None
            self._send(self.login.failure_response(getattr(self, "_login_req", None), status))
            self._fail(e)
            return
        if e.reject_reason is not None and self.session is not None:
            self._send(
                Reject(
                    e.reject_reason,
                    e.header[:BHS_LEN],
                    self._take_stat_sn(),
                    self.session.exp_cmd_sn,
                    self.session.max_cmd_sn,
                )
            )
        if e.close or e.reject_reason is None:
            self._fail(e)

    def _fail(self, e: ProtocolError) -> None:
        self.abort_all()
        self.phase = next_phase(self.phase, Trigger.FATAL)
        self._events.append(ConnectionClosed(str(e), e))
        self._closed_reported = True

    def _close(self, trigger: Trigger) -> None:
        self.abort_all()
        self.phase = next_phase(self.phase, trigger)

    # -- sending -----------------------------------------------------------------------------

    def _take_stat_sn(self) -> int:
        sn = self.stat_sn
        self.stat_sn = (sn + 1) & 0xFFFFFFFF
        return sn

    def _send(self, event: PDU) -> None:
        self._out.extend(write_pdu(event, header_digest=self._hd, data_digest=self._dd))

    def data_to_send(self) -> list[Buffer]:
        """Everything queued for the wire, in order; clears the queue."""
        out = self._out
        self._out = []
        return out

    # -- driver callbacks --------------------------------------------------------------------

    def complete_command(
        self,
        task: Task,
        status: int,
        sense: bytes = b"",
        data: Sequence[Buffer] = (),
        *,
        expected_data_out: int | None = None,
    ) -> None:
        """The SCSI layer finished ``task``: queue Data-In and/or the SCSI Response.

        ``data`` may be longer than the EDTL (it is cut and the overflow reported) or shorter
        (underflow). For writes, ``expected_data_out`` is the Data-Out length the CDB implies;
        it sets the residual against the EDTL. Nothing is sent for an aborted task.
        """
        session = self.session
        if session is None:
            return
        tasks = self.tasks
        itt = task.itt
        if tasks.get(itt) is task:
            del tasks[itt]
        if task.buffer is not None:
            edtl = task.expected_length
            self.buffered_bytes -= edtl
            self.ready_bytes -= edtl
            self._budget.used -= edtl
            task.buffer = None
        if task.state is _ABORTED or self.phase in _OVER:
            self._maybe_finish_logout()
            return
        task.state = _DONE
        if not task.immediate:
            session.active -= 1
        else:
            self._imm -= 1
        edtl = task.expected_length
        if not status and not sense and len(data) == 1 and self._hd is None and self._dd is None:
            # The common good read: one buffer of exactly EDTL, one Data-In PDU with status.
            piece = data[0]
            n = len(piece)
            if n == edtl and n <= self._max_send and n <= self._max_burst and n:
                stat_sn = self.stat_sn
                self.stat_sn = (stat_sn + 1) & 0xFFFFFFFF
                exp_cmd_sn = session.exp_cmd_sn
                free = session.queue_depth - session.active
                out = self._out
                out.append(_S_DATA_IN.pack(
                    _OP_DATA_IN, 0x81, 0, 0, n, task.lun_raw, itt, 0xFFFFFFFF, stat_sn, exp_cmd_sn,
                    (exp_cmd_sn + (free if free > 0 else 0) - 1) & 0xFFFFFFFF, 0, 0, 0,
                ))  # fmt: skip
                out.append(piece)
                if n & 3:
                    out.append(_PAD_BYTES[n & 3])
                if self._logout is not None:
                    self._maybe_finish_logout()
                return
        overflow = underflow = False
        residual = 0
        total = 0
        for piece in data:
            total += len(piece)
        if task.read or total:
            if total > edtl:
                overflow, residual = True, total - edtl
            elif total < edtl:
                underflow, residual = True, edtl - total
        elif expected_data_out is not None and expected_data_out != edtl:
            # RFC 7143 11.4.5: overflow = the command wanted more than EDTL, underflow = less.
            if expected_data_out > edtl:
                overflow, residual = True, expected_data_out - edtl
            else:
                underflow, residual = True, edtl - expected_data_out
        exp_cmd_sn = session.exp_cmd_sn
        max_cmd_sn = session.max_cmd_sn
        send_len = total if total < edtl else edtl
        good = (status == 0 or status == 4) and not sense
        if send_len:
            self._send_data_in(
                task, data, send_len, status if good else None, overflow, underflow, residual, exp_cmd_sn, max_cmd_sn
            )
            if good:
                if self._logout is not None:
                    self._maybe_finish_logout()
                return
        seg = (len(sense).to_bytes(2, "big") + sense) if sense else b""
        resp = ScsiResponse(
            task.itt, status, 0, self._take_stat_sn(), exp_cmd_sn, max_cmd_sn, 0,
            overflow, underflow, False, False, residual, 0, 0, seg,
        )  # fmt: skip
        self._out.extend(write_pdu(resp, header_digest=self._hd, data_digest=self._dd))
        if self._logout is not None:
            self._maybe_finish_logout()

    def _send_data_in(
        self,
        task: Task,
        data: Sequence[Buffer],
        send_len: int,
        status: int | None,
        overflow: bool,
        underflow: bool,
        residual: int,
        exp_cmd_sn: int,
        max_cmd_sn: int,
    ) -> None:
        session = self.session
        assert session is not None
        max_pdu = self._max_send
        max_burst = session.params.max_burst_length
        hd, dd = self._hd, self._dd
        out = self._out
        if len(data) == 1 and send_len <= max_pdu and send_len <= max_burst:
            # One Data-In PDU (every small read): header packed directly, payload not copied.
            piece = data[0] if len(data[0]) == send_len else memoryview(data[0])[:send_len]
            with_status = status is not None
            if with_status:
                stat_sn = self.stat_sn
                self.stat_sn = (stat_sn + 1) & 0xFFFFFFFF
                flags = 0x81 | (0x04 if overflow else 0) | (0x02 if underflow else 0)
            else:
                stat_sn, flags, residual = self.stat_sn, 0x80, 0
            header = _S_DATA_IN.pack(
                Opcode.DATA_IN, flags, 0, status or 0, send_len, task.lun_raw, task.itt, RESERVED_TAG, stat_sn,
                exp_cmd_sn, max_cmd_sn, 0, 0, residual,
            )  # fmt: skip
            pad = -send_len & 3
            if hd is None and dd is None:
                out.append(header)
                out.append(piece)
                if pad:
                    out.append(b"\0" * pad)
            else:
                out.extend(write_pdu(
                    DataIn(task.itt, 0, 0, [piece], True, with_status, status or 0, False, overflow and with_status,
                           underflow and with_status, residual if with_status else 0, task.lun_raw, RESERVED_TAG,
                           stat_sn, exp_cmd_sn, max_cmd_sn),
                    header_digest=hd, data_digest=dd,
                ))  # fmt: skip
            return
        offset = 0
        data_sn = 0
        pieces = deque(memoryview(p) if not isinstance(p, memoryview) else p for p in data)
        burst_left = max_burst
        while offset < send_len:
            n = min(max_pdu, send_len - offset, burst_left)
            chunk: list[Buffer] = []
            need = n
            while need:
                p = pieces[0]
                if len(p) <= need:
                    chunk.append(p)
                    need -= len(p)
                    pieces.popleft()
                else:
                    chunk.append(p[:need])
                    pieces[0] = p[need:]
                    need = 0
            offset += n
            burst_left -= n
            last = offset >= send_len
            final = last or burst_left == 0
            if burst_left == 0:
                burst_left = max_burst
            with_status = last and status is not None
            pdu = DataIn(
                task.itt, data_sn, offset - n, chunk, final, with_status, status or 0, False,
                overflow and with_status, underflow and with_status, residual if with_status else 0, task.lun_raw,
                RESERVED_TAG, self._take_stat_sn() if with_status else self.stat_sn, exp_cmd_sn, max_cmd_sn,
            )  # fmt: skip
            out.extend(write_pdu(pdu, header_digest=hd, data_digest=dd))
            data_sn += 1

    def complete_task_management(self, request: TaskMgmtRequest, response: int) -> None:
        """Queue the TMF Response (after the affected tasks are finished)."""
        session = self.session
        if session is None or self.phase in (Phase.CLOSED, Phase.ERROR):
            return
        self._send(
            TaskMgmtResponse(request.itt, response, self._take_stat_sn(), session.exp_cmd_sn, session.max_cmd_sn)
        )

    def abort_lun(self, lun: int) -> list[Task]:
        """Abort every task of this connection on ``lun`` (a LU reset from another session)."""
        affected = [t for t in self.tasks.values() if t.lun == lun]
        for t in affected:
            self._abort(t)
        return affected

    def abort_all(self) -> list[Task]:
        """Abort every task (connection ends or is reinstated)."""
        affected = list(self.tasks.values())
        for t in affected:
            self._abort(t)
        self._waiting.clear()
        return affected

    def _abort(self, task: Task) -> None:
        if task.state is TaskState.ABORTED:
            return
        was_ready = task.state is TaskState.READY
        counted = task.state in (TaskState.COLLECTING, TaskState.READY)
        task.state = TaskState.ABORTED
        self._aborted.append(task.itt)
        if counted:
            if task.immediate:
                self._imm -= 1
            elif self.session is not None:
                self.session.active -= 1
        if not was_ready:
            # Never handed to the server: forget it now. Ready ones are forgotten in complete_command.
            self._forget(task)

    def _forget(self, task: Task) -> None:
        if self.tasks.get(task.itt) is task:
            del self.tasks[task.itt]
        if task.buffer is not None:
            self.buffered_bytes -= task.expected_length
            self._budget.used -= task.expected_length
            task.buffer = None

    def ping(self) -> None:
        """Queue a NOP-In ping (the driver decides when silence means the peer is gone)."""
        if self.session is None or self.phase is not Phase.FULL_FEATURE:
            return
        ttt = self._new_ttt()
        self._ping_ttt = ttt
        s = self.session
        self._send(NopIn(RESERVED_TAG, ttt, self.stat_sn, s.exp_cmd_sn, s.max_cmd_sn))

    def request_logout(self, seconds: int = 2) -> None:
        """Ask the initiator to log out within ``seconds`` (Async Message event 1)."""
        if self.session is None or self.phase is not Phase.FULL_FEATURE:
            return
        s = self.session
        self._send(AsyncMessage(1, 0, 0, 0, seconds, 0, self.stat_sn, s.exp_cmd_sn, s.max_cmd_sn))

    def close(self) -> None:
        """The driver is closing the socket."""
        if self._cmd_task_buffer is not None:  # a command whose immediate data was still arriving
            self._budget.used -= len(self._cmd_task_buffer)
            self._cmd_task_buffer = None
            self._hdr = self._dest = self._direct = None
        if self.phase not in (Phase.CLOSED, Phase.ERROR):
            self._close(Trigger.CLOSE)
        if self.session is not None and self.session.connection is self:
            self.session.connection = None
            self.sessions.remove(self.session)

    @property
    def is_closed(self) -> bool:
        return self.phase in (Phase.CLOSED, Phase.ERROR)

    def status(self) -> dict[str, Any]:
        """A snapshot for ``target status``."""
        s = self.session
        return {
            "phase": self.phase.value,
            "initiator": s.initiator_name if s else None,
            "isid": s.isid.hex() if s else None,
            "tsih": s.tsih if s else None,
            "tasks": len(self.tasks),
            "header_digest": self._hdigest,
            "data_digest": self._ddigest,
        }

    _cmd_task_buffer: bytearray | mmap.mmap | None = None
    _login_req: LoginRequest | None = None


def _refusal_text(task: Task, status: int, max_xfer: int) -> str:
    if status == _TASK_SET_FULL:
        return f"command {task!r} answered TASK SET FULL (queue depth or write buffer budget reached)"
    return f"command {task!r} refused: transfer length over max_transfer_length {max_xfer}"


def _valid_target_name(value: str) -> bool:
    return value.startswith(("iqn.", "eui.", "naa.")) and len(value) <= 223 and " " not in value
