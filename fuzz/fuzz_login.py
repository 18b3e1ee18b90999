"""Fuzz the target's receive path: login, then full feature phase, in one ``TargetConnection``.

The input's first byte picks a configuration (authentication, digests, ACL, how the stream is
cut into reads, whether the peer closes); the rest is the byte stream an initiator sends. The
harness plays the server's part: it answers every command (reads with data, some with CHECK
CONDITION) and every task-management request, as ``iscsikit.target.server`` would.

Invariants:

* nothing escapes ``receive_data``/``next_event``/``complete_command``/``close``, and the core's
  own last-resort handler (an "internal error" ``ConnectionClosed``) never fires: a peer's bytes
  are answered with a Reject or a failed Login Response, never with a Python exception;
* after ``ConnectionClosed`` no other event comes;
* everything queued for the wire is a sequence of well-formed target PDUs (checked when digests
  are off), and no CHAP secret of the target's configuration is ever in it (unless the peer
  sent it: a NOP-Out's data is echoed);
* no session can start when the configuration's CHAP was not proven, or for an initiator the ACL
  refuses, and SendTargets never names a target the ACL hides from the initiator;
* memory: the receive buffer never exceeds what MaxRecvDataSegmentLength needs, no task buffer
  exceeds the per-command limit (the maximum transfer length), ``buffered_bytes`` counts exactly
  the task buffers held, the write budget covers them and is all given back once the
  connection closes, at most ``queue_depth`` commands (immediate ones included) are admitted,
  and the heap's peak stays within the connection's scratch buffer plus the write budget.
"""

from __future__ import annotations

import sys

from fuzz._common import allocation_limit, fuzz_main, instrument

with instrument("iscsikit.target.proto"):
    from iscsikit.target.buffers import WriteBudget
    from iscsikit.target.proto import (
        NEED_DATA,
        AuthConfig,
        ChapCredentials,
        CommandReady,
        ConnectionClosed,
        InitiatorAcl,
        LocalProtocolError,
        PortalInfo,
        ProtocolError,
        SessionStarted,
        SessionTable,
        TargetConnection,
        TargetDirectory,
        TargetInfo,
        TargetLimits,
        TaskManagement,
    )
    from iscsikit.target.proto.pdu import BHS_LEN, READERS, LoginResponse, Opcode, pad_len, parse_header
    from iscsikit.target.proto.task import Task, TaskState

TARGET = "iqn.2026-11.org.example:disk"
OTHER_TARGET = "iqn.2026-11.org.example:other"
INITIATOR = "iqn.2026-11.org.example:host"
PORTAL = PortalInfo("127.0.0.1", 3260, 1)
#: Secrets of the configurations below; none may ever be sent.
INITIATOR_SECRET = b"initiator-secret-1"
TARGET_SECRET = b"target-secret-2222"
DISCOVERY_SECRET = b"discovery-secret-3"
ACL_SECRET = b"acl-own-secret-444"
SECRETS = (INITIATOR_SECRET, TARGET_SECRET, DISCOVERY_SECRET, ACL_SECRET)
STRANGER = "iqn.2026-11.org.example:someone-else"
#: Small, so that the fuzzer can fill the command window within one input.
QUEUE_DEPTH = 4
#: The largest transfer one command may have (the target refuses longer ones before allocating).
MAX_TRANSFER = 64 << 10
#: The process's write buffer budget: three commands of the largest transfer (a connection may
#: hold a quarter of it, or one largest transfer), so TASK SET FULL is within reach of a few PDUs.
WRITE_BUDGET = 3 * MAX_TRANSFER
#: Read sizes the stream is cut into (byte 0, bits 3-5); 0 = the whole stream at once.
CHUNKS = (0, 1, 7, 48, 49, 512, 4096, 0)


def _directory(config: int) -> TargetDirectory:
    """Byte 0: bits 0-1 authentication (none, one-way CHAP, mutual CHAP, discovery CHAP plus an
    ACL entry with its own CHAP for our initiator), bit 2 digests allowed, bit 6 an ACL that
    admits someone else only."""
    auth_kind = config & 3
    one_way = ChapCredentials("user1", INITIATOR_SECRET)
    auth = AuthConfig()
    discovery_auth = AuthConfig()
    acls: dict[str, InitiatorAcl] | None = None
    if auth_kind == 1:
        auth = AuthConfig(one_way)
    elif auth_kind == 2:
        auth = AuthConfig(one_way, ChapCredentials("target1", TARGET_SECRET))
    elif auth_kind == 3:
        discovery_auth = AuthConfig(ChapCredentials("disc", DISCOVERY_SECRET))
        acls = {INITIATOR: InitiatorAcl(INITIATOR, AuthConfig(ChapCredentials("acluser", ACL_SECRET)))}
    if config & 0x40:
        acls = {STRANGER: InitiatorAcl(STRANGER)}
    digests = ("None", "CRC32C") if config & 4 else ("None",)
    limits = TargetLimits(
        max_recv_data_segment_length=8192,
        first_burst_length=8192,
        max_burst_length=16384,
        header_digests=digests,
        data_digests=digests,
        queue_depth=QUEUE_DEPTH,
        max_transfer_length=MAX_TRANSFER,
    )
    targets = {
        TARGET: TargetInfo(name=TARGET, portals=(PORTAL,), alias="disk", acls=acls, auth=auth),
        OTHER_TARGET: TargetInfo(name=OTHER_TARGET, portals=(PortalInfo("0.0.0.0", 3260, 2),)),
    }
    return TargetDirectory(targets, limits=limits, discovery_auth=discovery_auth)


def _parse_output(out: bytes) -> None:
    """Every byte queued is part of a well-formed target PDU (no digests in this configuration)."""
    pos = 0
    while pos < len(out):
        assert len(out) - pos >= BHS_LEN, f"{len(out) - pos} stray bytes after the last PDU"
        opcode, _imm, ahs_len, dslen = parse_header(out[pos:])
        assert opcode in Opcode.TARGET, f"the target sent opcode {opcode:#x}"
        end = pos + BHS_LEN + ahs_len + dslen + pad_len(dslen)
        assert end <= len(out), "a PDU runs past the output"
        bhs = out[pos : pos + BHS_LEN]
        pdu = READERS[opcode](
            bhs, out[pos + BHS_LEN : pos + BHS_LEN + ahs_len], out[end - pad_len(dslen) - dslen : end - pad_len(dslen)]
        )
        if isinstance(pdu, LoginResponse) and pdu.status == 0:
            assert pdu.version_active == 0 and pdu.version_max == 0
        pos = end


class _Server:
    """The server's side: runs commands as they come, answers task management."""

    def __init__(self, conn: TargetConnection, config: int, budget: WriteBudget) -> None:
        self.conn = conn
        self.budget = budget
        self.config = config
        self.ready: list[Task] = []
        self.closed = False
        self.started = False
        #: The peer is a fixed byte stream, which cannot answer a random CHAP challenge
        #: (False while fuzz/make_corpus.py records a real conversation).
        self.blind = True

    def drain(self) -> None:
        conn = self.conn
        while (event := conn.next_event()) is not NEED_DATA:
            assert not self.closed, f"{event!r} after ConnectionClosed"
            if isinstance(event, ConnectionClosed):
                self.closed = True
                error = event.error
                cause = error.__cause__ if isinstance(error, LocalProtocolError) else None
                if cause is not None and not isinstance(cause, ProtocolError):
                    raise cause  # the core's last-resort handler caught a bug
            elif isinstance(event, SessionStarted):
                self._check_session(event)
            elif isinstance(event, CommandReady):
                self.ready.append(event.task)
            elif isinstance(event, TaskManagement):
                self.run_ready()
                conn.complete_task_management(event.request, 0)
            self._check_bounds()

    def _check_session(self, event: SessionStarted) -> None:
        """A CHAP challenge is random, so no fixed input can answer it: under CHAP no session starts."""
        session = event.session
        self.started = True
        auth_kind = self.config & 3 if self.blind else 0
        if session.discovery:
            assert auth_kind != 3, "a discovery session started without the discovery CHAP"
        else:
            assert session.target_name in (TARGET, OTHER_TARGET)
            if session.target_name == TARGET:
                assert not self.config & 0x40, "a session started for an initiator the ACL refuses"
                assert auth_kind == 0, "a session started without the target's (or the ACL's) CHAP"

    def run_ready(self) -> None:
        """Complete every command handed out, the way the SCSI layer would."""
        ready, self.ready = self.ready, []
        for task in ready:
            if task.itt & 3 == 3:
                sense = bytes([0x70, 0, 5, 0, 0, 0, 0, 10] + [0] * 4 + [0x24, 0, 0, 0, 0, 0])
                self.conn.complete_command(task, 2, sense)
            elif task.read:
                n = min(task.expected_length, 20000 if task.itt & 4 else 512)
                self.conn.complete_command(task, 0, b"", [bytes(n)])
            else:
                self.conn.complete_command(
                    task, 0, expected_data_out=task.expected_length // 2 if task.itt & 8 else None
                )
            self._check_bounds()

    def _check_bounds(self) -> None:
        conn = self.conn
        limit = conn.directory.limits.max_transfer_length
        held = 0
        holding = 0
        for task in conn.tasks.values():
            if task.buffer is not None:
                assert len(task.buffer) <= limit, f"a task buffer of {len(task.buffer)} bytes"
                held += task.expected_length
                holding += 1
        assert conn.buffered_bytes == held, f"buffered_bytes {conn.buffered_bytes} but tasks hold {held}"
        budget = self.budget
        assert held <= budget.used <= budget.limit, f"budget: {budget.used} used of {budget.limit}, tasks hold {held}"
        assert holding <= QUEUE_DEPTH, f"{holding} commands hold data buffers, queue depth is {QUEUE_DEPTH}"
        session = conn.session
        if session is not None:
            assert 0 <= session.active <= QUEUE_DEPTH, f"session.active = {session.active}"
            live = [t for t in conn.tasks.values() if t.state in (TaskState.COLLECTING, TaskState.READY)]
            assert len(live) <= QUEUE_DEPTH, f"{len(live)} commands admitted, queue depth is {QUEUE_DEPTH}"


def connect(config: int, directory: TargetDirectory | None = None) -> _Server:
    """A new connection for configuration ``config``, with the server's part around it."""
    directory = directory if directory is not None else _directory(config)
    budget = WriteBudget(WRITE_BUDGET)
    conn = TargetConnection(directory, SessionTable(), PORTAL, budget=budget)
    return _Server(conn, config, budget)


def check(data: bytes) -> None:
    if not data:
        return
    config, stream = data[0], data[1:]
    directory = _directory(config)
    scratch = max(directory.limits.max_recv_data_segment_length, 64 << 10) + (64 << 10)
    heap = scratch + WRITE_BUDGET + 64 * len(data) + (1 << 20)
    with allocation_limit(heap, "one connection"):
        server = connect(config, directory)
        conn, budget = server.conn, server.budget
        # Scratch for the largest PDU the target accepts (MaxRecvDataSegmentLength), never more.
        scratch_limit = max(directory.limits.max_recv_data_segment_length + 2048, 64 << 10)
        out = bytearray()
        chunk = CHUNKS[(config >> 3) & 7] or max(1, len(stream))
        for at in range(0, len(stream), chunk):
            conn.receive_data(stream[at : at + chunk])
            server.drain()
            server.run_ready()
            server.drain()
            for piece in conn.data_to_send():
                out += piece
            assert len(conn._buf) <= scratch_limit, f"the receive buffer grew to {len(conn._buf)} bytes"
        if config & 0x80:
            conn.receive_data(b"")
            server.drain()
        server.run_ready()
        server.drain()
        for piece in conn.data_to_send():
            out += piece
        conn.close()
        conn.close()
        assert budget.used == 0, f"{budget.used} bytes of the write budget not given back after close"
        assert conn.buffered_bytes == 0 and not conn.tasks
    for secret in SECRETS:
        for form in (secret, secret.hex().encode()):
            # (the target echoes a NOP-Out's data: a peer that sent the secret may get it back)
            assert form not in out or form in stream, "a CHAP secret was sent"
    if config & 0x40:
        assert b"TargetName=" + TARGET.encode() not in out, "SendTargets listed a target the ACL hides"
    if not config & 4:
        _parse_output(bytes(out))


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
    sys.exit(0)
