"""Replica authentication over real processes: the issue's stranger, and what the CLI refuses.

Three ``iscsikit replica serve`` processes sharing a secret with ``iscsikit target serve`` (LUN
``replicated:...,secret_file=F``), all on loopback, and qemu-io (libiscsi) writing and verifying
through the target. A stranger's connection, without the secret or with a wrong one, tries what
the issue's attacker did (claim, WRITE ``EVIL``, SET_META epoch/members/revision, SOURCE to a port
of its choosing, PULL) on every replica: each gets one refusal and is closed, the data and
metadata stay as they were, nothing is dialled, the target goes on serving, and after the target
is killed and restarted it serves the acknowledged data (no replica was modified).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from iscsikit.replica import auth
from iscsikit.replica import protocol as p
from tests.support.netns import REPLICA_PORT, LoopbackLab, ReplicaRig, Workload
from tests.support.tiers import require

BIN = str(Path(sys.executable).parent / "iscsikit")
WRONG = b"a wrong secret that is long enough"


@pytest.fixture
def rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReplicaRig]:
    require(request, "qemu-io")
    with LoopbackLab(3) as lab:
        rig = ReplicaRig(lab, tmp_path, size=32 << 20)
        try:
            for i in range(3):
                rig.start_replica(i)
            rig.start_target()
            yield rig
        finally:
            rig.close()


def state(rig: ReplicaRig) -> list[tuple[dict[str, object], str]]:
    """Every replica's metadata file and a hash of its data file."""
    out = []
    for i in range(rig.lab.n):
        meta = json.loads((rig.replica_dir(i) / "replica.json").read_text())
        out.append((meta, hashlib.sha256((rig.replica_dir(i) / "volume.img").read_bytes()).hexdigest()))
    return out


def attack(host: str, port: int, volume_id: str, listener_port: int, secret: bytes | None) -> list[p.Frame]:
    """One stranger connection; the answers it got until the replica closed it."""
    source = {"address": f"tcp://127.0.0.1:{listener_port}", "token": "t" * 16, "volume_id": volume_id, "timeout": 1}
    evil = b"EVIL" * 4096
    requests = [
        p.Frame(p.Op.HELLO, 11, payload=p.pack_json({"claim": True})),
        p.Frame(p.Op.WRITE, 12, 0, len(evil), payload=evil),
        p.Frame(p.Op.SET_META, 13, payload=p.pack_json({"epoch": 99, "members": [], "revision": 10**6})),
        p.Frame(p.Op.SOURCE, 14, payload=p.pack_json(source)),
        p.Frame(p.Op.PULL, 15, 0, 4096),
    ]
    wire = b"".join(b"".join(p.encode(f)) for f in requests)
    dec = p.FrameDecoder()
    with socket.create_connection((host, port), timeout=10) as sock:
        if secret is not None:  # a wrong secret: goes through step 1, proves with its own key
            client = auth.ClientAuth(secret)
            nonce = client.challenge()
            sock.sendall(b"".join(p.encode(p.Frame(p.Op.AUTH, 1, payload=nonce))))
            head = _recv(sock, p.HEADER_SIZE)
            body = _recv(sock, p.decode_header(head).payload_len)
            proof = auth.proof(secret, auth.CLIENT_LABEL, nonce[1:], body[:32], body[64:].decode())
            wire = b"".join(p.encode(p.Frame(p.Op.AUTH, 2, payload=bytes([auth.STEP_PROOF]) + proof))) + wire
        sock.sendall(wire)
        while chunk := _recv_some(sock):
            dec.receive_data(chunk)
    dec.receive_data(b"")
    return list(iter(dec.next_frame, None))


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "the replica closed the connection early"
        data += chunk
    return data


def _recv_some(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


@pytest.mark.parametrize("stranger", ["no secret", "wrong secret"])
def test_a_stranger_cannot_modify_a_replica_and_the_controller_goes_on(rig: ReplicaRig, stranger: str) -> None:
    work = Workload(rig.url, rig.size, seed=11, batch=8)
    work.run_batch()
    work.run_batch()
    assert work.errors == []
    volume_id = str(json.loads((rig.replica_dir(0) / "replica.json").read_text())["volume_id"])
    before = state(rig)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    for i in range(3):
        answers = attack(rig.lab.addr(i), REPLICA_PORT, volume_id, listener.getsockname()[1],
                         None if stranger == "no secret" else WRONG)  # fmt: skip
        assert len(answers) == 1 and answers[0].status == p.Status.FENCED, answers
        if stranger == "no secret":
            assert answers[0].op == p.Op.HELLO
            assert "authentication required" in answers[0].error_text() and "revision 3" in answers[0].error_text()
        else:
            assert answers[0].op == p.Op.AUTH and "wrong proof" in answers[0].error_text()
    with pytest.raises(BlockingIOError):  # SOURCE made no replica dial anywhere
        listener.accept()
    listener.close()
    assert state(rig) == before, "a stranger changed a replica"
    for i in range(3):
        log = (rig.workdir / f"replica{i}.log").read_text()
        assert log.count("refused connection from") == 1, log[-2000:]
        assert rig.secret_file.read_text().strip() not in log
    reps = rig.status()
    assert [r["mode"] for r in reps] == ["rw"] * 3 and all(r["last_error"] is None for r in reps), reps
    # The rightful controller goes on, and after a crash and restart serves the acknowledged data.
    work.run_batch()
    assert work.errors == [] and work.verify_all() == []
    rig.kill_target()
    rig.start_target()
    rig.wait_all_rw()
    assert work.verify_all() == []
    rig.stop_target()
    assert rig.images_identical()
    assert b"EVIL" not in (rig.replica_dir(0) / "volume.img").read_bytes()


def test_handshakes_are_limited_and_secrets_stay_off_the_command_line(rig: ReplicaRig) -> None:
    host = rig.lab.addr(0)
    idle = [socket.create_connection((host, REPLICA_PORT), timeout=10) for _ in range(auth.MAX_PENDING)]
    try:
        extra = socket.create_connection((host, REPLICA_PORT), timeout=10)
        assert _recv_some(extra) == b""  # refused: closed at once
        extra.close()
    finally:
        for s in idle:
            s.close()
    log = (rig.workdir / "replica0.log").read_text()
    assert log.count(f"(limit {auth.MAX_PENDING})") == 1, log[-2000:]
    secret = rig.secret_file.read_text().strip()
    for proc in [rig.target, *rig.replicas]:
        assert proc is not None
        assert secret not in Path(f"/proc/{proc.pid}/cmdline").read_text()
    asyncio.run(_still_served(rig))


async def _still_served(rig: ReplicaRig) -> None:
    """A controller with the secret still gets in once the idle connections are gone."""
    from iscsikit.replica.client import ReplicaClient

    creds = auth.Credentials(auth.read_secret_file(rig.secret_file, "test"))
    client = ReplicaClient(f"{rig.lab.addr(0)}:{REPLICA_PORT}", credentials=creds)
    meta = await client.connect(claim=False)
    assert meta["protocol_revision"] == 4
    client.close()


def test_replica_serve_refuses_a_non_loopback_address_without_a_secret(tmp_path: Path) -> None:
    argv = [BIN, "replica", "serve", str(tmp_path / "r"), "--size", "1M", "--listen", "10.255.255.1:9700"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "10.255.255.1" in lines[0] and "--secret-file" in lines[0] and "--insecure-open" in lines[0]
    assert not (tmp_path / "r").exists()
    short = tmp_path / "short.secret"
    short.write_text("short\n")
    res = subprocess.run([BIN, "replica", "serve", str(tmp_path / "r"), "--size", "1M", "--secret-file", str(short)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode == 2 and "at least 16" in res.stderr, res


def test_replica_secret_prints_or_writes_a_new_random_secret(tmp_path: Path) -> None:
    one = subprocess.run([BIN, "replica", "secret"], capture_output=True, text=True, check=True).stdout.strip()
    two = subprocess.run([BIN, "replica", "secret"], capture_output=True, text=True, check=True).stdout.strip()
    assert len(one) == 64 and int(one, 16) >= 0 and one != two
    out = tmp_path / "vol.secret"
    subprocess.run([BIN, "replica", "secret", "--output", str(out)], capture_output=True, check=True)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600 and len(out.read_text().strip()) == 64
    again = subprocess.run([BIN, "replica", "secret", "--output", str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    js = subprocess.run([BIN, "--json", "replica", "secret"], capture_output=True, text=True, check=True).stdout
    assert len(json.loads(js)["secret"]) == 64
