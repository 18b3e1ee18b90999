"""A hostile peer against a real ``iscsikit replica serve`` on loopback: it cannot make the server
hold more than a bounded amount of memory, nor reach anything outside its replica directory.

Each attack comes from a hand-written peer (:class:`~tests.support.replicawire.RawPeer`, frames
from the protocol's own codec) that owns the replica, as a compromised or broken controller
would: a READ of 64 MiB, a CHECKSUM with a granule of 1, 32 pipelined READs of 16 MiB whose answers
it never reads. Each test asserts the attack fails (an error answer), the data and metadata are
unchanged, the rightful controller (the real client) works afterwards, and the server's RSS
(``/proc/PID/status``) stays bounded and comes back near its baseline once the attacker has gone.
RSS bounds have generous margins (each attack used to cost 64-500 MiB); nothing here is timed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from iscsikit.replica import protocol as p
from iscsikit.replica.client import ReplicaClient
from tests.support.netns import wait_tcp
from tests.support.replicawire import RawPeer
from tests.support.tgtd import free_port

MiB = 1 << 20
GiB = 1 << 30
SIZE = 4 * GiB - 512  # sparse; large enough for the largest CHECKSUM a payload holds
VOLUME = "0b8d5c56-54a4-4b43-9b6e-1f8c2b0c7a11"
MEMBERS = [{"id": "r0", "address": "tcp://127.0.0.1:1"}, {"id": "r1", "address": "tcp://127.0.0.1:2"}]
DATA = os.urandom(16 * MiB)
#: What a replica server's RSS may grow by while one connection holds its whole response budget
#: (32 MiB; measured: 32), and what it may keep once the attacker has gone (measured: 0).
PEAK_MARGIN_MIB = 96
AFTER_MARGIN_MIB = 12


class Replica:
    """One ``iscsikit replica serve DIR`` on 127.0.0.1, logging to ``DIR.log``."""

    def __init__(self, directory: Path, size: int = SIZE) -> None:
        self.directory = directory
        self.port = free_port()
        self.log = directory.with_suffix(".log")
        argv = [str(Path(sys.executable).parent / "iscsikit"), "replica", "serve", str(directory),
                "--size", str(size), "--listen", f"127.0.0.1:{self.port}"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_tcp("127.0.0.1", self.port)
        assert self.proc.poll() is None, self.log.read_text()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def peak_rss_mib(self, settle: float = 2.0, limit: float = 60.0) -> float:
        """The highest RSS seen until it has not risen for ``settle`` seconds (at most ``limit``)."""
        peak = self.rss_mib()
        since = end = time.monotonic()
        end += limit
        while time.monotonic() - since < settle and time.monotonic() < end:
            time.sleep(0.05)
            rss = self.rss_mib()
            if rss > peak + 1:
                peak, since = rss, time.monotonic()
        return peak

    def rss_down_to(self, bound: float, limit: float = 60.0) -> float:
        """Wait (up to ``limit`` s) for the RSS to come down to ``bound``; returns the last seen."""
        end = time.monotonic() + limit
        rss = self.rss_mib()
        while rss > bound and time.monotonic() < end:
            time.sleep(0.1)
            rss = self.rss_mib()
        return rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    server = Replica(tmp_path / "r0")
    try:
        asyncio.run(rightful_setup(server.address))
        yield server
    finally:
        server.stop()
        if server.proc.returncode not in (0, None):
            print(server.log.read_text()[-3000:])


async def rightful_setup(address: str) -> None:
    """What a controller leaves on a replica: data, a volume id, an epoch and members."""
    client = ReplicaClient(address)
    await client.connect()
    for off in range(0, len(DATA), 4 * MiB):
        await client.write(off, DATA[off : off + 4 * MiB])
    await client.set_meta(volume_id=VOLUME, epoch=4, members=MEMBERS, state="rw")
    await client.flush()
    client.close()


async def rightful_check(address: str, size: int = SIZE) -> dict[str, Any]:
    """The controller comes back: its data and metadata are as it left them, and it can write."""
    client = ReplicaClient(address)
    meta = await client.connect()
    assert (meta["volume_id"], meta["epoch"], meta["members"], meta["state"]) == (VOLUME, 4, MEMBERS, "rw")
    for off in range(0, len(DATA), 4 * MiB):
        assert await client.read(off, 4 * MiB) == DATA[off : off + 4 * MiB], f"data at {off} changed"
    await client.write(size - 4096, b"w" * 4096, fua=True)
    assert await client.read(size - 8192, 8192) == bytes(4096) + b"w" * 4096
    client.close()
    return meta


def test_a_64_mib_read_is_answered_einval_without_reading_anything(replica: Replica) -> None:
    base = replica.rss_mib()
    peer = RawPeer("127.0.0.1", replica.port)
    peer.claim()
    for _ in range(8):
        answer = peer.call(p.Op.READ, offset=0, length=64 * MiB)
        assert answer.status == p.Status.EINVAL
        assert "exceeds the 16777216-byte payload limit" in answer.error_text()
    assert peer.call(p.Op.READ, offset=0, length=MiB).payload == DATA[:MiB]  # the connection goes on
    assert replica.peak_rss_mib() - base < 32, "a refused READ still allocated its buffer"
    peer.close()
    asyncio.run(rightful_check(replica.address))


def test_a_checksum_per_byte_is_refused_and_the_largest_allowed_one_answered(replica: Replica) -> None:
    base = replica.rss_mib()
    peer = RawPeer("127.0.0.1", replica.port)
    peer.claim()
    answer = peer.call(p.Op.CHECKSUM, offset=0, length=16 * MiB, payload=p.granule_payload(1))
    assert answer.status == p.Status.EINVAL and "granule 1 is under the minimum of 512" in answer.error_text()
    # 8 Mi checksums of 512 bytes would be 32 MiB: refused before any is computed.
    answer = peer.call(p.Op.CHECKSUM, offset=0, length=SIZE, payload=p.granule_payload(512))
    assert answer.status == p.Status.EINVAL and "more than the 16777216-byte payload limit" in answer.error_text()
    # The largest a payload holds: 4 Mi checksums of 1 KiB (16 MiB), over data and holes.
    answer = peer.call(p.Op.CHECKSUM, offset=0, length=SIZE, payload=p.granule_payload(1024))
    assert answer.status == p.Status.OK and len(answer.payload) == 4 * ((SIZE + 1023) // 1024)
    sums = p.unpack_checksums(answer.payload)
    from crc32c import crc32c

    assert sums[:4] == [crc32c(DATA[i : i + 1024]) for i in range(0, 4096, 1024)]
    assert sums[-1] == crc32c(bytes(512)) and sums[len(DATA) // 1024] == crc32c(bytes(1024))
    assert replica.peak_rss_mib() - base < PEAK_MARGIN_MIB
    peer.close()
    assert replica.rss_down_to(base + AFTER_MARGIN_MIB) <= base + AFTER_MARGIN_MIB
    asyncio.run(rightful_check(replica.address))


def test_pipelined_reads_whose_answers_are_never_read_hold_a_bounded_amount(replica: Replica) -> None:
    base = replica.rss_mib()
    count, piece = 32, 16 * MiB
    peer = RawPeer("127.0.0.1", replica.port, rcvbuf=64 << 10)
    peer.claim()
    # 512 MiB of answers asked for in one write of 1,152 bytes, and none of them read.
    peer.pipeline([p.Frame(p.Op.READ, 0, (i % 2) * piece, piece) for i in range(count)])
    peak = replica.peak_rss_mib()
    assert peak - base < PEAK_MARGIN_MIB, f"RSS {base:.0f} -> {peak:.0f} MiB with the answers unread"

    # The attacker reads half of the answers, slowly: every answer is right, memory stays bounded.
    for _ in range(count // 2):
        answer = peer.recv()
        assert answer.status == p.Status.OK and answer.payload == (DATA if answer.offset == 0 else bytes(piece))
        peak = max(peak, replica.rss_mib())
    assert peak - base < PEAK_MARGIN_MIB, f"RSS {base:.0f} -> {peak:.0f} MiB while the answers were read"
    peer.close()  # and goes, the rest unread

    after = replica.rss_down_to(base + AFTER_MARGIN_MIB)
    assert after <= base + AFTER_MARGIN_MIB, f"RSS {base:.0f} -> {after:.0f} MiB after the attacker left"
    asyncio.run(rightful_check(replica.address))


def test_unread_reads_on_many_connections_do_not_add_up(replica: Replica) -> None:
    """Connections that claim in turn (each fences the one before) and leave their answers unread."""
    base = replica.rss_mib()
    peers = []
    for _ in range(6):
        peer = RawPeer("127.0.0.1", replica.port, rcvbuf=64 << 10)
        peer.claim()
        peer.pipeline([p.Frame(p.Op.READ, 0, 0, 16 * MiB) for _ in range(32)])
        peers.append(peer)
        peak = replica.peak_rss_mib()
        assert peak - base < PEAK_MARGIN_MIB, f"RSS {base:.0f} -> {peak:.0f} MiB with {len(peers)} attackers"
    for peer in peers:
        peer.close()
    after = replica.rss_down_to(base + AFTER_MARGIN_MIB)
    assert after <= base + AFTER_MARGIN_MIB, f"RSS {base:.0f} -> {after:.0f} MiB after the attackers left"
    asyncio.run(rightful_check(replica.address))


# --------------------------------------------------------------------------------------
# Links planted in a replica directory


VICTIM = b"root:x:0:0:root:/root:/bin/bash\n"


def serve_refused(directory: Path, *extra: str) -> str:
    """Run ``replica serve DIR`` expecting it to refuse to start; its stderr. A server that starts
    anyway is stopped (after the caller's checks of what it may have done had a chance to fail)."""
    argv = [str(Path(sys.executable).parent / "iscsikit"), "replica", "serve", str(directory),
            "--listen", f"127.0.0.1:{free_port()}", *extra]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.terminate()
        _, err = proc.communicate()
        return f"STARTED ANYWAY: {err}"
    assert proc.returncode == 1, f"exit {proc.returncode}: {err}"
    return err


def test_a_planted_volume_link_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "passwd"
    victim.write_bytes(VICTIM)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "volume.img").symlink_to(victim)
    err = serve_refused(fresh, "--size", "1G")
    assert victim.read_bytes() == VICTIM and victim.stat().st_size == len(VICTIM)
    assert f"{fresh / 'volume.img'} is a symbolic link" in err


def test_planted_links_in_a_replica_in_use_are_refused(tmp_path: Path) -> None:
    replica = Replica(tmp_path / "r0", size=64 * MiB)
    try:
        asyncio.run(rightful_setup(replica.address))
        # A link where the metadata's temporary goes: the next metadata save is refused by name.
        victim = tmp_path / "passwd"
        victim.write_bytes(VICTIM)
        tmp = replica.directory / "replica.json.tmp"
        tmp.symlink_to(victim)

        async def set_epoch() -> str:
            client = ReplicaClient(replica.address)
            await client.connect()
            try:
                await client.set_meta(epoch=5)
            except Exception as exc:
                return str(exc)
            finally:
                client.close()
            return ""

        error = asyncio.run(set_epoch())
        assert f"{tmp} is a symbolic link" in error
        assert victim.read_bytes() == VICTIM
        tmp.unlink()
        asyncio.run(rightful_check(replica.address, 64 * MiB))  # metadata unchanged, and it works again
    finally:
        replica.stop()
    assert replica.proc.returncode == 0
    # Stopped: the metadata and the data file themselves replaced by links.
    for name in ("replica.json", "volume.img"):
        real = tmp_path / f"real-{name}"
        (replica.directory / name).rename(real)
        (replica.directory / name).symlink_to(real)
        before = real.read_bytes()
        err = serve_refused(replica.directory)
        assert real.read_bytes() == before
        assert f"{replica.directory / name} is a symbolic link" in err
        if name == "replica.json":  # nor does `replica info` read through it
            info = subprocess.run([str(Path(sys.executable).parent / "iscsikit"), "replica", "info",
                                   str(replica.directory)], capture_output=True, text=True, timeout=60)  # fmt: skip
            assert info.returncode == 1 and f"{replica.directory / name} is a symbolic link" in info.stderr
        (replica.directory / name).unlink()
        real.rename(replica.directory / name)
