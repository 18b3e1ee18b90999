"""The rules on write data a user relies on: a corrupt payload never reaches the disk, and the
negotiated ImmediateData, FirstBurstLength and InitialR2T are enforced, not just announced.

Each test asserts what the initiator's user would see: the write never runs (no CommandReady: no
backend write happens), and for a lost payload the connection is closed (at ERL 0 a command
whose data was dropped cannot finish, so the initiator must recover by reconnecting).
"""

from __future__ import annotations

from iscsikit.target.proto import CommandReady, ConnectionClosed, InitiatorConnection, TargetLimits
from iscsikit.target.proto.pdu import R2T, RESERVED_TAG, Reject

from .harness import INITIATOR, TARGET, Pair

WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 16, 0])
BHS = 48


def _digests() -> Pair:
    pair = Pair(InitiatorConnection(INITIATOR, target=TARGET, data_digest=True))
    pair.login()
    pair.take_events()
    return pair


def _logged_in(limits: TargetLimits) -> Pair:
    pair = Pair(limits=limits)
    pair.login()
    pair.take_events()
    return pair


def _flip(wire: bytes, at: int) -> bytes:
    bad = bytearray(wire)
    bad[at] ^= 1
    return bytes(bad)


def _no_write_ran(pair: Pair) -> bool:
    return not any(isinstance(e, CommandReady) for e in pair.take_events())


def test_a_data_out_with_a_bad_data_digest_closes_the_connection_and_writes_nothing() -> None:
    pair = _digests()
    data = b"w" * 8192
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=data, immediate_length=0)
    (r2t,) = pair.send(wire)
    assert isinstance(r2t, R2T)
    answer = pair.send(_flip(pair.ini.data_out(itt, r2t.ttt, 0, 0, data, True, lun=1), BHS + 4))
    assert [type(p) for p in answer] == [Reject] and answer[0].reason == 0x02  # type: ignore[attr-defined]
    assert pair.target.is_closed
    events = pair.take_events()
    assert not any(isinstance(e, CommandReady) for e in events) and isinstance(events[-1], ConnectionClosed)


def test_immediate_data_with_a_bad_data_digest_closes_the_connection_and_writes_nothing() -> None:
    pair = _digests()
    _itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"i" * 4096, immediate_length=4096)
    answer = pair.send(_flip(wire, BHS + 100))
    assert [type(p) for p in answer] == [Reject] and answer[0].reason == 0x02  # type: ignore[attr-defined]
    assert pair.target.is_closed
    events = pair.take_events()
    assert not any(isinstance(e, CommandReady) for e in events) and isinstance(events[-1], ConnectionClosed)


def test_immediate_data_is_refused_when_immediate_data_is_no() -> None:
    pair = _logged_in(TargetLimits(immediate_data=False))
    _itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"n" * 4096, immediate_length=4096)
    answer = pair.send(wire)
    assert [type(p) for p in answer] == [Reject] and answer[0].reason == 0x04  # type: ignore[attr-defined]
    assert _no_write_ran(pair)


def test_immediate_data_beyond_first_burst_length_is_refused() -> None:
    pair = _logged_in(TargetLimits(first_burst_length=8192))
    assert pair.target.session.params.first_burst_length == 8192  # type: ignore[union-attr]
    _itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=b"f" * 16384, immediate_length=16384)
    answer = pair.send(wire)
    assert [type(p) for p in answer] == [Reject] and answer[0].reason == 0x04  # type: ignore[attr-defined]
    assert _no_write_ran(pair)


def test_unsolicited_data_out_beyond_first_burst_length_closes_the_connection() -> None:
    pair = _logged_in(TargetLimits(first_burst_length=8192))
    data = b"u" * 32768
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=data, immediate_length=0, final=False)
    assert pair.send(wire) == []
    answer = pair.send(pair.ini.data_out(itt, RESERVED_TAG, 0, 0, data[:16384], True, lun=1))
    assert [type(p) for p in answer] == [Reject]
    assert pair.target.is_closed and _no_write_ran(pair)


def test_unsolicited_data_is_refused_when_initial_r2t_is_yes() -> None:
    pair = _logged_in(TargetLimits(initial_r2t=True, immediate_data=False))
    data = b"r" * 8192
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=data, immediate_length=0, final=False)
    answer = pair.send(wire)
    assert [type(p) for p in answer] == [Reject] and answer[0].reason == 0x04  # type: ignore[attr-defined]
    # The unsolicited Data-Out that follows finds no command to complete: nothing is written.
    pair.send(pair.ini.data_out(itt, RESERVED_TAG, 0, 0, data, True, lun=1))
    assert _no_write_ran(pair)


def test_unsolicited_data_out_that_fills_first_burst_length_without_the_f_bit_closes_the_connection() -> None:
    pair = _logged_in(TargetLimits(first_burst_length=8192))
    data = b"v" * 32768
    itt, wire = pair.ini.scsi_command(WRITE10, lun=1, write_data=data, immediate_length=0, final=False)
    assert pair.send(wire) == []
    answer = pair.send(pair.ini.data_out(itt, RESERVED_TAG, 0, 0, data[:8192], False, lun=1))
    assert [type(p) for p in answer] == [Reject]
    assert pair.target.is_closed and _no_write_ran(pair)
