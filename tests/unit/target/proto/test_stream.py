"""However TCP cuts the byte stream, the target sees the same PDUs and answers the same bytes.

A reference conversation (login, reads and writes of odd sizes, immediate, unsolicited and
solicited data, NOP-Out, text, logout) is recorded once with whole PDUs; then the initiator's
byte stream is fed again in pieces of many sizes (one byte at a time included), through
``get_buffer``/``buffer_updated`` as the server's BufferedProtocol does. The answers on the wire,
the events and the data each write delivers must be identical: a header split across reads, a
payload received straight into its task buffer, a digest trailer arriving alone, all land the
same.
"""

from __future__ import annotations

import functools
import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st

from iscsikit.target.proto import NEED_DATA, CommandReady, InitiatorConnection, SessionTable, TargetConnection
from iscsikit.target.proto.pdu import PDU, R2T, RESERVED_TAG, DataIn, LogoutResponse, NopIn, ScsiResponse, TextResponse
from tests.support.profiles import examples

from .harness import INITIATOR, PORTAL, TARGET, directory

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
WRITE10 = bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 8, 0])


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) & 0xFF for i in range(n))


class Driver:
    """Plays the server: completes every command at once, records what the target did."""

    def __init__(self) -> None:
        self.target = TargetConnection(directory(), SessionTable(), PORTAL)
        self.events: list[str] = []
        self.written: list[bytes] = []
        self.out = bytearray()

    def pump(self) -> bytes:
        t = self.target
        while (ev := t.next_event()) is not NEED_DATA:
            self.events.append(type(ev).__name__)
            if isinstance(ev, CommandReady):
                task = ev.task
                if task.write:
                    self.written.append(bytes(task.data_out))  # type: ignore[arg-type]
                    t.complete_command(task, 0, expected_data_out=task.expected_length)
                else:
                    t.complete_command(task, 0, b"", [pattern(task.expected_length, task.itt)])
        new = b"".join(bytes(b) for b in t.data_to_send())
        self.out += new
        return new

    def feed(self, data: bytes, sizes: list[int]) -> None:
        """Feed ``data`` in pieces of ``sizes`` (cycled), pumping after each piece."""
        view = memoryview(data)
        for size in itertools.cycle(sizes):
            if not view:
                return
            buf = self.target.get_buffer()
            assert len(buf) > 0
            n = min(len(buf), size, len(view))
            buf[:n] = view[:n]
            self.target.buffer_updated(n)
            view = view[n:]
            self.pump()


@functools.cache
def conversation(hd: bool, dd: bool) -> tuple[bytes, Driver]:
    """The initiator's whole byte stream, and the reference run that produced it.

    The initiator checks what it gets (digests, data, statuses, StatSN order): the reference
    itself must be right, not only equal to the cut runs.
    """
    ini = InitiatorConnection(INITIATOR, target=TARGET, header_digest=hd, data_digest=dd)
    ref = Driver()
    stream = bytearray()
    got: list[PDU] = []

    def send(wire: bytes) -> list[PDU]:
        stream.extend(wire)
        ref.target.receive_data(wire)
        new = ini.feed(ref.pump())  # raises on a digest mismatch
        got.extend(new)
        return new

    pdus = send(ini.login_request())
    while (nxt := ini.login_response(pdus[0])) is not None:  # type: ignore[arg-type]
        pdus = send(nxt)
    assert (ini._hd, ini._dd) == (hd, dd)
    for n in (4093, 300001):
        itt, wire = ini.scsi_command(READ10, lun=1, read_length=n)
        send(wire)
        data_in = [p for p in got if isinstance(p, DataIn) and p.itt == itt]
        assert b"".join(b"".join(bytes(x) for x in p.data) for p in data_in) == pattern(n, itt)
        assert data_in[-1].status_present and data_in[-1].status == 0 and not data_in[-1].underflow
    send(ini.scsi_command(WRITE10, lun=1, write_data=pattern(1021, 1), immediate_length=1021)[1])
    big = pattern(70001, 2)
    itt, wire = ini.scsi_command(WRITE10, lun=1, write_data=big, immediate_length=5003, final=False)
    send(wire)
    answers = send(ini.data_out(itt, RESERVED_TAG, 0, 5003, big[5003:9001], True, lun=1))
    (r2t,) = [p for p in answers if isinstance(p, R2T)]
    assert (r2t.offset, r2t.length, r2t.r2t_sn) == (9001, 70001 - 9001, 0)
    send(ini.data_out(itt, r2t.ttt, 0, 9001, big[9001:40000], False, lun=1))
    send(ini.data_out(itt, r2t.ttt, 1, 40000, big[40000:], True, lun=1))
    (nop,) = send(ini.nop_out(b"ping!")[1])
    assert isinstance(nop, NopIn) and bytes(nop.data) == b"ping!"
    (txt,) = send(ini.text([("SendTargets", "")])[1])
    assert isinstance(txt, TextResponse) and bytes(txt.data).startswith(f"TargetName={TARGET}\0".encode())
    (bye,) = send(ini.logout()[1])
    assert isinstance(bye, LogoutResponse) and bye.response == 0
    assert ref.written == [pattern(1021, 1), big] and ref.events[-1] == "ConnectionClosed"
    writes = [p for p in got if isinstance(p, ScsiResponse)]
    assert [(p.status, p.overflow, p.underflow) for p in writes] == [(0, False, False)] * 2
    # Every PDU with a status took the next StatSN, in the order sent.
    with_status = [
        p.stat_sn  # type: ignore[attr-defined]
        for p in got
        if not isinstance(p, R2T) and (not isinstance(p, DataIn) or p.status_present)
    ]
    assert with_status == list(range(with_status[0], with_status[0] + len(with_status)))
    return bytes(stream), ref


@settings(max_examples=examples(10))
@given(
    hd=st.booleans(),
    dd=st.booleans(),
    sizes=st.lists(st.one_of(st.integers(1, 60), st.integers(61, 70000)), min_size=1, max_size=12),
)
@example(hd=True, dd=True, sizes=[1, 3, 61, 5, 9000])
@example(hd=False, dd=False, sizes=[47, 49, 3])
@example(hd=True, dd=True, sizes=[52, 5, 4000, 3])
def test_any_cut_of_the_stream_gives_the_same_answers(hd: bool, dd: bool, sizes: list[int]) -> None:
    stream, ref = conversation(hd, dd)
    run = Driver()
    run.feed(stream, sizes)
    assert run.written == ref.written
    assert run.events == ref.events
    assert bytes(run.out) == bytes(ref.out)


@functools.cache
def discovery_conversation() -> tuple[bytes, Driver, list[bytes]]:
    """A discovery session keeps its 16 KiB login scratch: 300 small NOP-Outs wrap around it many
    times, and one 20000-byte NOP-Out needs it to grow."""
    ini = InitiatorConnection(INITIATOR)
    ref = Driver()
    stream = bytearray()
    echoes: list[bytes] = []

    def send(wire: bytes) -> list[PDU]:
        # Through get_buffer/buffer_updated with events taken after each piece, as the server
        # does: receive_data alone cannot push a PDU larger than the scratch buffer.
        stream.extend(wire)
        before = len(ref.out)
        ref.feed(wire, [len(wire)])
        new = ini.feed(bytes(ref.out[before:]))
        echoes.extend(bytes(p.data) for p in new if isinstance(p, NopIn))
        return new

    pdus = send(ini.login_request())
    while (nxt := ini.login_response(pdus[0])) is not None:  # type: ignore[arg-type]
        pdus = send(nxt)
    sent = [pattern(97 + i % 13, i) for i in range(300)]
    sent.insert(150, pattern(20000, 7))
    for data in sent:
        send(ini.nop_out(data)[1])
    assert echoes == sent and len(ref.target._buf) < 64 << 10
    return bytes(stream), ref, sent


@settings(max_examples=examples(5))
@given(sizes=st.lists(st.one_of(st.integers(1, 60), st.integers(61, 30000)), min_size=1, max_size=8))
@example(sizes=[4096])
@example(sizes=[1000, 7])
def test_small_and_large_pdus_through_a_small_scratch_buffer(sizes: list[int]) -> None:
    stream, ref, _sent = discovery_conversation()
    run = Driver()
    run.feed(stream, sizes)
    assert run.events == ref.events
    assert bytes(run.out) == bytes(ref.out)
