"""A private tgtd on loopback: the reference target for interop tests and benchmarks.

Each instance gets its own control port (``tgtd -C N``) and a free TCP port, so several can
run beside each other and beside any tgtd the machine already has.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from iscsikit.runner import Runner

_next_control = [40 + (os.getpid() % 400)]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


class Tgtd:
    """tgtd in the foreground on ``host:port``; ``tgtadm(...)`` talks to this instance only."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        _next_control[0] += 1
        self.control = _next_control[0]
        self.workdir = Path(tempfile.mkdtemp(prefix="isk-tgtd-"))
        self.log = open(self.workdir / "tgtd.log", "w")  # noqa: SIM115 - closed in close()
        portal = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self._proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(self.control), "--iscsi", f"portal={portal}"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.runner = Runner("local")
        wait_for_port(host, self.port)
        self._next_tid = 1

    def tgtadm(self, *args: str) -> str:
        return self.runner.run(
            ["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args], timeout=30
        ).stdout

    def add_target(
        self,
        iqn: str,
        *,
        luns: dict[int, Path] | None = None,
        thin: bool = False,
        allow: str = "ALL",
    ) -> int:
        """Create a target with file-backed LUNs, bound to ``allow``; returns its tid."""
        tid = self._next_tid
        self._next_tid += 1
        self.tgtadm("--op", "new", "--mode", "target", "--tid", str(tid), "--targetname", iqn)
        for lun, path in (luns or {}).items():
            self.tgtadm(
                "--op", "new", "--mode", "logicalunit", "--tid", str(tid), "--lun", str(lun),
                "--backing-store", str(path),
            )  # fmt: skip
            if thin:
                self.tgtadm(
                    "--op", "update", "--mode", "logicalunit", "--tid", str(tid), "--lun", str(lun),
                    "--params", "thin_provisioning=1",
                )  # fmt: skip
        self.tgtadm("--op", "bind", "--mode", "target", "--tid", str(tid), "--initiator-address", allow)
        return tid

    def backing_file(self, name: str, size: int) -> Path:
        path = self.workdir / name
        with open(path, "wb") as fh:
            fh.truncate(size)
        return path

    def url(self, iqn: str, lun: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"iscsi://{host}:{self.port}/{iqn}/{lun}"

    def close(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self.log.close()

    def __enter__(self) -> Tgtd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
