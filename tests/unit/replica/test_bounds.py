"""A replica server bounds what one peer can make it hold: every answer's size is checked before
its request starts (an error answer, never an exception), and a connection whose answers are not
read stops being served. In-process servers on loopback, a hand-written peer (RawPeer) that sends
what the real client would refuse to.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from iscsikit.replica import protocol as p
from iscsikit.replica.client import ReplicaClient
from iscsikit.replica.pull import Puller
from iscsikit.replica.server import ReplicaServer
from iscsikit.replica.store import ReplicaStore
from tests.support.replicawire import RawPeer
from tests.unit.replica.conftest import run, wait_until
from tests.unit.replica.test_auth_server import pki, tls_creds, tls_security  # noqa: F401 - pki: a fixture

MiB = 1 << 20


class CountingStore(ReplicaStore):
    """A real store that counts the reads started (what a READ costs: a buffer of its length)."""

    reads = 0

    def read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        return super().read(offset, length)


async def serve(tmp_path: Path, size: int, **kw: int) -> tuple[ReplicaServer, CountingStore]:
    store = CountingStore.open(tmp_path / "r", size)
    server = ReplicaServer(store, **kw)
    await server.start("127.0.0.1", 0)
    return server, store


@run
async def test_answers_too_large_to_send_are_refused_before_any_work(tmp_path: Path) -> None:
    server, store = await serve(tmp_path, 64 * MiB)

    def attack() -> list[p.Frame]:
        peer = RawPeer("127.0.0.1", server.port)
        peer.claim()
        answers = [
            peer.call(p.Op.READ, offset=0, length=64 * MiB),
            peer.call(p.Op.CHECKSUM, offset=0, length=16 * MiB, payload=p.granule_payload(1)),
            peer.call(p.Op.CHECKSUM, offset=0, length=16 * MiB, payload=p.granule_payload(511)),
            peer.call(p.Op.SET_META, payload=p.pack_json({"members": [{"id": "x" * 70_000, "address": ""}]})),
            # The largest of each still works, and the connection with it:
            peer.call(p.Op.READ, offset=0, length=p.MAX_PAYLOAD),
            peer.call(p.Op.CHECKSUM, offset=0, length=64 * MiB, payload=p.granule_payload(p.MIN_GRANULE)),
            peer.call(p.Op.PING),
        ]
        peer.close()
        return answers

    big_read, granule_1, granule_511, big_meta, read, sums, ping = await asyncio.to_thread(attack)
    assert big_read.status == p.Status.EINVAL
    assert f"READ of {64 * MiB} bytes exceeds the {p.MAX_PAYLOAD}-byte payload limit" in big_read.error_text()
    assert granule_1.status == p.Status.EINVAL and "granule 1 is under the minimum of 512" in granule_1.error_text()
    assert granule_511.status == p.Status.EINVAL
    assert big_meta.status == p.Status.EINVAL and "SET_META payload" in big_meta.error_text()
    assert store.reads == 1, "the refused READ was started"
    assert read.status == p.Status.OK and len(read.payload) == p.MAX_PAYLOAD
    assert sums.status == p.Status.OK and len(sums.payload) == 4 * (64 * MiB // p.MIN_GRANULE)
    assert ping.status == p.Status.OK
    assert store.meta.members == []
    await server.close()


@run
async def test_answers_left_unread_stop_new_requests_until_the_peer_reads(tmp_path: Path) -> None:
    piece, budget, count = 4 * MiB, 8 * MiB, 32
    server, store = await serve(tmp_path, 64 * MiB, response_budget=budget)
    data = os.urandom(16 * MiB)
    store.write(0, data)

    peer = await asyncio.to_thread(RawPeer, "127.0.0.1", server.port, rcvbuf=64 << 10)
    await asyncio.to_thread(peer.claim)
    # Pipelined in one write (so the server decodes them all at once), and not one answer read.
    peer.pipeline([p.Frame(p.Op.READ, 0, (i % 4) * piece, piece) for i in range(count)])

    def waiting() -> bool:
        return store.reads >= count or any(c._waiting is not None for c in server._conns)

    await wait_until(waiting, "a READ waiting for the peer to read")
    # The budget, plus what the kernel's socket buffers took (a few MiB), plus the one that fits
    # when nothing is held: without the budget all 32 (128 MiB) would be read into memory.
    assert store.reads <= 6, f"{store.reads} READs of 4 MiB started while their answers sat unread"

    answers = await asyncio.to_thread(lambda: [peer.recv() for _ in range(count)])
    assert sorted(a.seq for a in answers) == list(range(2, count + 2))
    for a in answers:
        assert a.status == p.Status.OK and a.payload == data[a.offset : a.offset + piece]
    assert store.reads == count
    peer.close()
    # The rightful controller claims and works as before.
    client = ReplicaClient(f"127.0.0.1:{server.port}")
    await client.connect()
    await client.write(MiB, b"z" * 4096)
    assert await client.read(MiB - 4096, 8192) == data[MiB - 4096 : MiB] + b"z" * 4096
    client.close()
    await server.close()


@run
async def test_a_granted_peer_gets_the_same_bounds(tmp_path: Path) -> None:
    server, _ = await serve(tmp_path, 64 * MiB)
    owner = ReplicaClient(f"127.0.0.1:{server.port}")
    await owner.connect()
    await owner.write(0, b"d" * MiB)
    token = "g" * 32
    await owner.grant(token)

    def as_peer() -> list[p.Frame]:
        peer = RawPeer("127.0.0.1", server.port)
        hello = peer.call(p.Op.HELLO, payload=p.pack_json({"claim": False, "grant": token}))
        assert hello.status == p.Status.OK
        answers = [
            peer.call(p.Op.READ, offset=0, length=64 * MiB),
            peer.call(p.Op.CHECKSUM, offset=0, length=16 * MiB, payload=p.granule_payload(1)),
            peer.call(p.Op.READ, offset=0, length=4096),
        ]
        peer.close()
        return answers

    big_read, granule_1, read = await asyncio.to_thread(as_peer)
    assert big_read.status == p.Status.EINVAL and "payload limit" in big_read.error_text()
    assert granule_1.status == p.Status.EINVAL and "granule 1" in granule_1.error_text()
    assert read.status == p.Status.OK and read.payload == b"d" * 4096
    assert await owner.read(0, 4096) == b"d" * 4096  # the owner is undisturbed
    owner.close()
    await server.close()


@run
async def test_a_tls_peer_with_a_grant_served_on_the_loop_gets_the_same_bounds(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    certs = request.getfixturevalue("pki")  # test_auth_server's CA and certificates
    piece, budget, count = 4 * MiB, 8 * MiB, 32
    store = CountingStore.open(tmp_path / "r", 64 * MiB)
    server = ReplicaServer(store, security=tls_security(certs, 0), response_budget=budget)
    await server.start("127.0.0.1", 0)
    owner = ReplicaClient(f"127.0.0.1:{server.port}", credentials=tls_creds(certs))
    await owner.connect()
    await owner.set_meta(volume_id="vol-1", state="rw")
    data = os.urandom(16 * MiB)
    for off in range(0, len(data), piece):
        await owner.write(off, data[off : off + piece])
    token = "g" * 32
    await owner.grant(token)
    puller = Puller(store, f"tcp://127.0.0.1:{server.port}", token, "vol-1", 30.0, tls_security(certs, 1).peer)
    conn = await asyncio.to_thread(puller._connect)  # TLS, the secret, HELLO with the grant

    # Oversized answers, through the codec (the client refuses a granule of 1 itself: sent raw).
    reads_before = store.reads
    wire = p.encode(p.Frame(p.Op.READ, 900, 0, 64 * MiB)) + p.encode(
        p.Frame(p.Op.CHECKSUM, 901, 0, 16 * MiB, payload=p.granule_payload(1))
    )
    decoder = p.FrameDecoder()

    def exchange(wire: list[bytes], answers: int) -> list[p.Frame]:
        conn.sock.sendall(b"".join(wire))
        got: list[p.Frame] = []
        while len(got) < answers:
            frame = decoder.next_frame()
            if frame is None:
                decoder.receive_data(conn.sock.recv(1 << 20))
            else:
                got.append(frame)
        return got

    big_read, granule_1 = await asyncio.to_thread(exchange, wire, 2)
    assert big_read.status == p.Status.EINVAL and "payload limit" in big_read.error_text()
    assert granule_1.status == p.Status.EINVAL and "granule 1" in granule_1.error_text()
    assert store.reads == reads_before

    # Pipelined READs whose answers are not read: the queue of the loop-served peer holds the budget.
    wire = [b for i in range(count) for b in p.encode(p.Frame(p.Op.READ, 1000 + i, (i % 4) * piece, piece))]
    await asyncio.to_thread(conn.sock.sendall, b"".join(wire))
    await wait_until(
        lambda: store.reads - reads_before >= count or any(c._waiting is not None for c in server._conns),
        "a READ waiting for the peer to read",
    )
    started = store.reads - reads_before
    assert started <= 6, f"{started} READs of 4 MiB started while their answers sat unread"
    answers = await asyncio.to_thread(exchange, [], count)
    assert [a.seq for a in answers] == list(range(1000, 1000 + count))  # in order, all of them
    assert all(a.status == p.Status.OK and a.payload == data[a.offset : a.offset + piece] for a in answers)
    puller.close()
    owner.close()
    await server.close()
