"""Every iSCSI PDU of RFC 7143 chapter 11 as an event, with one reader and one writer per opcode.

Events are frozen, slotted dataclasses named after the PDU. Initiator-to-target PDUs
(``ScsiCommand``, ``DataOut``, ``LoginRequest``, ...) are what :class:`TargetConnection`
produces; target-to-initiator PDUs (``ScsiResponse``, ``DataIn``, ``R2T``, ...) are what it
writes. Both directions have a reader and a writer so a test initiator and the hypothesis
round-trip tests use the very same code.

Layout: the 48-byte Basic Header Segment (BHS)::

    byte 0      I (0x40) | opcode (6 bits)
    byte 1      F (0x80) and per-opcode flags
    bytes 2-3   per opcode
    byte 4      TotalAHSLength (4-byte words)
    bytes 5-7   DataSegmentLength
    bytes 8-15  LUN or per opcode
    bytes 16-19 Initiator Task Tag
    bytes 20-47 per opcode

``READERS[opcode](bhs, ahs, data) -> event`` and ``WRITERS[type(event)](event) -> bytes``
(the 48-byte BHS plus any AHS). Data segments are *not* part of the writer output: the framing
code (:func:`frame`) adds them as separate buffers so payloads are never copied.

LUN fields are kept as the raw 64-bit value; :func:`decode_lun` / :func:`encode_lun` convert
to and from a LUN number (SAM peripheral and flat addressing).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from iscsikit.target.proto.errors import RemoteProtocolError

Buffer = bytes | bytearray | memoryview

__all__ = [
    "BHS_LEN",
    "PDU",
    "R2T",
    "READERS",
    "RESERVED_TAG",
    "WRITERS",
    "AsyncMessage",
    "Buffer",
    "DataIn",
    "DataOut",
    "LoginRequest",
    "LoginResponse",
    "LogoutRequest",
    "LogoutResponse",
    "NopIn",
    "NopOut",
    "Opcode",
    "Reject",
    "RejectReason",
    "ScsiCommand",
    "ScsiResponse",
    "SnackRequest",
    "TaskMgmtRequest",
    "TaskMgmtResponse",
    "TextRequest",
    "TextResponse",
    "decode_lun",
    "encode_lun",
    "pad_len",
    "parse_header",
    "read_pdu",
    "write_pdu",
]

BHS_LEN = 48
RESERVED_TAG = 0xFFFFFFFF


class Opcode:
    """Opcodes (RFC 7143 11.2.1.2). Plain ints: the hot path compares them often."""

    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F

    INITIATOR = frozenset({0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x10})
    TARGET = frozenset({0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x31, 0x32, 0x3F})


class RejectReason:
    """Reject reasons (RFC 7143 11.17.1)."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECT = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OPERATION_REJECT = 0x0A
    DEPRECATED = 0x0B
    WAITING_FOR_LOGOUT = 0x0C


def pad_len(n: int) -> int:
    """Bytes of padding after a data segment of ``n`` bytes (segments are 4-byte aligned)."""
    return -n & 3


def decode_lun(raw: int) -> int:
    """LUN number from the 8-byte LUN field (SAM-5 4.7): peripheral (00b) or flat (01b) addressing.

    Any other addressing method gives -1, which no LUN map contains.
    """
    top = raw >> 48
    method = top >> 14
    if raw & 0xFFFFFFFFFFFF:
        return -1  # second-level addressing is not used by iSCSI initiators we serve
    if method == 0:
        return (top & 0xFF) if (top >> 8) == 0 else -1
    if method == 1:
        return top & 0x3FFF
    return -1


def encode_lun(lun: int) -> int:
    """The 8-byte LUN field value for a LUN number (peripheral below 256, flat above)."""
    if not 0 <= lun < 0x4000:
        raise ValueError(f"LUN {lun} is outside 0..16383")
    if lun < 256:
        return lun << 48
    return (0x4000 | lun) << 48


@dataclass(frozen=True, slots=True)
class PDU:
    """Base of every PDU event. Don't subclass the concrete events."""

    opcode: ClassVar[int] = -1


def _u24(n: int, what: str) -> int:
    if not 0 <= n < (1 << 24):
        raise ValueError(f"{what} {n} does not fit in 24 bits")
    return n


# ---------------------------------------------------------------------------------------------
# Initiator -> target


@dataclass(frozen=True, slots=True)
class NopOut(PDU):
    """NOP-Out (11.18). ``itt`` RESERVED_TAG when answering a target ping (``ttt`` set)."""

    opcode: ClassVar[int] = Opcode.NOP_OUT
    itt: int
    ttt: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    lun: int = 0
    immediate: bool = True
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class ScsiCommand(PDU):
    """SCSI Command (11.3). ``cdb`` includes any Extended CDB AHS bytes; ``data`` is immediate data."""

    opcode: ClassVar[int] = Opcode.SCSI_COMMAND
    itt: int
    lun: int
    cdb: bytes
    expected_length: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    read: bool = False
    write: bool = False
    final: bool = True
    attr: int = 0
    immediate: bool = False
    bidi_read_length: int | None = None
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class TaskMgmtRequest(PDU):
    """Task Management Function Request (11.5)."""

    opcode: ClassVar[int] = Opcode.TASK_MGMT_REQUEST
    itt: int
    function: int
    lun: int = 0
    referenced_itt: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ref_cmd_sn: int = 0
    exp_data_sn: int = 0
    immediate: bool = True


@dataclass(frozen=True, slots=True)
class LoginRequest(PDU):
    """Login Request (11.12). ``data`` is the text key segment."""

    opcode: ClassVar[int] = Opcode.LOGIN_REQUEST
    isid: bytes
    itt: int
    csg: int
    nsg: int
    transit: bool = False
    cont: bool = False
    tsih: int = 0
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    version_max: int = 0
    version_min: int = 0
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class TextRequest(PDU):
    """Text Request (11.10)."""

    opcode: ClassVar[int] = Opcode.TEXT_REQUEST
    itt: int
    ttt: int = RESERVED_TAG
    final: bool = True
    cont: bool = False
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    lun: int = 0
    immediate: bool = False
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class DataOut(PDU):
    """SCSI Data-Out (11.7). ``ttt`` is RESERVED_TAG for unsolicited data."""

    opcode: ClassVar[int] = Opcode.DATA_OUT
    itt: int
    ttt: int
    data_sn: int
    offset: int
    final: bool = False
    lun: int = 0
    exp_stat_sn: int = 0
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class LogoutRequest(PDU):
    """Logout Request (11.14). ``reason`` 0 close session, 1 close connection, 2 recovery."""

    opcode: ClassVar[int] = Opcode.LOGOUT_REQUEST
    itt: int
    reason: int = 0
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    immediate: bool = False


@dataclass(frozen=True, slots=True)
class SnackRequest(PDU):
    """SNACK Request (11.16); only meaningful at ErrorRecoveryLevel > 0."""

    opcode: ClassVar[int] = Opcode.SNACK_REQUEST
    itt: int
    type: int = 0
    ttt: int = RESERVED_TAG
    lun: int = 0
    exp_stat_sn: int = 0
    begrun: int = 0
    run_length: int = 0


# ---------------------------------------------------------------------------------------------
# Target -> initiator


@dataclass(frozen=True, slots=True)
class NopIn(PDU):
    """NOP-In (11.19). ``itt`` RESERVED_TAG and a real ``ttt`` for a target ping."""

    opcode: ClassVar[int] = Opcode.NOP_IN
    itt: int
    ttt: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    lun: int = 0
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class ScsiResponse(PDU):
    """SCSI Response (11.4). ``data`` is the sense segment (2-byte length + sense) or empty."""

    opcode: ClassVar[int] = Opcode.SCSI_RESPONSE
    itt: int
    status: int = 0
    response: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    exp_data_sn: int = 0
    overflow: bool = False
    underflow: bool = False
    bidi_overflow: bool = False
    bidi_underflow: bool = False
    residual: int = 0
    bidi_residual: int = 0
    snack_tag: int = 0
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class TaskMgmtResponse(PDU):
    """Task Management Function Response (11.6)."""

    opcode: ClassVar[int] = Opcode.TASK_MGMT_RESPONSE
    itt: int
    response: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0


@dataclass(frozen=True, slots=True)
class LoginResponse(PDU):
    """Login Response (11.13). ``status`` is class << 8 | detail."""

    opcode: ClassVar[int] = Opcode.LOGIN_RESPONSE
    isid: bytes
    itt: int
    csg: int
    nsg: int
    transit: bool = False
    cont: bool = False
    tsih: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    status: int = 0
    version_max: int = 0
    version_active: int = 0
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class TextResponse(PDU):
    """Text Response (11.11)."""

    opcode: ClassVar[int] = Opcode.TEXT_RESPONSE
    itt: int
    ttt: int = RESERVED_TAG
    final: bool = True
    cont: bool = False
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    lun: int = 0
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class DataIn(PDU):
    """SCSI Data-In (11.8). ``data`` is a list of buffers (sent with scatter-gather, never joined).

    With ``status_present`` (S bit) the PDU also carries the command's status and residual.
    """

    opcode: ClassVar[int] = Opcode.DATA_IN
    itt: int
    data_sn: int
    offset: int
    data: Sequence[Buffer] = ()
    final: bool = False
    status_present: bool = False
    status: int = 0
    ack: bool = False
    overflow: bool = False
    underflow: bool = False
    residual: int = 0
    lun: int = 0
    ttt: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0


@dataclass(frozen=True, slots=True)
class LogoutResponse(PDU):
    """Logout Response (11.15). ``response`` 0 ok, 1 CID not found, 2 recovery not supported."""

    opcode: ClassVar[int] = Opcode.LOGOUT_RESPONSE
    itt: int
    response: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    time2wait: int = 0
    time2retain: int = 0


@dataclass(frozen=True, slots=True)
class R2T(PDU):
    """Ready To Transfer (11.8 of RFC 7143 numbering 11.9)."""

    opcode: ClassVar[int] = Opcode.R2T
    itt: int
    ttt: int
    r2t_sn: int
    offset: int
    length: int
    lun: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0


@dataclass(frozen=True, slots=True)
class AsyncMessage(PDU):
    """Asynchronous Message (11.9). ``event`` 1 = target requests logout, 4 = renegotiate."""

    opcode: ClassVar[int] = Opcode.ASYNC_MESSAGE
    event: int
    vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0
    lun: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data: Buffer = b""


@dataclass(frozen=True, slots=True)
class Reject(PDU):
    """Reject (11.17). ``data`` is the rejected PDU's header."""

    opcode: ClassVar[int] = Opcode.REJECT
    reason: int
    data: Buffer = b""
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data_sn: int = 0


# ---------------------------------------------------------------------------------------------
# Readers: (bhs, ahs, data) -> event. bhs is exactly 48 bytes, already checked for length.

_S_COMMON = struct.Struct(">BBBBI")  # byte0, byte1, byte2, byte3, (ahs<<24 | dslen)
_S_CMD = struct.Struct(">BBxxI Q IIII 16s")
_S_GENERIC = struct.Struct(">BBBBI Q IIIIIIII")  # 0..47: b0 b1 b2 b3 len lun itt w20 .. w44
_S_LOGIN = struct.Struct(">BBBBI 6sH I Hxx II 16x")


def parse_header(bhs: Buffer) -> tuple[int, bool, int, int]:
    """``(opcode, immediate, ahs_bytes, data_segment_length)`` of a BHS."""
    b0, _b1, _b2, _b3, lengths = _S_COMMON.unpack_from(bhs)
    return b0 & 0x3F, bool(b0 & 0x40), (lengths >> 24) * 4, lengths & 0xFFFFFF


def _generic(bhs: Buffer) -> tuple[int, ...]:
    return _S_GENERIC.unpack_from(bhs)


def _read_nop_out(bhs: Buffer, ahs: bytes, data: Buffer) -> NopOut:
    b0, _b1, _b2, _b3, _l, lun, itt, ttt, cmd_sn, exp_stat_sn, *_ = _generic(bhs)
    return NopOut(itt, ttt, cmd_sn, exp_stat_sn, lun, bool(b0 & 0x40), data)


def _read_scsi_command(bhs: Buffer, ahs: bytes, data: Buffer) -> ScsiCommand:
    b0, b1, _len, lun, itt, edtl, cmd_sn, exp_stat_sn, cdb = _S_CMD.unpack_from(bhs)
    bidi: int | None = None
    if ahs:
        ext, bidi = _parse_command_ahs(ahs)
        cdb += ext
    return ScsiCommand(
        itt, lun, cdb, edtl, cmd_sn, exp_stat_sn,
        bool(b1 & 0x40), bool(b1 & 0x20), bool(b1 & 0x80), b1 & 0x07, bool(b0 & 0x40), bidi, data,
    )  # fmt: skip


def _parse_command_ahs(ahs: bytes) -> tuple[bytes, int | None]:
    """Extended CDB (type 1) and Bidirectional Read EDTL (type 2) AHS (RFC 7143 11.2.2).

    AHSLength counts the AHS-specific byte and what follows, not the 3-byte length/type
    header; each AHS is padded to 4 bytes.
    """
    ext = b""
    bidi: int | None = None
    pos = 0
    while pos < len(ahs):
        if pos + 4 > len(ahs):
            raise RemoteProtocolError("truncated AHS", reject_reason=RejectReason.INVALID_PDU_FIELD)
        length = int.from_bytes(ahs[pos : pos + 2], "big")
        kind = ahs[pos + 2]
        end = pos + 3 + length
        if length < 1 or end > len(ahs):
            raise RemoteProtocolError(
                f"AHS type {kind} length {length} overruns the AHS", reject_reason=RejectReason.INVALID_PDU_FIELD
            )
        body = ahs[pos + 4 : end]
        if kind == 1:
            ext = bytes(body)
        elif kind == 2 and length == 5:
            bidi = int.from_bytes(body, "big")
        else:
            raise RemoteProtocolError(
                f"unsupported AHS type {kind} (length {length})", reject_reason=RejectReason.INVALID_PDU_FIELD
            )
        pos = end + pad_len(end - pos)
    return ext, bidi


def _read_task_mgmt_request(bhs: Buffer, ahs: bytes, data: Buffer) -> TaskMgmtRequest:
    b0, b1, _b2, _b3, _l, lun, itt, rtt, cmd_sn, exp_stat_sn, ref_cmd_sn, exp_data_sn, *_ = _generic(bhs)
    return TaskMgmtRequest(itt, b1 & 0x7F, lun, rtt, cmd_sn, exp_stat_sn, ref_cmd_sn, exp_data_sn, bool(b0 & 0x40))


def _read_login_request(bhs: Buffer, ahs: bytes, data: Buffer) -> LoginRequest:
    _b0, b1, vmax, vmin, _l, isid, tsih, itt, cid, cmd_sn, exp_stat_sn = _S_LOGIN.unpack_from(bhs)
    return LoginRequest(
        isid, itt, (b1 >> 2) & 3, b1 & 3, bool(b1 & 0x80), bool(b1 & 0x40), tsih, cid, cmd_sn, exp_stat_sn,
        vmax, vmin, data,
    )  # fmt: skip


def _read_text_request(bhs: Buffer, ahs: bytes, data: Buffer) -> TextRequest:
    b0, b1, _b2, _b3, _l, lun, itt, ttt, cmd_sn, exp_stat_sn, *_ = _generic(bhs)
    return TextRequest(itt, ttt, bool(b1 & 0x80), bool(b1 & 0x40), cmd_sn, exp_stat_sn, lun, bool(b0 & 0x40), data)


def _read_data_out(bhs: Buffer, ahs: bytes, data: Buffer) -> DataOut:
    _b0, b1, _b2, _b3, _l, lun, itt, ttt, _w24, exp_stat_sn, _w32, data_sn, offset, _w44 = _generic(bhs)
    return DataOut(itt, ttt, data_sn, offset, bool(b1 & 0x80), lun, exp_stat_sn, data)


def _read_logout_request(bhs: Buffer, ahs: bytes, data: Buffer) -> LogoutRequest:
    b0, b1, _b2, _b3, _l, _lun, itt, w20, cmd_sn, exp_stat_sn, *_ = _generic(bhs)
    return LogoutRequest(itt, b1 & 0x7F, w20 >> 16, cmd_sn, exp_stat_sn, bool(b0 & 0x40))


def _read_snack_request(bhs: Buffer, ahs: bytes, data: Buffer) -> SnackRequest:
    _b0, b1, _b2, _b3, _l, lun, itt, ttt, _w24, exp_stat_sn, _w32, _w36, begrun, run_length = _generic(bhs)
    return SnackRequest(itt, b1 & 0x0F, ttt, lun, exp_stat_sn, begrun, run_length)


def _read_nop_in(bhs: Buffer, ahs: bytes, data: Buffer) -> NopIn:
    _b0, _b1, _b2, _b3, _l, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, *_ = _generic(bhs)
    return NopIn(itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, lun, data)


def _read_scsi_response(bhs: Buffer, ahs: bytes, data: Buffer) -> ScsiResponse:
    _b0, b1, resp, status, _l, _lun, itt, snack, stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn, bidi_res, res = _generic(
        bhs
    )
    return ScsiResponse(
        itt, status, resp, stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn,
        bool(b1 & 0x04), bool(b1 & 0x02), bool(b1 & 0x10), bool(b1 & 0x08), res, bidi_res, snack, data,
    )  # fmt: skip


def _read_task_mgmt_response(bhs: Buffer, ahs: bytes, data: Buffer) -> TaskMgmtResponse:
    _b0, _b1, resp, _b3, _l, _lun, itt, _w20, stat_sn, exp_cmd_sn, max_cmd_sn, *_ = _generic(bhs)
    return TaskMgmtResponse(itt, resp, stat_sn, exp_cmd_sn, max_cmd_sn)


def _read_login_response(bhs: Buffer, ahs: bytes, data: Buffer) -> LoginResponse:
    _b0, b1, vmax, vact, _l, isid, tsih, itt, _w20, stat_sn, exp_cmd_sn, max_cmd_sn, s_class, s_detail = (
        struct.unpack_from(">BBBBI 6sH I I III BBxxxxxxxxxx", bhs)
    )
    return LoginResponse(
        isid, itt, (b1 >> 2) & 3, b1 & 3, bool(b1 & 0x80), bool(b1 & 0x40), tsih, stat_sn, exp_cmd_sn,
        max_cmd_sn, (s_class << 8) | s_detail, vmax, vact, data,
    )  # fmt: skip


def _read_text_response(bhs: Buffer, ahs: bytes, data: Buffer) -> TextResponse:
    _b0, b1, _b2, _b3, _l, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, *_ = _generic(bhs)
    return TextResponse(itt, ttt, bool(b1 & 0x80), bool(b1 & 0x40), stat_sn, exp_cmd_sn, max_cmd_sn, lun, data)


def _read_data_in(bhs: Buffer, ahs: bytes, data: Buffer) -> DataIn:
    _b0, b1, _b2, status, _l, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn, offset, res = _generic(bhs)
    # Status is reserved unless the S bit is set (RFC 7143 11.7.4): a writer puts 0 there.
    return DataIn(
        itt, data_sn, offset, [data] if data else [], bool(b1 & 0x80), bool(b1 & 0x01), status if b1 & 0x01 else 0,
        bool(b1 & 0x40), bool(b1 & 0x04), bool(b1 & 0x02), res, lun, ttt, stat_sn, exp_cmd_sn, max_cmd_sn,
    )  # fmt: skip


def _read_logout_response(bhs: Buffer, ahs: bytes, data: Buffer) -> LogoutResponse:
    _b0, _b1, resp, _b3, _l, _lun, itt, _w20, stat_sn, exp_cmd_sn, max_cmd_sn, _w36, w40, _w44 = _generic(bhs)
    return LogoutResponse(itt, resp, stat_sn, exp_cmd_sn, max_cmd_sn, w40 >> 16, w40 & 0xFFFF)


def _read_r2t(bhs: Buffer, ahs: bytes, data: Buffer) -> R2T:
    _b0, _b1, _b2, _b3, _l, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, r2t_sn, offset, length = _generic(bhs)
    return R2T(itt, ttt, r2t_sn, offset, length, lun, stat_sn, exp_cmd_sn, max_cmd_sn)


def _read_async_message(bhs: Buffer, ahs: bytes, data: Buffer) -> AsyncMessage:
    (lun, stat_sn, exp_cmd_sn, max_cmd_sn, event, vcode, p1, p2, p3) = struct.unpack_from(">8xQ8xIII BBHHHxxxx", bhs)
    return AsyncMessage(event, vcode, p1, p2, p3, lun, stat_sn, exp_cmd_sn, max_cmd_sn, data)


def _read_reject(bhs: Buffer, ahs: bytes, data: Buffer) -> Reject:
    _b0, _b1, reason, _b3, _l, _lun, _itt, _w20, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn, *_ = _generic(bhs)
    return Reject(reason, data, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn)


Reader = Callable[[Buffer, bytes, Buffer], Any]

#: opcode -> reader. Opcodes not in this table are answered with a Reject (command not supported).
READERS: dict[int, Reader] = {
    Opcode.NOP_OUT: _read_nop_out,
    Opcode.SCSI_COMMAND: _read_scsi_command,
    Opcode.TASK_MGMT_REQUEST: _read_task_mgmt_request,
    Opcode.LOGIN_REQUEST: _read_login_request,
    Opcode.TEXT_REQUEST: _read_text_request,
    Opcode.DATA_OUT: _read_data_out,
    Opcode.LOGOUT_REQUEST: _read_logout_request,
    Opcode.SNACK_REQUEST: _read_snack_request,
    Opcode.NOP_IN: _read_nop_in,
    Opcode.SCSI_RESPONSE: _read_scsi_response,
    Opcode.TASK_MGMT_RESPONSE: _read_task_mgmt_response,
    Opcode.LOGIN_RESPONSE: _read_login_response,
    Opcode.TEXT_RESPONSE: _read_text_response,
    Opcode.DATA_IN: _read_data_in,
    Opcode.LOGOUT_RESPONSE: _read_logout_response,
    Opcode.R2T: _read_r2t,
    Opcode.ASYNC_MESSAGE: _read_async_message,
    Opcode.REJECT: _read_reject,
}


# ---------------------------------------------------------------------------------------------
# Writers: event -> BHS (+ AHS) bytes. The caller passes the data segment length.

_W_GENERIC = _S_GENERIC


def _lengths(ahs_len: int, dslen: int) -> int:
    return ((ahs_len // 4) << 24) | _u24(dslen, "DataSegmentLength")


def _w(b0: int, b1: int, b2: int, b3: int, dslen: int, lun: int, itt: int, *words: int) -> bytes:
    w = list(words) + [0] * (7 - len(words))
    return _W_GENERIC.pack(b0, b1, b2, b3, _lengths(0, dslen), lun, itt, *w)


def _write_nop_out(e: NopOut, dslen: int) -> bytes:
    return _w(0x40 * e.immediate | 0x00, 0x80, 0, 0, dslen, e.lun, e.itt, e.ttt, e.cmd_sn, e.exp_stat_sn)


def _write_scsi_command(e: ScsiCommand, dslen: int) -> bytes:
    b1 = 0x80 * e.final | 0x40 * e.read | 0x20 * e.write | (e.attr & 7)
    cdb = e.cdb[:16].ljust(16, b"\0")
    ahs = b""
    if len(e.cdb) > 16:
        ext = e.cdb[16:]
        ahs += struct.pack(">HBx", len(ext) + 1, 1) + ext + b"\0" * pad_len(4 + len(ext))
    if e.bidi_read_length is not None:
        ahs += struct.pack(">HBxI", 5, 2, e.bidi_read_length)
    head = _S_CMD.pack(
        0x40 * e.immediate | Opcode.SCSI_COMMAND, b1, _lengths(len(ahs), dslen), e.lun, e.itt,
        e.expected_length, e.cmd_sn, e.exp_stat_sn, cdb,
    )  # fmt: skip
    return head + ahs


def _write_task_mgmt_request(e: TaskMgmtRequest, dslen: int) -> bytes:
    return _w(
        0x40 * e.immediate | Opcode.TASK_MGMT_REQUEST, 0x80 | (e.function & 0x7F), 0, 0, dslen, e.lun, e.itt,
        e.referenced_itt, e.cmd_sn, e.exp_stat_sn, e.ref_cmd_sn, e.exp_data_sn,
    )  # fmt: skip


def _write_login_request(e: LoginRequest, dslen: int) -> bytes:
    b1 = 0x80 * e.transit | 0x40 * e.cont | (e.csg & 3) << 2 | (e.nsg & 3)
    return _S_LOGIN.pack(
        0x40 | Opcode.LOGIN_REQUEST, b1, e.version_max, e.version_min, _lengths(0, dslen), bytes(e.isid),
        e.tsih, e.itt, e.cid, e.cmd_sn, e.exp_stat_sn,
    )  # fmt: skip


def _write_text_request(e: TextRequest, dslen: int) -> bytes:
    return _w(
        0x40 * e.immediate | Opcode.TEXT_REQUEST, 0x80 * e.final | 0x40 * e.cont, 0, 0, dslen, e.lun, e.itt,
        e.ttt, e.cmd_sn, e.exp_stat_sn,
    )  # fmt: skip


def _write_data_out(e: DataOut, dslen: int) -> bytes:
    return _w(
        Opcode.DATA_OUT, 0x80 * e.final, 0, 0, dslen, e.lun, e.itt, e.ttt, 0, e.exp_stat_sn, 0, e.data_sn, e.offset
    )


def _write_logout_request(e: LogoutRequest, dslen: int) -> bytes:
    return _w(
        0x40 * e.immediate | Opcode.LOGOUT_REQUEST, 0x80 | (e.reason & 0x7F), 0, 0, dslen, 0, e.itt,
        (e.cid & 0xFFFF) << 16, e.cmd_sn, e.exp_stat_sn,
    )  # fmt: skip


def _write_snack_request(e: SnackRequest, dslen: int) -> bytes:
    return _w(
        Opcode.SNACK_REQUEST, 0x80 | (e.type & 0x0F), 0, 0, dslen, e.lun, e.itt, e.ttt, 0, e.exp_stat_sn, 0, 0,
        e.begrun, e.run_length,
    )  # fmt: skip


def _write_nop_in(e: NopIn, dslen: int) -> bytes:
    return _w(Opcode.NOP_IN, 0x80, 0, 0, dslen, e.lun, e.itt, e.ttt, e.stat_sn, e.exp_cmd_sn, e.max_cmd_sn)


def _write_scsi_response(e: ScsiResponse, dslen: int) -> bytes:
    b1 = 0x80 | 0x10 * e.bidi_overflow | 0x08 * e.bidi_underflow | 0x04 * e.overflow | 0x02 * e.underflow
    return _w(
        Opcode.SCSI_RESPONSE, b1, e.response, e.status, dslen, 0, e.itt, e.snack_tag, e.stat_sn, e.exp_cmd_sn,
        e.max_cmd_sn, e.exp_data_sn, e.bidi_residual, e.residual,
    )  # fmt: skip


def _write_task_mgmt_response(e: TaskMgmtResponse, dslen: int) -> bytes:
    return _w(Opcode.TASK_MGMT_RESPONSE, 0x80, e.response, 0, dslen, 0, e.itt, 0, e.stat_sn, e.exp_cmd_sn, e.max_cmd_sn)


def _write_login_response(e: LoginResponse, dslen: int) -> bytes:
    b1 = 0x80 * e.transit | 0x40 * e.cont | (e.csg & 3) << 2 | (e.nsg & 3)
    return struct.pack(
        ">BBBBI 6sH I I III BBxxxxxxxxxx", Opcode.LOGIN_RESPONSE, b1, e.version_max, e.version_active,
        _lengths(0, dslen), bytes(e.isid), e.tsih, e.itt, 0, e.stat_sn, e.exp_cmd_sn, e.max_cmd_sn,
        (e.status >> 8) & 0xFF, e.status & 0xFF,
    )  # fmt: skip


def _write_text_response(e: TextResponse, dslen: int) -> bytes:
    return _w(
        Opcode.TEXT_RESPONSE, 0x80 * e.final | 0x40 * e.cont, 0, 0, dslen, e.lun, e.itt, e.ttt, e.stat_sn,
        e.exp_cmd_sn, e.max_cmd_sn,
    )  # fmt: skip


def _write_data_in(e: DataIn, dslen: int) -> bytes:
    b1 = 0x80 * e.final | 0x40 * e.ack | 0x04 * e.overflow | 0x02 * e.underflow | 0x01 * e.status_present
    return _w(
        Opcode.DATA_IN, b1, 0, e.status if e.status_present else 0, dslen, e.lun, e.itt, e.ttt, e.stat_sn,
        e.exp_cmd_sn, e.max_cmd_sn, e.data_sn, e.offset, e.residual,
    )  # fmt: skip


def _write_logout_response(e: LogoutResponse, dslen: int) -> bytes:
    return _w(
        Opcode.LOGOUT_RESPONSE, 0x80, e.response, 0, dslen, 0, e.itt, 0, e.stat_sn, e.exp_cmd_sn, e.max_cmd_sn,
        0, (e.time2wait & 0xFFFF) << 16 | (e.time2retain & 0xFFFF),
    )  # fmt: skip


def _write_r2t(e: R2T, dslen: int) -> bytes:
    return _w(
        Opcode.R2T, 0x80, 0, 0, dslen, e.lun, e.itt, e.ttt, e.stat_sn, e.exp_cmd_sn, e.max_cmd_sn, e.r2t_sn,
        e.offset, e.length,
    )  # fmt: skip


def _write_async_message(e: AsyncMessage, dslen: int) -> bytes:
    return struct.pack(
        ">BBxxIQIIIIIBBHHHxxxx", Opcode.ASYNC_MESSAGE, 0x80, _lengths(0, dslen), e.lun, RESERVED_TAG, 0,
        e.stat_sn, e.exp_cmd_sn, e.max_cmd_sn, e.event, e.vcode, e.parameter1, e.parameter2, e.parameter3,
    )  # fmt: skip


def _write_reject(e: Reject, dslen: int) -> bytes:
    return _w(
        Opcode.REJECT, 0x80, e.reason, 0, dslen, 0, RESERVED_TAG, 0, e.stat_sn, e.exp_cmd_sn, e.max_cmd_sn,
        e.data_sn,
    )  # fmt: skip


Writer = Callable[[Any, int], bytes]

#: event class -> writer(event, data_segment_length) -> BHS (+ AHS).
WRITERS: dict[type[PDU], Writer] = {
    NopOut: _write_nop_out,
    ScsiCommand: _write_scsi_command,
    TaskMgmtRequest: _write_task_mgmt_request,
    LoginRequest: _write_login_request,
    TextRequest: _write_text_request,
    DataOut: _write_data_out,
    LogoutRequest: _write_logout_request,
    SnackRequest: _write_snack_request,
    NopIn: _write_nop_in,
    ScsiResponse: _write_scsi_response,
    TaskMgmtResponse: _write_task_mgmt_response,
    LoginResponse: _write_login_response,
    TextResponse: _write_text_response,
    DataIn: _write_data_in,
    LogoutResponse: _write_logout_response,
    R2T: _write_r2t,
    AsyncMessage: _write_async_message,
    Reject: _write_reject,
}

_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def data_pieces(event: PDU) -> list[Buffer]:
    """The data segment of an event as a list of buffers (Data-In keeps its list)."""
    if isinstance(event, DataIn):
        return [d for d in event.data if len(d)]
    data: Buffer = getattr(event, "data", b"")
    return [data] if len(data) else []


def write_pdu(
    event: PDU,
    *,
    header_digest: Callable[[Buffer], bytes] | None = None,
    data_digest: Callable[[Sequence[Buffer]], bytes] | None = None,
) -> list[Buffer]:
    """The wire form of one PDU as buffers: header [+digest], data pieces, padding [+digest].

    >>> b"".join(write_pdu(NopIn(itt=7, stat_sn=1)))[:2]
    b' \\x80'
    """
    pieces = data_pieces(event)
    dslen = 0
    for p in pieces:
        dslen += len(p)
    header = WRITERS[type(event)](event, dslen)
    out: list[Buffer] = [header]
    if header_digest is not None:
        out.append(header_digest(header))
    if dslen:
        out.extend(pieces)
        pad = _PAD[dslen & 3]
        if pad:
            out.append(pad)
            pieces = [*pieces, pad]
        if data_digest is not None:
            out.append(data_digest(pieces))
    return out


def read_pdu(wire: Buffer) -> tuple[PDU, int]:
    """Parse one complete PDU (no digests) from ``wire``; returns (event, bytes used).

    A convenience for tests and tools; the connection uses its own incremental framing.
    """
    if len(wire) < BHS_LEN:
        raise ValueError("need at least 48 bytes")
    opcode, _imm, ahs_len, dslen = parse_header(wire)
    total = BHS_LEN + ahs_len + dslen + pad_len(dslen)
    if len(wire) < total:
        raise ValueError(f"need {total} bytes, have {len(wire)}")
    reader = READERS.get(opcode)
    if reader is None:
        raise RemoteProtocolError(f"unknown opcode 0x{opcode:02x}", reject_reason=RejectReason.COMMAND_NOT_SUPPORTED)
    mv = memoryview(wire)
    ahs = bytes(mv[BHS_LEN : BHS_LEN + ahs_len])
    data = bytes(mv[BHS_LEN + ahs_len : BHS_LEN + ahs_len + dslen])
    return reader(bytes(mv[:BHS_LEN]), ahs, data), total
