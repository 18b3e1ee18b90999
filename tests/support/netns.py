"""Separate "hosts" on one machine: network namespaces linked to the host by veth pairs.

Each :class:`NetnsLab` creates ``n`` namespaces. Namespace ``i`` gets one veth pair: the host end
``<tag>h<i>`` with ``10.231.L.(4i+1)/30`` and, inside the namespace, ``eth0`` with
``10.231.L.(4i+2)/30`` (``L`` is unique per lab). Traffic only ever flows between the host
end and its namespace; nothing is routed further. ``cut(i)`` / ``restore(i)`` take the namespace's
end down and up (a pulled cable: packets vanish, no reset). A blackhole route for the lab's /24
makes sure no packet for these addresses ever leaves through the host's default route.
Everything is deleted on ``close()``, also when a test fails (use it as a context manager or a
fixture), and :func:`sweep` removes leftovers of labs whose process died.

Example::

    with NetnsLab(3) as lab:
        proc = lab.popen(0, ["iscsikit", "replica", "serve", "/tmp/r0", "--listen", f"{lab.addr(0)}:9700"])
        ...
        lab.cut(0); lab.restore(0)
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

PREFIX = "iskt"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def sweep() -> None:
    """Delete namespaces (and so their veths) left by labs whose process is gone."""
    res = _ip("netns", "list", check=False)
    for line in res.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        try:
            pid = int(name[len(PREFIX) :].split("n", 1)[0])
        except ValueError:
            continue
        if not Path(f"/proc/{pid}").exists():
            _ip("netns", "del", name, check=False)


def end(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """Stop a server a test left running: SIGTERM (and SIGCONT, for one a test stopped) to it,
    or to its process group when it leads one, SIGKILL after ``grace`` seconds. A server ends
    through its own shutdown, so under scripts/coverage it saves what it ran; kill -9 loses that."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGCONT, signal.SIGKILL):
        try:
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGTERM:
            continue
        try:
            proc.wait(grace if sig == signal.SIGCONT else 10)
            return
        except subprocess.TimeoutExpired:
            pass


class NetnsLab:
    def __init__(self, n: int) -> None:
        sweep()
        self.n = n
        pid = os.getpid()
        self.tag = f"{PREFIX}{pid}"
        self.subnet = 20 + pid % 200
        self.namespaces = [f"{self.tag}n{i}" for i in range(n)]
        self.host_ifs = [f"{self.tag}h{i}"[-15:] for i in range(n)]
        self.procs: list[subprocess.Popen[Any]] = []
        self._created: list[str] = []
        self._blackhole = False

    def addr(self, i: int) -> str:
        """The address of namespace ``i`` (where its servers listen)."""
        return f"10.231.{self.subnet}.{4 * i + 2}"

    def host_addr(self, i: int) -> str:
        """The host's address on the link to namespace ``i``."""
        return f"10.231.{self.subnet}.{4 * i + 1}"

    def start(self) -> NetnsLab:
        try:
            # Whatever happens to the links, nothing for 10.231.L.0/24 may leave through the
            # host's default route: a blackhole route catches it when a /30 link route is gone.
            _ip("route", "add", "blackhole", f"10.231.{self.subnet}.0/24")
            self._blackhole = True
            for i, (ns, hif) in enumerate(zip(self.namespaces, self.host_ifs, strict=True)):
                _ip("netns", "add", ns)
                self._created.append(ns)
                _ip("link", "add", hif, "type", "veth", "peer", "name", f"{hif}p")
                _ip("link", "set", f"{hif}p", "netns", ns)
                _ip("addr", "add", f"{self.host_addr(i)}/30", "dev", hif)
                _ip("link", "set", hif, "up")
                _ip("-n", ns, "link", "set", f"{hif}p", "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{self.addr(i)}/30", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def cut(self, i: int) -> None:
        """Pull the cable: namespace ``i``'s end goes down; packets to it are silently lost."""
        _ip("-n", self.namespaces[i], "link", "set", "eth0", "down")

    def restore(self, i: int) -> None:
        _ip("-n", self.namespaces[i], "link", "set", "eth0", "up")

    def popen(self, i: int, argv: Sequence[str], log: IO[Any] | None = None, **kw: Any) -> subprocess.Popen[Any]:
        """Start a process inside namespace ``i`` (in its own process group)."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.namespaces[i], *argv],
            stdout=log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            end(proc)
        self.procs.clear()
        for ns in self._created:
            _ip("netns", "del", ns, check=False)
        for hif in self.host_ifs:  # gone with the namespace's peer; make sure
            _ip("link", "del", hif, check=False)
        self._created.clear()
        if self._blackhole:
            _ip("route", "del", "blackhole", f"10.231.{self.subnet}.0/24", check=False)
            self._blackhole = False

    def __enter__(self) -> NetnsLab:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class LoopbackLab:
    """The part of :class:`NetnsLab`'s interface a :class:`ReplicaRig` uses, on loopback addresses.

    Host ``i`` is ``127.A.B.(i+2)`` (``A.B`` from the process id, so parallel runs do not meet):
    no root, no namespaces, no ``cut()``.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        pid = os.getpid()
        self._net = f"127.{(pid >> 8) & 255}.{pid & 255}"
        self.procs: list[subprocess.Popen[Any]] = []

    def addr(self, i: int) -> str:
        return f"{self._net}.{i + 2}"

    def popen(self, i: int, argv: Sequence[str], log: IO[Any] | None = None, **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(
            list(argv), stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True, **kw,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            end(proc)
        self.procs.clear()

    def __enter__(self) -> LoopbackLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_tcp(host: str, port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


# --------------------------------------------------------------------------------------
# A replicated LUN across namespaces: replica servers on "other hosts", the target on this one.

MiB = 1 << 20
REPLICA_PORT = 9700


class ReplicaRig:
    """``n`` replica servers, one per namespace, and ``iscsikit target serve`` on the host.

    ``url`` is the LUN's iscsi:// URL for qemu-io/qemu-img. Logs go to ``workdir``. The replicas
    listen on non-loopback addresses, so they share a secret with the target (``secret_file``).
    """

    def __init__(
        self, lab: NetnsLab | LoopbackLab, workdir: Path, size: int = 64 * MiB, options: str = "timeout=1"
    ) -> None:
        import sys

        self.lab = lab
        self.workdir = workdir
        self.size = size
        self.options = options
        self.bin = str(Path(sys.executable).parent / "iscsikit")
        self.replicas: list[subprocess.Popen[Any] | None] = [None] * lab.n
        self.target: subprocess.Popen[Any] | None = None
        self.iqn = "iqn.2026-11.org.iscsikit:replicated"
        self.control = workdir / "target.sock"
        from tests.support.tgtd import free_port

        self.port = free_port()
        from iscsikit.replica.auth import new_secret

        self.secret_file = workdir / "replicas.secret"
        self.secret_file.write_text(new_secret() + "\n")
        self.secret_file.chmod(0o600)

    def replica_dir(self, i: int) -> Path:
        return self.workdir / f"replica{i}"

    def address(self, i: int) -> str:
        return f"tcp://{self.lab.addr(i)}:{REPLICA_PORT}"

    @property
    def url(self) -> str:
        return f"iscsi://127.0.0.1:{self.port}/{self.iqn}/1"

    def start_replica(self, i: int) -> None:
        assert self.replicas[i] is None or self.replicas[i].poll() is not None  # type: ignore[union-attr]
        log = open(self.workdir / f"replica{i}.log", "a")  # noqa: SIM115 - the child keeps it
        argv = [self.bin, "replica", "serve", str(self.replica_dir(i)), "--size", str(self.size),
                "--listen", f"{self.lab.addr(i)}:{REPLICA_PORT}", "--secret-file", str(self.secret_file)]  # fmt: skip
        self.replicas[i] = self.lab.popen(i, argv, log)
        wait_tcp(self.lab.addr(i), REPLICA_PORT)

    def kill_replica(self, i: int) -> None:
        proc = self.replicas[i]
        assert proc is not None
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def start_target(self) -> None:
        spec = "replicated:" + ",".join(self.address(i) for i in range(self.lab.n))
        spec += f",secret_file={self.secret_file}"
        if self.options:
            spec += "," + self.options
        log = open(self.workdir / "target.log", "a")  # noqa: SIM115 - the child keeps it
        self.target = subprocess.Popen(
            [self.bin, "target", "serve", "--portal", f"127.0.0.1:{self.port}", "--iqn", self.iqn,
             "--lun", f"1={spec}", "--control", str(self.control)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_tcp("127.0.0.1", self.port, timeout=60)
        from iscsikit.target.control import request

        request(self.control, "status", wait=60)  # the control socket opens just after the portal

    def kill_target(self) -> None:
        assert self.target is not None
        os.killpg(self.target.pid, signal.SIGKILL)
        self.target.wait(10)

    def stop_target(self) -> None:
        """SIGTERM: finish in-flight I/O, flush, mark replicas cleanly shut down."""
        assert self.target is not None
        self.target.send_signal(signal.SIGTERM)
        self.target.wait(60)

    def status(self) -> list[dict[str, Any]]:
        from iscsikit.target.control import request

        volumes: list[dict[str, Any]] = request(self.control, "replica status")
        return volumes[0]["replicas"]  # type: ignore[no-any-return]

    def wait_all_rw(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            reps = self.status()
            if all(r["mode"] == "rw" for r in reps) and len(reps) == self.lab.n:
                return reps
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas not all RW after {timeout} s: {reps}")
            time.sleep(0.2)

    def wait_mode(self, i: int, mode: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            reps = {r["address"]: r for r in self.status()}
            if reps[self.address(i)]["mode"] == mode:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica {i} not {mode} after {timeout} s: {reps[self.address(i)]}")
            time.sleep(0.1)

    def images_identical(self) -> bool:
        first = (self.replica_dir(0) / "volume.img").read_bytes()
        return all((self.replica_dir(i) / "volume.img").read_bytes() == first for i in range(1, self.lab.n))

    def close(self) -> None:
        procs = [p for p in [self.target, *self.replicas] if p is not None]
        for p in procs:
            end(p)


class Workload:
    """A continuous, verified workload over the real iSCSI path with qemu-io (libiscsi).

    Batches of write-then-read-verify pairs on distinct 256 KiB regions, each batch one
    initiator session. ``acked`` maps region offsets to the pattern of the last write qemu-io
    reported done; a write that failed leaves its region unknown (dropped from ``acked``).
    ``errors`` collects every failed command; ``corruptions`` every read whose data was not
    what was acknowledged.
    """

    REGION = 256 << 10

    def __init__(self, url: str, size: int, seed: int = 1, batch: int = 12) -> None:
        import random
        import threading

        self.url = url
        self.regions = size // self.REGION
        self.rng = random.Random(seed)
        self.batch = batch
        self.acked: dict[int, int] = {}
        self.errors: list[str] = []
        self.corruptions: list[str] = []
        self.batches = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run_batch(self) -> None:
        offsets = self.rng.sample(range(self.regions), self.batch)
        plan = [(o * self.REGION, self.rng.randrange(1, 256)) for o in offsets]
        cmds: list[str] = []
        for off, pat in plan:
            cmds += ["-c", f"write -P {pat} {off} {self.REGION}", "-c", f"read -P {pat} {off} {self.REGION}"]
        try:
            res = subprocess.run(["qemu-io", "-f", "raw", *cmds, self.url], capture_output=True, text=True,
                                 timeout=120)  # fmt: skip
            out, rc = res.stdout + res.stderr, res.returncode
        except subprocess.TimeoutExpired as exc:  # hung initiator: nothing of this batch counts
            out, rc = f"qemu-io timed out: {exc}", -1
        with self._lock:
            for off, pat in plan:
                if f"wrote {self.REGION}/{self.REGION} bytes at offset {off}\n" in out:
                    self.acked[off] = pat
                    if f"Pattern verification failed at offset {off}," in out:
                        self.corruptions.append(f"region {off}: read back other data than pattern {pat}")
                else:
                    self.acked.pop(off, None)
            if rc != 0:
                self.errors.append(out.strip()[-400:])
            self.batches += 1

    def start(self) -> None:
        import threading

        def loop() -> None:
            while not self._stop.is_set():
                self.run_batch()

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def wait_batches(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.batches
        while self.batches < start + n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workload made no progress ({self.batches - start} of {n} batches)")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(180)

    def verify_all(self) -> list[str]:
        """Read every acknowledged region back in one session; returns mismatches."""
        items = sorted(self.acked.items())
        bad: list[str] = []
        for k in range(0, len(items), 100):
            chunk = items[k : k + 100]
            cmds: list[str] = []
            for off, pat in chunk:
                cmds += ["-c", f"read -P {pat} {off} {self.REGION}"]
            res = subprocess.run(["qemu-io", "-f", "raw", "-r", *cmds, self.url], capture_output=True, text=True,
                                 timeout=300)  # fmt: skip
            out = res.stdout + res.stderr
            for off, pat in chunk:
                if f"Pattern verification failed at offset {off}," in out:
                    bad.append(f"region {off}: acknowledged pattern {pat} is gone")
            if res.returncode != 0 and not bad:
                bad.append(f"verification run failed: {out.strip()[-400:]}")
        return bad
