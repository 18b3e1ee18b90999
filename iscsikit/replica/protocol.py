"""The replica wire protocol, sans-IO: frames, their codec, and the per-connection state.

Nothing here reads a socket or imports asyncio. The server (:mod:`iscsikit.replica.server`) and
the controller's client (:mod:`iscsikit.replica.client`) feed received bytes in with
:meth:`FrameDecoder.receive_data`, take whole frames out with :meth:`FrameDecoder.next_frame`,
and send what :func:`encode` returns. The format is specified in ``docs/replica-protocol.md``;
in short, every frame is a 36-byte little-endian header followed by ``payload_len`` bytes::

    magic u16 'RK' | version u8 | op u8 | flags u16 | status u16 | seq u32 | length u32 |
    offset u64 | payload_len u32 | payload_crc u32 (CRC32C of the payload) | header_crc u32

Requests carry a sequence number chosen by the client; the response to a request carries the
same ``seq`` and ``op`` with :data:`FLAG_RESPONSE` set, and may come back in any order
(pipelining). :class:`ClientSession` allocates sequence numbers and checks every response
against the request it answers; :class:`ServerSession` checks requests.

Example, a write and its response, back to back::

    >>> client, server = ClientSession(), ServerSession()
    >>> wire = b"".join(client.request(Op.WRITE, offset=4096, payload=b"x" * 512))
    >>> server.receive_data(wire)
    >>> req = server.next_request()
    >>> (req.op, req.offset, req.length)
    (<Op.WRITE: 3>, 4096, 512)
    >>> client.receive_data(b"".join(server.respond(req)))
    >>> resp = client.next_response()
    >>> (resp.frame.status, resp.request_length)
    (<Status.OK: 0>, 512)
"""

from __future__ import annotations

import array
import enum
import json
import struct
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from crc32c import crc32c as _crc32c_any

from iscsikit.errors import ReplicaProtocolError

Buffer = bytes | bytearray | memoryview

MAGIC = 0x4B52  # b"RK" on the wire
#: The frame format version (the header byte). Unchanged since the first protocol.
VERSION = 1
#: What this side speaks on top of the frame format, told in the HELLO response
#: (``protocol_revision``): 1 = the first protocol; 2 = also GRANT, SOURCE, PULL and status PEER
#: (replica-to-replica rebuild). A controller sends revision-2 ops only to replicas that say 2.
#: 3 = also AUTH (the shared-secret handshake, :mod:`iscsikit.replica.auth`). 4 = HELLO's
#: ``controller`` id: a controller fenced by a newer claim cannot claim the replica again.
PROTOCOL_REVISION = 4
HEADER = struct.Struct("<HBBHHIIQIII")
HEADER_SIZE = HEADER.size  # 36
_HEADER_CRC = struct.Struct("<I")
#: The largest payload a frame may carry; bigger I/O is split by the controller.
MAX_PAYLOAD = 16 << 20
#: The smallest CHECKSUM granule a replica computes: a sector (volumes are multiples of it).
MIN_GRANULE = 512
#: Most (start, length) pairs in one EXTENTS answer (16 bytes each: MAX_PAYLOAD).
MAX_EXTENTS = MAX_PAYLOAD // 16
#: Largest SET_META payload, and what an answer carrying the replica's metadata may take.
MAX_META = 64 << 10
#: An error answer's message is cut at this many bytes.
MAX_ERROR_TEXT = 4096
#: What any other answer may take: the header and an error message.
SMALL_ANSWER = HEADER_SIZE + MAX_ERROR_TEXT

FLAG_FUA = 0x0001  # WRITE: durable before the response
FLAG_RESPONSE = 0x8000
_KNOWN_FLAGS = FLAG_FUA | FLAG_RESPONSE


class Op(enum.IntEnum):
    """Request types. Data ops use ``offset``/``length``; control ops carry JSON payloads."""

    HELLO = 1  # payload JSON {"claim": bool}; response JSON replica metadata
    READ = 2  # response payload: ``length`` bytes
    WRITE = 3  # payload: the data (length == payload_len)
    UNMAP = 4
    FLUSH = 5  # fsync data and persist the revision counter
    PING = 6
    EXTENTS = 7  # response payload: (u64 start, u64 length) pairs of allocated data in the range
    CHECKSUM = 8  # payload u32 granule; response payload: one u32 CRC32C per granule
    SET_META = 9  # payload JSON fields to persist (volume_id, epoch, members, state, clean, revision)
    CLOSE = 10  # clean shutdown: flush and mark the replica clean
    # Revision 2: replica-to-replica rebuild (docs/replica-protocol.md, "Rebuild by pull").
    GRANT = 11  # to the source: payload JSON {"token"[, "revoke"]}; lets a peer read with the token
    SOURCE = 12  # to the target: payload JSON {"address", "token", "volume_id", "timeout"}: connect
    PULL = 13  # to the target: make the range identical to the source's; response: 3 u64 counters
    # Revision 3: the shared-secret handshake before any other request (iscsikit.replica.auth).
    AUTH = 14  # payload: a step byte and a nonce or a proof; see docs/replica-protocol.md


class Status(enum.IntEnum):
    """Response status. Anything but OK carries a UTF-8 message as payload."""

    OK = 0
    EIO = 1  # the replica's disk failed
    ENOSPC = 2  # the replica's filesystem is full
    EINVAL = 3  # a request outside the volume or malformed for its op
    BADCRC = 4  # the request payload did not match its CRC32C
    UNSUPPORTED = 5  # an op this replica does not know
    FENCED = 6  # another controller claimed the replica; this connection is stale
    STATE = 7  # the request conflicts with the replica's metadata (volume id, size)
    PEER = 8  # revision 2: the source replica of a SOURCE/PULL could not be reached or failed


_DATA_IN_REQUEST = {Op.WRITE, Op.HELLO, Op.SET_META, Op.CHECKSUM, Op.GRANT, Op.SOURCE, Op.AUTH}
_RANGE_OPS = {Op.READ, Op.WRITE, Op.UNMAP, Op.EXTENTS, Op.CHECKSUM, Op.PULL}
#: What a peer holding a read grant (not the owner) may send after its HELLO.
GRANTED_OPS = frozenset({Op.READ, Op.EXTENTS, Op.CHECKSUM, Op.PING})


def _crc32c(data: Buffer) -> int:
    """CRC32C of any buffer (bytes, bytearray, memoryview, mmap): no copy of receive buffers."""
    return int(_crc32c_any(data))


@dataclass(slots=True)
class Frame:
    """One decoded (or to-be-encoded) frame. ``payload`` is empty for most requests."""

    op: Op
    seq: int
    offset: int = 0
    length: int = 0
    flags: int = 0
    status: Status = Status.OK
    payload: bytes = b""

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def fua(self) -> bool:
        return bool(self.flags & FLAG_FUA)

    def error_text(self) -> str:
        return self.payload.decode("utf-8", "replace") if self.status != Status.OK else ""


def encode(frame: Frame, payload_crc: int | None = None) -> list[bytes]:
    """The frame as buffers to send in order (the payload is not copied).

    ``payload_crc`` may pass the payload's CRC32C when the caller already has it (the controller
    sends the same data to every replica and computes it once).
    """
    payload = frame.payload
    crc = (_crc32c(payload) if payload_crc is None else payload_crc) if payload else 0
    head = encode_head(frame, len(payload), crc)
    return [head, payload] if payload else [head]


def encode_head(frame: Frame, payload_len: int, payload_crc: int) -> bytes:
    """Just the 36-byte header of ``frame`` for a payload the caller sends itself (``sendfile``).

    ``frame.payload`` is ignored; ``payload_len`` and ``payload_crc`` describe what follows.
    """
    if payload_len > MAX_PAYLOAD:
        raise ReplicaProtocolError(f"payload_len {payload_len} exceeds the maximum {MAX_PAYLOAD}")
    head = HEADER.pack(
        MAGIC, VERSION, int(frame.op), frame.flags, int(frame.status), frame.seq, frame.length,
        frame.offset, payload_len, payload_crc if payload_len else 0, 0,
    )  # fmt: skip
    return head[:-4] + _HEADER_CRC.pack(_crc32c(head[:-4]))


@dataclass(slots=True)
class Header:
    """A decoded, checked header: ``frame`` (without its payload) and what the payload must be."""

    frame: Frame
    payload_len: int
    payload_crc: int


def decode_header(head: Buffer, max_payload: int = MAX_PAYLOAD) -> Header:
    """Decode and check a 36-byte header. Any :class:`ReplicaProtocolError` is a framing error.

    For drivers that receive payloads into their own buffers: read ``payload_len`` bytes next,
    then :func:`check_payload`.
    """
    if len(head) != HEADER_SIZE:
        raise ReplicaProtocolError(f"a header is {HEADER_SIZE} bytes, got {len(head)}")
    (magic, version, op, flags, status, seq, length, offset, plen, pcrc, hcrc) = HEADER.unpack(head)
    if magic != MAGIC:
        raise ReplicaProtocolError(f"bad magic {magic:#06x} (want {MAGIC:#06x}): not a replica protocol stream")
    if version != VERSION:
        raise ReplicaProtocolError(f"unsupported version {version} (this side speaks {VERSION})")
    want_hcrc = _crc32c(memoryview(head)[: HEADER_SIZE - 4])
    if hcrc != want_hcrc:
        raise ReplicaProtocolError(f"header_crc mismatch: header says {hcrc:#010x}, header has {want_hcrc:#010x}")
    try:
        op_e = Op(op)
    except ValueError:
        raise ReplicaProtocolError(f"unknown op {op} in seq={seq}") from None
    if flags & ~_KNOWN_FLAGS:
        raise ReplicaProtocolError(f"unknown flags {flags & ~_KNOWN_FLAGS:#06x} in {op_e.name} seq={seq}")
    try:
        status_e = Status(status)
    except ValueError:
        raise ReplicaProtocolError(f"unknown status {status} in {op_e.name} seq={seq}") from None
    if plen > max_payload:
        raise ReplicaProtocolError(f"payload_len {plen} of {op_e.name} seq={seq} exceeds the maximum {max_payload}")
    if plen == 0 and pcrc != 0:
        raise ReplicaProtocolError(f"payload_crc {pcrc:#010x} set on {op_e.name} seq={seq} without a payload")
    return Header(Frame(op_e, seq, offset, length, flags, status_e), plen, pcrc)


def check_payload(header: Header, payload: Buffer) -> None:
    """Raise :class:`PayloadChecksumError` unless ``payload`` matches the header's CRC32C.

    Not a framing error: the stream is still in sync after it.
    """
    if len(payload) != header.payload_len:
        raise ReplicaProtocolError(
            f"{header.frame.op.name} seq={header.frame.seq}: payload of {len(payload)} bytes, "
            f"payload_len says {header.payload_len}"
        )
    if header.payload_len:
        got = _crc32c(payload)
        if got != header.payload_crc:
            raise PayloadChecksumError(header.frame, got, header.payload_crc)


class PayloadChecksumError(ReplicaProtocolError):
    """A frame whose payload failed its CRC32C. The stream is still in sync: ``frame`` has the header."""

    def __init__(self, frame: Frame, got: int, want: int) -> None:
        self.frame = frame
        super().__init__(
            f"payload_crc mismatch in {frame.op.name} seq={frame.seq}: header says {want:#010x}, "
            f"payload has {got:#010x}"
        )


_COALESCE = 4096


class _Chunks:
    """Received bytes as a list of the transport's chunks: taking a payload out copies it once
    (a join), instead of once into a bytearray and once out of it."""

    __slots__ = ("_chunks", "_head", "_len")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._head = 0  # bytes of _chunks[0] already consumed
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, data: bytes) -> None:
        if data:
            chunks = self._chunks
            # Small reads are joined to a small last chunk: a peer that sends one byte at a time
            # would otherwise cost a bytes object (~40 bytes) per byte held (fuzz/regressions/).
            if chunks and len(data) < _COALESCE and len(chunks[-1]) < _COALESCE:
                chunks[-1] += data
            else:
                chunks.append(data)
            self._len += len(data)

    def peek(self, n: int) -> bytes:
        first = self._chunks[0]
        if len(first) - self._head >= n:
            return first[self._head : self._head + n]
        out = bytearray()
        for i, c in enumerate(self._chunks):
            out += c[self._head :] if i == 0 else c
            if len(out) >= n:
                break
        return bytes(out[:n])

    def take(self, n: int) -> bytes:
        pieces: list[bytes] = []
        self._len -= n
        chunks = self._chunks
        while n:
            c = chunks[0]
            avail = len(c) - self._head
            if self._head == 0 and avail <= n:
                pieces.append(c)
            else:
                pieces.append(c[self._head : self._head + min(n, avail)])
            if avail <= n:
                chunks.popleft()
                self._head = 0
                n -= avail
            else:
                self._head += n
                n = 0
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class FrameDecoder:
    """Turns a byte stream into frames. Any framing error is fatal for the connection.

    After a :class:`ReplicaProtocolError` other than :class:`PayloadChecksumError` the decoder
    refuses further use: the stream position can no longer be trusted.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._buf = _Chunks()
        self._max_payload = max_payload
        self._broken: ReplicaProtocolError | None = None
        self._eof = False

    def receive_data(self, data: Buffer) -> None:
        """Feed bytes from the transport; ``b""`` means end of stream."""
        if not data:
            self._eof = True
        self._buf.append(data if isinstance(data, bytes) else bytes(data))

    @property
    def at_eof(self) -> bool:
        """The peer closed and no whole frame is left."""
        return self._eof and len(self._buf) < HEADER_SIZE

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None if more bytes are needed."""
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        if len(buf) < HEADER_SIZE:
            if self._eof and len(buf):
                self._fail(f"stream ended inside a frame header ({len(buf)} of {HEADER_SIZE} bytes)")
            return None
        try:
            header = decode_header(buf.peek(HEADER_SIZE), self._max_payload)
        except ReplicaProtocolError as exc:
            self._broken = exc
            raise
        frame, plen = header.frame, header.payload_len
        if len(buf) < HEADER_SIZE + plen:
            if self._eof:
                self._fail(f"stream ended inside the payload of {frame.op.name} seq={frame.seq}")
            return None
        buf.take(HEADER_SIZE)
        if plen:
            frame.payload = buf.take(plen)
            got = _crc32c(frame.payload)
            if got != header.payload_crc:
                raise PayloadChecksumError(frame, got, header.payload_crc)
        return frame

    def _fail(self, message: str) -> Any:
        self._broken = ReplicaProtocolError(message)
        raise self._broken


# --------------------------------------------------------------------------------------
# Payload helpers

_EXTENT = struct.Struct("<QQ")
_GRANULE = struct.Struct("<I")


def pack_extents(extents: Iterable[tuple[int, int]], limit: int = MAX_EXTENTS) -> bytes:
    """(start, length) pairs as the EXTENTS response payload; more than ``limit`` pairs raise
    :class:`ReplicaProtocolError` as soon as the one too many arrives (``extents`` may be lazy)."""
    out = array.array("Q")
    for s, n in extents:
        if len(out) >= 2 * limit:
            raise ReplicaProtocolError(
                f"more than {limit} extents in the range: the answer would exceed the payload limit "
                "(ask a smaller range)"
            )
        out.append(s)
        out.append(n)
    return _little_endian(out)


def unpack_extents(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % _EXTENT.size:
        raise ReplicaProtocolError(f"EXTENTS payload of {len(payload)} bytes is not a multiple of 16")
    return [(s, n) for s, n in _EXTENT.iter_unpack(payload)]


def pack_checksums(values: Sequence[int]) -> bytes:
    if isinstance(values, array.array) and values.itemsize == 4:  # ReplicaStore.checksum_array
        return _little_endian(values)
    return struct.pack(f"<{len(values)}I", *values)


def _little_endian(values: array.array[int]) -> bytes:
    if sys.byteorder == "big":
        values = array.array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def unpack_checksums(payload: bytes) -> list[int]:
    if len(payload) % 4:
        raise ReplicaProtocolError(f"CHECKSUM payload of {len(payload)} bytes is not a multiple of 4")
    return list(struct.unpack(f"<{len(payload) // 4}I", payload))


def checksum_count(length: int, granule: int) -> int:
    return (length + granule - 1) // granule


def response_bound(req: Frame) -> int:
    """The most bytes the answer to request ``req`` can take on the wire, known before the request
    is started (integer arithmetic only: it runs for every request).

    Raises :class:`ReplicaProtocolError` (the replica answers ``EINVAL``) for a request whose
    answer could not be sent: a READ over :data:`MAX_PAYLOAD`, a CHECKSUM with a granule under
    :data:`MIN_GRANULE` or more checksums than :data:`MAX_PAYLOAD` holds, a SET_META payload over
    :data:`MAX_META`. An EXTENTS answer is bounded while it is listed (:data:`MAX_EXTENTS`); this
    counts the most a range can hold with 512-byte blocks of data and holes alternating.

        >>> response_bound(Frame(Op.READ, 1, 0, 4096))
        4132
    """
    op, length = req.op, req.length
    if op == Op.READ:
        if length > MAX_PAYLOAD:
            raise ReplicaProtocolError(
                f"READ of {length} bytes exceeds the {MAX_PAYLOAD}-byte payload limit (split it)"
            )
        return HEADER_SIZE + max(length, MAX_ERROR_TEXT)
    if op == Op.CHECKSUM:
        granule = parse_granule(req.payload)
        size = 4 * checksum_count(length, granule)
        if size > MAX_PAYLOAD:
            raise ReplicaProtocolError(
                f"CHECKSUM of {length} bytes per {granule} gives {size // 4} checksums, more than the "
                f"{MAX_PAYLOAD}-byte payload limit holds (ask a larger granule or a smaller range)"
            )
        return HEADER_SIZE + max(size, MAX_ERROR_TEXT)
    if op == Op.EXTENTS:
        return HEADER_SIZE + max(16 * min(MAX_EXTENTS, length // 1024 + 2), MAX_ERROR_TEXT)
    if op in (Op.HELLO, Op.SET_META, Op.SOURCE):
        if op == Op.SET_META and len(req.payload) > MAX_META:
            raise ReplicaProtocolError(f"SET_META payload of {len(req.payload)} bytes exceeds {MAX_META}")
        return HEADER_SIZE + MAX_META
    return SMALL_ANSWER


_PULL_RESULT = struct.Struct("<QQQ")


@dataclass(slots=True, frozen=True)
class PullResult:
    """What a PULL did in its range: bytes copied from the source, bytes whose checksums already
    matched (not copied), bytes of the target's own data unmapped where the source has holes."""

    copied: int = 0
    skipped: int = 0
    unmapped: int = 0

    def pack(self) -> bytes:
        return _PULL_RESULT.pack(self.copied, self.skipped, self.unmapped)

    @classmethod
    def unpack(cls, payload: Buffer) -> PullResult:
        if len(payload) != _PULL_RESULT.size:
            raise ReplicaProtocolError(f"PULL response payload is {len(payload)} bytes, want {_PULL_RESULT.size}")
        return cls(*_PULL_RESULT.unpack(payload))


def pack_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def unpack_json(payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReplicaProtocolError(f"{what} payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ReplicaProtocolError(f"{what} payload is a JSON {type(obj).__name__}, not an object")
    return obj


# --------------------------------------------------------------------------------------
# Connection state


@dataclass(slots=True)
class Response:
    """A response matched to its request: what was asked (op, offset, length) and the answer."""

    frame: Frame
    request_offset: int
    request_length: int


class ClientSession:
    """The controller's end of one connection: sequence numbers and response matching.

    ``request()`` returns the bytes to send; ``next_response()`` returns responses in the order
    they arrive, each checked against its request (op, data length, checksum count).
    """

    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._next_seq = 1
        # seq -> (op, offset, length, granule)
        self._pending: dict[int, tuple[Op, int, int, int]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def pending_seqs(self) -> list[int]:
        return list(self._pending)

    def request(
        self,
        op: Op,
        *,
        offset: int = 0,
        length: int | None = None,
        payload: bytes = b"",
        fua: bool = False,
        payload_crc: int | None = None,
    ) -> list[bytes]:
        """Bytes for a new request; :attr:`last_seq` is its sequence number."""
        if op == Op.WRITE:
            if length is not None and length != len(payload):
                raise ReplicaProtocolError(f"WRITE length {length} != payload length {len(payload)}")
            length = len(payload)
        elif op not in _DATA_IN_REQUEST and payload:
            raise ReplicaProtocolError(f"{op.name} requests carry no payload")
        length = length or 0
        granule = 0
        if op == Op.CHECKSUM:
            if len(payload) != 4:
                raise ReplicaProtocolError("CHECKSUM requests carry a 4-byte granule")
            granule = parse_granule(payload)
        seq = self._next_seq
        self._next_seq = 1 if seq >= 0xFFFFFFFF else seq + 1
        while self._next_seq in self._pending:  # wrapped around onto a slow request
            self._next_seq += 1
        self.last_seq = seq
        self._pending[seq] = (op, offset, length, granule)
        flags = FLAG_FUA if fua else 0
        return encode(Frame(op, seq, offset, length, flags, Status.OK, payload), payload_crc)

    def forget(self, seq: int) -> None:
        """Drop a request given up on (timed out); a late response to it is then an error."""
        self._pending.pop(seq, None)

    def receive_data(self, data: Buffer) -> None:
        self._decoder.receive_data(data)

    @property
    def at_eof(self) -> bool:
        return self._decoder.at_eof

    def next_response(self) -> Response | None:
        """The next response, or None if more bytes are needed.

        A response with a bad payload CRC is returned as an ``EIO`` response to its request
        (the stream is still in sync); framing errors raise :class:`ReplicaProtocolError`.
        """
        try:
            frame = self._decoder.next_frame()
        except PayloadChecksumError as exc:
            frame = exc.frame
            frame.status = Status.EIO
            frame.payload = str(exc).encode()
        if frame is None:
            return None
        if not frame.is_response:
            raise ReplicaProtocolError(f"got a request ({frame.op.name} seq={frame.seq}) from the replica")
        req = self._pending.pop(frame.seq, None)
        if req is None:
            raise ReplicaProtocolError(f"response {frame.op.name} seq={frame.seq} answers no pending request")
        op, offset, length, granule = req
        if frame.op != op:
            raise ReplicaProtocolError(f"response seq={frame.seq} is {frame.op.name}, the request was {op.name}")
        if frame.status == Status.OK:
            _check_response_size(op, frame.seq, len(frame.payload), length, granule)
        return Response(frame, offset, length)


def _check_response_size(op: Op, seq: int, n: int, length: int, granule: int) -> None:
    """A successful response carries the payload its request asked for (both clients check it)."""
    if op == Op.READ and n != length:
        raise ReplicaProtocolError(f"READ seq={seq} returned {n} bytes, {length} were asked")
    if op == Op.CHECKSUM and n != 4 * checksum_count(length, granule):
        raise ReplicaProtocolError(
            f"CHECKSUM seq={seq} returned {n // 4} values, {checksum_count(length, granule)} were asked"
        )
    if op == Op.EXTENTS and n % _EXTENT.size:
        raise ReplicaProtocolError(f"EXTENTS seq={seq} payload is {n} bytes, not pairs of u64")
    if op == Op.PULL and n != _PULL_RESULT.size:
        raise ReplicaProtocolError(f"PULL seq={seq} payload is {n} bytes, want {_PULL_RESULT.size}")


class OrderedClient:
    """A client for a connection whose server answers strictly in order, for blocking drivers
    that receive payloads into their own buffers (a rebuilding replica reading from its source).

    ``request()`` returns the bytes to send. For each response the driver reads 36 bytes and
    calls :meth:`response_header` (checked against the oldest pending request), then reads
    ``payload_len`` bytes wherever it likes and calls :meth:`check_payload`::

        >>> c = OrderedClient()
        >>> wire = b"".join(c.request(Op.READ, offset=0, length=4))
        >>> answer = encode(Frame(Op.READ, 1, 0, 4, FLAG_RESPONSE, Status.OK, b"data"))
        >>> h = c.response_header(answer[0])
        >>> (h.frame.op, h.payload_len)
        (<Op.READ: 2>, 4)
        >>> c.check_payload(h, answer[1])
    """

    def __init__(self) -> None:
        self._session = ClientSession()
        self._order: deque[int] = deque()

    @property
    def in_flight(self) -> int:
        return len(self._order)

    def request(self, op: Op, *, offset: int = 0, length: int | None = None, payload: bytes = b"") -> list[bytes]:
        bufs = self._session.request(op, offset=offset, length=length, payload=payload)
        self._order.append(self._session.last_seq)
        return bufs

    def response_header(self, head: Buffer) -> Header:
        """Decode a response header and check it answers the oldest request; framing errors raise."""
        header = decode_header(head)
        frame = header.frame
        if not frame.is_response:
            raise ReplicaProtocolError(f"got a request ({frame.op.name} seq={frame.seq}) from the server")
        if not self._order:
            raise ReplicaProtocolError(f"response {frame.op.name} seq={frame.seq} answers no pending request")
        want = self._order[0]
        if frame.seq != want:
            raise ReplicaProtocolError(f"response seq={frame.seq} out of order: seq={want} is answered first")
        op, _offset, length, granule = self._session._pending[want]
        if frame.op != op:
            raise ReplicaProtocolError(f"response seq={frame.seq} is {frame.op.name}, the request was {op.name}")
        if frame.status == Status.OK:
            _check_response_size(op, frame.seq, header.payload_len, length, granule)
        self._order.popleft()
        self._session.forget(want)
        return header

    def check_payload(self, header: Header, payload: Buffer) -> None:
        """The payload of the response ``header`` was received: raise unless its CRC32C matches."""
        check_payload(header, payload)


class ServerSession:
    """The replica's end of one connection: checks requests, builds responses."""

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self._decoder = FrameDecoder(max_payload)

    def receive_data(self, data: Buffer) -> None:
        self._decoder.receive_data(data)

    def limit_payload(self, max_payload: int) -> None:
        """Change the largest request payload accepted from now on (small until authenticated)."""
        self._decoder._max_payload = max_payload

    @property
    def at_eof(self) -> bool:
        return self._decoder.at_eof

    def next_request(self) -> Frame | None:
        """The next request, or None if more bytes are needed.

        Raises :class:`PayloadChecksumError` for a request whose data is corrupt (answer it with
        :meth:`respond_error` ``BADCRC`` and go on) and :class:`ReplicaProtocolError` for anything
        that breaks framing (close the connection).
        """
        frame = self._decoder.next_frame()
        if frame is None:
            return None
        check_request(frame)
        return frame

    @property
    def buffered(self) -> int:
        """Received bytes not yet taken out as requests."""
        return self._decoder.buffered

    def respond(self, request: Frame, payload: bytes = b"") -> list[bytes]:
        """Bytes of a successful response to ``request``."""
        return encode(Frame(request.op, request.seq, request.offset, request.length, FLAG_RESPONSE, Status.OK, payload))

    def respond_error(self, request: Frame, status: Status, message: str) -> list[bytes]:
        """Bytes of an error response to ``request``; ``message`` says what went wrong."""
        if status == Status.OK:
            raise ValueError("respond_error needs an error status")
        return encode(
            Frame(
                request.op, request.seq, request.offset, request.length, FLAG_RESPONSE, status,
                message.encode()[:MAX_ERROR_TEXT],
            )
        )  # fmt: skip


def check_request(frame: Frame) -> None:
    """Raise :class:`ReplicaProtocolError` for a request that breaks the rules of its op."""
    if frame.is_response:
        raise ReplicaProtocolError(f"got a response ({frame.op.name} seq={frame.seq}) from the controller")
    if frame.status != Status.OK:
        raise ReplicaProtocolError(f"request {frame.op.name} seq={frame.seq} has status {frame.status.name}")
    if frame.op == Op.WRITE and frame.length != len(frame.payload):
        raise ReplicaProtocolError(f"WRITE seq={frame.seq} length {frame.length} != payload_len {len(frame.payload)}")
    if frame.op not in _DATA_IN_REQUEST and frame.payload:
        raise ReplicaProtocolError(f"{frame.op.name} seq={frame.seq} carries a payload it must not have")
    if frame.fua and frame.op != Op.WRITE:
        raise ReplicaProtocolError(f"FUA flag on {frame.op.name} seq={frame.seq}")


def is_range_op(op: Op) -> bool:
    """Ops whose offset/length address the volume (checked against its size by the replica)."""
    return op in _RANGE_OPS


def granule_payload(granule: int) -> bytes:
    return _GRANULE.pack(granule)


def parse_granule(payload: bytes) -> int:
    if len(payload) != 4:
        raise ReplicaProtocolError(f"CHECKSUM request payload is {len(payload)} bytes, want a u32 granule")
    granule: int = _GRANULE.unpack(payload)[0]
    if granule < MIN_GRANULE:
        raise ReplicaProtocolError(f"CHECKSUM granule {granule} is under the minimum of {MIN_GRANULE} bytes")
    return granule
