"""10,000 malformed or mutated PDUs over real sockets against ``iscsikit target serve``.

Each case is sent on a connection of its own kind (during login, or after login), followed by
a NOP-Out ping. What the target may do: answer (a Reject, a failed Login Response, a SCSI
Response), stay silent where the RFC says to (a CmdSN outside the window), or close the
connection. What it must not do: crash, log an internal error, stop serving a witness session
that runs beside the fuzzing, or refuse a fresh initiator afterwards.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from iscsikit.target.proto import InitiatorConnection
from iscsikit.target.proto.pdu import RESERVED_TAG, DataIn, NopIn, ScsiResponse
from iscsikit.target.scsi.core import Status
from iscsikit.target.scsi.sense import SenseKey
from tests.support.tgtd import free_port, wait_for_port
from tests.support.tiers import ROOT

IQN = "iqn.2026-11.org.iscsikit.fuzz:disk"
TOTAL = int(os.environ.get("ISCSIKIT_FUZZ_PDUS", "10000"))
SEED = int(os.environ.get("ISCSIKIT_FUZZ_SEED", "20261121"))
#: How long a case may go unanswered before it counts as "silent" (the target is waiting for
#: the rest of a PDU the case cut short). Only the outcome tally depends on it, not a verdict.
SILENCE = 0.05
UNIT_ATTENTION = SenseKey.UNIT_ATTENTION


class Conn:
    """A blocking socket with the test initiator."""

    def __init__(self, port: int, name: str = "iqn.2026-11.org.iscsikit.fuzz:ini", isid: int = 1) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ini = InitiatorConnection(name, target=IQN, isid=bytes([0x80, 0, 0, 0, 0, isid]))

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def pdus(self, timeout: float, ping: int | None = None) -> list[object] | None:
        """PDUs that arrive within ``timeout``; None when the target closed the connection.

        With ``ping`` (a NOP-Out's ITT), return as soon as its NOP-In is in: the target
        answers in order, so what it had to say about the PDUs before the ping is in too.
        """
        self.sock.settimeout(timeout)
        out: list[object] = []
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    return None
                try:
                    out += self.ini.feed(data)
                except Exception:
                    return out  # unparseable answer (the fuzzer broke our own state): give up on it
                if ping is not None and any(isinstance(p, NopIn) and p.itt == ping for p in out):
                    return out
                if out:
                    self.sock.settimeout(0.02)
        except TimeoutError:
            return out
        except OSError:
            return None

    def login(self) -> None:
        assert self.send(self.ini.login_request())
        while True:
            got = self.pdus(5)
            assert got, "no login response"
            nxt = self.ini.login_response(got[0])  # type: ignore[arg-type]
            if nxt is None:
                return
            assert self.send(nxt)

    def close(self) -> None:
        self.sock.close()


def _flip(rng: random.Random, wire: bytes) -> bytes:
    b = bytearray(wire)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def _set(wire: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(wire)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _cases(ini: InitiatorConnection) -> dict[str, Callable[[random.Random], bytes]]:
    """Full-feature-phase mutations, by kind."""
    read10 = bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0])
    write10 = bytes([0x2A, 0, 0, 0, 0, 8, 0, 0, 8, 0])

    def cmd(rng: random.Random) -> bytes:
        return ini.scsi_command(read10, lun=1, read_length=4096)[1]

    def wcmd(rng: random.Random) -> bytes:
        return ini.scsi_command(
            write10, lun=1, write_data=os.urandom(4096), immediate_length=rng.choice([0, 512, 4096])
        )[1]

    return {
        "bitflip-command": lambda rng: _flip(rng, cmd(rng)),
        "bitflip-write": lambda rng: _flip(rng, wcmd(rng)),
        "bad-opcode": lambda rng: _set(cmd(rng), 0, ">B", rng.choice([0x07, 0x0F, 0x1C, 0x3E, 0x21, 0x25, 0x31])),
        "truncated-header": lambda rng: cmd(rng)[: rng.randrange(1, 48)],
        "ahs-length": lambda rng: _set(cmd(rng), 4, ">B", rng.randrange(1, 256)),
        "data-length": lambda rng: _set(cmd(rng), 5, ">I", rng.randrange(1 << 24) << 8)[:48] + os.urandom(64),
        "cmdsn-low": lambda rng: _set(cmd(rng), 24, ">I", (ini.cmd_sn - rng.randrange(2, 1000)) & 0xFFFFFFFF),
        "cmdsn-high": lambda rng: _set(cmd(rng), 24, ">I", (ini.cmd_sn + rng.randrange(200, 1 << 31)) & 0xFFFFFFFF),
        "edtl-huge-write": lambda rng: _set(wcmd(rng), 20, ">I", rng.choice([1 << 31, 0xFFFFFFFF, 200 << 20])),
        "data-out-unknown": lambda rng: ini.data_out(
            rng.randrange(1 << 31), rng.randrange(1 << 32), 0, 0, b"x" * 512, True
        ),
        "data-out-beyond-burst": lambda rng: (
            wcmd(rng) + ini.data_out(ini._itt, RESERVED_TAG, 0, 4096, b"y" * 8192, True, 1)
        ),
        "data-out-bad-datasn": lambda rng: (
            ini.scsi_command(write10, lun=1, write_data=b"z" * 8192, immediate_length=0, final=False)[1]
            + ini.data_out(ini._itt, RESERVED_TAG, rng.randrange(1, 100), 0, b"z" * 4096, False, 1)
        ),
        "text-garbage": lambda rng: (
            _set(ini.text([("SendTargets", "All")])[1], 5, ">I", 0)[:48] + b""
            if rng.random() < 0.5
            else ini.text([("K" * rng.randrange(1, 90), "v" * rng.randrange(300))])[1]
        ),
        "tmf-any": lambda rng: _set(ini.task_management(1, lun=1)[1], 1, ">B", 0x80 | rng.randrange(128)),
        "snack": lambda rng: _set(cmd(rng), 0, ">B", 0x10),
        "logout-bad-reason": lambda rng: _set(ini.logout()[1], 1, ">B", 0x80 | rng.randrange(3, 128)),
        "random-bytes": lambda rng: os.urandom(rng.randrange(1, 600)),
        "nop-huge-ping": lambda rng: ini.nop_out(os.urandom(rng.randrange(1, 9000)))[1],
        "login-in-ffp": lambda rng: InitiatorConnection("iqn.2026-11.x:y", target=IQN).login_request(),
    }


def _login_cases(rng: random.Random, ini: InitiatorConnection) -> bytes:
    kind = rng.randrange(5)
    good = ini.login_request()
    if kind == 0:
        return _flip(rng, good)
    if kind == 1:
        return os.urandom(rng.randrange(1, 300))
    if kind == 2:
        return good[: rng.randrange(1, len(good))]
    if kind == 3:
        return ini.nop_out(b"")[1]  # not a Login PDU
    return _set(good, 1, ">B", rng.randrange(256))  # random CSG/NSG/T/C


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, Path, subprocess.Popen[bytes]]]:
    port = free_port()
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "iscsikit", "-v", "target", "serve", "--portal", f"127.0.0.1:{port}",
            "--iqn", IQN, "--lun", "1=memory:size=64M", "--control", str(tmp_path / "ctl.sock")]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=open(log, "wb"), stdout=subprocess.DEVNULL,  # noqa: SIM115
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)  # fmt: skip
    wait_for_port("127.0.0.1", port, timeout=20)
    yield port, log, proc
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def _sense_key(response: ScsiResponse) -> int | None:
    sense = bytes(response.data)[2:]  # after the 2-byte SenseLength
    if len(sense) < 3:
        return None
    return (sense[1] if sense[0] & 0x7F >= 0x72 else sense[2]) & 0x0F


def _read_block(c: Conn) -> str:
    """READ(10) of LBA 0 on LUN 1: "" when it completes with GOOD status and 512 bytes, else what
    went wrong. A unit attention (reported once to a new session) is read past, and the target's
    own NOP-In pings are answered meanwhile."""
    for _ in range(3):
        wrong = _read_once(c)
        if wrong != "unit attention":
            return wrong
    return "unit attention on every try"


def _read_once(c: Conn) -> str:
    itt, wire = c.ini.scsi_command(bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), lun=1, read_length=512)
    if not c.send(wire):
        return "the connection is closed"
    received = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        got = c.pdus(1.0)
        if got is None:
            return f"the connection closed after {received} bytes"
        for p in got:
            if isinstance(p, NopIn) and p.itt == RESERVED_TAG:
                c.send(c.ini.nop_out(ttt=p.ttt)[1])
            elif isinstance(p, DataIn) and p.itt == itt:
                received += sum(len(part) for part in p.data)
                if p.status_present:
                    return "" if p.status == Status.GOOD and received == 512 else f"status {p.status:#x}"
            elif isinstance(p, ScsiResponse) and p.itt == itt:
                if p.status == Status.CHECK_CONDITION and _sense_key(p) == UNIT_ATTENTION:
                    return "unit attention"
                if p.status != Status.GOOD or received != 512:
                    return f"status {p.status:#x} (sense key {_sense_key(p)}) with {received} bytes"
                return ""
    return f"no status within 10 s ({received} bytes)"


class Witness(threading.Thread):
    """A well-behaved session beside the fuzzing: a read every 0.2 s, pings answered."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.conn = Conn(port, name="iqn.2026-11.org.iscsikit.fuzz:witness", isid=99)
        self.conn.login()
        self.reads = 0
        self.failure = ""
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            wrong = _read_block(self.conn)
            if wrong:
                self.failure = f"witness read failed after {self.reads} reads: {wrong}"
                return
            self.reads += 1
            time.sleep(0.2)


def test_fuzzed_pdus_never_hurt_the_target(served: tuple[int, Path, subprocess.Popen[bytes]]) -> None:
    port, log, proc = served
    rng = random.Random(SEED)
    witness = Witness(port)
    witness.start()
    outcomes: Counter[str] = Counter()
    sent = 0
    isid = 2
    while sent < TOTAL:
        isid = isid % 90 + 2
        c = Conn(port, isid=isid)
        try:
            if rng.random() < 0.15:
                c.send(_login_cases(rng, c.ini))
                sent += 1
                got = c.pdus(SILENCE)
                outcomes["login:" + ("closed" if got is None else "answered" if got else "silent")] += 1
                continue
            c.login()
            cases = _cases(c.ini)
            for _ in range(rng.randrange(1, 25)):
                kind = rng.choice(sorted(cases))
                if not c.send(cases[kind](rng)):
                    outcomes[f"{kind}:closed"] += 1
                    break
                sent += 1
                ping_itt, ping = c.ini.nop_out(b"sync")
                c.send(ping)
                got = c.pdus(SILENCE, ping=ping_itt)
                if got is None:
                    outcomes[f"{kind}:closed"] += 1
                    break
                kinds = {type(p).__name__ for p in got}
                outcomes[f"{kind}:{'+'.join(sorted(kinds)) or 'silent'}"] += 1
                if not any(isinstance(p, NopIn) for p in got):
                    break  # framing on this connection is ours no more; start a new one
        finally:
            c.close()
        assert proc.poll() is None, f"the target process died after {sent} PDUs"
        assert not witness.failure, f"{witness.failure} ({sent} fuzzed PDUs)"
    witness.stop.set()
    witness.join(timeout=20)
    assert proc.poll() is None
    assert not witness.failure and witness.reads > 0
    fresh = Conn(port, name="iqn.2026-11.org.iscsikit.fuzz:fresh")
    fresh.login()
    assert _read_block(fresh) == "", "a fresh initiator cannot read after the fuzzing"
    text = log.read_text(errors="replace")
    assert "internal error" not in text and "Traceback" not in text and "Exception in callback" not in text, text[
        -3000:
    ]
    print(f"\n{sent} fuzzed PDUs; outcomes:")
    for k, v in sorted(outcomes.items()):
        print(f"  {k:50s} {v}")
