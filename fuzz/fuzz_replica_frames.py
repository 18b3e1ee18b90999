"""Fuzz the replica protocol's frame decoder (iscsikit/replica/protocol.py): both ends of a connection.

The input's first byte picks the side and how the stream is cut into reads; for the client side
the next bytes choose the requests in flight (op, offset, length, granule). The rest is the
byte stream from the peer.

Invariants:

* only :class:`ReplicaProtocolError` (and its :class:`PayloadChecksumError`) leaves the decoder
  and the session objects; after a framing error (anything but a payload checksum error) the
  decoder keeps refusing with the same error;
* every frame decoded re-encodes to exactly the bytes it came from (the header carries every
  field, so the codec promises a byte-exact round trip), and ``decode_header`` agrees;
* ``check_request`` passed every request the server session returned; the payload helpers
  (JSON, granule, extents, checksums, pull results) and ``response_bound`` raise only
  ``ReplicaProtocolError``; an error answer fits the bound, and so does a READ's data;
* a response error for every request encodes and decodes back (what the server sends back);
* memory: a length field never reserves memory; the decoder holds at most what was received.
"""

from __future__ import annotations

import struct
import sys

from fuzz._common import allocation_limit, fuzz_main, instrument

with instrument("iscsikit.replica.protocol", "iscsikit.errors"):
    from iscsikit.errors import ReplicaProtocolError
    from iscsikit.replica.protocol import (
        HEADER_SIZE,
        MIN_GRANULE,
        ClientSession,
        Frame,
        FrameDecoder,
        Op,
        OrderedClient,
        PayloadChecksumError,
        PullResult,
        ServerSession,
        Status,
        check_request,
        decode_header,
        encode,
        granule_payload,
        parse_granule,
        response_bound,
        unpack_checksums,
        unpack_extents,
        unpack_json,
    )

CHUNKS = (0, 1, 5, 36, 37, 100, 4096, 0)
#: A small maximum, so inputs of a few KiB reach the limit and its error.
MAX_PAYLOAD = 1024


def _wire(frame: Frame) -> bytes:
    return b"".join(encode(frame))


def _same_bytes(frame: Frame, raw: bytes) -> None:
    assert _wire(frame) == raw, f"re-encoding {frame!r} does not give the bytes it came from"
    header = decode_header(raw[:HEADER_SIZE], MAX_PAYLOAD)
    assert header.frame.op == frame.op and header.frame.seq == frame.seq and header.payload_len == len(frame.payload)


def _payload_helpers(frame: Frame) -> None:
    payload = frame.payload
    for helper in (
        lambda: unpack_json(payload, frame.op.name),
        lambda: parse_granule(payload),
        lambda: unpack_extents(payload),
        lambda: unpack_checksums(payload),
        lambda: PullResult.unpack(payload),
    ):
        try:
            helper()
        except ReplicaProtocolError:
            pass
    try:
        bound = response_bound(frame)
    except ReplicaProtocolError:
        pass
    else:
        error = b"".join(ServerSession().respond_error(frame, Status.EIO, "x" * 5000))
        assert HEADER_SIZE <= len(error) <= bound, f"an error answer to {frame!r} exceeds its bound {bound}"
        if frame.op == Op.READ:
            assert bound >= HEADER_SIZE + frame.length
    if len(payload) == 4:
        try:
            assert granule_payload(parse_granule(payload)) == payload
        except ReplicaProtocolError:
            pass


def _server(stream: bytes, chunk: int, eof: bool) -> None:
    session = ServerSession(MAX_PAYLOAD)
    consumed = 0  # bytes of the stream taken out as frames, to compare re-encodings against
    feed_at = 0
    broken: ReplicaProtocolError | None = None
    while True:
        try:
            frame = session.next_request()
        except PayloadChecksumError as e:
            size = HEADER_SIZE + len(e.frame.payload)
            consumed += size
            reply = b"".join(session.respond_error(e.frame, Status.BADCRC, str(e)))
            assert decode_header(reply[:HEADER_SIZE]).frame.status == Status.BADCRC
            continue
        except ReplicaProtocolError as e:
            broken = e
            break
        if frame is not None:
            size = HEADER_SIZE + len(frame.payload)
            _same_bytes(frame, stream[consumed : consumed + size])
            consumed += size
            check_request(frame)  # next_request promised it
            _payload_helpers(frame)
            reply = b"".join(session.respond_error(frame, Status.EINVAL, "fuzz"))
            assert len(reply) <= HEADER_SIZE + 4096
            continue
        if feed_at >= len(stream):
            if eof and not session.at_eof:
                session.receive_data(b"")
                eof = False
                continue
            break
        session.receive_data(stream[feed_at : feed_at + chunk])
        feed_at += chunk
        assert session.buffered <= feed_at - consumed
    if broken is not None:
        for _ in range(2):
            try:
                session.next_request()
            except ReplicaProtocolError as again:
                assert again is broken or isinstance(broken, PayloadChecksumError)
            else:
                raise AssertionError("the decoder went on after a framing error")


_OPS = [Op.READ, Op.WRITE, Op.CHECKSUM, Op.EXTENTS, Op.PULL, Op.HELLO, Op.PING, Op.AUTH]


def _client(params: bytes, stream: bytes, chunk: int) -> None:
    client = ClientSession()
    ordered = OrderedClient()
    for i in range(0, len(params) - 3, 4):
        op = _OPS[params[i] % len(_OPS)]
        length = struct.unpack_from("<H", params, i + 1)[0]
        if op == Op.WRITE:
            kwargs: dict[str, object] = {"payload": bytes(length % 64)}
        elif op == Op.CHECKSUM:
            kwargs = {"length": length, "payload": granule_payload((params[i + 3] or 1) * MIN_GRANULE)}
        elif op == Op.HELLO:
            kwargs = {"payload": b'{"claim":true}'}
        elif op == Op.AUTH:
            kwargs = {"payload": b"\x01" + bytes(32)}
        else:
            kwargs = {"length": length}
        client.request(op, offset=params[i + 3] * 512, **kwargs)  # type: ignore[arg-type]
        ordered.request(op, offset=params[i + 3] * 512, **kwargs)  # type: ignore[arg-type]
    for at in range(0, len(stream), chunk):
        client.receive_data(stream[at : at + chunk])
        try:
            while (response := client.next_response()) is not None:
                assert response.frame.is_response
        except ReplicaProtocolError:
            break
    # The blocking driver's path: header, then payload.
    pos = 0
    while len(stream) - pos >= HEADER_SIZE:
        try:
            header = ordered.response_header(stream[pos : pos + HEADER_SIZE])
            payload = stream[pos + HEADER_SIZE : pos + HEADER_SIZE + header.payload_len]
            ordered.check_payload(header, payload)
        except ReplicaProtocolError:
            break
        pos += HEADER_SIZE + header.payload_len


def check(data: bytes) -> None:
    if not data:
        return
    config, rest = data[0], data[1:]
    with allocation_limit(8 * len(data) + (256 << 10), "frame decoder"):
        if config & 1:
            n = (config >> 4) * 4
            params, stream = rest[:n], rest[n:]
            chunk = CHUNKS[(config >> 1) & 7] or max(1, len(stream))
            _client(params, stream, chunk)
        else:
            chunk = CHUNKS[(config >> 1) & 7] or max(1, len(rest))
            _server(rest, chunk, bool(config & 0x10))
    decoder = FrameDecoder(MAX_PAYLOAD)
    decoder.receive_data(rest)
    decoder.receive_data(b"")
    try:
        while decoder.next_frame() is not None:
            pass
    except ReplicaProtocolError:
        pass


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
    sys.exit(0)
