"""The full feature phase rule by rule: NOP-Out and pings, text exchanges (SendTargets and
MaxRecvDataSegmentLength), logout, the target's own requests (ping, logout request), and the
state a closed connection leaves behind. Each test asserts the PDU the initiator receives
(fields included), or the Reject with its reason, and whether the connection lives on.
"""

from __future__ import annotations

import pytest

from iscsikit.target.proto import (
    NEED_DATA,
    CommandReady,
    ConnectionClosed,
    InitiatorConnection,
    SessionStarted,
    TargetLimits,
)
from iscsikit.target.proto.pdu import (
    RESERVED_TAG,
    AsyncMessage,
    DataIn,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Reject,
    TextRequest,
    TextResponse,
)
from iscsikit.target.proto.session import InitiatorAcl
from iscsikit.target.proto.text import decode_text, encode_text

from .harness import INITIATOR, TARGET, Pair

READ10 = bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
SECOND = "iqn.2026-11.org.example:second"


def logged_in(ini: InitiatorConnection | None = None, **kw: object) -> Pair:
    pair = Pair(ini, **kw)  # type: ignore[arg-type]
    pair.login()
    pair.take_events()
    return pair


def discovery(**kw: object) -> Pair:
    return logged_in(InitiatorConnection(INITIATOR), **kw)


def rejected(answer: list[object], reason: int) -> Reject:
    assert [type(p) for p in answer] == [Reject], answer
    rej = answer[0]
    assert isinstance(rej, Reject) and rej.reason == reason
    assert len(rej.data) == 48 and rej.data[0] & 0x3F in (0x00, 0x04, 0x06)  # the refused request's header
    return rej


def nop(
    pair: Pair, itt: int, ttt: int = RESERVED_TAG, *, immediate: bool = True, lun: int = 0, data: bytes = b""
) -> bytes:
    ini = pair.ini
    cmd_sn = ini.cmd_sn
    if not immediate:
        ini.cmd_sn += 1
    return ini.encode(NopOut(itt, ttt, cmd_sn, ini.exp_stat_sn, lun, immediate, data))


# -- NOP-Out ------------------------------------------------------------------------------------


def test_a_nop_out_ping_is_answered_with_its_lun_and_data() -> None:
    pair = logged_in()
    stat_sn = pair.target.stat_sn
    lun = 0x0001_0000_0000_0000
    (nop_in,) = pair.send(nop(pair, 0x77, lun=lun, data=b"hello, target"))
    assert isinstance(nop_in, NopIn)
    assert (nop_in.itt, nop_in.ttt, nop_in.lun, bytes(nop_in.data)) == (0x77, RESERVED_TAG, lun, b"hello, target")
    assert nop_in.stat_sn == stat_sn and pair.target.stat_sn == stat_sn + 1


def test_an_immediate_unsolicited_nop_out_gets_no_answer() -> None:
    pair = logged_in()
    assert pair.send(nop(pair, RESERVED_TAG)) == []
    assert not pair.target.is_closed


def test_a_non_immediate_nop_out_with_the_reserved_itt_is_rejected() -> None:
    pair = logged_in()
    rejected(pair.send(nop(pair, RESERVED_TAG, immediate=False)), 0x04)
    assert not pair.target.is_closed


def test_a_nop_out_with_a_ttt_must_have_the_reserved_itt() -> None:
    pair = logged_in()
    rejected(pair.send(nop(pair, 0x10, 0x55)), 0x04)
    assert not pair.target.is_closed


def test_the_answer_to_a_target_ping_is_taken_once() -> None:
    pair = logged_in()
    pair.target.ping()
    (ping,) = pair.receive()
    assert isinstance(ping, NopIn) and ping.itt == RESERVED_TAG and ping.ttt == 1
    assert ping.stat_sn == pair.target.stat_sn  # a ping does not take a StatSN
    assert pair.send(nop(pair, RESERVED_TAG, ping.ttt, immediate=False)) == []  # the answer
    # The same answer again is no longer an answer to anything: a non-immediate NOP-Out with the
    # reserved ITT.
    rejected(pair.send(nop(pair, RESERVED_TAG, ping.ttt, immediate=False)), 0x04)
    pair.target.ping()
    (again,) = pair.receive()
    assert isinstance(again, NopIn) and again.ttt == 2


def test_the_target_pings_and_asks_for_logout_only_in_full_feature_phase() -> None:
    pair = Pair()
    pair.target.ping()
    pair.target.request_logout(5)
    assert pair.target.data_to_send() == []
    pair.login()
    pair.target.request_logout(7)
    (msg,) = pair.receive()
    assert isinstance(msg, AsyncMessage) and (msg.event, msg.parameter3) == (1, 7)
    assert (msg.stat_sn, msg.exp_cmd_sn) == (pair.target.stat_sn, pair.target.session.exp_cmd_sn)  # type: ignore[union-attr]
    pair.target.request_logout()
    (msg,) = pair.receive()
    assert isinstance(msg, AsyncMessage) and msg.parameter3 == 2
    pair.send(pair.ini.logout()[1])
    pair.target.ping()
    pair.target.request_logout()
    assert pair.target.data_to_send() == []


# -- text ---------------------------------------------------------------------------------------


def text(pair: Pair, pairs: list[tuple[str, str]]) -> TextResponse:
    (resp,) = pair.send(pair.ini.text(pairs)[1])
    assert isinstance(resp, TextResponse) and resp.final and resp.ttt == RESERVED_TAG
    return resp


def pairs_of(data: bytes) -> list[tuple[str, str]]:
    """SendTargets answers repeat keys (one TargetAddress per portal): split them by hand."""
    return [tuple(kv.decode().split("=", 1)) for kv in data.split(b"\0") if kv]  # type: ignore[misc]


def names(resp: TextResponse) -> list[str]:
    return [v for k, v in pairs_of(bytes(resp.data)) if k == "TargetName"]


def test_sendtargets_answers_by_session_type() -> None:
    normal = logged_in(extra=(SECOND,))
    assert names(text(normal, [("SendTargets", "")])) == [TARGET]
    assert names(text(normal, [("SendTargets", "All")])) == [TARGET]
    assert names(text(normal, [("SendTargets", TARGET)])) == [TARGET]
    assert names(text(normal, [("SendTargets", SECOND)])) == []  # another target: not this session's
    disc = discovery(extra=(SECOND,))
    assert names(text(disc, [("SendTargets", "All")])) == [TARGET, SECOND]
    assert names(text(disc, [("SendTargets", SECOND)])) == [SECOND]
    assert names(text(disc, [("SendTargets", "iqn.2026-11.org.example:none")])) == []


def test_sendtargets_hides_a_named_target_the_acl_refuses() -> None:
    disc = discovery(acls=(InitiatorAcl("iqn.2026-11.org.example:other"),), extra=(SECOND,))
    assert names(text(disc, [("SendTargets", TARGET)])) == []
    assert names(text(disc, [("SendTargets", "All")])) == [SECOND]


@pytest.mark.parametrize("value", ["foo", "iqn.with space", "iqn." + "x" * 220, "All "])
def test_sendtargets_with_a_value_that_is_no_target_name_is_rejected(value: str) -> None:
    disc = discovery()
    rejected(disc.send(disc.ini.text([("SendTargets", value)])[1]), 0x09)
    assert not disc.target.is_closed


@pytest.mark.parametrize("value", ["iqn." + "x" * 219, "eui.0123456789abcdef", "naa.6001405abcdef"])
def test_sendtargets_with_a_well_formed_unknown_name_answers_nothing(value: str) -> None:
    disc = discovery()
    assert names(text(disc, [("SendTargets", value)])) == []


@pytest.mark.parametrize(("value", "answer", "mrdsl"), [("512", None, 512), ("16777215", None, 16777215),
                                                        ("511", "Reject", 262144), ("16777216", "Reject", 262144),
                                                        ("0x200", "Reject", 262144)])  # fmt: skip
def test_max_recv_data_segment_length_in_full_feature_phase(value: str, answer: str | None, mrdsl: int) -> None:
    pair = logged_in()
    resp = text(pair, [("MaxRecvDataSegmentLength", value), ("X-vendor.key", "1")])
    expected = [("X-vendor.key", "NotUnderstood")]
    if answer is not None:
        expected.insert(0, ("MaxRecvDataSegmentLength", answer))
    assert decode_text(resp.data) == expected
    assert pair.target.session.params.max_send_data_segment_length == mrdsl  # type: ignore[union-attr]


def test_a_smaller_max_recv_data_segment_length_splits_later_reads() -> None:
    pair = logged_in()
    text(pair, [("MaxRecvDataSegmentLength", "1024")])
    pair.send(pair.ini.scsi_command(READ10, lun=1, read_length=4096)[1])
    (ready,) = pair.take_events()
    assert isinstance(ready, CommandReady)
    pair.target.complete_command(ready.task, 0, b"", [bytes(range(256)) * 16])
    pdus = pair.receive()
    assert [len(b"".join(p.data)) for p in pdus] == [1024] * 4  # type: ignore[attr-defined]
    assert all(isinstance(p, DataIn) for p in pdus)


def test_a_long_text_request_is_gathered_over_continued_pdus() -> None:
    disc = discovery()
    ini = disc.ini
    whole = encode_text([("SendTargets", "All")])
    for i, piece in enumerate((whole[:5], whole[5:])):
        last = i == 1
        cmd_sn = ini.cmd_sn
        ini.cmd_sn += 1
        wire = ini.encode(TextRequest(40 + i, RESERVED_TAG, last, not last, cmd_sn, ini.exp_stat_sn, 0, False, piece))
        (resp,) = disc.send(wire)
        assert isinstance(resp, TextResponse) and resp.final and resp.itt == 40 + i
        assert names(resp) == ([TARGET] if last else [])
        if not last:
            assert bytes(resp.data) == b""


def test_continued_text_is_bounded_at_64_kib() -> None:
    disc = discovery()
    ini = disc.ini
    pad = encode_text([("X-pad", "p" * 8000)])
    answers: list[object] = []
    for _ in range(9):
        cmd_sn = ini.cmd_sn
        ini.cmd_sn += 1
        answers += disc.send(ini.encode(TextRequest(50, RESERVED_TAG, False, True, cmd_sn, ini.exp_stat_sn, 0,
                                                    False, pad)))  # fmt: skip
    assert [type(p) for p in answers] == [TextResponse] * 8 + [Reject]
    assert answers[-1].reason == 0x04  # type: ignore[attr-defined]


def test_continuing_an_unknown_text_exchange_is_rejected() -> None:
    disc = discovery()
    rejected(disc.send(disc.ini.text([], ttt=0x1234)[1]), 0x04)
    assert not disc.target.is_closed


def test_a_long_answer_is_sent_in_pieces_each_asked_for() -> None:
    many = tuple(f"iqn.2026-11.org.example:t{i:03d}" for i in range(40))
    disc = discovery(extra=many)
    text(disc, [("MaxRecvDataSegmentLength", "512")])
    (resp,) = disc.send(disc.ini.text([("SendTargets", "All")])[1])
    pieces = [resp]
    while not resp.final:  # type: ignore[attr-defined]
        (resp,) = disc.send(disc.ini.text([], ttt=resp.ttt)[1])  # type: ignore[attr-defined]
        pieces.append(resp)
    ttts = {p.ttt for p in pieces[:-1]}  # type: ignore[attr-defined]
    assert len(ttts) == 1 and RESERVED_TAG not in ttts and pieces[-1].ttt == RESERVED_TAG  # type: ignore[attr-defined]
    assert [p.cont for p in pieces] == [True] * (len(pieces) - 1) + [False]  # type: ignore[attr-defined]
    assert all(len(p.data) <= 512 for p in pieces)  # type: ignore[attr-defined]
    whole = b"".join(bytes(p.data) for p in pieces)  # type: ignore[attr-defined]
    assert [v for k, v in pairs_of(whole) if k == "TargetName"] == [TARGET, *many]
    rejected(disc.send(disc.ini.text([], ttt=next(iter(ttts)))[1]), 0x04)  # that exchange is over


# -- logout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reason", [0, 1])
def test_logout_closes_the_connection_or_session(reason: int) -> None:
    pair = logged_in(limits=TargetLimits(default_time2wait=5, default_time2retain=0))
    itt, wire = pair.ini.logout(reason)
    (rsp,) = pair.send(wire)
    assert isinstance(rsp, LogoutResponse) and (rsp.itt, rsp.response) == (itt, 0)
    assert (rsp.time2wait, rsp.time2retain) == (pair.target.session.params.default_time2wait, 0)  # type: ignore[union-attr]
    assert pair.target.is_closed and isinstance(pair.take_events()[-1], ConnectionClosed)


def test_logout_with_an_unknown_reason_is_rejected() -> None:
    pair = logged_in()
    ini = pair.ini
    rejected(pair.send(ini.encode(LogoutRequest(9, 3, 0, ini.cmd_sn, ini.exp_stat_sn, True))), 0x09)
    assert not pair.target.is_closed


def test_logout_for_recovery_keeps_the_connection() -> None:
    pair = logged_in()
    (rsp,) = pair.send(pair.ini.logout(2)[1])
    assert isinstance(rsp, LogoutResponse) and rsp.response == 2
    assert not pair.target.is_closed
    (nop_in,) = pair.send(pair.ini.nop_out(b"x")[1])
    assert isinstance(nop_in, NopIn)


# -- closing and status ------------------------------------------------------------------------


def test_closing_forgets_the_session_and_says_so() -> None:
    pair = Pair()
    pair.login()
    (started,) = pair.take_events()
    assert isinstance(started, SessionStarted)
    session = started.session
    assert pair.target.status() == {
        "phase": "full-feature", "initiator": INITIATOR, "isid": "800000000001", "tsih": session.tsih, "tasks": 0,
        "header_digest": False, "data_digest": False,
    }  # fmt: skip
    pair.send(pair.ini.scsi_command(READ10, lun=1, read_length=512)[1])
    assert pair.target.status()["tasks"] == 1
    pair.target.close()
    assert pair.target.is_closed and session.connection is None and not pair.table.by_tsih
    assert pair.target.status()["phase"] == "closed"


def test_a_connection_that_never_logged_in_reports_no_session() -> None:
    pair = Pair(InitiatorConnection(INITIATOR, target=TARGET, header_digest=True))
    assert pair.target.status() == {
        "phase": "login", "initiator": None, "isid": None, "tsih": None, "tasks": 0,
        "header_digest": False, "data_digest": False,
    }  # fmt: skip
    pair.login()
    assert pair.target.status()["header_digest"] is True


def test_closing_an_old_connection_keeps_the_session_that_took_it_over() -> None:
    pair = logged_in()
    session = pair.target.session
    assert session is not None
    other = Pair(table=pair.table)
    other.ini.tsih = session.tsih
    other.login()
    assert session.connection is other.target
    pair.target.close()
    assert pair.table.by_tsih == {session.tsih: session} and session.connection is other.target


# -- text and logout details -------------------------------------------------------------------


def raw_text(
    pair: Pair, data: bytes, *, final: bool, cont: bool, itt: int = 60, lun: int = 0, immediate: bool = False
) -> bytes:
    ini = pair.ini
    cmd_sn = ini.cmd_sn
    if not immediate:
        ini.cmd_sn += 1
    return ini.encode(TextRequest(itt, RESERVED_TAG, final, cont, cmd_sn, ini.exp_stat_sn, lun, immediate, data))


def test_a_text_request_without_the_f_bit_waits_for_the_rest() -> None:
    disc = discovery()
    whole = encode_text([("SendTargets", "All")])
    (first,) = disc.send(raw_text(disc, whole[:4], final=False, cont=False))
    assert isinstance(first, TextResponse) and bytes(first.data) == b"" and first.final
    (second,) = disc.send(raw_text(disc, whole[4:], final=True, cont=False))
    assert names(second) == [TARGET]  # type: ignore[arg-type]


def test_the_c_bit_means_more_text_follows_even_with_the_f_bit() -> None:
    disc = discovery()
    whole = encode_text([("SendTargets", "All")])
    (first,) = disc.send(raw_text(disc, whole[:4], final=True, cont=True))
    assert isinstance(first, TextResponse) and bytes(first.data) == b""
    (second,) = disc.send(raw_text(disc, whole[4:], final=True, cont=False))
    assert names(second) == [TARGET]  # type: ignore[arg-type]


def test_continued_text_up_to_exactly_64_kib_is_accepted() -> None:
    disc = discovery()
    pad = encode_text([("X-pad", "p" * (8192 - 7))])
    for _ in range(8):
        (ack,) = disc.send(raw_text(disc, pad, final=False, cont=True))
        assert isinstance(ack, TextResponse)
    rejected(disc.send(raw_text(disc, b"\0", final=False, cont=True)), 0x04)  # with the request's header


def test_text_answers_echo_the_lun_and_keep_every_key() -> None:
    disc = discovery()
    lun = 0x0102_0304_0506_0708
    data = encode_text([("X-vendor.a", "1"), ("SendTargets", "All")])
    (resp,) = disc.send(raw_text(disc, data, final=True, cont=False, itt=0x80000001, lun=lun, immediate=True))
    assert isinstance(resp, TextResponse) and (resp.itt, resp.lun) == (0x80000001, lun)
    assert pairs_of(bytes(resp.data))[:2] == [("X-vendor.a", "NotUnderstood"), ("TargetName", TARGET)]
    assert disc.target.session.exp_cmd_sn == disc.ini.cmd_sn  # type: ignore[union-attr]  # immediate: no CmdSN used


def test_a_two_piece_answer_and_the_target_transfer_tags() -> None:
    long_names = tuple(f"iqn.2026-11.org.example:{c}" + "n" * 190 for c in "ab")
    disc = discovery(extra=long_names)
    text(disc, [("MaxRecvDataSegmentLength", "512")])
    disc.target._next_ttt = 0xFFFFFFFE
    (first,) = disc.send(disc.ini.text([("SendTargets", "All")])[1])
    assert isinstance(first, TextResponse) and first.cont and not first.final and first.ttt == 0xFFFFFFFE
    (last,) = disc.send(disc.ini.text([], ttt=first.ttt)[1])
    assert isinstance(last, TextResponse) and last.final and not last.cont and last.ttt == RESERVED_TAG
    assert 512 < len(first.data) + len(last.data) <= 1024
    disc.target.ping()
    (ping,) = disc.receive()
    assert isinstance(ping, NopIn) and ping.ttt == 1  # the tag counter wrapped before 0xffffffff to 1


def test_long_answers_and_pings_take_tags_from_one_counter_in_turn() -> None:
    long_names = tuple(f"iqn.2026-11.org.example:{c}" + "n" * 190 for c in "ab")
    disc = discovery(extra=long_names)
    text(disc, [("MaxRecvDataSegmentLength", "512")])
    disc.target._next_ttt = 40
    (first,) = disc.send(disc.ini.text([("SendTargets", "All")])[1])
    assert isinstance(first, TextResponse) and first.ttt == 40
    disc.send(disc.ini.text([], ttt=first.ttt)[1])
    disc.target.ping()
    (ping,) = disc.receive()
    assert isinstance(ping, NopIn) and ping.ttt == 41  # the next tag: no two exchanges share one


def test_a_one_piece_answer_uses_no_target_transfer_tag() -> None:
    disc = discovery()
    text(disc, [("SendTargets", "All")])
    disc.target.ping()
    (ping,) = disc.receive()
    assert isinstance(ping, NopIn) and ping.ttt == 1


def test_wildcard_portals_keep_their_group_tag() -> None:
    from iscsikit.target.proto import PortalInfo, SessionTable, TargetConnection, TargetDirectory, TargetInfo

    directory = TargetDirectory({TARGET: TargetInfo(TARGET, (PortalInfo("::", 3261, 7),))})
    pair = Pair(InitiatorConnection(INITIATOR))
    pair.target = TargetConnection(directory, SessionTable(), PortalInfo("192.0.2.7", 3260, 1))
    pair.login()
    (resp,) = pair.send(pair.ini.text([("SendTargets", "All")])[1])
    assert ("TargetAddress", "192.0.2.7:3261,7") in pairs_of(bytes(resp.data))  # type: ignore[attr-defined]


def test_a_non_immediate_logout_waits_for_its_cmd_sn() -> None:
    pair = logged_in()
    ini = pair.ini
    base = ini.cmd_sn
    wire = ini.encode(LogoutRequest(0x80000002, 0, 0, base + 1, ini.exp_stat_sn, False))
    assert pair.send(wire) == [] and not pair.target.is_closed
    ini.cmd_sn = base
    answers = pair.send(ini.nop_out(b"x", immediate=False)[1])
    assert [type(p) for p in answers] == [NopIn, LogoutResponse]
    assert answers[1].itt == 0x80000002 and pair.target.is_closed  # type: ignore[attr-defined]


def test_logout_reports_the_negotiated_retention() -> None:
    ini = InitiatorConnection(INITIATOR, target=TARGET)
    base = ini._operational
    ini._operational = lambda: [(k, "20" if k == "DefaultTime2Retain" else v) for k, v in base()]  # type: ignore[method-assign]
    pair = logged_in(ini, limits=TargetLimits(default_time2retain=20))
    (rsp,) = pair.send(pair.ini.logout()[1])
    assert isinstance(rsp, LogoutResponse) and (rsp.time2wait, rsp.time2retain) == (2, 20)


def test_the_initiators_exp_stat_sn_is_tracked_from_every_request() -> None:
    pair = logged_in()
    ini = pair.ini
    for n, make in enumerate(
        [
            lambda: ini.nop_out(b"x")[1],
            lambda: ini.text([("X-a", "1")])[1],
            lambda: ini.task_management(1, lun=1, referenced_itt=5)[1],
            lambda: ini.scsi_command(READ10, lun=1, read_length=512)[1],
            lambda: ini.data_out(0x4321, 9, 0, 0, b"z" * 512, True, lun=1),
            lambda: ini.logout()[1],
        ]
    ):
        ini.exp_stat_sn = 0x12345600 + n
        wire = make()
        pair.target.receive_data(wire)
        while pair.target.next_event() is not NEED_DATA:
            pass
        pair.target.data_to_send()
        assert pair.target.exp_stat_sn == 0x12345600 + n


@pytest.mark.parametrize(("final", "answered"), [(False, False), (True, True)])
def test_a_reserved_flag_bit_does_not_change_a_text_request(final: bool, answered: bool) -> None:
    disc = discovery()
    wire = bytearray(raw_text(disc, encode_text([("SendTargets", "All")]), final=final, cont=False))
    wire[1] |= 0x01  # reserved: ignored
    wire[28:32] = (0x1234).to_bytes(4, "big")  # ExpStatSN, taken from every request
    (resp,) = disc.send(bytes(wire))
    assert isinstance(resp, TextResponse) and names(resp) == ([TARGET] if answered else [])
    assert disc.target.exp_stat_sn == 0x1234
