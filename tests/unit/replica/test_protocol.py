"""The replica wire protocol: codec round trips, corruption, fuzzing, request/response matching."""

from __future__ import annotations

import array
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iscsikit.errors import ReplicaProtocolError
from iscsikit.replica import protocol as p
from tests.support.profiles import examples

frames = st.builds(
    p.Frame,
    op=st.sampled_from(list(p.Op)),
    seq=st.integers(0, 2**32 - 1),
    offset=st.integers(0, 2**64 - 1),
    length=st.integers(0, 2**32 - 1),
    flags=st.sampled_from([0, p.FLAG_FUA, p.FLAG_RESPONSE, p.FLAG_FUA | p.FLAG_RESPONSE]),
    status=st.sampled_from(list(p.Status)),
    payload=st.binary(max_size=3000),
)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for c in [*points, len(data)]:
        out.append(data[prev:c])
        prev = c
    return [c for c in out if c]


@given(st.lists(frames, min_size=1, max_size=5), st.lists(st.integers(0, 10**6), max_size=12))
def test_frames_round_trip_through_any_chunking(items: list[p.Frame], cuts: list[int]) -> None:
    wire = b"".join(b for f in items for b in p.encode(f))
    dec = p.FrameDecoder()
    got = []
    for piece in chunks(wire, cuts):
        dec.receive_data(piece)
        while (frame := dec.next_frame()) is not None:
            got.append(frame)
    assert got == items
    assert dec.buffered == 0


@given(frames, st.data())
def test_any_corrupted_header_byte_is_rejected_by_name(frame: p.Frame, data: st.DataObject) -> None:
    wire = bytearray(b"".join(p.encode(frame)))
    pos = data.draw(st.integers(0, p.HEADER_SIZE - 1))
    wire[pos] ^= data.draw(st.integers(1, 255))
    dec = p.FrameDecoder()
    dec.receive_data(bytes(wire))
    with pytest.raises(ReplicaProtocolError) as exc:
        while dec.next_frame() is not None:
            pass
    assert any(w in str(exc.value) for w in ("magic", "version", "header_crc"))
    with pytest.raises(ReplicaProtocolError):  # the decoder stays broken
        dec.next_frame()


@given(st.binary(min_size=1, max_size=2000), st.data())
def test_corrupt_payload_is_reported_and_the_stream_stays_in_sync(payload: bytes, data: st.DataObject) -> None:
    first = p.Frame(p.Op.WRITE, 7, 4096, len(payload), 0, p.Status.OK, payload)
    second = p.Frame(p.Op.PING, 8)
    wire = bytearray(b"".join(p.encode(first) + p.encode(second)))
    pos = p.HEADER_SIZE + data.draw(st.integers(0, len(payload) - 1))
    wire[pos] ^= 0x40
    dec = p.FrameDecoder()
    dec.receive_data(bytes(wire))
    with pytest.raises(p.PayloadChecksumError) as exc:
        dec.next_frame()
    assert exc.value.frame.seq == 7
    assert "payload_crc mismatch in WRITE seq=7" in str(exc.value)
    assert dec.next_frame() == second


@settings(max_examples=examples(300))
@given(st.binary(max_size=400))
def test_garbage_only_ever_raises_protocol_errors(junk: bytes) -> None:
    for session in (p.ServerSession(), p.ClientSession()):
        session.receive_data(junk)
        session.receive_data(b"")
        nxt = session.next_request if isinstance(session, p.ServerSession) else session.next_response
        try:
            while nxt() is not None:
                pass
        except ReplicaProtocolError:
            pass


def test_oversized_payload_is_refused_before_it_is_buffered() -> None:
    head = p.encode(p.Frame(p.Op.WRITE, 1, 0, 4, 0, p.Status.OK, b"abcd"))[0]
    dec = p.FrameDecoder(max_payload=2)
    dec.receive_data(head)
    with pytest.raises(ReplicaProtocolError, match="payload_len 4 of WRITE seq=1 exceeds the maximum 2"):
        dec.next_frame()


def test_stream_ending_inside_a_frame_is_an_error() -> None:
    wire = b"".join(p.encode(p.Frame(p.Op.WRITE, 1, 0, 10, 0, p.Status.OK, b"0123456789")))
    dec = p.FrameDecoder()
    dec.receive_data(wire[:-3])
    assert dec.next_frame() is None
    dec.receive_data(b"")
    with pytest.raises(ReplicaProtocolError, match="stream ended inside the payload of WRITE seq=1"):
        dec.next_frame()


def test_pipelined_responses_match_their_requests_in_any_order() -> None:
    client, server = p.ClientSession(), p.ServerSession()
    wire = b""
    for i in range(20):
        wire += b"".join(client.request(p.Op.READ, offset=i * 512, length=512))
    server.receive_data(wire)
    reqs = []
    while (r := server.next_request()) is not None:
        reqs.append(r)
    assert [r.offset for r in reqs] == [i * 512 for i in range(20)]
    random.Random(5).shuffle(reqs)
    client.receive_data(b"".join(b for r in reqs for b in server.respond(r, bytes([r.offset // 512]) * 512)))
    got = []
    while (resp := client.next_response()) is not None:
        assert resp.frame.payload == bytes([resp.request_offset // 512]) * 512
        got.append(resp.frame.seq)
    assert got == [r.seq for r in reqs]
    assert client.in_flight == 0


def test_client_rejects_responses_that_do_not_fit_the_request() -> None:
    server = p.ServerSession()
    client = p.ClientSession()
    server.receive_data(b"".join(client.request(p.Op.READ, offset=0, length=512)))
    req = server.next_request()
    assert req is not None
    client.receive_data(b"".join(server.respond(req, b"short")))
    with pytest.raises(ReplicaProtocolError, match="READ seq=1 returned 5 bytes, 512 were asked"):
        client.next_response()

    client = p.ClientSession()
    client.receive_data(b"".join(server.respond(p.Frame(p.Op.PING, 99))))
    with pytest.raises(ReplicaProtocolError, match="PING seq=99 answers no pending request"):
        client.next_response()

    client = p.ClientSession()
    client.request(p.Op.CHECKSUM, offset=0, length=2000, payload=p.granule_payload(512))
    client.receive_data(b"".join(server.respond(p.Frame(p.Op.CHECKSUM, 1), p.pack_checksums([1, 2]))))
    with pytest.raises(ReplicaProtocolError, match="CHECKSUM seq=1 returned 2 values, 4 were asked"):
        client.next_response()


def test_server_rejects_malformed_requests() -> None:
    server = p.ServerSession()
    server.receive_data(b"".join(p.encode(p.Frame(p.Op.READ, 3, 0, 512, 0, p.Status.OK, b"data"))))
    with pytest.raises(ReplicaProtocolError, match="READ seq=3 carries a payload"):
        server.next_request()
    server = p.ServerSession()
    server.receive_data(b"".join(p.encode(p.Frame(p.Op.WRITE, 4, 0, 9, 0, p.Status.OK, b"data"))))
    with pytest.raises(ReplicaProtocolError, match="WRITE seq=4 length 9 != payload_len 4"):
        server.next_request()
    server = p.ServerSession()
    server.receive_data(b"".join(p.encode(p.Frame(p.Op.FLUSH, 5, flags=p.FLAG_FUA))))
    with pytest.raises(ReplicaProtocolError, match="FUA flag on FLUSH seq=5"):
        server.next_request()


def test_error_responses_carry_their_message() -> None:
    client, server = p.ClientSession(), p.ServerSession()
    server.receive_data(b"".join(client.request(p.Op.FLUSH)))
    req = server.next_request()
    assert req is not None
    client.receive_data(b"".join(server.respond_error(req, p.Status.ENOSPC, "disk full")))
    resp = client.next_response()
    assert resp is not None
    assert (resp.frame.status, resp.frame.error_text()) == (p.Status.ENOSPC, "disk full")


@given(st.lists(st.tuples(st.integers(0, 2**63), st.integers(0, 2**63)), max_size=20))
def test_extent_and_checksum_payloads_round_trip(extents: list[tuple[int, int]]) -> None:
    assert p.unpack_extents(p.pack_extents(extents)) == extents
    sums = [s & 0xFFFFFFFF for s, _ in extents]
    assert p.unpack_checksums(p.pack_checksums(sums)) == sums


def test_protocol_core_imports_no_asyncio() -> None:
    code = "import sys, iscsikit.replica.protocol; print('asyncio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------------------
# Revision 2: headers decoded on their own (payloads received into the driver's buffers),
# in-order clients, PULL results, and the rules of the new ops.


@given(frames)
def test_header_alone_round_trips_and_matches_the_full_encoding(frame: p.Frame) -> None:
    wire = p.encode(frame)
    crc = p.HEADER.unpack(wire[0])[9]
    assert p.encode_head(frame, len(frame.payload), crc) == wire[0]
    header = p.decode_header(wire[0])
    assert header.payload_len == len(frame.payload)
    got = header.frame
    assert (got.op, got.seq, got.offset, got.length, got.flags, got.status) == (
        frame.op, frame.seq, frame.offset, frame.length, frame.flags, frame.status,
    )  # fmt: skip
    p.check_payload(header, memoryview(bytearray(frame.payload)))  # any buffer type will do


@settings(max_examples=examples(500))
@given(st.binary(min_size=p.HEADER_SIZE, max_size=p.HEADER_SIZE))
def test_decode_header_only_ever_raises_protocol_errors(junk: bytes) -> None:
    try:
        header = p.decode_header(junk)
    except ReplicaProtocolError:
        return
    assert header.payload_len <= p.MAX_PAYLOAD


@given(st.binary(min_size=1, max_size=3000), st.data())
def test_check_payload_names_the_frame_of_a_corrupt_payload(payload: bytes, data: st.DataObject) -> None:
    wire = p.encode(p.Frame(p.Op.READ, 9, 0, len(payload), p.FLAG_RESPONSE, p.Status.OK, payload))
    header = p.decode_header(wire[0])
    bad = bytearray(payload)
    bad[data.draw(st.integers(0, len(bad) - 1))] ^= 0x01
    with pytest.raises(p.PayloadChecksumError, match="payload_crc mismatch in READ seq=9"):
        p.check_payload(header, memoryview(bad))
    with pytest.raises(ReplicaProtocolError, match="payload of 0 bytes"):
        p.check_payload(header, b"")


@given(st.lists(st.integers(1, 1 << 20), min_size=1, max_size=12))
def test_ordered_client_accepts_in_order_answers_and_refuses_any_other(lengths: list[int]) -> None:
    client = p.OrderedClient()
    server = p.ServerSession()
    offset = 0
    for n in lengths:
        server.receive_data(b"".join(client.request(p.Op.READ, offset=offset, length=n)))
        offset += n
    reqs = []
    while (r := server.next_request()) is not None:
        reqs.append(r)
    assert client.in_flight == len(lengths)
    if len(reqs) > 1:  # the second answer first: refused
        head = p.encode_head(p.Frame(p.Op.READ, reqs[1].seq, flags=p.FLAG_RESPONSE), reqs[1].length, 1)
        with pytest.raises(ReplicaProtocolError, match="out of order"):
            p.OrderedClient.response_header(_copy_client(client), head)
    for r in reqs:
        head, *body = server.respond(r, bytes(r.length))
        header = client.response_header(head)
        assert (header.frame.seq, header.payload_len) == (r.seq, r.length)
        client.check_payload(header, body[0])
    assert client.in_flight == 0
    with pytest.raises(ReplicaProtocolError, match="answers no pending request"):
        client.response_header(p.encode_head(p.Frame(p.Op.PING, 1, flags=p.FLAG_RESPONSE), 0, 0))


def _copy_client(client: p.OrderedClient) -> p.OrderedClient:
    import copy

    return copy.deepcopy(client)


def test_ordered_client_checks_what_answers_a_request() -> None:
    client = p.OrderedClient()
    client.request(p.Op.READ, offset=0, length=512)
    with pytest.raises(ReplicaProtocolError, match="READ seq=1 returned 5 bytes, 512 were asked"):
        p.OrderedClient.response_header(
            _copy_client(client), p.encode_head(p.Frame(p.Op.READ, 1, 0, 512, p.FLAG_RESPONSE), 5, 1)
        )
    with pytest.raises(ReplicaProtocolError, match="is EXTENTS, the request was READ"):
        p.OrderedClient.response_header(
            _copy_client(client), p.encode_head(p.Frame(p.Op.EXTENTS, 1, 0, 512, p.FLAG_RESPONSE), 0, 0)
        )
    with pytest.raises(ReplicaProtocolError, match="got a request"):
        p.OrderedClient.response_header(_copy_client(client), p.encode_head(p.Frame(p.Op.READ, 1, 0, 512), 0, 0))
    # An error answer has a message instead of the data.
    error = p.encode(p.Frame(p.Op.READ, 1, 0, 512, p.FLAG_RESPONSE, p.Status.FENCED, b"no grant"))
    header = client.response_header(error[0])
    client.check_payload(header, error[1])
    assert header.frame.status == p.Status.FENCED


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_pull_results_round_trip(copied: int, skipped: int, unmapped: int) -> None:
    result = p.PullResult(copied, skipped, unmapped)
    assert p.PullResult.unpack(result.pack()) == result
    with pytest.raises(ReplicaProtocolError, match="PULL response payload is 23 bytes"):
        p.PullResult.unpack(result.pack()[:-1])


def test_pull_response_must_carry_its_counters() -> None:
    client, server = p.ClientSession(), p.ServerSession()
    server.receive_data(b"".join(client.request(p.Op.PULL, offset=0, length=4096)))
    req = server.next_request()
    assert req is not None and p.is_range_op(req.op)
    client.receive_data(b"".join(server.respond(req, b"\0" * 8)))
    with pytest.raises(ReplicaProtocolError, match="PULL seq=1 payload is 8 bytes, want 24"):
        client.next_response()


def test_revision_2_request_rules() -> None:
    for op in (p.Op.GRANT, p.Op.SOURCE):  # JSON in the request
        server = p.ServerSession()
        server.receive_data(b"".join(p.encode(p.Frame(op, 1, payload=b"{}"))))
        assert server.next_request() is not None
    server = p.ServerSession()
    server.receive_data(b"".join(p.encode(p.Frame(p.Op.PULL, 2, 0, 512, payload=b"x"))))
    with pytest.raises(ReplicaProtocolError, match="PULL seq=2 carries a payload"):
        server.next_request()
    assert {p.Op.READ, p.Op.EXTENTS, p.Op.CHECKSUM, p.Op.PING} == p.GRANTED_OPS
    assert p.Status.PEER == 8 and p.PROTOCOL_REVISION == 4 and p.VERSION == 1 and p.Op.AUTH == 14


# --------------------------------------------------------------------------------------
# Bounds: every answer's size is known before its request starts.


def test_answers_that_could_not_be_sent_are_refused_by_name() -> None:
    def bound(op: p.Op, length: int = 0, payload: bytes = b"") -> int:
        return p.response_bound(p.Frame(op, 7, 0, length, payload=payload))

    assert bound(p.Op.READ, p.MAX_PAYLOAD) == p.HEADER_SIZE + p.MAX_PAYLOAD
    with pytest.raises(ReplicaProtocolError, match=f"READ of {64 << 20} bytes exceeds the {p.MAX_PAYLOAD}-byte"):
        bound(p.Op.READ, 64 << 20)
    with pytest.raises(ReplicaProtocolError, match="granule 1 is under the minimum of 512 bytes"):
        bound(p.Op.CHECKSUM, 16 << 20, p.granule_payload(1))
    # 2**32 - 1 bytes per 512: 8 Mi checksums, 32 MiB; per 1024 exactly what a payload holds.
    with pytest.raises(ReplicaProtocolError, match="gives 8388608 checksums, more than the 16777216-byte"):
        bound(p.Op.CHECKSUM, 2**32 - 1, p.granule_payload(512))
    assert bound(p.Op.CHECKSUM, 2**32 - 1, p.granule_payload(1024)) == p.HEADER_SIZE + p.MAX_PAYLOAD
    assert bound(p.Op.EXTENTS, 2**32 - 1) == p.HEADER_SIZE + p.MAX_PAYLOAD
    assert bound(p.Op.EXTENTS, 1 << 20) == p.HEADER_SIZE + 16 * 1026  # 512-byte data and holes alternating
    with pytest.raises(ReplicaProtocolError, match="SET_META payload of 65537 bytes exceeds 65536"):
        bound(p.Op.SET_META, payload=b" " * (p.MAX_META + 1))
    assert bound(p.Op.WRITE, 1 << 20, b"x" * (1 << 20)) == p.SMALL_ANSWER  # a write's answer is small
    # The client refuses to ask for a granule the replica would refuse.
    with pytest.raises(ReplicaProtocolError, match="granule 256 is under the minimum"):
        p.ClientSession().request(p.Op.CHECKSUM, offset=0, length=4096, payload=p.granule_payload(256))


def test_an_extents_answer_stops_at_its_limit_without_listing_the_rest() -> None:
    many = ((i * 8192, 4096) for i in range(5000))  # a range could hold millions
    with pytest.raises(ReplicaProtocolError, match="more than 1000 extents in the range"):
        p.pack_extents(many, limit=1000)
    assert next(many) == (1001 * 8192, 4096)  # the 1001st was the last one taken
    assert len(p.pack_extents([(0, 1)] * 1000, limit=1000)) == 16000


def test_checksums_packed_from_an_array_match_the_list_encoding() -> None:
    sums = [0, 1, 0xFFFFFFFF, 0x12345678]
    assert p.pack_checksums(array.array("I", sums)) == p.pack_checksums(sums)
