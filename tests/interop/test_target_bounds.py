"""Hostile peers against a real ``iscsikit target serve`` on loopback: each attack of issue 13 fails.

Every test starts the target as users do (``target serve --config``, a file LUN filled with
random data), runs one attack over raw sockets with the sans-IO test initiator, and checks what
a user would notice: the attacker is refused or cut off, a rightful session beside it keeps
reading and writing, the LUN's other data is unchanged, and the target's RSS (from
/proc/PID/status) stays bounded and falls back once the attacker is gone. Margins are generous
and no timing is asserted (waits only guard against hangs).
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iscsikit.target.control import request
from iscsikit.target.proto import InitiatorConnection
from iscsikit.target.proto.pdu import R2T, RESERVED_TAG, DataIn, NopIn, ScsiCommand, ScsiResponse, encode_lun
from tests.support.tgtd import free_port
from tests.support.tiers import ROOT, require, require_root

IQN = "iqn.2026-11.org.iscsikit.bounds:disk"
LUN_SIZE = 64 << 20
#: The rightful session writes below this byte offset; everything above must stay as it was.
RIGHTFUL_AREA = 4 << 20
MAX_TRANSFER = 4 << 20
BUDGET = 64 << 20
LIMITS = f"""\
max_transfer_length = {MAX_TRANSFER}
write_buffer_budget = {BUDGET}
login_timeout = 3
idle_timeout = 3
max_connections_per_address = 64
nop_interval = 0
"""
MiB = 1 << 20


@pytest.fixture(autouse=True)
def _root(request: pytest.FixtureRequest) -> None:
    require_root(request)


class Target:
    """``iscsikit target serve --config`` on a free port, a 64 MiB file LUN of random data."""

    def __init__(self, workdir: Path, limits: str = LIMITS) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.image = workdir / "disk.img"
        self.image.write_bytes(os.urandom(LUN_SIZE))
        self.original_tail = _digest(self.image.read_bytes()[RIGHTFUL_AREA:])
        self.control = workdir / "ctl.sock"
        config = workdir / "serve.toml"
        config.write_text(
            f'portals = ["127.0.0.1:{self.port}"]\ncontrol = "{self.control}"\nshutdown_timeout = 3\n\n'
            f'[limits]\n{limits}\n[[targets]]\niqn = "{IQN}"\n\n[targets.luns]\n1 = "file:{self.image}"\n'
        )
        self.log_path = workdir / "serve.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "iscsikit", "-v", "target", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),  # noqa: SIM115 - the child keeps it
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        request(self.control, "status", wait=30)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss(self) -> int:
        """Resident set size in bytes."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) * 1024  # type: ignore[union-attr]

    def connections(self) -> int:
        return int(request(self.control, "status")["connections"])

    def wait_connections(self, n: int, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while (got := self.connections()) != n and time.monotonic() < deadline:
            time.sleep(0.1)
        return got

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -999
        return self.proc.returncode

    def data_unchanged(self) -> bool:
        return _digest(self.image.read_bytes()[RIGHTFUL_AREA:]) == self.original_tail


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    t = Target(tmp_path)
    yield t
    code = t.stop()
    assert "Traceback" not in t.log, t.log[-3000:]
    assert code == 0, f"target serve exited {code}:\n{t.log[-3000:]}"


class Conn:
    """A blocking socket speaking through the sans-IO test initiator."""

    def __init__(self, port: int, *, source: str = "127.0.0.1", isid: int = 1, login: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ini = InitiatorConnection(
            f"iqn.2026-11.org.iscsikit.bounds:{source}-{isid}", target=IQN, isid=bytes([0x80, 0, 0, 0, 0, isid])
        )
        self.pending: list[object] = []
        if login:
            self.login()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pdu(self, timeout: float = 20) -> object:
        self.sock.settimeout(timeout)
        while not self.pending:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the target closed the connection")
            for p in self.ini.feed(data):
                if isinstance(p, NopIn) and p.itt == RESERVED_TAG:
                    self.send(self.ini.nop_out(ttt=p.ttt)[1])
                else:
                    self.pending.append(p)
        return self.pending.pop(0)

    def login(self) -> None:
        self.send(self.ini.login_request())
        while (nxt := self.ini.login_response(self.pdu())) is not None:  # type: ignore[arg-type]
            self.send(nxt)

    def command(self, cdb: bytes, edtl: int, *, write: bool = False, immediate: bool = False) -> tuple[int, bytes]:
        """(itt, wire) of a SCSI command without data (``write``: W bit, Data-Out by R2T)."""
        ini = self.ini
        itt = ini.next_itt()
        cmd_sn = ini.cmd_sn
        if not immediate:
            ini.cmd_sn = (cmd_sn + 1) & 0xFFFFFFFF
        pdu = ScsiCommand(itt, encode_lun(1), cdb, edtl, cmd_sn, ini.exp_stat_sn, not write and edtl > 0, write,
                          True, 1, immediate)  # fmt: skip
        return itt, ini.encode(pdu)

    def read(self, lba: int, blocks: int) -> tuple[int, bytes]:
        """(status, data) of a READ(10)."""
        itt, wire = self.command(rw(0x28, lba, blocks), blocks * 512)
        self.send(wire)
        data = bytearray()
        while True:
            p = self.pdu()
            assert getattr(p, "itt", None) == itt, p
            if isinstance(p, DataIn):
                data += b"".join(bytes(d) for d in p.data)
                if p.status_present:
                    return p.status, bytes(data)
            else:
                assert isinstance(p, ScsiResponse)
                return p.status, bytes(data)

    def write(self, lba: int, data: bytes) -> int:
        """Status of a WRITE(10) (immediate data, then R2Ts), retried while TASK SET FULL."""
        ini = self.ini
        for _ in range(100):
            itt, wire = ini.scsi_command(rw(0x2A, lba, len(data) // 512), lun=1, write_data=data)
            self.send(wire)
            while True:
                p = self.pdu()
                if isinstance(p, R2T):
                    off, sn, end = p.offset, 0, p.offset + p.length
                    while off < end:
                        n = min(ini.target_mrdsl, end - off)
                        self.send(ini.data_out(itt, p.ttt, sn, off, data[off : off + n], off + n == end, lun=1))
                        off, sn = off + n, sn + 1
                    continue
                assert isinstance(p, ScsiResponse) and p.itt == itt, p
                break
            if p.status != 0x28:
                return p.status
            time.sleep(0.1)
        return p.status

    def responses(self, count: int, timeout: float = 30) -> list[object]:
        """The next ``count`` PDUs."""
        return [self.pdu(timeout) for _ in range(count)]

    def reset(self) -> None:
        """Leave abruptly: RST, unread data and all."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def rw(op: int, lba: int, blocks: int) -> bytes:
    if op in (0x88, 0x8A):
        return bytes([op, 0]) + lba.to_bytes(8, "big") + blocks.to_bytes(4, "big") + b"\0\0"
    return bytes([op, 0]) + lba.to_bytes(4, "big") + b"\0" + blocks.to_bytes(2, "big") + b"\0"


def send_part(c: Conn, r2t: R2T, nbytes: int) -> None:
    """Answer ``r2t`` with its first ``nbytes`` only (the rest never comes)."""
    mrdsl = c.ini.target_mrdsl
    for sn, off in enumerate(range(0, nbytes, mrdsl)):
        n = min(mrdsl, nbytes - off)
        c.send(c.ini.data_out(r2t.itt, r2t.ttt, sn, r2t.offset + off, os.urandom(n), False, lun=1))


def sense_of(rsp: ScsiResponse) -> tuple[int, int]:
    """(sense key, ASC) of a CHECK CONDITION (fixed or descriptor format)."""
    sense = bytes(rsp.data)[2:]
    if sense[0] & 0x7F in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2]
    return sense[2] & 0x0F, sense[12]


def rightful(target: Target, source: str = "127.0.0.2") -> Conn:
    """A well-behaved session from another address: logged in, past its power-on UNIT ATTENTION."""
    c = Conn(target.port, source=source, isid=7)
    c.read(0, 1)
    return c


def check_rightful(c: Conn, rnd: int) -> None:
    payload = os.urandom(MiB)
    lba = (rnd % 4) * (MiB // 512)
    assert c.write(lba, payload) == 0
    assert c.read(lba, MiB // 512) == (0, payload)


def settle(cond: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.1)
    return cond()


# -- the attacks ------------------------------------------------------------------------------


def test_max_transfer_length_is_advertised_and_enforced(target: Target, request: pytest.FixtureRequest) -> None:
    require(request, "iscsi-inq")
    out = subprocess.run(["iscsi-inq", "-e", "1", "-c", "176", f"iscsi://127.0.0.1:{target.port}/{IQN}/1"],
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    m = re.search(r"^maximum transfer length:(\d+)", out, re.M)
    assert m is not None, out
    assert int(m.group(1)) == MAX_TRANSFER // 512, out
    c = rightful(target)
    for cdb, edtl in ((rw(0x88, 0, MAX_TRANSFER // 512 + 1), MAX_TRANSFER + 512),  # READ(16) over the limit
                      (rw(0x28, 0, 8), MAX_TRANSFER + 512)):  # a small READ with an EDTL over it  # fmt: skip
        itt, wire = c.command(cdb, edtl)
        c.send(wire)
        rsp = c.pdu()
        assert isinstance(rsp, ScsiResponse) and rsp.itt == itt and rsp.status == 2, rsp
        assert sense_of(rsp) == (0x05, 0x24)  # ILLEGAL REQUEST, INVALID FIELD IN CDB
    status, data = c.read(0, MAX_TRANSFER // 512)  # exactly the limit: fine
    assert status == 0 and len(data) == MAX_TRANSFER
    check_rightful(c, 0)


def test_huge_write16_commands_without_data_are_refused(target: Target) -> None:
    """768 bytes on the wire (16 x WRITE(16) of 64 MiB, no data) used to cost ~900 MiB."""
    c = rightful(target)
    before = target.rss()
    a = Conn(target.port)
    wire = b"".join(a.command(rw(0x8A, 8192 + i * 16, (64 * MiB) // 512), 64 * MiB, write=True)[1] for i in range(16))
    assert len(wire) == 768
    a.send(wire)
    answers = a.responses(16)
    assert all(isinstance(p, ScsiResponse) and p.status == 2 and sense_of(p) == (5, 0x24) for p in answers), answers
    check_rightful(c, 1)
    assert target.rss() - before < 32 * MiB
    a.close()
    assert target.data_unchanged()


def test_writes_waiting_for_data_stay_within_the_write_budget(target: Target) -> None:
    """128 admitted-size writes that never send data: a quarter of the budget, TASK SET FULL after."""
    c = rightful(target)
    before = target.rss()
    a = Conn(target.port)
    blocks = MAX_TRANSFER // 512
    a.send(b"".join(a.command(rw(0x8A, 8192 + i * blocks, blocks), MAX_TRANSFER, write=True)[1] for i in range(128)))
    answers = a.responses(128)
    r2ts = [p for p in answers if isinstance(p, R2T)]
    full = [p for p in answers if isinstance(p, ScsiResponse) and p.status == 0x28]
    assert len(r2ts) <= (BUDGET // 4) // MAX_TRANSFER and len(r2ts) + len(full) == 128, answers
    # The attacker sends half of each burst it was asked for: those pages are really held.
    for p in r2ts:
        send_part(a, p, p.length // 2)
    check_rightful(c, 2)
    assert target.rss() - before < BUDGET + 32 * MiB
    a.reset()
    assert target.wait_connections(1) == 1
    assert settle(lambda: target.rss() - before < 32 * MiB), target.rss() - before
    check_rightful(c, 3)
    assert target.data_unchanged()


def test_immediate_commands_cannot_pass_the_queue_depth(target: Target) -> None:
    """600 immediate WRITEs used to get 600 R2Ts past a queue depth of 128."""
    c = rightful(target)
    a = Conn(target.port)
    a.send(b"".join(a.command(rw(0x2A, 8192 + i * 8, 8), 4096, write=True, immediate=True)[1] for i in range(600)))
    answers = a.responses(600)
    r2ts = [p for p in answers if isinstance(p, R2T)]
    full = [p for p in answers if isinstance(p, ScsiResponse) and p.status == 0x28]
    assert len(r2ts) <= 128 and len(full) == 600 - len(r2ts), (len(r2ts), len(full))
    check_rightful(c, 0)
    a.close()
    assert target.wait_connections(1) == 1
    assert target.data_unchanged()


def test_a_peer_that_leaves_a_paused_connection_is_reaped(target: Target) -> None:
    """Reads never read back pause the connection; the peer then vanishes (RST) with writes half sent."""
    c = rightful(target)
    before = target.rss()
    a = Conn(target.port)
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    blocks = MAX_TRANSFER // 512
    a.send(b"".join(a.command(rw(0x88, 8192 + i * blocks, blocks), MAX_TRANSFER)[1] for i in range(16)))
    b = Conn(target.port, isid=2)
    b.send(b"".join(b.command(rw(0x8A, 8192 + i * blocks, blocks), MAX_TRANSFER, write=True)[1] for i in range(4)))
    for p in b.responses(4):
        if isinstance(p, R2T):
            send_part(b, p, p.length // 2)
    check_rightful(c, 0)
    assert target.connections() == 3
    a.reset()
    b.reset()
    assert target.wait_connections(1) == 1, "the target kept a connection whose peer is gone"
    assert settle(lambda: target.rss() - before < 32 * MiB), target.rss() - before
    check_rightful(c, 1)
    assert target.data_unchanged()


def test_idle_connections_and_half_logins_are_refused_or_closed(target: Target) -> None:
    """1,000 idle TCP connections and unfinished logins used to stay forever at ~263 KiB each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    c = rightful(target)
    before = target.rss()
    socks = []
    for _ in range(1000):
        try:
            socks.append(socket.create_connection(("127.0.0.1", target.port), timeout=10))
        except OSError:
            pass  # refused at accept or the backlog is full: what the limit is for
    half = []
    for i in range(20):
        h = Conn(target.port, source="127.0.0.3", isid=i + 1, login=False)
        h.send(h.ini.login_request()[:60])  # a login PDU cut short
        half.append(h)
    check_rightful(c, 0)
    assert target.rss() - before < 64 * MiB
    assert target.connections() <= 64 + 20 + 1
    # login_timeout (3 s) closes every one of them; the rightful session stays.
    assert target.wait_connections(1) == 1
    for s in socks:  # every one was closed by the target: refused at once, or at login_timeout
        s.settimeout(10)
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
    check_rightful(c, 1)
    log = target.log
    assert 1 <= log.count("max_connections_per_address") <= 3, log[-3000:]
    assert 1 <= log.count("login timeout") <= 3, log[-3000:]
    for s in socks:
        s.close()
    for h in half:
        h.close()
    assert settle(lambda: target.rss() - before < 32 * MiB), target.rss() - before
    assert target.data_unchanged()


def test_discovery_session_that_idles_is_closed(target: Target) -> None:
    d = socket.create_connection(("127.0.0.1", target.port), timeout=20)
    ini = InitiatorConnection("iqn.2026-11.org.iscsikit.bounds:discovery")
    d.sendall(ini.login_request())
    got = ini.feed(d.recv(65536))
    assert ini.login_response(got[0]) is None  # type: ignore[arg-type]
    assert target.wait_connections(0) == 0  # idle_timeout (3 s) closed it
    assert d.recv(100) == b""
    d.close()


def test_sigterm_stops_the_target_whatever_peers_left_behind(target: Target) -> None:
    """Unfinished writes, unread reads, a half login: SIGTERM still ends serve within its timeout."""
    c = rightful(target)
    blocks = MAX_TRANSFER // 512
    a = Conn(target.port)
    a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    a.send(b"".join(a.command(rw(0x88, 8192 + i * blocks, blocks), MAX_TRANSFER)[1] for i in range(16)))
    b = Conn(target.port, isid=2)
    b.send(b"".join(b.command(rw(0x8A, 8192 + i * blocks, blocks), MAX_TRANSFER, write=True)[1] for i in range(4)))
    h = Conn(target.port, source="127.0.0.3", login=False)
    h.send(h.ini.login_request()[:60])
    check_rightful(c, 0)
    # shutdown_timeout is 3 s; the wait below only guards against a hang.
    assert target.stop(timeout=60) == 0, target.log[-3000:]
    for conn in (a, b, h, c):
        conn.close()
    assert target.data_unchanged()
