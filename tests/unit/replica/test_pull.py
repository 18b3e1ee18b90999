"""Rebuild by pull (protocol revision 2): the rebuilding replica copies straight from the source.

Real replica servers in the test's event loop on loopback (their pulls and granted readers run in
their own threads, as in production). What a user would notice: a rebuild by pull ends with
identical replicas and says ``via: pull``; when the replicas cannot reach each other it goes on by
relay; a read grant lets a peer read and nothing else, and dies with its owner; a controller that
claims a replica never sees a write of an older controller's pull land after its claim.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from iscsikit.errors import ReplicaRemoteError
from iscsikit.replica import protocol as p
from iscsikit.replica.client import ReplicaClient
from iscsikit.replica.controller import Mode, ReplicatedBackend
from iscsikit.replica.pull import recv_exact
from tests.unit.replica.cluster import LocalCluster
from tests.unit.replica.conftest import all_rw, fast, run, wait_until

MiB = 1 << 20
SIZE = 32 * MiB


def pattern(tag: int, n: int) -> bytes:
    return (tag.to_bytes(4, "little") * (n // 4 + 1))[:n]


async def fill(b: ReplicatedBackend, tag: int = 1) -> dict[int, bytes]:
    """Every other MiB written (holes between), plus a small unaligned write."""
    acked: dict[int, bytes] = {}
    for off in range(0, SIZE, 2 * MiB):
        acked[off] = os.urandom(MiB)
        await b.write(off, acked[off])
    acked[5 * MiB + 512] = pattern(tag, 3000)
    await b.write(5 * MiB + 512, acked[5 * MiB + 512])
    return acked


@run
async def test_fresh_and_returning_replicas_are_rebuilt_by_pull(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses[:1], rebuild_pull_chunk=4 * MiB)
    await b.open()
    acked = await fill(b)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None
    info = r.rebuild.to_json()
    assert info["via"] == "pull"
    assert info["copied_bytes"] == sum(n for _, n in c.servers[0].store.extents(0, SIZE))  # type: ignore[union-attr]
    c.assert_identical(acked)

    # It goes away, misses writes and an unmap, comes back: only what differs is copied.
    await b.remove_replica(c.addresses[1])
    acked[6 * MiB] = pattern(2, 4096)
    await b.write(6 * MiB, acked[6 * MiB])
    await b.unmap(8 * MiB, MiB)
    acked[8 * MiB] = bytes(MiB)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None
    info = r.rebuild.to_json()
    assert info["via"] == "pull"
    assert 0 < info["copied_bytes"] <= 64 << 10  # one 64 KiB granule differed
    assert info["skipped_bytes"] > 10 * MiB
    await b.flush()
    c.assert_identical(acked)
    fd = os.open(c.dirs[1] / "volume.img", os.O_RDONLY)
    try:  # the missed unmap was punched on the returning replica too
        assert os.lseek(fd, 8 * MiB, os.SEEK_DATA) >= 9 * MiB
    finally:
        os.close(fd)
    await b.close()
    await c.stop()


class Gatekeeper:
    """A TCP forwarder in front of a replica that lets only the controller's connections through,
    as if the replicas were on hosts that cannot reach each other."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.allowed = 1
        self.refused = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.allowed <= 0:
            self.refused += 1
            writer.transport.abort()
            return
        self.allowed -= 1
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        for t in (asyncio.ensure_future(pump(reader, up_w)), asyncio.ensure_future(pump(up_r, writer))):
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@run
async def test_replicas_that_cannot_reach_each_other_rebuild_by_relay(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    gate = Gatekeeper(c.ports[0])
    await gate.start()
    b = fast([f"tcp://127.0.0.1:{gate.port}"], ping_interval=600)
    await b.open()
    acked = await fill(b)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None and r.rebuild.via == "relay"
    assert gate.refused >= 1  # the target really tried to connect to the source
    assert any(e["event"] == "relay" for e in b.events)
    await b.flush()
    c.assert_identical(acked)
    await b.close()
    await gate.close()
    await c.stop()


@run
async def test_a_link_lost_mid_rebuild_goes_on_by_relay(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b = fast(c.addresses[:1], rebuild_pull_chunk=MiB, rebuild_parallel=1)
    await b.open()
    acked = await fill(b)
    src = c.servers[0]
    assert src is not None
    real_pull = ReplicaClient.pull
    calls = 0

    async def pull_then_cut(self: ReplicaClient, offset: int, length: int) -> p.PullResult:
        nonlocal calls
        calls += 1
        if calls == 4:  # the link between the replicas breaks: the source's granted readers go
            for grant in list(src._grants.values()):
                grant.revoke()
        return await real_pull(self, offset, length)

    ReplicaClient.pull = pull_then_cut  # type: ignore[method-assign]
    try:
        r = await b.add_replica(c.addresses[1])
        await all_rw(b)
    finally:
        ReplicaClient.pull = real_pull  # type: ignore[method-assign]
    assert r.rebuild is not None and r.rebuild.via == "relay"
    relay = [e for e in b.events if e["event"] == "relay"]
    assert relay and "PEER" in relay[0]["detail"]
    assert r.rebuild.done_bytes == r.rebuild.total_bytes
    await b.flush()
    c.assert_identical(acked)
    await b.close()
    await c.stop()


@run
async def test_a_replica_that_speaks_only_revision_1_is_rebuilt_by_relay(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    old = c.servers[1]
    assert old is not None
    new_payload = old.hello_payload

    def revision_1() -> bytes:
        meta = p.unpack_json(new_payload(), "HELLO")
        del meta["protocol_revision"]
        return p.pack_json(meta)

    old.hello_payload = revision_1  # type: ignore[method-assign]
    b = fast(c.addresses[:1])
    await b.open()
    acked = await fill(b)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None and r.rebuild.via == "relay"
    await b.flush()
    c.assert_identical(acked)
    await b.close()
    await c.stop()


def _peer_call(sock: socket.socket, client: p.OrderedClient, op: p.Op, **kw: object) -> tuple[p.Header, bytes]:
    sock.sendall(b"".join(client.request(op, **kw)))  # type: ignore[arg-type]
    head = memoryview(bytearray(p.HEADER_SIZE))
    recv_exact(sock, head)
    header = client.response_header(head)
    body = memoryview(bytearray(header.payload_len))
    recv_exact(sock, body)
    client.check_payload(header, body)
    return header, bytes(body)


def _peer(port: int, token: str) -> tuple[socket.socket, p.OrderedClient, p.Header]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    client = p.OrderedClient()
    header, _ = _peer_call(sock, client, p.Op.HELLO, payload=p.pack_json({"claim": False, "grant": token}))
    return sock, client, header


@run
async def test_a_read_grant_lets_a_peer_read_only_while_its_owner_holds_the_replica(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 1, SIZE)
    await c.start()
    owner = ReplicaClient(c.addresses[0])
    await owner.connect()
    data = os.urandom(3 * MiB)
    await owner.write(MiB, data)
    token = "t" * 32
    await owner.grant(token)

    def as_peer() -> None:
        sock, client, hello = _peer(c.ports[0], "x" * 32)
        assert hello.frame.status == p.Status.FENCED  # an unknown token
        sock.close()
        sock, client, hello = _peer(c.ports[0], token)
        assert hello.frame.status == p.Status.OK
        header, body = _peer_call(sock, client, p.Op.READ, offset=MiB + 4096, length=2 * MiB)
        assert header.frame.status == p.Status.OK and body == data[4096 : 4096 + 2 * MiB]
        header, body = _peer_call(sock, client, p.Op.EXTENTS, offset=0, length=SIZE)
        assert p.unpack_extents(body) == [(MiB, 3 * MiB)]
        header, body = _peer_call(sock, client, p.Op.WRITE, offset=0, payload=b"x" * 512)
        assert header.frame.status == p.Status.FENCED and b"may not send WRITE" in body
        header, body = _peer_call(sock, client, p.Op.READ, offset=SIZE, length=512)
        assert header.frame.status == p.Status.EINVAL
        sock.close()

    await asyncio.to_thread(as_peer)
    # The owner goes away: its grant goes with it.
    sock, client, _ = await asyncio.to_thread(_peer, c.ports[0], token)
    owner.close()
    await asyncio.sleep(0.1)
    with pytest.raises(OSError):
        await asyncio.to_thread(_peer_call, sock, client, p.Op.PING)
    sock.close()
    _, _, hello = await asyncio.to_thread(_peer, c.ports[0], token)
    assert hello.frame.status == p.Status.FENCED
    await c.stop()


@run
async def test_no_write_of_an_older_controllers_pull_lands_after_a_new_claim(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, 64 * MiB)
    await c.start()
    src, tgt = ReplicaClient(c.addresses[0], flush_timeout=60), ReplicaClient(c.addresses[1], flush_timeout=60)
    await src.connect()
    await tgt.connect()
    await src.set_meta(volume_id="v1", state="rw")
    await tgt.set_meta(volume_id="v1", state="rebuilding")
    for off in range(0, 64 * MiB, 4 * MiB):
        await src.write(off, os.urandom(4 * MiB))
    await src.grant("g" * 32)
    await tgt.source(c.addresses[0], "g" * 32, "v1", 5.0)
    pull = asyncio.ensure_future(tgt.pull(0, 64 * MiB))
    target = c.servers[1]
    assert target is not None
    await wait_until(lambda: bool(target.busy), "the pull to start")
    # Another controller claims the target while the pull is copying, then writes at the end of
    # the pulled range: the pull must not overwrite that afterwards.
    new = ReplicaClient(c.addresses[1])
    await new.connect()
    assert not target.busy  # the claim was answered only once the older owner's pull had ended
    mine = pattern(7, 4 * MiB)
    await new.write(60 * MiB, mine)
    await asyncio.sleep(0.2)
    assert await new.read(60 * MiB, 4 * MiB) == mine
    with pytest.raises(Exception):  # noqa: B017 - fenced or closed: either way it failed
        pull.result()
    for client in (src, tgt, new):
        client.close()
    await c.stop()


@run
async def test_source_for_another_volume_is_refused(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    src, tgt = ReplicaClient(c.addresses[0]), ReplicaClient(c.addresses[1])
    await src.connect()
    await tgt.connect()
    await src.set_meta(volume_id="v1")
    await tgt.set_meta(volume_id="v2")
    await src.grant("g" * 32)
    with pytest.raises(ReplicaRemoteError, match=r"STATE: .*SOURCE names volume v1; this replica holds v2"):
        await tgt.source(c.addresses[0], "g" * 32, "v1")
    with pytest.raises(ReplicaRemoteError, match=r"STATE: .*PULL before a SOURCE"):
        await tgt.pull(0, MiB)
    for client in (src, tgt):
        client.close()
    await c.stop()


class Granting(ReplicaClient):
    """Records the read grants a controller gives and revokes (GRANT payloads, by replica);
    ``refuse_revoke`` makes a replica answer a revoke with an error, as one whose disk failed."""

    grants: list[tuple[str, dict[str, object]]]
    refuse_revoke: bool = False

    async def _call(self, op: p.Op, **kw: Any) -> p.Response:
        if op == p.Op.GRANT:
            fields = p.unpack_json(kw["payload"], "GRANT")
            self.grants.append((self.address, fields))
            if fields.get("revoke") and self.refuse_revoke:
                raise ReplicaRemoteError("test: cannot revoke", "EIO", self.address)
        return await super()._call(op, **kw)


def granting(addresses: list[str], refuse_revoke: bool = False) -> tuple[ReplicatedBackend, list[Any]]:
    grants: list[tuple[str, dict[str, object]]] = []
    b = fast(addresses)

    def factory(a: str) -> ReplicaClient:
        client = Granting(a, timeout=5.0)
        client.grants, client.refuse_revoke = grants, refuse_revoke
        return client

    b._client_factory = factory
    return b, grants


@run
async def test_a_pull_grant_is_a_fresh_128_bit_token_revoked_when_the_rebuild_ends(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b, grants = granting(c.addresses[:1])
    await b.open()
    acked = await fill(b)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None and r.rebuild.via == "pull"
    token = str(grants[0][1]["token"])
    assert re.fullmatch("[0-9a-f]{32}", token), token  # secrets.token_hex(16): 128 bits
    assert grants == [(c.addresses[0], {"token": token}), (c.addresses[0], {"token": token, "revoke": True})]
    # The controller still holds the source, but the token no longer lets anybody read it.
    _, _, hello = await asyncio.to_thread(_peer, c.ports[0], token)
    assert hello.frame.status == p.Status.FENCED
    # The next rebuild gets a token of its own.
    await b.remove_replica(c.addresses[1])
    await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert len(grants) == 4 and grants[2][1]["token"] != token
    await b.flush()
    c.assert_identical(acked)
    await b.close()
    await c.stop()


@run
async def test_a_grant_that_cannot_be_revoked_does_not_fail_the_rebuild(tmp_path: Path) -> None:
    # Revoking is best effort: the grant ends with the controller's connection anyway.
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    b, grants = granting(c.addresses[:1], refuse_revoke=True)
    await b.open()
    acked = await fill(b)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None and r.rebuild.via == "pull" and r.last_error is None
    assert [f.get("revoke", False) for _, f in grants] == [False, True]
    assert not [e for e in b.events if e["address"] == r.address and e["event"] == "err"]
    assert b.replicas[0].mode == Mode.RW and b.replicas[0].last_error is None
    await b.flush()
    c.assert_identical(acked)
    await b.close()
    await c.stop()


@pytest.mark.parametrize("side", ["target", "source"])
@run
async def test_replicas_that_speak_revision_2_are_rebuilt_by_pull(tmp_path: Path, side: str) -> None:
    # Revision 2 brought GRANT, SOURCE and PULL: a replica that says 2 (not 3 or 4) can pull.
    c = LocalCluster(tmp_path, 2, SIZE)
    await c.start()
    server = c.servers[1 if side == "target" else 0]
    assert server is not None
    new_payload = server.hello_payload

    def revision_2() -> bytes:
        meta = p.unpack_json(new_payload(), "HELLO")
        meta["protocol_revision"] = 2
        return p.pack_json(meta)

    server.hello_payload = revision_2  # type: ignore[method-assign]
    b = fast(c.addresses[:1])
    await b.open()
    acked = await fill(b)
    r = await b.add_replica(c.addresses[1])
    await all_rw(b)
    assert r.rebuild is not None and r.rebuild.via == "pull"
    await b.flush()
    c.assert_identical(acked)
    await b.close()
    await c.stop()
