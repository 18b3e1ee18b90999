"""Full feature phase: commands, Data-In/Out, R2T, CmdSN window, NOP, TMF, logout, Reject, digests."""

from __future__ import annotations

import subprocess
import sys

import pytest

from iscsikit.target.proto import CommandReady, ConnectionClosed, InitiatorConnection, TargetLimits, TaskManagement
from iscsikit.target.proto.pdu import (
    R2T,
    RESERVED_TAG,
    DataIn,
    LogoutResponse,
    NopIn,
    Reject,
    ScsiResponse,
    SnackRequest,
    TaskMgmtResponse,
)

from .harness import INITIATOR, READ10, TARGET, WRITE10, Pair, logged_in


def ready(pair: Pair) -> CommandReady:
    events = pair.take_events()
    assert len(events) == 1 and isinstance(events[0], CommandReady), events
    return events[0]


def test_read_returns_data_and_status_in_one_data_in() -> None:
    pair = logged_in()
    itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=4096)
    assert pair.send(wire) == []
    task = ready(pair).task
    assert task.lun == 1 and task.cdb[:10] == READ10 and task.read
    pair.target.complete_command(task, 0, b"", [b"\xaa" * 4096])
    (din,) = pair.receive()
    assert isinstance(din, DataIn) and din.itt == itt and din.final and din.status_present and din.status == 0
    assert b"".join(din.data) == b"\xaa" * 4096 and not din.underflow and din.residual == 0


def test_short_and_long_read_residuals() -> None:
    pair = logged_in()
    _itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=4096)
    pair.send(wire)
    pair.target.complete_command(ready(pair).task, 0, b"", [b"x" * 1000])
    (din,) = pair.receive()
    assert din.underflow and din.residual == 3096 and b"".join(din.data) == b"x" * 1000
    _itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=512)
    pair.send(wire)
    pair.target.complete_command(ready(pair).task, 0, b"", [b"y" * 300, b"z" * 700])
    (din,) = pair.receive()
    assert din.overflow and din.residual == 488 and b"".join(din.data) == b"y" * 300 + b"z" * 212


def test_large_read_is_split_by_mrdsl_and_burst() -> None:
    pair = logged_in(limits=TargetLimits(max_burst_length=524288))
    size = 1 << 20
    _itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=size)
    pair.send(wire)
    payload = bytes(range(256)) * (size // 256)
    pair.target.complete_command(ready(pair).task, 0, b"", [payload[:100], payload[100:]])
    pdus = pair.receive()
    assert [p.data_sn for p in pdus] == [0, 1, 2, 3]  # type: ignore[attr-defined]
    assert [p.offset for p in pdus] == [0, 262144, 524288, 786432]  # type: ignore[attr-defined]
    assert [p.final for p in pdus] == [False, True, False, True]  # type: ignore[attr-defined]
    assert [p.status_present for p in pdus] == [False, False, False, True]  # type: ignore[attr-defined]
    assert b"".join(b"".join(p.data) for p in pdus) == payload  # type: ignore[attr-defined]


def test_check_condition_sends_sense_in_scsi_response() -> None:
    pair = logged_in()
    _itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=4096)
    pair.send(wire)
    sense = bytes([0x70, 0, 5, 0, 0, 0, 0, 10] + [0] * 4 + [0x21, 0] + [0] * 4)
    pair.target.complete_command(ready(pair).task, 2, sense)
    (rsp,) = pair.receive()
    assert isinstance(rsp, ScsiResponse) and rsp.status == 2
    assert bytes(rsp.data) == len(sense).to_bytes(2, "big") + sense


def _write(pair: Pair, size: int, *, final: bool, immediate: int | None) -> tuple[CommandReady, bytes, list[object]]:
    data = bytes((i * 7) & 0xFF for i in range(size))
    ini = pair.ini
    itt, wire = ini.scsi_command(WRITE10, lun=1, write_data=data, final=final, immediate_length=immediate)
    seen: list[object] = list(pair.send(wire))
    sent = min(len(data), immediate if immediate is not None else 262144)
    if not final:
        data_sn, off = 0, sent
        while off < min(size, 262144):
            n = min(65536, min(size, 262144) - off)
            last = off + n >= min(size, 262144)
            seen += pair.send(ini.data_out(itt, RESERVED_TAG, data_sn, off, data[off : off + n], last, lun=1))
            off += n
            data_sn += 1
    while not any(isinstance(e, CommandReady) for e in pair.events):
        r2ts = [p for p in seen if isinstance(p, R2T)]
        assert r2ts, seen
        r2t = r2ts[-1]
        seen.clear()
        off, sn = r2t.offset, 0
        while off < r2t.offset + r2t.length:
            n = min(262144, r2t.offset + r2t.length - off)
            last = off + n == r2t.offset + r2t.length
            seen += pair.send(ini.data_out(itt, r2t.ttt, sn, off, data[off : off + n], last, lun=1))
            off, sn = off + n, sn + 1
    return ready(pair), data, seen


@pytest.mark.parametrize(
    ("size", "final", "immediate"),
    [(4096, True, None), (1 << 20, True, None), (1 << 20, False, 8192), (3 << 20, False, 0), (600000, True, 0)],
)
def test_write_data_is_collected_in_place(size: int, final: bool, immediate: int | None) -> None:
    pair = logged_in()
    ev, data, _seen = _write(pair, size, final=final, immediate=immediate)
    assert bytes(ev.task.data_out) == data  # type: ignore[arg-type]
    pair.target.complete_command(ev.task, 0, expected_data_out=size)
    (rsp,) = pair.receive()
    assert isinstance(rsp, ScsiResponse) and rsp.status == 0 and not rsp.overflow and not rsp.underflow


def test_initial_r2t_yes_solicits_everything() -> None:
    pair = Pair(limits=TargetLimits(initial_r2t=True, immediate_data=False))
    pair.login()
    pair.take_events()
    _itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"q" * 8192, immediate_length=0)
    (r2t,) = pair.send(wire)
    assert isinstance(r2t, R2T) and r2t.offset == 0 and r2t.length == 8192 and r2t.r2t_sn == 0


def test_write_residual_from_cdb_length() -> None:
    pair = logged_in()
    ev, _data, _ = _write(pair, 4096, final=True, immediate=None)
    pair.target.complete_command(ev.task, 0, expected_data_out=8192)
    (rsp,) = pair.receive()
    assert rsp.overflow and rsp.residual == 4096  # type: ignore[attr-defined]  # the CDB wanted more than EDTL
    ev, _data, _ = _write(pair, 4096, final=True, immediate=None)
    pair.target.complete_command(ev.task, 0, expected_data_out=512)
    (rsp,) = pair.receive()
    assert rsp.underflow and rsp.residual == 3584  # type: ignore[attr-defined]


def test_bad_data_sn_fails_the_command_but_not_the_connection() -> None:
    pair = logged_in()
    ini = pair.ini
    data = b"d" * 8192
    itt, wire = ini.scsi_command(WRITE10, lun=1, write_data=data, final=True, immediate_length=0)
    (r2t,) = pair.send(wire)
    (rsp,) = pair.send(ini.data_out(itt, r2t.ttt, 1, 0, data[:4096], False, lun=1))  # type: ignore[attr-defined]
    assert isinstance(rsp, ScsiResponse) and rsp.itt == itt and rsp.status == 2
    assert bytes(rsp.data)[2 + 12 : 2 + 14] == b"\x4b\x00"  # ABORTED COMMAND, DATA PHASE ERROR
    assert pair.send(ini.data_out(itt, r2t.ttt, 0, 4096, data[4096:], True, lun=1)) == []  # type: ignore[attr-defined]
    assert not pair.target.is_closed and not pair.target.tasks
    assert pair.target.session.active == 0  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["offset", "beyond_burst", "ttt"])
def test_bad_data_out_drops_the_connection(bad: str) -> None:
    pair = logged_in()
    ini = pair.ini
    data = b"d" * (2 << 20)
    itt, wire = ini.scsi_command(WRITE10, lun=1, write_data=data, final=True, immediate_length=0)
    (r2t,) = pair.send(wire)
    assert isinstance(r2t, R2T)
    sn, off, n, ttt = 0, r2t.offset, 65536, r2t.ttt
    if bad == "offset":
        off += 512
    elif bad == "beyond_burst":
        off = r2t.offset + r2t.length - 512
        n = 1024
    else:
        ttt = r2t.ttt + 99
    answer = pair.send(ini.data_out(itt, ttt, sn, off, data[:n], False, lun=1))
    assert [type(p) for p in answer] == [Reject]
    assert isinstance(pair.take_events()[-1], ConnectionClosed)


def test_data_out_for_unknown_task_is_rejected_but_connection_lives() -> None:
    pair = logged_in()
    (rej,) = pair.send(pair.ini.data_out(0x1234, 77, 0, 0, b"z" * 512, True))
    assert isinstance(rej, Reject) and rej.reason == 0x09
    _itt, wire = pair.ini.nop_out(b"ping")
    (nop,) = pair.send(wire)
    assert isinstance(nop, NopIn)


def test_cmdsn_outside_the_window_is_silently_ignored() -> None:
    pair = logged_in()
    ini = pair.ini
    for delta in (-1, 5000):
        ini.cmd_sn = (pair.target.session.exp_cmd_sn + delta) & 0xFFFFFFFF  # type: ignore[union-attr]
        _itt, wire = ini.scsi_command(READ10, lun=1, read_length=512)
        assert pair.send(wire) == []
        assert pair.take_events() == []
    ini.cmd_sn = pair.target.session.exp_cmd_sn  # type: ignore[union-attr]
    pair.send(ini.scsi_command(READ10, lun=1, read_length=512)[1])
    assert isinstance(ready(pair), CommandReady)


def test_commands_are_delivered_in_cmdsn_order() -> None:
    pair = logged_in()
    ini = pair.ini
    base = ini.cmd_sn
    ini.cmd_sn = base + 1
    itt2, wire2 = ini.scsi_command(READ10, lun=1, read_length=512)
    ini.cmd_sn = base
    itt1, wire1 = ini.scsi_command(READ10, lun=1, read_length=512)
    pair.send(wire2)
    assert pair.take_events() == []  # held: CmdSN base is missing
    pair.send(wire1)
    assert [e.task.itt for e in pair.take_events()] == [itt1, itt2]  # type: ignore[attr-defined]


def test_window_closes_at_queue_depth_and_reopens() -> None:
    pair = logged_in(limits=TargetLimits(queue_depth=2))
    ini = pair.ini
    tasks = []
    for _ in range(3):
        pair.send(ini.scsi_command(READ10, lun=1, read_length=512)[1])
        tasks += [e.task for e in pair.take_events()]  # type: ignore[attr-defined]
    assert len(tasks) == 2  # the third was beyond MaxCmdSN
    pair.target.complete_command(tasks[0], 0, b"", [b"a" * 512])
    (din,) = pair.receive()
    assert din.max_cmd_sn == din.exp_cmd_sn  # type: ignore[attr-defined]  # one slot free again


def test_nop_out_ping_is_echoed() -> None:
    pair = logged_in()
    itt, wire = pair.ini.nop_out(b"hello", immediate=False)
    (nop,) = pair.send(wire)
    assert isinstance(nop, NopIn) and nop.itt == itt and nop.ttt == RESERVED_TAG and bytes(nop.data) == b"hello"


def test_target_ping_and_answer() -> None:
    pair = logged_in()
    pair.target.ping()
    (ping,) = pair.receive()
    assert isinstance(ping, NopIn) and ping.itt == RESERVED_TAG and ping.ttt != RESERVED_TAG
    assert pair.send(pair.ini.nop_out(ttt=ping.ttt)[1]) == []


def test_abort_task_drops_the_response() -> None:
    pair = logged_in()
    itt, wire = pair.ini.scsi_command(READ10, lun=1, read_length=512)
    pair.send(wire)
    task = ready(pair).task
    tmf_itt, wire = pair.ini.task_management(1, lun=1, referenced_itt=itt)
    assert pair.send(wire) == []
    (tmf,) = pair.take_events()
    assert isinstance(tmf, TaskManagement) and tmf.tasks == (task,)
    pair.target.complete_command(task, 0, b"", [b"x" * 512])
    assert pair.receive() == []
    pair.target.complete_task_management(tmf.request, 0)
    (rsp,) = pair.receive()
    assert isinstance(rsp, TaskMgmtResponse) and rsp.itt == tmf_itt and rsp.response == 0


def test_abort_of_an_unknown_task_completes() -> None:
    pair = logged_in()
    (rsp,) = pair.send(pair.ini.task_management(1, lun=1, referenced_itt=4242)[1])
    assert isinstance(rsp, TaskMgmtResponse) and rsp.response == 0


@pytest.mark.parametrize("function", [2, 3, 4, 6, 7, 8])
def test_other_tmfs_are_not_supported(function: int) -> None:
    pair = logged_in()
    (rsp,) = pair.send(pair.ini.task_management(function, lun=1)[1])
    assert isinstance(rsp, TaskMgmtResponse) and rsp.response == 5


def test_lun_reset_aborts_every_task_on_the_lun() -> None:
    pair = logged_in()
    for lun in (1, 1, 2):
        pair.send(pair.ini.scsi_command(READ10, lun=lun, read_length=512)[1])
    pair.take_events()
    pair.send(pair.ini.task_management(5, lun=1)[1])
    (tmf,) = pair.take_events()
    assert isinstance(tmf, TaskManagement) and sorted(t.lun for t in tmf.tasks) == [1, 1]


def test_logout_waits_for_outstanding_commands() -> None:
    pair = logged_in()
    pair.send(pair.ini.scsi_command(READ10, lun=1, read_length=512)[1])
    task = ready(pair).task
    itt, wire = pair.ini.logout()
    assert pair.send(wire) == []
    pair.target.complete_command(task, 0, b"", [b"r" * 512])
    din, logout = pair.receive()
    assert isinstance(din, DataIn) and isinstance(logout, LogoutResponse) and logout.itt == itt
    assert logout.response == 0 and logout.time2wait == 2
    assert isinstance(pair.take_events()[-1], ConnectionClosed)


def test_logout_for_recovery_is_not_supported() -> None:
    pair = logged_in()
    (rsp,) = pair.send(pair.ini.logout(reason=2)[1])
    assert isinstance(rsp, LogoutResponse) and rsp.response == 2


def test_snack_and_unknown_opcodes_are_rejected() -> None:
    pair = logged_in()
    (rej,) = pair.send(pair.ini.encode(SnackRequest(itt=1)))
    assert isinstance(rej, Reject) and rej.reason == 0x04
    bogus = bytearray(48)
    bogus[0] = 0x1C
    (rej,) = pair.send(bytes(bogus))
    assert isinstance(rej, Reject) and rej.reason == 0x05 and bytes(rej.data) == bytes(bogus)
    assert not pair.target.is_closed


def test_oversized_data_segment_closes() -> None:
    pair = logged_in()
    hdr = bytearray(48)
    hdr[0] = 0x40  # NOP-Out
    hdr[5:8] = (1 << 23).to_bytes(3, "big")
    answer = pair.send(bytes(hdr))
    assert [type(p) for p in answer] == [Reject]
    assert pair.target.is_closed


def test_digests_protect_every_pdu() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET, header_digest=True, data_digest=True)
    pair = Pair(ini)
    pair.login()
    pair.take_events()
    _itt, wire = ini.nop_out(b"abc")
    (nop,) = pair.send(wire)
    assert bytes(nop.data) == b"abc"  # type: ignore[attr-defined]
    # A flipped data byte: data digest error -> Reject, connection still usable.
    _itt, wire = ini.nop_out(b"xyz!")
    bad = bytearray(wire)
    bad[48 + 4] ^= 1
    (rej,) = pair.send(bytes(bad))
    assert isinstance(rej, Reject) and rej.reason == 0x02
    # A flipped header byte: header digest error -> the connection is dropped.
    _itt, wire = ini.nop_out(b"")
    bad = bytearray(wire)
    bad[20] ^= 1
    pair.send(bytes(bad))
    assert pair.target.is_closed


def test_importing_the_core_does_not_import_asyncio() -> None:
    code = "import sys, iscsikit.target.proto as p; p.TargetConnection; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
