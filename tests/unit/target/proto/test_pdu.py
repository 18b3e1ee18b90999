"""PDU codec: every opcode round-trips through its writer and reader (hypothesis)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iscsikit.target.proto import pdu as P
from iscsikit.target.proto.errors import RemoteProtocolError

u32 = st.integers(0, 0xFFFFFFFF)
u16 = st.integers(0, 0xFFFF)
u8 = st.integers(0, 0xFF)
lun = st.integers(0, (1 << 64) - 1)
data = st.binary(max_size=300)

FIELD_STRATEGIES = {
    "itt": u32,
    "ttt": u32,
    "cmd_sn": u32,
    "exp_stat_sn": u32,
    "stat_sn": u32,
    "exp_cmd_sn": u32,
    "max_cmd_sn": u32,
    "exp_data_sn": u32,
    "data_sn": u32,
    "offset": u32,
    "length": u32,
    "r2t_sn": u32,
    "residual": u32,
    "bidi_residual": u32,
    "snack_tag": u32,
    "referenced_itt": u32,
    "ref_cmd_sn": u32,
    "expected_length": u32,
    "begrun": u32,
    "run_length": u32,
    "lun": lun,
    "function": st.integers(0, 0x7F),
    "reason": st.integers(0, 0x7F),
    "type": st.integers(0, 0x0F),
    "status": u8,
    "response": u8,
    "cid": u16,
    "tsih": u16,
    "time2wait": u16,
    "time2retain": u16,
    "version_max": u8,
    "version_min": u8,
    "version_active": u8,
    "csg": st.integers(0, 3),
    "nsg": st.integers(0, 3),
    "attr": st.integers(0, 7),
    "isid": st.binary(min_size=6, max_size=6),
    "event": u8,
    "vcode": u8,
    "parameter1": u16,
    "parameter2": u16,
    "parameter3": u16,
    "data": data,
    "cdb": st.binary(min_size=16, max_size=16) | st.binary(min_size=17, max_size=64),
    "bidi_read_length": st.none() | u32,
}
PDUS = [
    P.NopOut, P.ScsiCommand, P.TaskMgmtRequest, P.LoginRequest, P.TextRequest, P.DataOut, P.LogoutRequest,
    P.SnackRequest, P.NopIn, P.ScsiResponse, P.TaskMgmtResponse, P.LoginResponse, P.TextResponse, P.DataIn,
    P.LogoutResponse, P.R2T, P.AsyncMessage, P.Reject,
]  # fmt: skip


def _strategy(cls: type) -> st.SearchStrategy[P.PDU]:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.type in ("bool",):
            kwargs[f.name] = st.booleans()
        elif cls is P.DataIn and f.name == "data":
            kwargs[f.name] = st.lists(st.binary(min_size=1, max_size=100), max_size=3)
        elif cls is P.LogoutRequest and f.name == "reason":
            kwargs[f.name] = st.integers(0, 0x7F)
        else:
            kwargs[f.name] = FIELD_STRATEGIES[f.name]
    return st.builds(cls, **kwargs)


def _normalise(event: P.PDU) -> P.PDU:
    if isinstance(event, P.DataIn):
        joined = b"".join(bytes(d) for d in event.data)
        event = dataclasses.replace(event, data=[joined] if joined else [])
        if not event.status_present:
            event = dataclasses.replace(event, status=0)
    if isinstance(event, P.ScsiCommand) and len(event.cdb) <= 16:
        event = dataclasses.replace(event, cdb=event.cdb.ljust(16, b"\0"))
    if hasattr(event, "data") and not isinstance(event, P.DataIn):
        event = dataclasses.replace(event, data=bytes(event.data))  # type: ignore[call-arg]
    return event


def test_every_opcode_has_a_reader_and_writer() -> None:
    assert {cls.opcode for cls in PDUS} == set(P.READERS)
    assert set(PDUS) == set(P.WRITERS)


@pytest.mark.parametrize("cls", PDUS, ids=lambda c: c.__name__)
@settings(deadline=None)
@given(data=st.data())
def test_round_trip(cls: type, data: st.DataObject) -> None:
    event = data.draw(_strategy(cls))
    wire = b"".join(bytes(p) for p in P.write_pdu(event))
    assert len(wire) % 4 == 0
    parsed, used = P.read_pdu(wire)
    assert used == len(wire)
    assert _normalise(parsed) == _normalise(event)


def test_lun_encoding() -> None:
    assert P.decode_lun(P.encode_lun(0)) == 0
    assert P.decode_lun(P.encode_lun(255)) == 255
    assert P.decode_lun(P.encode_lun(256)) == 256
    assert P.decode_lun(P.encode_lun(16383)) == 16383
    assert P.encode_lun(1) == 0x0001000000000000
    assert P.decode_lun(0xC0 << 56) == -1  # extended addressing: not ours
    with pytest.raises(ValueError):
        P.encode_lun(16384)


@settings(deadline=None)
@given(st.binary(min_size=48, max_size=200))
def test_readers_never_crash_on_garbage(raw: bytes) -> None:
    opcode, _imm, ahs_len, dslen = P.parse_header(raw)
    reader = P.READERS.get(opcode)
    if reader is None:
        return
    try:
        reader(raw[:48], raw[48 : 48 + ahs_len], raw[48 + ahs_len :][:dslen])
    except RemoteProtocolError as e:
        assert e.reject_reason is not None
