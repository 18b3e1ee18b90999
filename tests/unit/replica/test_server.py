"""The replica server's answers, request by request: what each op does to the replica and what
it answers, how every failure reaches the controller (its status and message), and what a
connection that breaks the rules is left with (fenced, answered BADCRC, closed).

In-process servers on loopback; the peer is :class:`~tests.support.replicawire.RawPeer` (frames
as given, no client-side checks) run in a thread, the server in the test's event loop.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from crc32c import crc32c

from iscsikit.errors import ReplicaError, ReplicaPeerError
from iscsikit.replica import protocol as p
from iscsikit.replica.server import ReplicaServer
from iscsikit.replica.store import META_FILE, ReplicaStore
from tests.support.replicawire import RawPeer
from tests.unit.replica.conftest import run, wait_until
from tests.unit.replica.test_auth_server import SECRET, pki, tls_creds, tls_security  # noqa: F401 - pki: a fixture

MiB = 1 << 20
SIZE = 4 * MiB
T = TypeVar("T")
NO_SECRET = "this replica server has no secret (start it with --secret-file), but the controller has one"


class FailingStore(ReplicaStore):
    """A real store whose writes fail with ``fail`` when it is set (a full or broken disk, which
    cannot be had here without root)."""

    fail: Exception | None = None
    reads = 0

    def read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        return super().read(offset, length)

    def write(self, offset: int, data: Any, fua: bool = False) -> None:
        if self.fail is not None:
            raise self.fail
        super().write(offset, data, fua)


async def serve(tmp_path: Path, size: int = SIZE, **kw: Any) -> ReplicaServer:
    server = ReplicaServer(FailingStore.open(tmp_path / "r", size), **kw)
    await server.start("127.0.0.1", 0)
    return server


async def as_peer(server: ReplicaServer, fn: Callable[[RawPeer], T]) -> T:
    """``fn`` with a new connection to ``server``, in a thread (the server runs in this loop)."""

    def talk() -> T:
        peer = RawPeer("127.0.0.1", server.port, timeout=20.0)
        try:
            return fn(peer)
        finally:
            peer.close()

    return await asyncio.to_thread(talk)


def meta_on_disk(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "r" / META_FILE).read_text())
    return data


def expect(answer: p.Frame, status: p.Status, text: str = "", *, exact: bool = False) -> p.Frame:
    """``answer`` has ``status`` and its error text holds ``text`` (is ``text``, if ``exact``)."""
    assert answer.is_response
    said = answer.error_text()
    assert (answer.status, said == text if exact else text in said) == (status, True), (answer.status, said)
    return answer


@run
async def test_every_op_does_what_it_says_and_answers_it(tmp_path: Path) -> None:
    server = await serve(tmp_path)
    store = server.store
    data = bytes(range(256)) * 32  # 8 KiB

    def owner(peer: RawPeer) -> None:
        assert expect(peer.call(p.Op.PING), p.Status.OK).payload == b""
        hello = peer.claim()
        assert hello == {
            **store.meta.to_json(), "revision": 0, "allocated_bytes": 0, "protocol_version": p.VERSION,
            "protocol_revision": p.PROTOCOL_REVISION,
        }  # fmt: skip
        expect(peer.call(p.Op.HELLO, payload=b"{nope"), p.Status.EINVAL, "HELLO payload is not JSON")
        expect(peer.call(p.Op.WRITE, offset=MiB, length=len(data), payload=data), p.Status.OK)
        expect(peer.call(p.Op.WRITE, offset=SIZE - 512, length=1024, payload=bytes(1024)), p.Status.EINVAL,
               f"range {SIZE - 512}+1024 is outside the volume of {SIZE} bytes")  # fmt: skip
        assert expect(peer.call(p.Op.READ, offset=MiB, length=len(data)), p.Status.OK).payload == data
        expect(peer.call(p.Op.READ, offset=SIZE, length=1), p.Status.EINVAL, "outside the volume")
        # outside the volume and too large to answer: the range is named first
        expect(
            peer.call(p.Op.READ, offset=SIZE, length=64 * MiB), p.Status.EINVAL, f"range {SIZE}+{64 * MiB} is outside"
        )
        extents = expect(peer.call(p.Op.EXTENTS, offset=0, length=SIZE), p.Status.OK)
        assert p.unpack_extents(extents.payload) == [(MiB, len(data))]
        sums = peer.call(p.Op.CHECKSUM, offset=MiB - 4096, length=3 * 4096, payload=p.granule_payload(4096))
        assert p.unpack_checksums(expect(sums, p.Status.OK).payload) == [
            crc32c(bytes(4096)), crc32c(data[:4096]), crc32c(data[4096:]),
        ]  # fmt: skip
        expect(peer.call(p.Op.UNMAP, offset=MiB, length=4096), p.Status.OK)
        assert peer.call(p.Op.READ, offset=MiB, length=8192).payload == bytes(4096) + data[4096:]
        assert meta_on_disk(tmp_path)["revision"] == 0 and meta_on_disk(tmp_path)["clean"] is False
        expect(peer.call(p.Op.FLUSH), p.Status.OK)
        assert meta_on_disk(tmp_path)["revision"] == 2
        answer = expect(peer.call(p.Op.SET_META, payload=p.pack_json({"volume_id": "v1", "epoch": 3})), p.Status.OK)
        after = p.unpack_json(answer.payload, "SET_META answer")
        assert (after["volume_id"], after["epoch"], after["revision"], after["protocol_revision"]) == (
            "v1", 3, 2, p.PROTOCOL_REVISION,
        )  # fmt: skip
        assert after["allocated_bytes"] == store.allocated_bytes() > 0
        assert (meta_on_disk(tmp_path)["volume_id"], meta_on_disk(tmp_path)["epoch"]) == ("v1", 3)
        expect(peer.call(p.Op.SET_META, payload=p.pack_json({"size": 1})), p.Status.EINVAL, "['size'] cannot be set")
        expect(peer.call(p.Op.SET_META, payload=p.pack_json({"volume_id": "v2"})), p.Status.STATE,
               "replica belongs to volume v1, not v2")  # fmt: skip
        expect(peer.call(p.Op.SET_META, payload=b"[]"), p.Status.EINVAL, "SET_META payload is a JSON list")
        expect(peer.call(p.Op.AUTH, payload=b"\x01"), p.Status.EINVAL, "this connection is already authenticated")
        expect(peer.call(p.Op.CLOSE), p.Status.OK)
        assert meta_on_disk(tmp_path)["clean"] is True and meta_on_disk(tmp_path)["revision"] == 2
        expect(peer.call(p.Op.PING), p.Status.OK)  # the connection is still served
        (conn,) = server._conns
        assert conn._reserved == 0 and not conn._tasks  # every answer gave back its share of the budget
        assert not server.busy

    await as_peer(server, owner)
    await server.close()


@run
async def test_grant_source_and_pull_refuse_bad_requests_by_name(tmp_path: Path) -> None:
    server = await serve(tmp_path)

    def owner(peer: RawPeer) -> None:
        peer.claim()
        for token, status in [("t" * 15, p.Status.EINVAL), ("t" * 257, p.Status.EINVAL), (7, p.Status.EINVAL),
                              ("t" * 16, p.Status.OK), ("u" * 256, p.Status.OK)]:  # fmt: skip
            answer = peer.call(p.Op.GRANT, payload=p.pack_json({"token": token}))
            expect(answer, status, "" if status == p.Status.OK else 'GRANT needs a "token" string of 16 to 256')
        assert sorted(server._grants) == ["t" * 16, "u" * 256]
        expect(peer.call(p.Op.GRANT, payload=p.pack_json({"token": "t" * 16, "revoke": True})), p.Status.OK)
        assert sorted(server._grants) == ["u" * 256]
        expect(peer.call(p.Op.GRANT, payload=b"{"), p.Status.EINVAL, "GRANT payload is not JSON")
        expect(peer.call(p.Op.PULL, offset=0, length=MiB), p.Status.STATE, "PULL before a SOURCE")
        expect(peer.call(p.Op.SOURCE, payload=p.pack_json({"address": None})), p.Status.OK)
        bad = 'SOURCE needs "address" and "token" strings and a numeric "timeout"'
        for fields in [{"address": 5, "token": "t" * 16}, {"address": "127.0.0.1:1", "token": None},
                       {"address": "127.0.0.1:1", "token": "t" * 16, "timeout": "soon"}]:  # fmt: skip
            expect(peer.call(p.Op.SOURCE, payload=p.pack_json({**fields, "volume_id": None})), p.Status.EINVAL, bad)
        expect(peer.call(p.Op.SOURCE, payload=p.pack_json({"address": "127.0.0.1:1", "token": "t" * 16})),
               p.Status.STATE, "SOURCE names volume None; this replica holds None")  # fmt: skip
        assert server._conns and all(c.puller is None for c in server._conns)

    await as_peer(server, owner)
    await server.close()


@pytest.mark.parametrize(
    ("fail", "status", "text", "logged"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), p.Status.ENOSPC, "No space left on device", "failed"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), p.Status.ENOSPC, "Disk quota exceeded", "failed"),
        (OSError(errno.EIO, "Input/output error"), p.Status.EIO, "Input/output error", "failed"),
        (ReplicaPeerError("the source went away"), p.Status.PEER, "the source went away", "went away"),
        (ReplicaError("not in this state"), p.Status.STATE, "not in this state", None),
        (ValueError("bad range"), p.Status.EINVAL, "bad range", None),
        (RuntimeError("a bug"), p.Status.EIO, "a bug", "unexpected error in WRITE"),
    ],
)
@pytest.mark.parametrize("fua", [False, True])  # on the event loop, and in the thread pool
def test_a_failed_write_reaches_the_controller_with_its_cause(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fail: Exception,
    status: p.Status,
    text: str,
    logged: str | None,
    fua: bool,
) -> None:
    async def scenario() -> None:
        server = await serve(tmp_path)
        store = server.store
        assert isinstance(store, FailingStore)
        store.fail = fail

        def owner(peer: RawPeer) -> list[p.Frame]:
            peer.claim()
            flags = p.FLAG_FUA if fua else 0
            return [peer.call(p.Op.WRITE, offset=4096, length=512, payload=b"w" * 512, flags=flags),
                    peer.call(p.Op.PING)]  # fmt: skip

        with caplog.at_level(logging.DEBUG, "iscsikit.replica.server"):
            write, ping = await as_peer(server, owner)
        expect(write, status, text)
        assert (write.offset, write.length) == (4096, 512)
        expect(ping, p.Status.OK)  # the connection goes on
        assert store.read(4096, 512) == bytes(512)
        if logged is not None:  # the replica's operator sees it too
            assert any(logged in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records)
        await server.close()

    run(scenario)()


@run
async def test_only_the_newest_claim_may_change_the_replica(tmp_path: Path) -> None:
    server = await serve(tmp_path)
    first = await asyncio.to_thread(RawPeer, "127.0.0.1", server.port)
    await asyncio.to_thread(first.claim)
    await asyncio.to_thread(first.claim)  # claiming again on the same connection fences nothing
    answer = await asyncio.to_thread(first.call, p.Op.GRANT, payload=p.pack_json({"token": "g" * 32}))
    expect(answer, p.Status.OK)
    expect(await asyncio.to_thread(first.call, p.Op.WRITE, offset=0, length=512, payload=b"1" * 512), p.Status.OK)

    def bystander(peer: RawPeer) -> list[p.Frame]:
        hello = peer.call(p.Op.HELLO, payload=p.pack_json({"claim": False}))
        return [hello] + [
            peer.call(op, **kw)
            for op, kw in [
                (p.Op.WRITE, {"offset": 0, "length": 512, "payload": b"2" * 512}),
                (p.Op.READ, {"offset": 0, "length": 512}),
                (p.Op.UNMAP, {"offset": 0, "length": 512}),
                (p.Op.FLUSH, {}),
                (p.Op.SET_META, {"payload": p.pack_json({"epoch": 9})}),
                (p.Op.CLOSE, {}),
            ]
        ]

    hello, *refused = await as_peer(server, bystander)
    expect(hello, p.Status.OK)
    for answer in refused:
        expect(answer, p.Status.FENCED, "this connection does not own the replica")
    assert server.store.read(0, 512) == b"1" * 512 and server.store.meta.epoch == 0

    second = await asyncio.to_thread(RawPeer, "127.0.0.1", server.port)
    await asyncio.to_thread(second.claim)
    with pytest.raises(ConnectionError):  # the older owner is cut off
        await asyncio.to_thread(first.call, p.Op.WRITE, offset=0, length=512, payload=b"3" * 512)
    assert server._grants == {}  # and its read grants with it
    expect(await asyncio.to_thread(second.call, p.Op.WRITE, offset=512, length=512, payload=b"4" * 512), p.Status.OK)
    assert server.store.read(0, 1024) == b"1" * 512 + b"4" * 512
    first.close()
    second.close()
    await server.close()


@run
async def test_a_controller_that_left_is_not_reported_as_fenced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = await serve(tmp_path)
    await as_peer(server, lambda peer: peer.claim())
    await wait_until(lambda: not server._conns, "the first controller's connection to end")
    with caplog.at_level(logging.INFO, "iscsikit.replica.server"):
        await as_peer(server, lambda peer: peer.claim())
    assert not [r for r in caplog.records if "fencing" in r.getMessage()]
    await server.close()


@run
async def test_corrupt_data_is_refused_and_broken_framing_closes_the_connection(tmp_path: Path) -> None:
    server = await serve(tmp_path)

    def owner(peer: RawPeer) -> list[p.Frame]:
        peer.claim()
        frame = p.Frame(p.Op.WRITE, 50, 0, 512, 0, p.Status.OK, b"c" * 512)
        head = p.encode_head(frame, 512, crc32c(b"c" * 512) ^ 1)
        peer.sock.sendall(head + frame.payload)
        answers = [peer.recv(), peer.call(p.Op.PING)]
        # A response sent to the server breaks the protocol: the connection ends, nothing is written.
        peer.sock.sendall(b"".join(p.encode(p.Frame(p.Op.WRITE, 51, 0, 512, p.FLAG_RESPONSE, p.Status.OK, b"r" * 512))))
        try:
            answers.append(peer.recv())
        except ConnectionError:
            pass
        return answers

    answers = await as_peer(server, owner)
    assert len(answers) == 2, answers
    badcrc, ping = answers
    expect(badcrc, p.Status.BADCRC)
    assert badcrc.seq == 50
    expect(ping, p.Status.OK)
    assert server.store.read(0, 512) == bytes(512)
    await wait_until(lambda: not server._conns, "the server to drop the connection")
    await server.close()


@run
async def test_a_read_grant_must_be_the_first_request(tmp_path: Path) -> None:
    server = await serve(tmp_path)
    owner = await asyncio.to_thread(RawPeer, "127.0.0.1", server.port)
    await asyncio.to_thread(owner.claim)
    expect(await asyncio.to_thread(owner.call, p.Op.GRANT, payload=p.pack_json({"token": "g" * 32})), p.Status.OK)

    def peer(peer: RawPeer) -> list[p.Frame]:
        hello = p.Frame(p.Op.HELLO, 1, payload=p.pack_json({"grant": "g" * 32}))
        peer.pipeline([hello, p.Frame(p.Op.READ, 0, 0, 512)])  # a READ before the HELLO answer
        return [peer.recv()]

    (answer,) = await as_peer(server, peer)
    expect(answer, p.Status.EINVAL, "requests sent before the HELLO answer")
    for token in (32, None, "x" * 32, [], {}):
        answer = await as_peer(server, lambda peer, t=token: peer.call(p.Op.HELLO, payload=p.pack_json({"grant": t})))
        expect(answer, p.Status.FENCED, "no such read grant (revoked or never given)")
    owner.close()
    await server.close()


@run
async def test_connections_send_without_delay_and_close_releases_the_replica(tmp_path: Path) -> None:
    server = await serve(tmp_path, p.MAX_PAYLOAD, response_budget=1)
    assert server.response_budget == p.MAX_PAYLOAD  # never under one whole answer
    peer = await asyncio.to_thread(RawPeer, "127.0.0.1", server.port)
    await asyncio.to_thread(peer.claim)
    # The largest answer is larger than the whole budget: alone, it is still served.
    whole = await asyncio.to_thread(peer.call, p.Op.READ, offset=0, length=p.MAX_PAYLOAD)
    assert expect(whole, p.Status.OK).payload == bytes(p.MAX_PAYLOAD)
    (conn,) = server._conns
    assert conn.transport is not None
    sock = conn.transport.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert conn.peer == f"127.0.0.1:{peer.sock.getsockname()[1]}"
    await asyncio.to_thread(peer.call, p.Op.WRITE, offset=0, length=512, payload=b"z" * 512)
    await server.close()
    with pytest.raises(ConnectionError):
        await asyncio.to_thread(peer.call, p.Op.PING)
    peer.close()
    again = ReplicaStore.open(tmp_path / "r")  # the directory's lock was released
    assert again.read(0, 512) == b"z" * 512 and again.revision == 1  # flushed
    again.close()


# --------------------------------------------------------------------------------------
# Refused connections: one answer, then closed; one log line; nothing left behind.


def loop_errors() -> list[dict[str, Any]]:
    """Errors the event loop reports (a callback or a protocol method that raised)."""
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
    return errors


def until_closed(peer: RawPeer) -> list[p.Frame]:
    """Every answer until the server closes the connection (a timeout fails the test)."""
    answers = []
    try:
        while True:
            answers.append(peer.recv())
    except ConnectionError:  # EOF or reset; TimeoutError is not one
        return answers


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "connection from" in r.getMessage() and r.levelno >= logging.INFO]


@run
async def test_a_refused_connection_is_answered_once_closed_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from iscsikit.replica.auth import Credentials, ServerSecurity

    caplog.set_level(logging.DEBUG, "iscsikit.replica.server")
    errors = loop_errors()
    server = await serve(tmp_path, security=ServerSecurity(SECRET, None, Credentials(SECRET)), auth_timeout=0.3)

    def stranger(peer: RawPeer) -> list[p.Frame]:  # no AUTH first: refused, and what follows is dropped
        peer.pipeline([p.Frame(p.Op.WRITE, 0, 0, 16, payload=b"s" * 16), p.Frame(p.Op.PING, 0)] * 2)
        return until_closed(peer)

    (answer,) = await as_peer(server, stranger)
    expect(answer, p.Status.FENCED, "AUTH")
    assert answer.op == p.Op.WRITE
    logged = [m for m in refusals(caplog) if "closed (" not in m]
    assert len(logged) == 1 and logged[0].startswith("refused connection from 127.0.0.1:"), logged
    caplog.clear()

    assert await as_peer(server, until_closed) == []  # silent: closed when auth_timeout passes
    logged = [m for m in refusals(caplog) if "closed (" not in m]
    assert len(logged) == 1 and "its AUTH handshake did not finish within 0.3 s" in logged[0], logged
    await wait_until(lambda: not server._conns and not server.pending, "the refused connections to be forgotten")
    assert server.store.read(0, 512) == bytes(512) and server.store.revision == 0
    await server.close()
    assert errors == []


@run
async def test_auth_to_a_server_without_a_secret_is_refused_and_closed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, "iscsikit.replica.server")
    errors = loop_errors()
    server = await serve(tmp_path)

    def controller(peer: RawPeer) -> list[p.Frame]:
        peer.pipeline([p.Frame(p.Op.AUTH, 0, payload=b"\x01" + bytes(32)), p.Frame(p.Op.HELLO, 0),
                       p.Frame(p.Op.WRITE, 0, 0, 512, payload=b"a" * 512)])  # fmt: skip
        return until_closed(peer)

    (answer,) = await as_peer(server, controller)
    expect(answer, p.Status.UNSUPPORTED, NO_SECRET, exact=True)
    logged = [m for m in refusals(caplog) if "closed (" not in m]
    assert logged == [logged[0]] and "AUTH, but this server has no secret" in logged[0], logged
    await wait_until(lambda: not server._conns, "the connection to be forgotten")
    assert server.store.read(0, 512) == bytes(512)
    # A controller without a secret is served as before.
    hello = await as_peer(server, lambda peer: peer.claim())
    assert hello["replica_id"] == server.store.meta.replica_id
    await server.close()
    assert errors == []


# --------------------------------------------------------------------------------------
# TLS: each way a handshake ends (a probe, a stranger, a silent peer, a controller) is told apart.


def tls_server_kw(certs: dict[str, object], secret: bool) -> dict[str, Any]:
    return {"security": tls_security(certs, 0, **({} if secret else {"secret": None})), "auth_timeout": 1.0}


@pytest.mark.parametrize("secret", [True, False])
def test_tls_handshakes_end_the_right_way_and_a_controller_stays(
    request: pytest.FixtureRequest, tmp_path: Path, caplog: pytest.LogCaptureFixture, secret: bool
) -> None:
    from iscsikit.replica.client import ReplicaClient

    certs = request.getfixturevalue("pki")  # test_auth_server's CA and certificates

    async def scenario() -> None:
        caplog.set_level(logging.DEBUG, "iscsikit.replica.server")
        errors = loop_errors()
        server = await serve(tmp_path, **tls_server_kw(certs, secret))

        def messages() -> list[str]:
            out = [m for m in refusals(caplog) if "closed (" not in m]
            caplog.clear()
            return out

        probe = await asyncio.to_thread(RawPeer, "127.0.0.1", server.port)  # connects and leaves (a port scan)
        await wait_until(lambda: bool(server.pending), "the probe's connection")
        await asyncio.sleep(0.2)  # its TLS handshake has started
        probe.close()
        await wait_until(lambda: "TLS handshake" in caplog.text and not server._conns, "the probe to be forgotten")
        logged = messages()
        assert len(logged) == 1 and "closed during its TLS handshake" in logged[0], logged

        def plain(peer: RawPeer) -> list[p.Frame]:  # a controller without TLS
            peer.send(p.Op.HELLO, payload=p.pack_json({"claim": True}))
            return until_closed(peer)

        assert await as_peer(server, plain) == []
        await wait_until(lambda: "TLS handshake" in caplog.text and not server._conns, "the plain peer to be forgotten")
        logged = messages()
        assert len(logged) == 1 and "refused connection from 127.0.0.1" in logged[0], logged
        assert "TLS handshake failed: " in logged[0], logged

        assert await as_peer(server, until_closed) == []  # silent
        await wait_until(lambda: not server._conns, "the silent peer to be forgotten")
        logged = messages()
        assert len(logged) == 1 and "its TLS handshake did not finish within 1 s" in logged[0], logged
        assert server.store.meta.epoch == 0

        client = ReplicaClient(
            f"127.0.0.1:{server.port}", credentials=tls_creds(certs, secret=SECRET if secret else None)
        )
        await client.connect()
        await wait_until(lambda: not server.pending, "the controller to be settled")
        await asyncio.sleep(1.2)  # past auth_timeout: a settled connection is not timed out
        await client.write(0, b"t" * 512)
        assert await client.read(0, 512) == b"t" * 512
        assert not [m for m in messages() if "refused" in m or "closed during" in m]
        client.close()
        await server.close()
        assert errors == []

    run(scenario)()


@run
async def test_a_tls_peer_with_a_grant_is_told_of_its_revocation_and_cut_off_with_its_owner(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from iscsikit.replica.client import ReplicaClient
    from iscsikit.replica.pull import Puller

    certs = request.getfixturevalue("pki")
    errors = loop_errors()
    server = await serve(tmp_path, security=tls_security(certs, 0))
    owner = ReplicaClient(f"127.0.0.1:{server.port}", credentials=tls_creds(certs))
    await owner.connect()
    await owner.set_meta(volume_id="vol-1", state="rw")
    await owner.write(0, b"g" * 4096)
    other = ReplicaStore.open(tmp_path / "other", SIZE)

    async def granted_peer(token: str) -> tuple[Puller, socket.socket]:
        await owner.grant(token)
        puller = Puller(other, f"tcp://127.0.0.1:{server.port}", token, "vol-1", 10.0, tls_security(certs, 1).peer)
        conn = await asyncio.to_thread(puller._connect)  # TLS, the secret, HELLO with the grant
        return puller, conn.sock

    def exchange(sock: socket.socket, frames: list[p.Frame]) -> list[p.Frame]:
        """Send ``frames``, then every answer until the server closes the connection."""
        sock.sendall(b"".join(b for f in frames for b in p.encode(f)))
        decoder, answers = p.FrameDecoder(), []
        while True:
            frame = decoder.next_frame()
            if frame is not None:
                answers.append(frame)
                continue
            data = sock.recv(1 << 20)  # a timeout (no EOF) fails the test
            if not data:
                return answers
            decoder.receive_data(data)

    puller, sock = await granted_peer("a" * 32)
    read = p.Frame(p.Op.READ, 7, SIZE, 64 * MiB)  # outside the volume, and too large: the range is named first
    sock.sendall(b"".join(p.encode(read)))
    decoder = p.FrameDecoder()
    while (answer := decoder.next_frame()) is None:
        decoder.receive_data(await asyncio.to_thread(sock.recv, 1 << 20))
    expect(answer, p.Status.EINVAL, f"range {SIZE}+{64 * MiB} is outside the volume")
    asked = [
        p.Frame(p.Op.CHECKSUM, 10, 0, 8192, payload=p.granule_payload(4096)),
        p.Frame(p.Op.EXTENTS, 11, 0, SIZE),
        p.Frame(p.Op.READ, 12, 0, 4096),
        p.Frame(p.Op.PING, 13),
    ]
    sock.sendall(b"".join(b for f in asked for b in p.encode(f)))
    answers = []
    while len(answers) < len(asked):
        frame = decoder.next_frame()
        if frame is None:
            decoder.receive_data(await asyncio.to_thread(sock.recv, 1 << 20))
        else:
            answers.append(expect(frame, p.Status.OK))
    assert [a.seq for a in answers] == [10, 11, 12, 13]  # in order
    sums, extents, read, ping = (a.payload for a in answers)
    assert p.unpack_checksums(sums) == [crc32c(b"g" * 4096), crc32c(bytes(4096))]
    assert p.unpack_extents(extents) == [(0, 4096)]
    assert (read, ping) == (b"g" * 4096, b"")
    await owner.grant("a" * 32, revoke=True)
    (ping,) = await asyncio.to_thread(exchange, sock, [p.Frame(p.Op.PING, 8), p.Frame(p.Op.PING, 9)])
    expect(ping, p.Status.FENCED, "the read grant was revoked", exact=True)
    assert ping.seq == 8
    puller.close()

    puller, sock = await granted_peer("b" * 32)
    owner.close()  # the owner goes away: its granted peers are cut off at once, asked or not
    assert await asyncio.to_thread(exchange, sock, []) == []
    puller.close()
    other.close()
    await server.close()
    assert errors == []


@run
async def test_source_and_pull_answer_what_they_did(tmp_path: Path) -> None:
    source = await serve(tmp_path / "src")
    target = await serve(tmp_path / "tgt")
    data = bytes(range(256)) * 16  # 4 KiB

    def owner_of_source(peer: RawPeer) -> None:
        peer.claim()
        expect(peer.call(p.Op.SET_META, payload=p.pack_json({"volume_id": "v1"})), p.Status.OK)
        expect(peer.call(p.Op.WRITE, offset=MiB, length=len(data), payload=data), p.Status.OK)
        for _ in range(2):  # the same token again, by its owner: still one grant
            expect(peer.call(p.Op.GRANT, payload=p.pack_json({"token": "s" * 32})), p.Status.OK)
        assert list(source._grants) == ["s" * 32]

    src_peer = await asyncio.to_thread(RawPeer, "127.0.0.1", source.port)
    await asyncio.to_thread(owner_of_source, src_peer)

    def owner_of_target(peer: RawPeer) -> list[p.Frame]:
        peer.claim()
        expect(peer.call(p.Op.SET_META, payload=p.pack_json({"volume_id": "v1", "state": "rebuilding"})), p.Status.OK)
        # Nothing listens there: the SOURCE fails, and leaves no source behind.
        nowhere = {"address": "127.0.0.1:1", "token": "s" * 32, "volume_id": "v1", "timeout": 1}
        expect(peer.call(p.Op.SOURCE, payload=p.pack_json(nowhere)), p.Status.PEER, "cannot connect to the source")
        expect(peer.call(p.Op.PULL, offset=0, length=SIZE), p.Status.STATE, "PULL before a SOURCE")
        there = {"address": f"127.0.0.1:{source.port}", "token": "s" * 32, "volume_id": "v1"}  # default timeout
        answers = [peer.call(p.Op.SOURCE, payload=p.pack_json(there))]
        (conn,) = [c for c in target._conns if c.puller is not None]
        assert conn.puller is not None and conn.puller.timeout == 2.0
        answers.append(peer.call(p.Op.PULL, offset=0, length=SIZE))
        answers.append(peer.call(p.Op.SOURCE, payload=p.pack_json({"address": None})))  # forget the source
        assert conn.puller is None
        answers.append(peer.call(p.Op.PULL, offset=0, length=SIZE))
        return answers

    sourced, pulled, forgot, again = await as_peer(target, owner_of_target)
    assert p.unpack_json(expect(sourced, p.Status.OK).payload, "SOURCE answer") == {
        "replica_id": source.store.meta.replica_id,
        "revision": 1,
    }
    assert p.PullResult.unpack(expect(pulled, p.Status.OK).payload) == p.PullResult(copied=len(data))
    assert expect(forgot, p.Status.OK).payload == b""
    expect(again, p.Status.STATE, "PULL before a SOURCE", exact=True)
    assert target.store.read(MiB - 4096, 3 * 4096) == bytes(4096) + data + bytes(4096)
    src_peer.close()
    await target.close()
    await source.close()


@run
async def test_serve_forever_serves_until_cancelled(tmp_path: Path) -> None:
    server = await serve(tmp_path)
    serving = asyncio.get_running_loop().create_task(server.serve_forever())
    await asyncio.sleep(0.05)
    assert not serving.done()  # it serves (an error would have ended it)
    assert (await as_peer(server, lambda peer: peer.call(p.Op.PING))).status == p.Status.OK
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    await server.close()


@run
async def test_answers_piling_up_unsent_stop_the_reading_of_requests(tmp_path: Path) -> None:
    # Far under the response budget: what stops the reading here is the transport's own
    # back-pressure (pause_writing), so answers never pile up much past what one read brings.
    server = await serve(tmp_path, 8 * MiB, response_budget=1 << 30)
    server.store.write(0, bytes(range(256)) * 16)
    peer = await asyncio.to_thread(RawPeer, "127.0.0.1", server.port, rcvbuf=64 << 10)
    await asyncio.to_thread(peer.claim)
    (conn,) = server._conns
    assert conn.transport is not None
    store = server.store
    assert isinstance(store, FailingStore)
    most = 0
    peer.sock.setblocking(False)
    wire = b"".join(b for i in range(128) for b in p.encode(p.Frame(p.Op.READ, 0, (i % 8) * 4096, 4096)))
    for chunk in range(48):  # 48 x 128 READs of 4 KiB: 24 MiB of answers, none read
        try:
            peer.sock.send(wire)
        except BlockingIOError:  # the server stopped reading: its socket is full
            break
        # Each chunk is read on its own (or not at all, once the server stopped reading).
        await wait_until(lambda c=chunk: store.reads >= 128 * (c + 1) or not conn._reading, "the chunk to be read")
        most = max(most, conn.transport.get_write_buffer_size())
        if not conn._reading:
            break
    assert conn._write_paused and not conn._reading
    assert most < 8 * MiB, f"{most} bytes of answers piled up unsent"
    peer.close()
    await server.close()


@run
async def test_a_server_restarts_on_its_port_and_one_never_started_closes_cleanly(tmp_path: Path) -> None:
    never = ReplicaServer(ReplicaStore.open(tmp_path / "never", MiB))
    await never.close()
    assert ReplicaStore.open(tmp_path / "never").size == MiB  # released
    server = await serve(tmp_path)
    port = server.port
    assert (server.address, port > 0) == ("127.0.0.1", True)
    peer = await asyncio.to_thread(RawPeer, "127.0.0.1", port)
    await asyncio.to_thread(peer.claim)
    (conn,) = server._conns
    assert conn.transport is not None
    conn.transport.close()  # the server's side closes first (as when its process dies): TIME_WAIT there
    assert await asyncio.to_thread(until_closed, peer) == []
    peer.close()
    await server.close()
    again = ReplicaServer(ReplicaStore.open(tmp_path / "r"))
    await again.start("127.0.0.1", port)  # SO_REUSEADDR: the replica comes back on its address
    assert again.port == port
    assert (await as_peer(again, lambda peer: peer.call(p.Op.PING))).status == p.Status.OK
    await again.close()


@run
async def test_disk_work_and_pulls_run_in_their_named_threads(tmp_path: Path) -> None:
    import threading

    server = await serve(tmp_path)
    names: list[str] = []
    await server.run_blocking(lambda: names.append(threading.current_thread().name))
    await server.run_blocking(lambda: names.append(threading.current_thread().name), pull=True)
    assert names[0].startswith("replica-io_") and names[1].startswith("replica-pull_"), names
    await server.close()


@run
async def test_claims_name_their_controller_and_a_fenced_one_is_refused_for_good(tmp_path: Path) -> None:
    server = await serve(tmp_path)

    def hello(peer: RawPeer, controller: Any) -> p.Frame:
        return peer.call(p.Op.HELLO, payload=p.pack_json({"claim": True, "controller": controller}))

    for bad in ("", "x" * 65, "a b", "ä", 7, ["a"]):
        answer = await as_peer(server, lambda peer, bad=bad: hello(peer, bad))
        expect(answer, p.Status.EINVAL, "HELLO field controller: expected 1 to 64 of [0-9A-Za-z._-]")
    assert server.store.meta.controller is None  # a refused claim changed nothing
    assert expect(await as_peer(server, lambda peer: hello(peer, "a")), p.Status.OK)
    assert meta_on_disk(tmp_path)["controller"] == "a"  # recorded before the claim was answered
    expect(await as_peer(server, lambda peer: hello(peer, "a")), p.Status.OK)  # a reconnect keeps it
    assert meta_on_disk(tmp_path)["fenced_controllers"] == []
    expect(await as_peer(server, lambda peer: hello(peer, "b")), p.Status.OK)
    refused = await as_peer(server, lambda peer: hello(peer, "a"))
    expect(
        refused,
        p.Status.FENCED,
        "claim refused: controller a was fenced by a newer controller's claim",
    )
    assert (meta_on_disk(tmp_path)["controller"], meta_on_disk(tmp_path)["fenced_controllers"]) == ("b", ["a"])
    # A claim without an id (revision 3) still wins and fences b, but is itself never refused.
    expect(await as_peer(server, lambda peer: peer.call(p.Op.HELLO, payload=p.pack_json({"claim": True}))), p.Status.OK)
    expect(await as_peer(server, lambda peer: hello(peer, "b")), p.Status.FENCED, "controller b was fenced")
    assert (meta_on_disk(tmp_path)["controller"], meta_on_disk(tmp_path)["fenced_controllers"]) == (None, ["a", "b"])
    expect(await as_peer(server, lambda peer: peer.call(p.Op.HELLO, payload=p.pack_json({"claim": True}))), p.Status.OK)
    await server.close()


@run
async def test_a_replica_remembers_the_newest_fenced_controllers(tmp_path: Path) -> None:
    from iscsikit.replica.server import MAX_FENCED_CONTROLLERS

    server = await serve(tmp_path)
    n = MAX_FENCED_CONTROLLERS + 2
    for i in range(n):
        ok = await as_peer(server, lambda peer, i=i: peer.call(
            p.Op.HELLO, payload=p.pack_json({"claim": True, "controller": f"c{i}"})))  # fmt: skip
        expect(ok, p.Status.OK)
    fenced = meta_on_disk(tmp_path)["fenced_controllers"]
    assert fenced == [f"c{i}" for i in range(1, n - 1)] and len(fenced) == MAX_FENCED_CONTROLLERS
    for i, status in [(1, p.Status.FENCED), (n - 2, p.Status.FENCED), (0, p.Status.OK)]:  # c0: forgotten
        answer = await as_peer(server, lambda peer, i=i: peer.call(
            p.Op.HELLO, payload=p.pack_json({"claim": True, "controller": f"c{i}"})))  # fmt: skip
        expect(answer, status)
    await server.close()
