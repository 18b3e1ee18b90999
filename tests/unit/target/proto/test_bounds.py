"""Bounds in the sans-IO core: max transfer length, write budget, immediate commands, login limits."""

from __future__ import annotations

import mmap

from iscsikit.target.buffers import WriteBudget
from iscsikit.target.proto import CommandReady, ConnectionClosed, InitiatorConnection, TargetConnection, TargetLimits
from iscsikit.target.proto.connection import ProtocolIssue, SessionStarted
from iscsikit.target.proto.errors import RemoteProtocolError
from iscsikit.target.proto.pdu import R2T, RESERVED_TAG, LoginResponse, Reject, ScsiCommand, ScsiResponse, encode_lun
from iscsikit.target.proto.session import Session, SessionTable

from .harness import INITIATOR, PORTAL, READ10, TARGET, Pair, directory

MiB = 1 << 20


def logged_in(budget: WriteBudget | None = None, **kw: object) -> Pair:
    pair = Pair(**kw)  # type: ignore[arg-type]
    if budget is not None:
        pair.target = TargetConnection(pair.directory, pair.table, PORTAL, budget=budget)
    pair.login()
    pair.take_events()
    return pair


def write10(lba: int, blocks: int) -> bytes:
    return bytes([0x2A, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"


def command(pair: Pair, cdb: bytes, edtl: int, *, write: bool, immediate: bool = False, data: bytes = b"") -> bytes:
    """A SCSI Command PDU with the W or R bit, optional immediate data, CmdSN from the initiator."""
    ini = pair.ini
    itt = ini.next_itt()
    cmd_sn = ini.cmd_sn
    if not immediate:
        ini.cmd_sn += 1
    return ini.encode(
        ScsiCommand(itt, encode_lun(1), cdb, edtl, cmd_sn, ini.exp_stat_sn, not write, write, True, 1, immediate,
                    None, data)
    )  # fmt: skip


def sense_key_asc(rsp: ScsiResponse) -> tuple[int, int]:
    sense = bytes(rsp.data)[2:]
    return sense[2] & 0x0F, sense[12]


def test_a_write_over_max_transfer_length_gets_check_condition_and_allocates_nothing() -> None:
    budget = WriteBudget(1 << 30)
    pair = logged_in(budget, limits=TargetLimits(max_transfer_length=MiB))
    # 64 MiB announced with 4 KiB of immediate data, more unsolicited data promised (F=0 would
    # need InitialR2T=No: the harness negotiates it).
    (rsp,) = pair.send(command(pair, write10(0, 2 * MiB // 512), 64 * MiB, write=True, data=b"x" * 4096))
    assert isinstance(rsp, ScsiResponse) and rsp.status == 2 and sense_key_asc(rsp) == (0x05, 0x24)
    assert budget.used == 0 and pair.target.buffered_bytes == 0 and not pair.target.tasks
    events = pair.take_events()
    assert not any(isinstance(e, CommandReady) for e in events)
    assert any(isinstance(e, ProtocolIssue) and e.kind == "transfer too long" for e in events)
    # A READ with an EDTL over the limit too, and the session goes on.
    (rsp,) = pair.send(command(pair, bytes([0x28]) + bytes(9), MiB + 512, write=False))
    assert isinstance(rsp, ScsiResponse) and sense_key_asc(rsp) == (0x05, 0x24)
    pair.take_events()
    _itt, wire = pair.ini.scsi_command(bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]), lun=1, read_length=4096)
    assert pair.send(wire) == []
    assert [type(e) for e in pair.take_events()] == [CommandReady]


def test_exactly_max_transfer_length_is_accepted() -> None:
    pair = logged_in(limits=TargetLimits(max_transfer_length=MiB))
    (r2t,) = pair.send(command(pair, write10(0, MiB // 512), MiB, write=True))
    assert isinstance(r2t, R2T) and r2t.length == MiB


def test_writes_over_the_budget_get_task_set_full_and_the_budget_comes_back() -> None:
    budget = WriteBudget(32 * MiB)  # a connection may hold a quarter: 8 MiB
    pair = logged_in(budget)
    answers = pair.send(b"".join(command(pair, write10(i * 8192, 8192), 4 * MiB, write=True) for i in range(4)))
    assert [type(p) for p in answers] == [R2T, R2T, ScsiResponse, ScsiResponse]
    assert all(p.status == 0x28 for p in answers[2:])  # type: ignore[attr-defined]
    assert budget.used == 8 * MiB and budget.refused == 2
    # A second connection still gets its share.
    other = Pair(table=pair.table)
    other.target = TargetConnection(other.directory, other.table, PORTAL, budget=budget)
    other.ini = InitiatorConnection(INITIATOR, target=TARGET, isid=b"\x80\0\0\0\0\x02")
    other.login()
    (r2t,) = other.send(command(other, write10(0, 8192), 4 * MiB, write=True))
    assert isinstance(r2t, R2T) and budget.used == 12 * MiB
    # Closing a connection gives its buffers back.
    pair.target.abort_all()
    pair.target.close()
    other.target.abort_all()
    assert budget.used == 0


def test_one_connection_may_hold_a_quarter_of_the_write_budget() -> None:
    budget = WriteBudget(64 * MiB)  # a quarter, 16 MiB, is more than one 8 MiB transfer
    pair = logged_in(budget)
    answers = pair.send(b"".join(command(pair, write10(i * 8192, 8192), 4 * MiB, write=True) for i in range(5)))
    assert [type(p) for p in answers] == [R2T, R2T, R2T, R2T, ScsiResponse]
    assert answers[4].status == 0x28 and budget.used == 16 * MiB  # type: ignore[attr-defined]


def test_a_fresh_connection_has_nothing_and_closes_before_login_without_a_session() -> None:
    table = SessionTable()
    conn = TargetConnection(directory(), table, PORTAL)
    assert (conn.session, conn.stat_sn, conn.exp_stat_sn, conn.tasks) == (None, 0, 0, {})
    assert (conn.buffered_bytes, conn.ready_bytes, conn.pdus_in, conn.data_outs_in) == (0, 0, 0, 0)
    assert conn.status() == {
        "phase": conn.phase.value, "initiator": None, "isid": None, "tsih": None, "tasks": 0,
        "header_digest": False, "data_digest": False,
    }  # fmt: skip
    conn.close()  # the peer went away during login, or the connection was refused at accept
    assert conn.is_closed and not table.by_tsih


def test_large_write_buffers_are_mappings_committed_as_data_arrives() -> None:
    pair = logged_in()
    pair.send(command(pair, write10(0, 4 * MiB // 512), 4 * MiB, write=True))
    (task,) = pair.target.tasks.values()
    assert isinstance(task.buffer, mmap.mmap) and len(task.buffer) == 4 * MiB
    pair.send(command(pair, write10(0, 8), 4096, write=True))
    small = [t for t in pair.target.tasks.values() if t.expected_length == 4096]
    assert isinstance(small[0].buffer, bytearray)


def test_immediate_commands_share_the_queue_depth() -> None:
    pair = logged_in(limits=TargetLimits(queue_depth=4))
    answers = pair.send(b"".join(command(pair, write10(i * 8, 8), 4096, write=True, immediate=True) for i in range(10)))
    r2ts = [p for p in answers if isinstance(p, R2T)]
    full = [p for p in answers if isinstance(p, ScsiResponse) and p.status == 0x28]
    assert len(r2ts) == 4 and len(full) == 6
    # With the depth taken by immediates, an in-window ordinary command is answered TASK SET FULL too.
    (rsp,) = pair.send(command(pair, write10(100, 8), 4096, write=True))
    assert isinstance(rsp, ScsiResponse) and rsp.status == 0x28
    # Data for one R2T: its command becomes ready, completes, and frees a slot.
    r2t = r2ts[0]
    pair.send(pair.ini.data_out(r2t.itt, r2t.ttt, 0, 0, b"d" * 4096, True, lun=1))
    (ready,) = [e for e in pair.take_events() if isinstance(e, CommandReady)]
    pair.target.complete_command(ready.task, 0)
    pair.receive()
    (r2t2,) = pair.send(command(pair, write10(200, 8), 4096, write=True, immediate=True))
    assert isinstance(r2t2, R2T)


def test_refusals_are_answered_in_cmdsn_order() -> None:
    pair = logged_in(limits=TargetLimits(max_transfer_length=MiB))
    first = command(pair, bytes([0x00]) + bytes(15), 0, write=False)  # TEST UNIT READY, CmdSN n
    second = command(pair, write10(0, 4096), 2 * MiB, write=True)  # over the limit, CmdSN n+1
    assert pair.send(second) == []  # ahead of a gap: waits
    answers = pair.send(first)
    assert [type(p) for p in answers] == [ScsiResponse]  # the refusal, once its turn came
    assert [type(e) for e in pair.take_events() if not isinstance(e, ProtocolIssue)] == [CommandReady]


def test_login_pdus_over_8192_bytes_end_the_login() -> None:
    pair = Pair()
    ini = pair.ini
    keys = ini._leading() + ini._operational() + [(f"X-pad{i}", "p" * 100) for i in range(90)]
    from iscsikit.target.proto.text import encode_text

    wire = ini._login(1, 3, True, keys)
    assert len(encode_text(keys)) > 8192
    answers = pair.send(wire)
    assert len(pair.target._buf) <= 16 << 10  # a connection that never logs in keeps a small scratch
    assert answers and isinstance(answers[0], LoginResponse) and answers[0].status != 0
    assert any(isinstance(e, ConnectionClosed) for e in pair.take_events())


def test_admit_hook_refuses_a_login_with_out_of_resources() -> None:
    pair = Pair()
    seen: list[tuple[Session, Session | None]] = []

    def admit(session: Session, replaced: Session | None) -> str | None:
        seen.append((session, replaced))
        return "too many sessions"

    pair.target.admit = admit
    wire = pair.ini.login_request()
    (rsp,) = pair.send(wire)
    assert isinstance(rsp, LoginResponse) and rsp.status == 0x0302
    assert [(s.initiator_name, r) for s, r in seen] == [(INITIATOR, None)]
    assert not pair.table.by_tsih and not pair.table.by_key
    (closed,) = [e for e in pair.take_events() if isinstance(e, ConnectionClosed)]
    assert closed.reason == "login refused: too many sessions"  # what the target's log shows
    assert isinstance(closed.error, RemoteProtocolError) and closed.error.close
    assert closed.error.header == wire[:48]


def test_admit_hook_is_not_asked_again_when_a_connection_takes_its_session_over() -> None:
    table = SessionTable()
    seen: list[tuple[Session, Session | None]] = []

    def admit(session: Session, replaced: Session | None) -> str | None:
        seen.append((session, replaced))
        return None if len(seen) < 3 else "no more"

    first = Pair(table=table)
    first.target.admit = admit
    first.login()
    session = first.target.session
    assert session is not None and seen == [(session, None)]
    first.send(first.ini.scsi_command(READ10, lun=1, read_length=512)[1])
    (running,) = first.target.tasks.values()
    # Connection reinstatement (RFC 7143 6.3.4): same session, no new admission; the old
    # connection's commands are aborted.
    again = Pair(InitiatorConnection(INITIATOR, target=TARGET), table=table)
    again.ini.tsih = session.tsih
    again.target.admit = admit
    again.login()
    assert again.target.session is session and len(seen) == 1
    assert running.state.value == "aborted" and session.connection is again.target
    assert [e for e in again.take_events() if isinstance(e, SessionStarted)] == [SessionStarted(session, session)]
    # Session reinstatement (same ISID, TSIH 0): a new session, admitted knowing what it replaces.
    third = Pair(InitiatorConnection(INITIATOR, target=TARGET), table=table)
    third.target.admit = admit
    third.login()
    assert len(seen) == 2 and seen[1] == (third.target.session, session)


def test_a_connection_remembers_the_last_1024_refused_or_aborted_tasks_not_every_one() -> None:
    pair = logged_in(limits=TargetLimits(max_transfer_length=MiB))
    itts = []
    wires = []
    for _ in range(1025):
        itt = pair.ini._itt + 1
        wires.append(command(pair, bytes(10), 2 * MiB, write=False))
        itts.append(itt)
    answers = pair.send(b"".join(wires))
    assert len(answers) == 1025 and all(p.status == 0x02 for p in answers)  # type: ignore[attr-defined]
    # Late data for one of the last 1024 is dropped quietly; the oldest is forgotten: unknown task.
    assert pair.send(pair.ini.data_out(itts[1], RESERVED_TAG, 0, 0, b"x" * 512, True, lun=1)) == []
    (rej,) = pair.send(pair.ini.data_out(itts[0], RESERVED_TAG, 0, 0, b"x" * 512, True, lun=1))
    assert isinstance(rej, Reject) and rej.reason == 0x09


def test_immediate_data_fits_the_process_write_budget_exactly_and_no_further() -> None:
    budget = WriteBudget(8 * MiB)
    first = logged_in(budget)
    (r2t,) = first.send(command(first, write10(0, 8192), 4 * MiB, write=True))
    assert isinstance(r2t, R2T) and budget.used == 4 * MiB
    other = Pair(InitiatorConnection(INITIATOR, target=TARGET, isid=b"\x80\0\0\0\0\x02"), table=first.table)
    other.target = TargetConnection(other.directory, other.table, PORTAL, budget=budget)
    other.login()
    # 4 MiB more is exactly the budget: taken, its immediate data received in place.
    (r2t,) = other.send(command(other, write10(8192, 8192), 4 * MiB, write=True, data=b"i" * 4096))
    assert isinstance(r2t, R2T) and r2t.offset == 4096 and budget.used == 8 * MiB
    # One more byte's worth of write is over it: TASK SET FULL, nothing more held.
    for lba in (16384, 16392):
        (rsp,) = other.send(command(other, write10(lba, 8), 4096, write=True, data=b"j" * 4096))
        assert isinstance(rsp, ScsiResponse) and rsp.status == 0x28
    assert budget.used == 8 * MiB and budget.refused == 2  # each refusal counted
