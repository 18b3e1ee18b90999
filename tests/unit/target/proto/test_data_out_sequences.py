"""Write data sequences beyond the happy path: several R2T bursts, DataSN and offset errors in
unsolicited and solicited data, data for finished or aborted commands, CmdSN ordering of
writes, task management, and a peer that goes away.

What is asserted is what the initiator and its user notice: the R2T it must answer (offset,
length, R2TSN, TTT), a CHECK CONDITION for a broken sequence while the connection lives on, a
Reject and a closed connection for a framing error, and that no write runs with wrong data.
"""

from __future__ import annotations

import pytest

from iscsikit.target.proto import NEED_DATA, CommandReady, ConnectionClosed, TargetLimits, TaskManagement
from iscsikit.target.proto.connection import ProtocolIssue
from iscsikit.target.proto.pdu import R2T, RESERVED_TAG, Reject, ScsiResponse, TaskMgmtResponse

from .harness import READ10, WRITE10, Pair, logged_in


def data(n: int) -> bytes:
    return bytes((i * 13 + 5) & 0xFF for i in range(n))


def ready(pair: Pair) -> list[CommandReady]:
    return [e for e in pair.take_events() if isinstance(e, CommandReady)]


def closed_with(pair: Pair, text: str) -> None:
    assert pair.target.is_closed
    last = pair.take_events()[-1]
    assert isinstance(last, ConnectionClosed) and text in last.reason, last


def data_phase_error(rsp: object, itt: int) -> None:
    assert isinstance(rsp, ScsiResponse) and rsp.itt == itt and rsp.status == 2
    sense = bytes(rsp.data)[2:]
    assert (sense[2] & 0x0F, sense[12], sense[13]) == (0x0B, 0x4B, 0x00)  # ABORTED COMMAND, DATA PHASE ERROR


def test_a_write_larger_than_max_burst_is_solicited_burst_by_burst() -> None:
    pair = logged_in(limits=TargetLimits(max_burst_length=16384, first_burst_length=8192))
    ini = pair.ini
    body = data(40000)
    itt, wire = ini.scsi_command(WRITE10, lun=1, write_data=body, immediate_length=1000)
    (r2t,) = pair.send(wire)
    seen = []
    while isinstance(r2t, R2T):
        seen.append((r2t.r2t_sn, r2t.offset, r2t.length, r2t.ttt))
        assert r2t.itt == itt
        half = r2t.length // 2
        assert pair.send(ini.data_out(itt, r2t.ttt, 0, r2t.offset, body[r2t.offset : r2t.offset + half], False,
                                      lun=1)) == []  # fmt: skip
        answer = pair.send(ini.data_out(itt, r2t.ttt, 1, r2t.offset + half,
                                        body[r2t.offset + half : r2t.offset + r2t.length], True, lun=1))  # fmt: skip
        r2t = answer[0] if answer else None  # type: ignore[assignment]
    assert [s[:3] for s in seen] == [(0, 1000, 16384), (1, 17384, 16384), (2, 33768, 6232)]
    assert len({s[3] for s in seen}) == 3 and RESERVED_TAG not in {s[3] for s in seen}
    (ev,) = ready(pair)
    assert bytes(ev.task.data_out) == body  # type: ignore[arg-type]


def test_r2t_fields_name_the_command() -> None:
    pair = logged_in()
    stat_sn = pair.target.stat_sn
    itt, wire = pair.ini.scsi_command(WRITE10, lun=5, write_data=data(4096), immediate_length=0)
    (r2t,) = pair.send(wire)
    assert isinstance(r2t, R2T) and (r2t.itt, r2t.offset, r2t.length, r2t.r2t_sn) == (itt, 0, 4096, 0)
    assert r2t.lun == 5 << 48 and r2t.stat_sn == stat_sn == pair.target.stat_sn  # an R2T takes no StatSN
    assert r2t.exp_cmd_sn == pair.target.session.exp_cmd_sn  # type: ignore[union-attr]


def _unsolicited(pair: Pair, size: int = 32768) -> tuple[int, bytes]:
    body = data(size)
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=body, immediate_length=1024, final=False)
    assert pair.send(wire) == []
    return itt, body


def test_unsolicited_data_in_pieces_then_r2t_for_the_rest() -> None:
    pair = logged_in(limits=TargetLimits(first_burst_length=8192))
    ini = pair.ini
    itt, body = _unsolicited(pair)
    assert pair.send(ini.data_out(itt, RESERVED_TAG, 0, 1024, body[1024:4096], False, lun=1)) == []
    (r2t,) = pair.send(ini.data_out(itt, RESERVED_TAG, 1, 4096, body[4096:8192], True, lun=1))
    assert isinstance(r2t, R2T) and (r2t.offset, r2t.length) == (8192, 32768 - 8192)
    pair.send(ini.data_out(itt, r2t.ttt, 0, 8192, body[8192:], True, lun=1))
    (ev,) = ready(pair)
    assert bytes(ev.task.data_out) == body  # type: ignore[arg-type]


def test_unsolicited_data_ending_early_with_the_f_bit_is_followed_by_an_r2t() -> None:
    pair = logged_in(limits=TargetLimits(first_burst_length=8192))
    ini = pair.ini
    itt, body = _unsolicited(pair)
    (r2t,) = pair.send(ini.data_out(itt, RESERVED_TAG, 0, 1024, body[1024:2048], True, lun=1))
    assert isinstance(r2t, R2T) and (r2t.offset, r2t.length) == (2048, 32768 - 2048)
    # The unsolicited sequence is over: more unsolicited data is a framing error.
    answer = pair.send(ini.data_out(itt, RESERVED_TAG, 1, 2048, body[2048:4096], True, lun=1))
    assert [type(p) for p in answer] == [Reject] and answer[0].reason == 0x04  # type: ignore[attr-defined]
    closed_with(pair, "unsolicited Data-Out after the unsolicited sequence ended")


def test_a_wrong_unsolicited_data_sn_fails_the_command_only() -> None:
    pair = logged_in(limits=TargetLimits(first_burst_length=8192))
    ini = pair.ini
    itt, body = _unsolicited(pair)
    (rsp,) = pair.send(ini.data_out(itt, RESERVED_TAG, 1, 1024, body[1024:2048], False, lun=1))
    data_phase_error(rsp, itt)
    issues = [e for e in pair.take_events() if isinstance(e, ProtocolIssue)]
    assert [i.message for i in issues] == ["unsolicited Data-Out DataSN 1, expected 0"]
    # The rest of its data is dropped quietly; the connection serves the next command.
    assert pair.send(ini.data_out(itt, RESERVED_TAG, 0, 1024, body[1024:8192], True, lun=1)) == []
    assert not pair.target.is_closed and not pair.target.tasks
    assert (pair.target.buffered_bytes, pair.target._budget.used, pair.target.session.active) == (0, 0, 0)  # type: ignore[union-attr]
    pair.send(ini.scsi_command(READ10, lun=1, read_length=512)[1])
    assert len(ready(pair)) == 1


@pytest.mark.parametrize(
    ("offset", "length", "fact"),
    [(2048, 1024, "offset 2048 len 1024: expected DataSN 0 offset 1024 within FirstBurstLength 8192"),
     (1024, 8192, "offset 1024 len 8192: expected DataSN 0 offset 1024 within FirstBurstLength 8192")],
)  # fmt: skip
def test_unsolicited_data_at_the_wrong_offset_or_past_first_burst_closes(offset: int, length: int, fact: str) -> None:
    pair = logged_in(limits=TargetLimits(first_burst_length=8192))
    ini = pair.ini
    itt, body = _unsolicited(pair)
    answer = pair.send(ini.data_out(itt, RESERVED_TAG, 0, offset, body[offset : offset + length], False, lun=1))
    assert [type(p) for p in answer] == [Reject] and answer[0].reason == 0x04  # type: ignore[attr-defined]
    closed_with(pair, fact)
    assert not any(isinstance(e, CommandReady) for e in pair.events)


def _solicited(pair: Pair, size: int = 8192) -> tuple[int, bytes, R2T]:
    body = data(size)
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=body, immediate_length=0)
    (r2t,) = pair.send(wire)
    assert isinstance(r2t, R2T)
    return itt, body, r2t


def test_a_wrong_solicited_data_sn_fails_the_command_only() -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    (rsp,) = pair.send(pair.ini.data_out(itt, r2t.ttt, 3, 0, body[:4096], False, lun=1))
    data_phase_error(rsp, itt)
    assert [e.message for e in pair.take_events() if isinstance(e, ProtocolIssue)] == [
        "solicited Data-Out DataSN 3, expected 0"
    ]
    assert not pair.target.is_closed and pair.target.session.active == 0  # type: ignore[union-attr]


def test_the_f_bit_before_the_end_of_the_burst_closes() -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    answer = pair.send(pair.ini.data_out(itt, r2t.ttt, 0, 0, body[:4096], True, lun=1))
    assert [type(p) for p in answer] == [Reject]
    closed_with(pair, "F bit before the end of the R2T burst")


def test_a_burst_completed_without_the_f_bit_closes() -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    answer = pair.send(pair.ini.data_out(itt, r2t.ttt, 0, 0, body, False, lun=1))
    assert [type(p) for p in answer] == [Reject]
    closed_with(pair, "R2T burst complete without the F bit")
    assert not any(isinstance(e, CommandReady) for e in pair.events)


@pytest.mark.parametrize(
    ("offset", "fact"),
    [(512, "offset 512 len 4096: expected DataSN 0 offset 0, burst ends at 8192"),
     (6144, "offset 6144 len 4096: expected DataSN 0 offset 0")],
)  # fmt: skip
def test_solicited_data_off_the_burst_closes_and_names_the_burst(offset: int, fact: str) -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    pair.send(pair.ini.data_out(itt, r2t.ttt, 0, offset, body[:4096], False, lun=1))
    closed_with(pair, fact)


def test_data_out_with_another_ttt_names_it() -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    pair.send(pair.ini.data_out(itt, r2t.ttt + 1, 0, 0, body, True, lun=1))
    closed_with(pair, f"Data-Out TTT 0x{r2t.ttt + 1:08x} does not match the outstanding R2T")


def test_data_out_after_the_command_has_its_data_is_ignored() -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    pair.send(pair.ini.data_out(itt, r2t.ttt, 0, 0, body, True, lun=1))
    (ev,) = ready(pair)
    assert pair.send(pair.ini.data_out(itt, r2t.ttt, 1, 0, b"\xff" * 8192, True, lun=1)) == []
    assert bytes(ev.task.data_out) == body and not pair.target.is_closed  # type: ignore[arg-type]


def test_data_out_for_an_unknown_task_names_it() -> None:
    pair = logged_in()
    wire = pair.ini.data_out(0xABCD, 7, 0, 0, b"z" * 512, True)
    answer = pair.send(wire)
    assert [type(p) for p in answer] == [Reject] and answer[0].reason == 0x09  # type: ignore[attr-defined]
    assert bytes(answer[0].data) == wire[:48]  # type: ignore[attr-defined]
    assert not pair.target.is_closed


def test_abort_task_of_a_write_waiting_for_data_discards_its_data() -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    tmf_itt, wire = pair.ini.task_management(1, lun=1, referenced_itt=itt)
    pair.send(wire)
    (tmf,) = pair.take_events()
    assert isinstance(tmf, TaskManagement) and [t.itt for t in tmf.tasks] == [itt]
    assert (pair.target.buffered_bytes, pair.target._budget.used) == (0, 0) and not pair.target.tasks
    assert pair.send(pair.ini.data_out(itt, r2t.ttt, 0, 0, body, True, lun=1)) == []  # in flight: dropped
    assert not ready(pair) and not pair.target.is_closed
    pair.target.complete_task_management(tmf.request, 0)
    (rsp,) = pair.receive()
    assert isinstance(rsp, TaskMgmtResponse) and (rsp.itt, rsp.response) == (tmf_itt, 0)


def test_abort_of_an_answered_task_says_it_is_gone() -> None:
    pair = logged_in()
    itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=512)
    pair.send(wire)
    (ev,) = ready(pair)
    pair.target.complete_command(ev.task, 0, b"", [b"r" * 512])
    pair.receive()
    pair.target.tasks[itt] = ev.task  # still known (e.g. answered but not yet forgotten)
    (rsp,) = pair.send(pair.ini.task_management(1, lun=1, referenced_itt=itt)[1])
    assert isinstance(rsp, TaskMgmtResponse) and rsp.response == 1


def test_lun_reset_from_another_session_aborts_only_that_lun() -> None:
    pair = logged_in()
    for lun in (1, 2, 1):
        pair.send(pair.ini.scsi_command(READ10, lun=lun, read_length=512)[1])
    tasks = [e.task for e in ready(pair)]
    affected = pair.target.abort_lun(1)
    assert affected == [tasks[0], tasks[2]] and pair.target.session.active == 1  # type: ignore[union-attr]
    for t in tasks:
        pair.target.complete_command(t, 0, b"", [b"x" * 512])
    assert len(pair.receive()) == 1  # only LUN 2's read is answered


def test_a_duplicate_cmd_sn_waiting_in_the_queue_is_dropped() -> None:
    pair = logged_in()
    ini = pair.ini
    base = ini.cmd_sn
    ini.cmd_sn = base + 1
    first_itt, first = ini.scsi_command(READ10, lun=1, read_length=512)
    ini.cmd_sn = base + 1
    _dup_itt, dup = ini.scsi_command(READ10, lun=1, read_length=512)
    ini.cmd_sn = base
    gap_itt, gap = ini.scsi_command(READ10, lun=1, read_length=512)
    assert pair.send(first + dup) == []
    assert len(pair.target.tasks) == 1  # the duplicate is forgotten at once
    pair.send(gap)
    assert [e.task.itt for e in ready(pair)] == [gap_itt, first_itt]


def test_a_draining_connection_ignores_new_commands() -> None:
    pair = logged_in()
    pair.target.draining = True
    assert pair.send(pair.ini.scsi_command(READ10, lun=1, read_length=512)[1]) == []
    assert pair.send(pair.ini.scsi_command(WRITE10, lun=1, write_data=data(4096))[1]) == []
    assert not ready(pair) and not pair.target.tasks and pair.target._budget.used == 0


def test_the_peer_closing_ends_the_connection_and_its_commands() -> None:
    pair = logged_in()
    _solicited(pair)
    pair.target.receive_data(b"")
    assert pair.receive() == []
    events = pair.take_events()
    assert isinstance(events[-1], ConnectionClosed) and events[-1].reason == "peer closed the connection"
    assert pair.target.is_closed and not pair.target.tasks and pair.target._budget.used == 0
    pair.target.eof_received()
    assert pair.target.next_event() is NEED_DATA


def test_a_data_sn_is_read_in_full() -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    (rsp,) = pair.send(pair.ini.data_out(itt, r2t.ttt, 0x01000000, 0, body, True, lun=1))
    data_phase_error(rsp, itt)  # DataSN 16777216 is not 0
    assert not ready(pair)


def test_a_reserved_flag_bit_does_not_end_a_burst() -> None:
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    wire = bytearray(pair.ini.data_out(itt, r2t.ttt, 0, 0, body[:4096], False, lun=1))
    wire[1] |= 0x01  # reserved
    assert pair.send(bytes(wire)) == [] and not pair.target.is_closed
    pair.send(pair.ini.data_out(itt, r2t.ttt, 1, 4096, body[4096:], True, lun=1))
    (ev,) = ready(pair)
    assert bytes(ev.task.data_out) == body  # type: ignore[arg-type]


def _after_unsolicited_end(pair: Pair, itt: int, body: bytes) -> bytes:
    (r2t,) = pair.send(pair.ini.data_out(itt, RESERVED_TAG, 0, 1024, body[1024:2048], True, lun=1))
    assert isinstance(r2t, R2T)
    return pair.ini.data_out(itt, RESERVED_TAG, 1, 2048, body[2048:4096], True, lun=1)


#: Every Data-Out that breaks framing: (how to get there, the reason the connection closes with).
#: ``unsol`` starts an unsolicited write (FirstBurstLength 8192, 1024 bytes immediate), ``sol``
#: a write of 40000 bytes solicited in bursts of 16384 (the first R2T outstanding).
FRAMING_ERRORS = [
    ("unsol", lambda p, itt, b, r2t: _after_unsolicited_end(p, itt, b),
     "unsolicited Data-Out after the unsolicited sequence ended"),
    ("unsol", lambda p, itt, b, r2t: p.ini.data_out(itt, RESERVED_TAG, 0, 2048, b[2048:3072], False, lun=1),
     "unsolicited Data-Out DataSN 0 offset 2048 len 1024: expected DataSN 0 offset 1024 within FirstBurstLength 8192"),
    ("unsol", lambda p, itt, b, r2t: p.ini.data_out(itt, RESERVED_TAG, 0, 1024, b[1024:8192], False, lun=1),
     "unsolicited data reached FirstBurstLength without the F bit"),
    ("sol", lambda p, itt, b, r2t: p.ini.data_out(itt, r2t.ttt + 1, 0, 0, b[:16384], True, lun=1),
     "Data-Out TTT 0x{ttt:08x} does not match the outstanding R2T"),
    ("sol", lambda p, itt, b, r2t: p.ini.data_out(itt, r2t.ttt, 0, 512, b[512:4608], False, lun=1),
     "solicited Data-Out DataSN 0 offset 512 len 4096: expected DataSN 0 offset 0, burst ends at 16384"),
    ("sol", lambda p, itt, b, r2t: p.ini.data_out(itt, r2t.ttt, 0, 0, b[:20000], True, lun=1),
     "solicited Data-Out DataSN 0 offset 0 len 20000: expected DataSN 0 offset 0, burst ends at 16384"),
    ("sol", lambda p, itt, b, r2t: p.ini.data_out(itt, r2t.ttt, 0, 0, b[:16384], False, lun=1),
     "R2T burst complete without the F bit"),
    ("sol", lambda p, itt, b, r2t: p.ini.data_out(itt, r2t.ttt, 0, 0, b[:4096], True, lun=1),
     "F bit before the end of the R2T burst"),
]  # fmt: skip


@pytest.mark.parametrize(("start", "wire_of", "reason"), FRAMING_ERRORS)
def test_a_framing_error_in_write_data_is_rejected_with_its_header_and_closes_with_its_reason(
    start: str, wire_of: object, reason: str
) -> None:
    pair = logged_in(limits=TargetLimits(first_burst_length=8192, max_burst_length=16384))
    r2t = None
    if start == "unsol":
        itt, body = _unsolicited(pair)
    else:
        body = data(40000)
        itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=body, immediate_length=0)
        (r2t,) = pair.send(wire)
        assert isinstance(r2t, R2T) and r2t.length == 16384
    wire = wire_of(pair, itt, body, r2t)  # type: ignore[operator]
    stat_sn, exp, max_cmd_sn = pair.target.stat_sn, pair.target.session.exp_cmd_sn, pair.target.session.max_cmd_sn  # type: ignore[union-attr]
    answer = pair.send(wire)
    # The initiator finds the refused PDU by the header the Reject carries back.
    assert answer == [Reject(0x04, wire[:48], stat_sn, exp, max_cmd_sn)]
    last = pair.take_events()[-1]
    assert isinstance(last, ConnectionClosed) and last.reason == reason.format(ttt=r2t.ttt + 1 if r2t else 0)
    assert pair.target.is_closed and not any(isinstance(e, CommandReady) for e in pair.events)


def test_empty_data_out_pdus_move_nothing_and_every_data_out_is_counted() -> None:
    pair = logged_in(limits=TargetLimits(first_burst_length=8192))
    ini = pair.ini
    itt, body = _unsolicited(pair)
    assert pair.target.data_outs_in == 0
    # DataSegmentLength 0, unsolicited then solicited: each takes its DataSN and changes no byte.
    assert pair.send(ini.data_out(itt, RESERVED_TAG, 0, 1024, b"", False, lun=1)) == []
    (r2t,) = pair.send(ini.data_out(itt, RESERVED_TAG, 1, 1024, body[1024:8192], True, lun=1))
    assert isinstance(r2t, R2T) and (r2t.offset, r2t.length) == (8192, 32768 - 8192)
    assert pair.send(ini.data_out(itt, r2t.ttt, 0, 8192, b"", False, lun=1)) == []
    assert pair.send(ini.data_out(itt, r2t.ttt, 1, 8192, body[8192:], True, lun=1)) == []
    (ev,) = ready(pair)
    assert bytes(ev.task.data_out) == body and not pair.target.is_closed  # type: ignore[arg-type]
    assert pair.target.data_outs_in == 4  # what the server's stalled-data check counts


def test_write_data_is_received_straight_into_the_command_s_buffer() -> None:
    """Zero-copy receive (module docstring): once a Data-Out header is parsed, ``get_buffer``
    hands out the task buffer's slice at the PDU's offset, up to the buffer's very end."""
    pair = logged_in()
    itt, body, r2t = _solicited(pair)
    (task,) = pair.target.tasks.values()
    for offset, final in ((0, False), (4096, True)):
        wire = pair.ini.data_out(itt, r2t.ttt, offset // 4096, offset, body[offset : offset + 4096], final, lun=1)
        pair.target.receive_data(wire[: 48 + 100])
        pair.receive()
        view = pair.target.get_buffer()
        assert view.obj is task.buffer and len(view) == 4096 - 100
        pair.target.receive_data(wire[48 + 100 :])
    assert pair.receive() == []
    (ev,) = ready(pair)
    assert ev.task is task and bytes(task.data_out) == body  # type: ignore[arg-type]


def test_commands_run_in_cmd_sn_order_across_two_gaps() -> None:
    pair = logged_in()
    ini = pair.ini
    base = ini.cmd_sn
    itts = {}
    for sn in (base + 2, base, base + 1):  # base + 2 waits, base runs, base + 1 releases base + 2
        ini.cmd_sn = sn
        itts[sn], wire = ini.scsi_command(READ10, lun=1, read_length=512)
        pair.send(wire)
        if sn == base:
            assert [e.task.itt for e in ready(pair)] == [itts[base]] and not pair.target.is_closed
    assert [e.task.itt for e in ready(pair)] == [itts[base + 1], itts[base + 2]]
    assert pair.target.session.exp_cmd_sn == base + 3  # type: ignore[union-attr]
