"""Fuzz the iSCSI PDU codec (iscsikit/target/proto/pdu.py) and the key=value text codec (text.py).

Invariants, for any bytes:

* ``read_pdu`` either returns one PDU or raises what it documents: ``ValueError`` ("need N
  bytes") for a short buffer, :class:`RemoteProtocolError` for an unknown opcode or a bad AHS.
* decode, encode, decode gives the same event, and encoding that again gives the same bytes
  (the writers drop reserved fields, so the first encoding may differ from the input).
* a LUN field that decodes to a LUN number encodes back to a field that decodes to it.
* the text segment of a Login/Text PDU decodes to pairs whose keys follow RFC 7143's key grammar,
  or raises :class:`RemoteProtocolError`; encode then decode gives the same pairs.
* nothing allocates more than a few times the input: lengths in the header never reserve memory.
"""

from __future__ import annotations

import re
import sys

from fuzz._common import allocation_limit, fuzz_main, instrument

with instrument("iscsikit.target.proto"):
    from iscsikit.target.proto.errors import RemoteProtocolError
    from iscsikit.target.proto.pdu import (
        BHS_LEN,
        PDU,
        LoginRequest,
        LoginResponse,
        TextRequest,
        TextResponse,
        decode_lun,
        encode_lun,
        pad_len,
        parse_header,
        read_pdu,
        write_pdu,
    )
    from iscsikit.target.proto.text import MAX_VALUE_LEN, decode_text, encode_text

_KEY = re.compile(r"[A-Za-z0-9.\-+@_]{1,63}")
_TEXT_PDUS = (LoginRequest, LoginResponse, TextRequest, TextResponse)


def _wire(event: PDU) -> bytes:
    return b"".join(bytes(b) for b in write_pdu(event))


def _check_text(data: bytes) -> None:
    try:
        pairs = decode_text(data)
    except RemoteProtocolError:
        return
    for key, value in pairs:
        assert _KEY.fullmatch(key), f"decode_text accepted the key {key!r}"
        assert len(value.encode()) <= MAX_VALUE_LEN
    assert len({k for k, _ in pairs}) == len(pairs), "a key decoded twice"
    assert decode_text(encode_text(pairs)) == pairs


def check(data: bytes) -> None:
    with allocation_limit(4 * len(data) + (64 << 10), "read_pdu"):
        try:
            event, used = read_pdu(data)
        except ValueError as e:
            assert str(e).startswith("need "), f"undocumented ValueError from read_pdu: {e}"
            return
        except RemoteProtocolError:
            return
    _opcode, _imm, ahs_len, dslen = parse_header(data)
    assert used == BHS_LEN + ahs_len + dslen + pad_len(dslen) <= len(data)
    wire = _wire(event)
    again, used2 = read_pdu(wire)
    assert used2 == len(wire), (used2, len(wire))
    assert again == event, f"decode(encode(e)) != e:\n{again!r}\n{event!r}"
    assert _wire(again) == wire, "encoding is not stable"
    lun_field = getattr(event, "lun", None)
    if lun_field is not None:
        lun = decode_lun(lun_field)
        if lun >= 0:
            assert decode_lun(encode_lun(lun)) == lun
    if isinstance(event, _TEXT_PDUS):
        _check_text(bytes(event.data))


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
    sys.exit(0)
