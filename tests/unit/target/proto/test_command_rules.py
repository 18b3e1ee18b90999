"""SCSI Command PDUs the target refuses, and the edge cases it accepts.

A refused command is answered with a Reject naming the reason (the initiator's error
handling keys on it), never runs, holds no buffer, and leaves the connection usable.
"""

from __future__ import annotations

import pytest

from iscsikit.target.buffers import WriteBudget
from iscsikit.target.proto import CommandReady, InitiatorConnection, TargetConnection, TargetLimits
from iscsikit.target.proto.connection import ProtocolIssue
from iscsikit.target.proto.pdu import R2T, RESERVED_TAG, NopIn, Reject, ScsiCommand, ScsiResponse, encode_lun

from .harness import INITIATOR, PORTAL, READ10, TARGET, WRITE10, Pair, logged_in


def command(
    pair: Pair, *, itt: int | None = None, edtl: int, read: bool = False, write: bool = False, final: bool = True,
    data: bytes = b"", immediate: bool = False, cdb: bytes = WRITE10,
) -> bytes:  # fmt: skip
    ini = pair.ini
    cmd_sn = ini.cmd_sn
    if not immediate:
        ini.cmd_sn += 1
    tag = ini.next_itt() if itt is None else itt
    return ini.encode(ScsiCommand(tag, encode_lun(1), cdb, edtl, cmd_sn, ini.exp_stat_sn, read, write, final, 1,
                                  immediate, None, data))  # fmt: skip


def refused(pair: Pair, wire: bytes, reason: int) -> None:
    answer = pair.send(wire)
    assert [type(p) for p in answer] == [Reject], answer
    assert answer[0].reason == reason  # type: ignore[attr-defined]
    assert not any(isinstance(e, CommandReady) for e in pair.take_events())
    assert not pair.target.is_closed
    (nop,) = pair.send(pair.ini.nop_out(b"alive")[1])
    assert isinstance(nop, NopIn)


def test_an_itt_in_use_is_rejected() -> None:
    pair = logged_in()
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"a" * 4096, immediate_length=0)
    (r2t,) = pair.send(wire)
    assert isinstance(r2t, R2T)
    refused(pair, command(pair, itt=itt, edtl=512, read=True, cdb=READ10), 0x09)
    refused(pair, command(pair, itt=itt, edtl=4096, write=True, data=b"b" * 1024), 0x09)
    assert pair.target._budget.used == 4096  # only the first write's buffer


def test_the_reserved_itt_is_rejected() -> None:
    pair = logged_in()
    refused(pair, command(pair, itt=RESERVED_TAG, edtl=512, read=True, cdb=READ10), 0x09)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"edtl": 4096, "read": True, "data": b"r" * 512}, 0x09),  # immediate data without the W bit
        ({"edtl": 1000, "write": True, "data": b"w" * 2000}, 0x09),  # longer than its EDTL
        ({"edtl": 512, "read": True, "final": False}, 0x04),  # F=0 announces Data-Out a read never has
    ],
)
def test_impossible_data_announcements_are_rejected(kw: dict[str, object], reason: int) -> None:
    pair = logged_in()
    refused(pair, command(pair, **kw), reason)  # type: ignore[arg-type]
    assert (pair.target._budget.used, pair.target.buffered_bytes) == (0, 0)


def test_a_write_of_nothing_is_ready_at_once() -> None:
    pair = logged_in()
    assert pair.send(command(pair, edtl=0, write=True)) == []
    (ev,) = pair.take_events()
    assert isinstance(ev, CommandReady) and ev.task.buffer is None and ev.task.write


def test_a_write_whose_data_is_all_immediate_is_ready_at_once() -> None:
    pair = logged_in()
    assert pair.send(command(pair, edtl=4096, write=True, data=b"i" * 4096)) == []
    (ev,) = pair.take_events()
    assert isinstance(ev, CommandReady) and bytes(ev.task.data_out) == b"i" * 4096  # type: ignore[arg-type]
    assert pair.target.ready_bytes == 4096 == pair.target.buffered_bytes


def test_immediate_data_and_r2t_for_the_rest_in_one_buffer() -> None:
    pair = logged_in()
    body = bytes(range(256)) * 32
    (r2t,) = pair.send(command(pair, edtl=len(body), write=True, data=body[:3000]))
    assert isinstance(r2t, R2T) and (r2t.offset, r2t.length) == (3000, len(body) - 3000)
    assert pair.target.buffered_bytes == len(body) and pair.target.ready_bytes == 0
    pair.send(pair.ini.data_out(r2t.itt, r2t.ttt, 0, 3000, body[3000:], True, lun=1))
    (ev,) = pair.take_events()
    assert isinstance(ev, CommandReady) and bytes(ev.task.data_out) == body  # type: ignore[arg-type]


def test_a_write_ahead_of_a_cmd_sn_gap_waits_with_its_data() -> None:
    pair = logged_in()
    ini = pair.ini
    base = ini.cmd_sn
    ini.cmd_sn = base + 1
    later = command(pair, edtl=4096, write=True, data=b"L" * 4096)
    ini.cmd_sn = base
    first = command(pair, edtl=512, read=True, cdb=READ10)
    assert pair.send(later) == [] and pair.take_events() == []
    pair.send(first)
    events = [e for e in pair.take_events() if isinstance(e, CommandReady)]
    assert [e.task.read for e in events] == [True, False]
    assert bytes(events[1].task.data_out) == b"L" * 4096  # type: ignore[arg-type]


def test_a_write_beyond_the_per_connection_share_gets_task_set_full_with_its_immediate_data() -> None:
    budget = WriteBudget(4 << 20)  # a connection may hold max(1 MiB, max_transfer_length)
    pair = Pair(limits=TargetLimits(max_transfer_length=1 << 20))
    pair.target = TargetConnection(pair.directory, pair.table, PORTAL, budget=budget)
    pair.login()
    pair.take_events()
    answers = pair.send(command(pair, edtl=1 << 20, write=True, data=b"x" * 8192))
    assert [type(p) for p in answers] == [R2T]
    answers = pair.send(command(pair, edtl=4096, write=True, data=b"y" * 4096))
    assert [type(p) for p in answers] == [ScsiResponse] and answers[0].status == 0x28  # type: ignore[attr-defined]
    issues = [e for e in pair.take_events() if isinstance(e, ProtocolIssue)]
    assert [i.kind for i in issues] == ["task set full"]
    assert "answered TASK SET FULL (queue depth or write buffer budget reached)" in issues[0].message
    assert budget.used == 1 << 20 and budget.refused == 1


def test_a_command_received_with_header_digest_is_checked() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET, header_digest=True)
    pair = Pair(ini)
    pair.login()
    pair.take_events()
    _itt, wire = ini.scsi_command(READ10, lun=1, read_length=512)
    bad = bytearray(wire)
    bad[48] ^= 0xFF  # the digest itself
    pair.send(bytes(bad))
    assert pair.target.is_closed and not any(isinstance(e, CommandReady) for e in pair.take_events())
