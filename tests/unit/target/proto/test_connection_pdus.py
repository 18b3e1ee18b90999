"""Whole PDUs the target sends by itself, compared field by field with what RFC 7143 says they
carry: a DataSN error's CHECK CONDITION, TASK SET FULL, Reject, task management and logout
responses, target pings and asynchronous logout requests. An initiator reads every one of
these fields (StatSN and the window for its bookkeeping, the sense for its user, the header
copy in a Reject to find the PDU refused), so one wrong field is a bug it notices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest

from iscsikit.target.buffers import WriteBudget
from iscsikit.target.proto import (
    NEED_DATA,
    CommandReady,
    ConnectionClosed,
    InitiatorConnection,
    TargetConnection,
    TargetLimits,
    TaskManagement,
)
from iscsikit.target.proto.connection import ProtocolIssue
from iscsikit.target.proto.errors import LocalProtocolError, RemoteProtocolError
from iscsikit.target.proto.pdu import (
    R2T,
    RESERVED_TAG,
    AsyncMessage,
    Buffer,
    LoginRequest,
    LoginResponse,
    NopIn,
    NopOut,
    Opcode,
    Reject,
    ScsiCommand,
    ScsiResponse,
    SnackRequest,
    TaskMgmtRequest,
    TaskMgmtResponse,
    encode_lun,
)
from iscsikit.target.proto.text import encode_text

from .harness import INITIATOR, PORTAL, TARGET, Pair

WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])
READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
#: Fixed-format sense: ABORTED COMMAND, additional length 10, ASC/ASCQ 4B/00 (DATA PHASE ERROR).
DATA_PHASE_ERROR = bytes([0x70, 0, 0x0B, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x4B, 0x00, 0, 0, 0, 0])


def logged_in(pair: Pair | None = None, **kw: object) -> Pair:
    pair = pair or Pair(**kw)  # type: ignore[arg-type]
    pair.login()
    pair.take_events()
    return pair


def window(pair: Pair) -> tuple[int, int, int]:
    """(next StatSN, ExpCmdSN, MaxCmdSN) as the target would send them now."""
    s = pair.target.session
    assert s is not None
    return pair.target.stat_sn, s.exp_cmd_sn, s.max_cmd_sn


def test_need_data_names_itself() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"


def test_a_data_sn_error_is_answered_with_a_complete_check_condition() -> None:
    pair = logged_in()
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"d" * 8192, immediate_length=0)
    (r2t,) = pair.send(wire)
    assert isinstance(r2t, R2T)
    stat_sn, exp, _ = window(pair)
    (rsp,) = pair.send(pair.ini.data_out(itt, r2t.ttt, 2, 0, b"d" * 4096, False, lun=1))
    # The command is over: the window reopens by one in the same response.
    assert rsp == ScsiResponse(itt, 2, 0, stat_sn, exp, window(pair)[2], 0,
                               data=len(DATA_PHASE_ERROR).to_bytes(2, "big") + DATA_PHASE_ERROR)  # fmt: skip
    assert pair.target.stat_sn == stat_sn + 1


def test_task_set_full_has_no_sense_and_late_unsolicited_data_is_dropped() -> None:
    budget = WriteBudget(4 << 20)
    pair = Pair(limits=TargetLimits(max_transfer_length=1 << 20))
    pair.target = TargetConnection(pair.directory, pair.table, PORTAL, budget=budget)
    logged_in(pair)
    ini = pair.ini
    (_r2t,) = pair.send(ini.scsi_command(WRITE10, lun=1, write_data=b"a" * (1 << 20), immediate_length=0)[1])
    stat_sn, exp, _ = window(pair)
    body = b"b" * 65536
    itt, wire = ini.scsi_command(WRITE10, lun=1, write_data=body, immediate_length=0, final=False)
    (rsp,) = pair.send(wire)
    assert rsp == ScsiResponse(itt, 0x28, 0, stat_sn, exp + 1, window(pair)[2], 0)
    (issue,) = [e for e in pair.take_events() if isinstance(e, ProtocolIssue)]
    assert issue.kind == "task set full"
    assert issue.message.startswith(f"command <Task itt=0x{itt:08x} lun=1 op=0x2a cmdsn={exp} edtl=65536 ")
    assert issue.message.endswith("> answered TASK SET FULL (queue depth or write buffer budget reached)")
    # The unsolicited data the initiator had already sent for it finds no command: dropped quietly.
    assert pair.send(ini.data_out(itt, RESERVED_TAG, 0, 0, body[:8192], True, lun=1)) == []
    assert not pair.target.is_closed and budget.used == 1 << 20


def test_a_refusal_over_max_transfer_length_names_the_limit() -> None:
    pair = logged_in(limits=TargetLimits(max_transfer_length=1 << 20))
    itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=(1 << 20) + 512)
    pair.send(wire)
    (issue,) = [e for e in pair.take_events() if isinstance(e, ProtocolIssue)]
    assert issue.kind == "transfer too long"
    assert issue.message.startswith(f"command <Task itt=0x{itt:08x} lun=1 op=0x28 ")
    assert issue.message.endswith("> refused: transfer length over max_transfer_length 1048576")


def test_a_reject_carries_the_refused_header_and_the_window() -> None:
    pair = logged_in()
    stat_sn, exp, max_cmd_sn = window(pair)
    wire = pair.ini.encode(SnackRequest(itt=0x42))
    (rej,) = pair.send(wire)
    assert rej == Reject(0x04, wire[:48], stat_sn, exp, max_cmd_sn)
    assert pair.target.stat_sn == stat_sn + 1 and not pair.target.is_closed
    assert pair.take_events() == []  # nothing for the server to do


def test_task_management_response_fields() -> None:
    pair = logged_in()
    _itt, wire = pair.ini.scsi_command(READ10, lun=4, read_length=512)
    pair.send(wire)
    (ready,) = pair.take_events()
    assert isinstance(ready, CommandReady)
    tmf_itt, wire = pair.ini.task_management(5, lun=4)
    assert pair.send(wire) == []
    (tmf,) = pair.take_events()
    assert isinstance(tmf, TaskManagement) and tmf.lun == 4 and tmf.tasks == (ready.task,)
    assert tmf.request.referenced_itt == RESERVED_TAG and pair.target.exp_stat_sn == pair.ini.exp_stat_sn
    pair.target.complete_command(ready.task, 0, b"", [b"x" * 512])
    stat_sn, exp, max_cmd_sn = window(pair)
    pair.target.complete_task_management(tmf.request, 0)
    (rsp,) = pair.receive()
    assert rsp == TaskMgmtResponse(tmf_itt, 0, stat_sn, exp, max_cmd_sn)


def test_a_non_immediate_task_management_request_waits_for_its_cmd_sn() -> None:
    pair = logged_in()
    ini = pair.ini
    base = ini.cmd_sn
    itt = ini.next_itt()
    tmf = TaskMgmtRequest(itt, 1, encode_lun(1), 999, base + 1, ini.exp_stat_sn, 0, 0, False)
    assert pair.send(ini.encode(tmf)) == []  # CmdSN base is missing: held
    ini.cmd_sn = base
    (rsp,) = pair.send(ini.scsi_command(READ10, lun=1, read_length=512)[1])
    assert isinstance(rsp, TaskMgmtResponse) and rsp.itt == itt  # ran once its turn came
    assert pair.target.session.exp_cmd_sn == base + 2  # type: ignore[union-attr]


def test_pings_carry_the_window_and_wrap_their_ttt() -> None:
    pair = logged_in()
    pair.target._next_ttt = 0xFFFFFFFE
    stat_sn, exp, max_cmd_sn = window(pair)
    pair.target.ping()
    pair.target.ping()
    first, second = pair.receive()
    assert first == NopIn(RESERVED_TAG, 0xFFFFFFFE, stat_sn, exp, max_cmd_sn)
    assert second == NopIn(RESERVED_TAG, 1, stat_sn, exp, max_cmd_sn)  # never the reserved 0xffffffff
    # Where R2Ts left the shared counter at the reserved value, a ping still gets a usable tag
    # (one with 0xffffffff would be a ping no answer can match).
    pair.target._next_ttt = RESERVED_TAG
    pair.target.ping()
    (third,) = pair.receive()
    assert third.ttt == 1  # type: ignore[attr-defined]


def test_a_logout_request_from_the_target_is_async_event_1() -> None:
    pair = logged_in()
    stat_sn, exp, max_cmd_sn = window(pair)
    pair.target.request_logout(9)
    (msg,) = pair.receive()
    assert msg == AsyncMessage(1, 0, 0, 0, 9, 0, stat_sn, exp, max_cmd_sn)


def test_an_aborted_immediate_command_gives_its_slot_back() -> None:
    pair = logged_in(limits=TargetLimits(queue_depth=2))
    ini = pair.ini

    def immediate(cdb: bytes, edtl: int, *, write: bool) -> bytes:
        return ini.encode(ScsiCommand(ini.next_itt(), encode_lun(1), cdb, edtl, ini.cmd_sn, ini.exp_stat_sn,
                                      not write, write, True, 1, True))  # fmt: skip

    pair.send(immediate(READ10, 512, write=False))
    (ready,) = pair.take_events()
    assert isinstance(ready, CommandReady) and ready.task.immediate
    assert pair.target.abort_lun(1) == [ready.task]
    pair.target.complete_command(ready.task, 0, b"", [b"r" * 512])  # aborted: no answer, no second release
    answers = pair.send(b"".join(immediate(WRITE10, 4096, write=True) for _ in range(3)))
    assert [type(p) for p in answers] == [R2T, R2T, ScsiResponse]
    assert answers[2].status == 0x28  # type: ignore[attr-defined]


def test_an_aborted_write_lets_go_of_its_buffer() -> None:
    pair = logged_in()
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"w" * 8192, immediate_length=1024)
    pair.send(wire)
    (task,) = pair.target.tasks.values()
    assert task.buffer is not None
    pair.send(pair.ini.task_management(1, lun=1, referenced_itt=itt)[1])
    (tmf,) = pair.take_events()
    assert isinstance(tmf, TaskManagement) and tmf.tasks == (task,)
    assert task.buffer is None and pair.target.buffered_bytes == 0 and pair.target._budget.used == 0


def test_eof_on_a_live_connection_closes_it() -> None:
    pair = logged_in()
    pair.send(pair.ini.scsi_command(READ10, lun=1, read_length=512)[1])
    pair.take_events()
    pair.target.eof_received()
    assert pair.receive() == []
    (closed,) = pair.take_events()
    assert closed == ConnectionClosed("peer closed the connection")
    assert pair.target.is_closed and all(t.state.value == "aborted" for t in pair.target.tasks.values())


def test_a_fatal_error_is_reported_with_its_cause() -> None:
    pair = logged_in()
    hdr = bytearray(48)
    hdr[0] = 0x40
    hdr[5:8] = (1 << 23).to_bytes(3, "big")
    pair.send(bytes(hdr))
    (closed,) = [e for e in pair.take_events() if isinstance(e, ConnectionClosed)]
    assert isinstance(closed.error, RemoteProtocolError)
    assert closed.reason == str(closed.error) == "DataSegmentLength 8388608 exceeds MaxRecvDataSegmentLength 262144"


def test_a_failed_login_answers_on_the_request_that_failed() -> None:
    pair = Pair()
    lead = encode_text([("InitiatorName", INITIATOR), ("TargetName", TARGET)])
    first = LoginRequest(b"\x80\0\0\0\0\x01", 7, 0, 1, False, cmd_sn=3, exp_stat_sn=11,
                         data=lead + encode_text([("AuthMethod", "None")]))  # fmt: skip
    (ok,) = pair.send(pair.ini.encode(first))
    assert isinstance(ok, LoginResponse) and ok.status == 0
    changed = LoginRequest(b"\x80\0\0\0\0\x05", 8, 0, 1, True, cmd_sn=3, exp_stat_sn=12)
    (fail,) = pair.send(pair.ini.encode(changed))
    assert fail == LoginResponse(b"\x80\0\0\0\0\x05", 8, 0, 0, False, False, 0, 12, 3, 3, 0x0200)
    (closed,) = [e for e in pair.take_events() if isinstance(e, ConnectionClosed)]
    assert closed.reason == "login failed: ISID, TSIH or CID changed during login"
    assert isinstance(closed.error, RemoteProtocolError) and closed.error.login_status == 0x0200


def test_a_command_whose_immediate_data_fails_its_digest_gives_its_buffer_back() -> None:
    budget = WriteBudget(1 << 30)
    pair = Pair(InitiatorConnection(INITIATOR, target=TARGET, data_digest=True))
    pair.target = TargetConnection(pair.directory, pair.table, PORTAL, budget=budget)
    logged_in(pair)
    _itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"i" * 8192, immediate_length=4096)
    bad = bytearray(wire)
    bad[48 + 10] ^= 1
    (rej,) = pair.send(bytes(bad))
    assert isinstance(rej, Reject) and rej.reason == 0x02 and bytes(rej.data) == bytes(bad[:48])
    (closed,) = [e for e in pair.take_events() if isinstance(e, ConnectionClosed)]
    assert closed.reason == "data digest mismatch"
    assert pair.target.is_closed and budget.used == 0
    pair.target.close()
    assert budget.used == 0


def test_after_logout_late_completions_are_ignored() -> None:
    pair = logged_in()
    _itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=512)
    pair.send(wire)
    (ready,) = pair.take_events()
    assert isinstance(ready, CommandReady)
    pair.target.complete_command(ready.task, 0, b"", [b"r" * 512])
    pair.receive()
    pair.send(pair.ini.logout()[1])
    assert pair.take_events() == [ConnectionClosed("logged out")]
    pair.target.complete_command(ready.task, 0, b"", [b"r" * 512])  # a late, duplicate completion
    assert pair.target.data_to_send() == [] and pair.target.is_closed


def test_r2t_transfer_tags_skip_the_reserved_value_and_stay_distinct_across_the_wrap() -> None:
    pair = logged_in()
    pair.target._next_ttt = 0xFFFFFFFE
    itts = []
    tags = []
    for _ in range(3):
        itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"t" * 4096, immediate_length=0)
        (r2t,) = pair.send(wire)
        assert isinstance(r2t, R2T) and r2t.itt == itt
        itts.append(itt)
        tags.append(r2t.ttt)
    assert tags == [0xFFFFFFFE, 1, 2]  # 0xffffffff is reserved; three outstanding R2Ts, three tags
    for itt, ttt in zip(itts, tags, strict=True):
        assert pair.send(pair.ini.data_out(itt, ttt, 0, 0, b"t" * 4096, True, lun=1)) == []
    assert len([e for e in pair.take_events() if isinstance(e, CommandReady)]) == 3


def test_a_nop_out_is_echoed_with_its_lun_and_data() -> None:
    pair = logged_in()
    ini = pair.ini
    lun = 0x0102_0304_0506_0708
    itt = ini.next_itt()
    (nop,) = pair.send(ini.encode(NopOut(itt, RESERVED_TAG, ini.cmd_sn, ini.exp_stat_sn, lun, True, b"echo")))
    assert isinstance(nop, NopIn) and (nop.itt, nop.ttt, nop.lun, bytes(nop.data)) == (itt, RESERVED_TAG, lun, b"echo")


def test_an_immediate_task_management_request_is_answered_at_once_and_takes_no_cmd_sn() -> None:
    pair = logged_in()
    ini = pair.ini
    exp = pair.target.session.exp_cmd_sn  # type: ignore[union-attr]
    ini.cmd_sn = exp + 1
    held_itt, held = ini.scsi_command(READ10, lun=1, read_length=512)
    assert pair.send(held) == []  # CmdSN exp is missing: the read waits
    tmf_itt, wire = ini.task_management(1, lun=1, referenced_itt=0x777)
    (rsp,) = pair.send(wire)
    assert isinstance(rsp, TaskMgmtResponse) and (rsp.itt, rsp.response) == (tmf_itt, 0)  # no such task
    assert pair.target.session.exp_cmd_sn == exp  # type: ignore[union-attr]
    ini.cmd_sn = exp
    pair.send(ini.scsi_command(READ10, lun=1, read_length=512)[1])
    assert [e.task.itt for e in pair.take_events() if isinstance(e, CommandReady)][1:] == [held_itt]


def test_closing_while_a_command_s_immediate_data_arrives_gives_its_buffer_back() -> None:
    budget = WriteBudget(1 << 30)
    pair = Pair()
    pair.target = TargetConnection(pair.directory, pair.table, PORTAL, budget=budget)
    logged_in(pair)
    _itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"i" * 8192, immediate_length=8192)
    assert pair.send(wire[: 48 + 1000]) == []  # the header, and part of the immediate data
    assert budget.used == 8192
    pair.target.close()
    assert budget.used == 0 and pair.target.is_closed
    pair.target.close()  # the driver may close twice
    assert budget.used == 0


def test_the_driver_closing_gives_one_connection_closed_then_nothing() -> None:
    pair = logged_in()
    pair.target.close()
    assert pair.target.next_event() == ConnectionClosed("closed")
    assert pair.target.next_event() is NEED_DATA and pair.target.next_event() is NEED_DATA


def _buggy_nop_out(conn: TargetConnection, bhs: bytes, ahs: bytes, data: Buffer) -> None:
    raise RuntimeError("boom")


class _BuggyNop(TargetConnection):
    """A core with a bug in one handler (no input reaches such a bug on purpose)."""

    _HANDLERS: ClassVar[dict[int, Callable[[TargetConnection, bytes, bytes, Buffer], None]]] = {
        **TargetConnection._HANDLERS,
        Opcode.NOP_OUT: _buggy_nop_out,
    }


def test_a_bug_in_the_core_ends_this_connection_not_the_process() -> None:
    pair = Pair()
    pair.target = _BuggyNop(pair.directory, pair.table, PORTAL)
    logged_in(pair)
    pair.send(pair.ini.nop_out(b"x")[1])
    (closed,) = pair.take_events()
    assert (
        isinstance(closed, ConnectionClosed)
        and closed.reason == "internal error while parsing a PDU: RuntimeError('boom')"
    )
    assert isinstance(closed.error, LocalProtocolError) and isinstance(closed.error.__cause__, RuntimeError)
    assert closed.error.close and pair.target.is_closed
    # Bytes still in flight before the socket closes are taken and ignored.
    pair.target.receive_data(pair.ini.nop_out(b"late")[1])
    assert pair.target.next_event() is NEED_DATA and pair.target.data_to_send() == []


@pytest.mark.parametrize(("opcode", "status"), [(0x01, 0x020B), (0x1F, 0x0200)])
def test_anything_but_a_login_request_during_login_fails_the_login(opcode: int, status: int) -> None:
    pair = Pair()
    wire = bytearray(48)
    wire[0] = 0x40 | opcode
    (rsp,) = pair.send(bytes(wire))
    # A known PDU out of place is "invalid during login"; an unknown opcode is an initiator error.
    assert rsp == LoginResponse(b"\0" * 6, 0, 0, 0, status=status)
    (closed,) = pair.take_events()
    assert isinstance(closed, ConnectionClosed) and closed.reason == f"opcode 0x{opcode:02x} during login"
    assert isinstance(closed.error, RemoteProtocolError) and closed.error.login_status == status and closed.error.close
    assert closed.error.header == bytes(wire)  # the offending header, for whoever logs the error
    assert pair.target.is_closed and not pair.table.by_tsih


def test_a_command_after_the_logout_request_is_rejected_and_never_runs() -> None:
    pair = logged_in()
    _itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=512)
    pair.send(wire)
    (ready,) = pair.take_events()
    assert isinstance(ready, CommandReady)
    assert pair.send(pair.ini.logout()[1]) == []  # waits for the read to finish
    late = pair.ini.scsi_command(READ10, lun=1, read_length=512)[1]
    (rej,) = pair.send(late)
    assert isinstance(rej, Reject) and rej.reason == 0x04 and bytes(rej.data) == late[:48]
    assert pair.take_events() == [] and list(pair.target.tasks.values()) == [ready.task]


def test_a_cdb_longer_than_16_bytes_reaches_the_command_whole() -> None:
    pair = logged_in()
    ini = pair.ini
    cdb = bytes([0x7F, 0, 0, 0, 0, 0, 0, 24]) + bytes(range(1, 25))  # a 32-byte variable-length CDB
    read = ini.encode(ScsiCommand(ini.next_itt(), encode_lun(1), cdb, 512, ini.cmd_sn, ini.exp_stat_sn, True))
    write = ini.encode(ScsiCommand(ini.next_itt(), encode_lun(1), cdb, 512, ini.cmd_sn + 1, ini.exp_stat_sn,
                                   write=True, data=b"w" * 512))  # fmt: skip
    ini.cmd_sn += 2
    pair.send(read + write)
    tasks = [e.task for e in pair.take_events() if isinstance(e, CommandReady)]
    assert [(t.cdb, t.write) for t in tasks] == [(cdb, False), (cdb, True)]


def test_a_discovery_session_runs_no_scsi_command_and_no_task_management() -> None:
    pair = logged_in(Pair(InitiatorConnection(INITIATOR)))
    for wire in (
        pair.ini.scsi_command(READ10, lun=1, read_length=512)[1],
        pair.ini.task_management(5, lun=1)[1],
    ):
        (rej,) = pair.send(wire)
        assert isinstance(rej, Reject) and rej.reason == 0x04 and bytes(rej.data) == wire[:48]
    assert pair.take_events() == [] and not pair.target.tasks and not pair.target.is_closed


def test_immediate_commands_share_the_queue_depth_with_the_others() -> None:
    pair = logged_in(limits=TargetLimits(queue_depth=2))
    ini = pair.ini
    wire = ini.encode(ScsiCommand(ini.next_itt(), encode_lun(1), READ10, 512, ini.cmd_sn, ini.exp_stat_sn, True,
                                  False, True, 1, True))  # fmt: skip
    assert pair.send(wire) == []  # immediate: takes a slot, not a CmdSN
    sn = ini.cmd_sn
    assert pair.send(ini.scsi_command(READ10, lun=1, read_length=512)[1]) == []
    events = pair.take_events()
    assert [type(e) for e in events] == [CommandReady, CommandReady]
    assert [e.task.cmd_sn for e in events] == [sn, sn]  # type: ignore[attr-defined]
    itt, wire = ini.scsi_command(READ10, lun=1, read_length=512)  # in the CmdSN window, over the depth
    (rsp,) = pair.send(wire)
    assert isinstance(rsp, ScsiResponse) and (rsp.itt, rsp.status) == (itt, 0x28)
    assert not any(isinstance(e, CommandReady) for e in pair.take_events())


def test_a_ready_command_carries_its_direction_and_is_marked_ready() -> None:
    pair = logged_in()
    ini = pair.ini
    tur = ini.encode(ScsiCommand(ini.next_itt(), encode_lun(1), bytes(6), 0, ini.cmd_sn, ini.exp_stat_sn, attr=1))
    ini.cmd_sn += 1
    pair.send(tur + ini.scsi_command(READ10, lun=1, read_length=512)[1])
    tasks = [e.task for e in pair.take_events() if isinstance(e, CommandReady)]
    assert [(t.read, t.write, t.state.value) for t in tasks] == [(False, False, "ready"), (True, False, "ready")]
