"""Replica servers with a secret (and TLS), in the test's event loop on loopback.

What a user would notice: a stranger's connection (no secret, a wrong secret) gets one clear
refusal and is closed; it cannot claim, write, change metadata or make the replica connect
anywhere; the rightful controller goes on working and the data and metadata are unchanged.
Connections in their handshake are limited in number and in time, each refusal logged once.
Rebuild by pull authenticates replica to replica with the servers' own secret (and TLS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path

import pytest

from iscsikit.errors import ReplicaAuthError
from iscsikit.replica import auth
from iscsikit.replica import protocol as p
from iscsikit.replica.auth import Credentials, ServerSecurity
from iscsikit.replica.client import ReplicaClient
from iscsikit.replica.pull import Puller
from tests.support.tiers import require
from tests.unit.replica.cluster import LocalCluster
from tests.unit.replica.conftest import all_rw, fast, run, wait_until

MiB = 1 << 20
SIZE = 16 * MiB
SECRET = b"6f1c0e3a9b8d47e2a5c3f0e1d2b4a697"
WRONG = b"00000000000000000000000000000000"
CREDS = Credentials(SECRET)


def secured(n: int, secret: bytes = SECRET) -> list[ServerSecurity]:
    return [ServerSecurity(secret, None, Credentials(secret))] * n


def pattern(tag: int, n: int) -> bytes:
    return (tag.to_bytes(4, "little") * (n // 4 + 1))[:n]


def wire(*frames: p.Frame) -> bytes:
    return b"".join(b"".join(p.encode(f)) for f in frames)


async def talk(port: int, data: bytes, then: bytes = b"") -> list[p.Frame]:
    """Send ``data`` (and ``then`` after the first answer) on a new connection; every answer until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        writer.write(data)
        if then:
            got = await asyncio.wait_for(reader.read(p.HEADER_SIZE + 64 + 36), 10)
            writer.write(then)
        got += await asyncio.wait_for(reader.read(), 10)
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    dec = p.FrameDecoder()
    dec.receive_data(got)
    dec.receive_data(b"")
    frames = []
    while (f := dec.next_frame()) is not None:
        frames.append(f)
    return frames


def attack_requests(volume_id: str, listener_port: int) -> list[p.Frame]:
    """What the issue's stranger did: claim, write EVIL, set epoch/members/revision, SOURCE anywhere."""
    source = {"address": f"tcp://127.0.0.1:{listener_port}", "token": "t" * 16, "volume_id": volume_id, "timeout": 1}
    evil = b"EVIL" * 1024
    return [
        p.Frame(p.Op.HELLO, 11, payload=p.pack_json({"claim": True})),
        p.Frame(p.Op.WRITE, 12, 0, len(evil), payload=evil),
        p.Frame(
            p.Op.SET_META, 13,
            payload=p.pack_json({"epoch": 99, "members": [{"id": "evil", "address": "x"}], "revision": 10**6}),
        ),
        p.Frame(p.Op.SOURCE, 14, payload=p.pack_json(source)),
        p.Frame(p.Op.PULL, 15, 0, 4096),
    ]  # fmt: skip


@pytest.mark.parametrize("stranger", ["no secret", "wrong secret"])
@run
async def test_a_stranger_cannot_claim_write_set_meta_or_source(
    tmp_path: Path, stranger: str, caplog: pytest.LogCaptureFixture
) -> None:
    c = LocalCluster(tmp_path, 1, SIZE, secured(1))
    await c.start()
    b = fast(c.addresses, credentials=CREDS)
    await b.open()
    good = pattern(7, 64 << 10)
    await b.write(0, good)
    await b.flush()
    meta_before = c.meta(0)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    attack = attack_requests(str(b.volume_id), listener.getsockname()[1])
    port = c.ports[0]
    caplog.set_level(logging.INFO, "iscsikit.replica.server")
    if stranger == "no secret":
        answers = await talk(port, wire(*attack))
        assert [(a.op, a.status) for a in answers] == [(p.Op.HELLO, p.Status.FENCED)]
        text = answers[0].error_text()
        assert text.startswith("authentication required") and "revision 3" in text
    else:
        liar = auth.ClientAuth(WRONG)  # it cannot check the server; it just goes on with a wrong proof
        step1 = p.Frame(p.Op.AUTH, 1, payload=liar.challenge())
        nonce = liar._client_nonce
        # The server's answer carries its nonce; the stranger proves with the wrong secret.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire(step1))
        head = await reader.readexactly(p.HEADER_SIZE)
        first = p.decode_header(head)
        body = await reader.readexactly(first.payload_len)
        assert first.frame.status == p.Status.OK
        proof = auth.proof(WRONG, auth.CLIENT_LABEL, nonce, body[:32], body[64:].decode())
        writer.write(wire(p.Frame(p.Op.AUTH, 2, payload=bytes([auth.STEP_PROOF]) + proof), *attack))
        rest = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        dec = p.FrameDecoder()
        dec.receive_data(rest)
        answers = [f for f in iter(dec.next_frame, None)]
        assert [(a.op, a.status) for a in answers] == [(p.Op.AUTH, p.Status.FENCED)]
        assert "wrong proof" in answers[0].error_text()
    refusals = [r for r in caplog.records if "refused connection" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in caplog.records]
    assert SECRET.decode() not in caplog.text and WRONG.decode() not in caplog.text
    # Nothing changed, nothing was dialled, and the owner goes on working.
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()
    assert c.meta(0) == meta_before
    assert await b.read(0, len(good)) == good
    await b.write(MiB, pattern(8, 4096))
    assert await b.read(MiB, 4096) == pattern(8, 4096)
    assert b.replicas[0].mode.value == "rw" and b.replicas[0].last_error is None
    await b.close()
    assert c.data(0)[: len(good)] == good
    await c.stop()


@run
async def test_controllers_with_the_wrong_or_no_secret_or_an_old_replica_get_clear_errors(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE, [secured(1)[0], ServerSecurity()])
    await c.start()
    with_secret, without_secret = c.addresses
    for creds, match in (
        (None, "authentication required: .* revision 3 .*this controller has no secret"),
        (Credentials(WRONG), "failed to prove that it knows the secret"),
    ):
        client = ReplicaClient(with_secret, credentials=creds)
        with pytest.raises(ReplicaAuthError, match=match):
            await client.connect()
    client = ReplicaClient(without_secret, credentials=CREDS)
    with pytest.raises(ReplicaAuthError, match=r"has no secret \(start it with --secret-file\)"):
        await client.connect()

    async def old_replica(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(p.HEADER_SIZE)  # a revision-2 replica: "unknown op 14" is a framing error
        writer.close()

    old = await asyncio.start_server(old_replica, "127.0.0.1", 0)
    port = old.sockets[0].getsockname()[1]
    client = ReplicaClient(f"127.0.0.1:{port}", credentials=CREDS)
    with pytest.raises(ReplicaAuthError, match="protocol revision older than 3"):
        await client.connect()
    old.close()
    # The right secret works, and a server without a secret still serves controllers without one.
    for address, creds in ((with_secret, CREDS), (without_secret, None)):
        client = ReplicaClient(address, credentials=creds)
        assert (await client.connect())["protocol_revision"] == 4
        await client.write(0, b"x" * 512)
        client.close()
    await c.stop()


@run
async def test_pending_connections_are_limited_in_number_and_in_time(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "iscsikit.replica.server")
    c = LocalCluster(tmp_path, 1, SIZE, secured(1), max_pending=2, auth_timeout=30)
    await c.start()
    server = c.servers[0]
    assert server is not None
    port = c.ports[0]
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await wait_until(lambda: len(server.pending) == 2, "two pending connections")
    assert await talk(port, b"") == []  # the third is closed at once
    limits = [r.getMessage() for r in caplog.records if "limit 2" in r.getMessage()]
    assert len(limits) == 1 and "refused connection from 127.0.0.1" in limits[0]
    for _, w in idle:
        w.close()
    await wait_until(lambda: not server.pending, "the idle connections to go")
    client = ReplicaClient(c.addresses[0], credentials=CREDS)
    await client.connect()  # authenticated connections do not count
    assert not server.pending
    extra = await asyncio.open_connection("127.0.0.1", port)
    await wait_until(lambda: len(server.pending) == 1, "one pending connection")
    extra[1].close()
    client.close()
    await c.stop()

    caplog.clear()
    c = LocalCluster(tmp_path, 1, SIZE, secured(1), auth_timeout=0.3)
    await c.start()
    # Silent, or stopping after step 1: both are closed when the timeout passes.
    assert await talk(c.ports[0], b"") == []
    half = await talk(c.ports[0], wire(p.Frame(p.Op.AUTH, 1, payload=auth.ClientAuth(SECRET).challenge())))
    assert [(f.op, f.status) for f in half] == [(p.Op.AUTH, p.Status.OK)]
    timeouts = [r.getMessage() for r in caplog.records if "did not finish within 0.3 s" in r.getMessage()]
    assert len(timeouts) == 2, caplog.text
    await c.stop()


@run
async def test_an_unauthenticated_connection_may_not_send_a_large_payload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "iscsikit.replica.server")
    c = LocalCluster(tmp_path, 1, SIZE, secured(1))
    await c.start()
    big = p.encode_head(p.Frame(p.Op.WRITE, 1, 0, MiB), MiB, 1)
    assert await talk(c.ports[0], big + b"\0" * 4096) == []
    assert f"payload_len {MiB} of WRITE seq=1 exceeds the maximum {auth.MAX_AUTH_PAYLOAD}" in caplog.text
    await c.stop()


@run
async def test_rebuild_by_pull_authenticates_with_the_servers_secret(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE, secured(2))
    await c.start()
    b = fast(c.addresses[:1], credentials=CREDS, rebuild_pull_chunk=4 * MiB)
    await b.open()
    acked = {off: os.urandom(MiB) for off in range(0, SIZE, 2 * MiB)}
    for off, data in acked.items():
        await b.write(off, data)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None and r.rebuild.via == "pull"
    await b.close()
    assert c.data(0) == c.data(1)
    await c.stop()

    # A rebuilding replica whose own secret the source does not accept: the pull is refused,
    # the rebuild goes on by relay through the controller.
    c = LocalCluster(tmp_path / "second", 2, SIZE, [secured(1)[0], ServerSecurity(SECRET, None, Credentials(WRONG))])
    await c.start()
    b = fast(c.addresses[:1], credentials=CREDS, rebuild_pull_chunk=4 * MiB)
    await b.open()
    await b.write(0, pattern(9, MiB))
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None and r.rebuild.via == "relay"
    await b.close()
    assert c.data(0) == c.data(1)
    await c.stop()


# --------------------------------------------------------------------------------------
# TLS


@pytest.fixture
def pki(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, object]:
    from tests.support.tlscerts import TestCA

    require(request, "openssl")
    ca = TestCA(tmp_path / "pki")
    other = TestCA(tmp_path / "other", "another CA")
    return {"ca": ca, "servers": [ca.issue(f"replica{i}") for i in range(2)], "controller": ca.issue("controller"),
            "stranger": other.issue("stranger")}  # fmt: skip


def tls_security(pki: dict[str, object], i: int, secret: bytes | None = SECRET) -> ServerSecurity:
    ca, issued = pki["ca"], pki["servers"][i]  # type: ignore[index]
    files = (str(issued.cert), str(issued.key), str(ca.cert))  # type: ignore[attr-defined]
    return ServerSecurity(secret, auth.server_tls(*files, "t"), Credentials(secret, auth.client_tls(*files, "t")))


def tls_creds(pki: dict[str, object], who: str = "controller", secret: bytes | None = SECRET) -> Credentials:
    ca, issued = pki["ca"], pki[who]
    return Credentials(secret, auth.client_tls(str(issued.cert), str(issued.key), str(ca.cert), "t"))  # type: ignore[attr-defined]


@run
async def test_tls_with_a_secret_serves_and_rebuilds_by_pull(
    tmp_path: Path, pki: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "iscsikit.replica.server")
    c = LocalCluster(tmp_path, 2, SIZE, [tls_security(pki, 0), tls_security(pki, 1)])
    await c.start()
    b = fast(c.addresses[:1], credentials=tls_creds(pki), rebuild_pull_chunk=4 * MiB)
    await b.open()
    acked = {off: os.urandom(MiB) for off in range(0, SIZE, 2 * MiB)}
    for off, data in acked.items():
        await b.write(off, data)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None and r.rebuild.via == "pull"
    assert "peer 127.0.0.1" in caplog.text and "reads with a grant (TLS)" in caplog.text
    for off, data in acked.items():
        assert await b.read(off, MiB) == data
    # Strangers: no TLS, or a certificate from another CA: refused at the TLS handshake.
    for creds in (CREDS, tls_creds(pki, "stranger")):
        client = ReplicaClient(c.addresses[0], credentials=creds)
        with pytest.raises(ReplicaAuthError if creds is CREDS else Exception):
            await client.connect()
    assert caplog.text.count("TLS handshake failed") >= 2
    await b.close()
    assert c.data(0) == c.data(1)
    await c.stop()


@run
async def test_a_tls_peer_with_a_read_grant_may_only_read(tmp_path: Path, pki: dict[str, object]) -> None:
    c = LocalCluster(tmp_path, 2, SIZE, [tls_security(pki, 0), tls_security(pki, 1)])
    await c.start()
    owner = ReplicaClient(c.addresses[0], credentials=tls_creds(pki))
    await owner.connect()
    await owner.set_meta(volume_id="vol-1", state="rw")
    await owner.write(0, pattern(3, 8192))
    token = "g" * 32
    await owner.grant(token)
    target = c.servers[1]
    assert target is not None
    puller = Puller(target.store, "tcp://" + c.addresses[0].removeprefix("tcp://"), token, "vol-1", 5.0,
                    tls_security(pki, 1).peer)  # fmt: skip
    conn = await asyncio.to_thread(puller._connect)

    def write_then_read() -> tuple[p.Status, str, bytes]:
        conn.send(p.Op.WRITE, offset=0, payload=b"EVIL" * 128)
        header = conn.header()
        text = conn.payload(header).decode()
        return header.frame.status, text, conn.call(p.Op.READ, offset=0, length=8192)

    status, text, data = await asyncio.to_thread(write_then_read)
    assert status == p.Status.FENCED and "may not send WRITE" in text
    assert data == pattern(3, 8192)
    await owner.grant(token, revoke=True)
    with pytest.raises(Exception):  # noqa: B017 - closed by the revocation (reset or EOF)
        await asyncio.to_thread(conn.call, p.Op.PING)
    puller.close()
    owner.close()
    await c.stop()
