"""What the initiator receives when a command completes: Data-In and SCSI Response fields,
residuals, sense, statuses with and without data, and nothing at all for an aborted command.

The fields asserted are the ones an initiator acts on: the status and sense its user sees,
the residual that says how much was transferred, StatSN/ExpCmdSN/MaxCmdSN that keep the
command window moving, and the LUN/ITT/TTT that match a response to its command.
"""

from __future__ import annotations

import pytest

from iscsikit.target.proto import CommandReady, InitiatorConnection, TargetLimits
from iscsikit.target.proto.pdu import (
    RESERVED_TAG,
    DataIn,
    LogoutResponse,
    ScsiCommand,
    ScsiResponse,
    TaskMgmtRequest,
    encode_lun,
)
from iscsikit.target.proto.task import Task

from .harness import INITIATOR, TARGET, Pair

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])
SENSE = bytes([0x70, 0, 5, 0, 0, 0, 0, 10] + [0] * 4 + [0x21, 0] + [0] * 4)


def logged_in(*, digests: bool = False, **kw: object) -> Pair:
    ini = InitiatorConnection(INITIATOR, target=TARGET, header_digest=digests, data_digest=digests)
    pair = Pair(ini, **kw)  # type: ignore[arg-type]
    pair.login()
    pair.take_events()
    return pair


def read(pair: Pair, length: int, lun: int = 1) -> tuple[int, Task]:
    itt, wire = pair.ini.scsi_command(READ10, lun=lun, read_length=length)
    pair.send(wire)
    (ev,) = pair.take_events()
    assert isinstance(ev, CommandReady)
    return itt, ev.task


def payload(pdus: list[object]) -> bytes:
    return b"".join(b"".join(bytes(x) for x in p.data) for p in pdus if isinstance(p, DataIn))


@pytest.mark.parametrize("digests", [False, True])
@pytest.mark.parametrize("length", [4096, 4093, 1])
def test_a_good_read_is_one_data_in_with_status(digests: bool, length: int) -> None:
    pair = logged_in(digests=digests, limits=TargetLimits(queue_depth=16))
    itt, task = read(pair, length, lun=3)
    stat_sn = pair.target.stat_sn
    exp_cmd_sn = pair.target.session.exp_cmd_sn  # type: ignore[union-attr]
    data = bytes(range(256)) * 17
    pair.target.complete_command(task, 0, b"", [data[:length]])
    # A NOP-Out answered after it: the Data-In's padding must have been right for it to parse.
    pdus = pair.receive() + pair.send(pair.ini.nop_out(b"after")[1])
    din, nop = pdus
    assert isinstance(din, DataIn)
    assert (din.itt, din.ttt, din.lun, din.data_sn, din.offset) == (itt, RESERVED_TAG, encode_lun(3), 0, 0)
    assert (din.final, din.status_present, din.status, din.overflow, din.underflow, din.residual) == (
        True, True, 0, False, False, 0,
    )  # fmt: skip
    assert (din.stat_sn, din.exp_cmd_sn, din.max_cmd_sn) == (stat_sn, exp_cmd_sn, exp_cmd_sn + 15)
    assert payload([din]) == data[:length]
    assert bytes(nop.data) == b"after" and nop.stat_sn == stat_sn + 1  # type: ignore[attr-defined]


def test_the_window_in_a_read_answer_counts_the_commands_still_running() -> None:
    pair = logged_in(limits=TargetLimits(queue_depth=4))
    tasks = [read(pair, 512)[1] for _ in range(3)]
    exp = pair.target.session.exp_cmd_sn  # type: ignore[union-attr]
    pair.target.complete_command(tasks[0], 0, b"", [b"a" * 512])
    (din,) = pair.receive()
    assert din.max_cmd_sn == exp + 4 - 2 - 1  # type: ignore[attr-defined]  # two still running
    pair.target.complete_command(tasks[1], 0, b"", [b"b" * 256, b"b" * 256])  # two pieces: the general path
    (din,) = pair.receive()
    assert din.max_cmd_sn == exp + 4 - 1 - 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("pieces", "edtl", "sent", "flags"),
    [
        ([b"x" * 1000], 4096, 1000, ("underflow", 3096)),
        ([b"y" * 300, b"z" * 700], 512, 512, ("overflow", 488)),
        ([b"w" * 512], 512, 512, (None, 0)),
        ([b"v" * 100, b"u" * 412], 512, 512, (None, 0)),
    ],
)
def test_read_residuals(pieces: list[bytes], edtl: int, sent: int, flags: tuple[str | None, int]) -> None:
    pair = logged_in()
    _itt, task = read(pair, edtl)
    pair.target.complete_command(task, 0, b"", pieces)
    (din,) = pair.receive()
    assert isinstance(din, DataIn) and din.status_present and payload([din]) == b"".join(pieces)[:sent]
    kind, residual = flags
    assert (din.overflow, din.underflow, din.residual) == (kind == "overflow", kind == "underflow", residual)


def test_a_read_that_returns_nothing_reports_the_whole_length_as_residual() -> None:
    pair = logged_in()
    itt, task = read(pair, 4096)
    pair.target.complete_command(task, 0)
    (rsp,) = pair.receive()
    assert isinstance(rsp, ScsiResponse) and (rsp.itt, rsp.status, rsp.underflow, rsp.residual) == (itt, 0, True, 4096)


@pytest.mark.parametrize("status", [0, 4])  # GOOD, CONDITION MET: data and status in one Data-In
def test_good_statuses_travel_with_the_data(status: int) -> None:
    pair = logged_in()
    _itt, task = read(pair, 1024)
    pair.target.complete_command(task, status, b"", [b"c" * 512, b"d" * 512])
    (din,) = pair.receive()
    assert isinstance(din, DataIn) and din.status_present and din.status == status and din.final


@pytest.mark.parametrize(("status", "sense"), [(2, SENSE), (0x18, b""), (0, SENSE)])
def test_a_status_with_sense_or_an_error_status_comes_in_a_scsi_response_after_the_data(
    status: int, sense: bytes
) -> None:
    pair = logged_in()
    itt, task = read(pair, 4096)
    stat_sn = pair.target.stat_sn
    pair.target.complete_command(task, status, sense, [b"p" * 1000])
    din, rsp = pair.receive()
    assert isinstance(din, DataIn) and not din.status_present and din.final and payload([din]) == b"p" * 1000
    assert din.residual == 0 and not din.underflow
    assert isinstance(rsp, ScsiResponse) and (rsp.itt, rsp.status, rsp.stat_sn) == (itt, status, stat_sn)
    assert (rsp.underflow, rsp.residual) == (True, 3096)
    assert bytes(rsp.data) == ((len(sense).to_bytes(2, "big") + sense) if sense else b"")
    assert pair.target.stat_sn == stat_sn + 1  # the Data-In without status took no StatSN


def test_a_large_read_with_check_condition_sends_every_piece_then_the_sense() -> None:
    pair = logged_in(limits=TargetLimits(max_burst_length=262144))
    _itt, task = read(pair, 600000)
    pair.target.complete_command(task, 2, SENSE, [b"q" * 600000])
    pdus = pair.receive()
    *dins, rsp = pdus
    assert [p.offset for p in dins] == [0, 262144, 524288]  # type: ignore[attr-defined]
    assert not any(p.status_present for p in dins) and payload(dins) == b"q" * 600000  # type: ignore[attr-defined]
    assert isinstance(rsp, ScsiResponse) and rsp.status == 2 and bytes(rsp.data)[2:] == SENSE


def test_a_write_completes_with_a_scsi_response_and_frees_its_buffer() -> None:
    pair = logged_in()
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"w" * 4096)
    pair.send(wire)
    (ev,) = pair.take_events()
    assert isinstance(ev, CommandReady) and bytes(ev.task.data_out) == b"w" * 4096  # type: ignore[arg-type]
    target = pair.target
    assert (target.buffered_bytes, target.ready_bytes, target._budget.used) == (4096, 4096, 4096)
    target.complete_command(ev.task, 0)
    (rsp,) = pair.receive()
    assert isinstance(rsp, ScsiResponse)
    assert (rsp.itt, rsp.status, rsp.overflow, rsp.underflow) == (itt, 0, False, False)
    assert (target.buffered_bytes, target.ready_bytes, target._budget.used) == (0, 0, 0)
    assert ev.task.buffer is None and not target.tasks and target.session.active == 0  # type: ignore[union-attr]


def test_ready_bytes_add_up_over_several_writes_and_drain_one_by_one() -> None:
    pair = logged_in()
    sizes = (4096, 12288)
    for n in sizes:
        pair.send(pair.ini.scsi_command(WRITE10, lun=1, write_data=b"w" * n)[1])
    events = pair.take_events()
    assert [type(e) for e in events] == [CommandReady, CommandReady]
    target = pair.target
    # What the server's back-pressure reads: both writes' buffers are held, ready to drain.
    assert (target.buffered_bytes, target.ready_bytes, target._budget.used) == (16384, 16384, 16384)
    target.complete_command(events[0].task, 0)  # type: ignore[attr-defined]
    assert (target.buffered_bytes, target.ready_bytes, target._budget.used) == (12288, 12288, 12288)
    target.complete_command(events[1].task, 0)  # type: ignore[attr-defined]
    assert (target.buffered_bytes, target.ready_bytes, target._budget.used) == (0, 0, 0)


def test_an_aborted_command_gets_no_answer_but_gives_its_buffer_back() -> None:
    pair = logged_in()
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"w" * 4096)
    pair.send(wire)
    (ev,) = pair.take_events()
    pair.send(pair.ini.task_management(1, lun=1, referenced_itt=itt)[1])
    pair.take_events()
    pair.target.complete_command(ev.task, 0)
    assert pair.receive() == []
    assert (pair.target.buffered_bytes, pair.target.ready_bytes, pair.target._budget.used) == (0, 0, 0)
    assert pair.target.session.active == 0  # type: ignore[union-attr]


def test_completing_after_the_connection_failed_sends_nothing() -> None:
    pair = logged_in()
    _itt, task = read(pair, 512)
    bogus = bytearray(48)
    bogus[0] = 0x40
    bogus[5:8] = (1 << 23).to_bytes(3, "big")  # oversized: the connection fails
    pair.send(bytes(bogus))
    assert pair.target.is_closed
    pair.target.complete_command(task, 0, b"", [b"r" * 512])
    pair.target.complete_task_management(TaskMgmtRequest(itt=1, function=1, lun=0), 0)
    assert pair.target.data_to_send() == []


def test_an_immediate_command_frees_its_own_slot() -> None:
    pair = logged_in(limits=TargetLimits(queue_depth=2))
    ini = pair.ini
    itt = ini.next_itt()
    pair.send(ini.encode(ScsiCommand(itt, encode_lun(1), READ10, 512, ini.cmd_sn, ini.exp_stat_sn, True, False,
                                     True, 1, True)))  # fmt: skip
    (ev,) = pair.take_events()
    assert isinstance(ev, CommandReady) and ev.task.immediate
    session = pair.target.session
    assert session is not None and session.active == 0 and pair.target._imm == 1
    pair.target.complete_command(ev.task, 0, b"", [b"i" * 512])
    pair.receive()
    assert pair.target._imm == 0 and session.active == 0


def test_the_last_answer_releases_a_waiting_logout() -> None:
    pair = logged_in()
    _itt, first = read(pair, 512)
    _itt, second = read(pair, 512)
    pair.send(pair.ini.logout()[1])
    pair.target.complete_command(first, 2, SENSE)
    assert [type(p) for p in pair.receive()] == [ScsiResponse]
    pair.target.complete_command(second, 0, b"", [b"r" * 512])
    assert [type(p) for p in pair.receive()] == [DataIn, LogoutResponse]
    assert pair.target.is_closed
