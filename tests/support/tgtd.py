"""A private tgtd on loopback: the reference target for interop tests and benchmarks.

Each instance gets its own control port (``tgtd -C N``) and a free TCP port, so several can
run beside each other and beside any tgtd the machine already has. Configuration goes
through :class:`iscsikit.tgt.Tgt` (``.tgt``), the same typed tgtadm wrapper users get.
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
from iscsikit.tgt import Tgt

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
    """tgtd in the foreground on ``host:port``; ``tgt``/``tgtadm(...)`` talk to this instance only."""

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
        self.tgt = Tgt(self.runner, control_port=self.control, timeout=30)
        try:
            wait_for_port(host, self.port)
        except TimeoutError:
            self.close()
            raise

    def tgtadm(self, *args: str) -> str:
        """Raw tgtadm (``--lld iscsi`` added) against this tgtd; typed errors on failure."""
        return self.tgt.run(*args)

    def add_target(
        self,
        iqn: str,
        *,
        luns: dict[int, Path] | None = None,
        thin: bool = False,
        allow: str = "ALL",
        chap: tuple[str, str] | None = None,
    ) -> int:
        """Create a target with file-backed LUNs, bound to ``allow``; returns its tid.

        ``chap=(user, secret)`` creates that account and binds it (initiators must then log in
        with CHAP).
        """
        tid = self.tgt.next_free_tid()
        self.tgt.create_target(tid, iqn)
        for lun, path in (luns or {}).items():
            self.tgt.add_lun(tid, lun, str(path))
            if thin:
                self.tgt.set_lun_thin_provisioning(tid, lun)
        self.tgt.bind_initiator(tid, allow)
        if chap is not None:
            user, secret = chap
            self.tgt.create_account(user, secret)
            self.tgt.bind_account(tid, user)
        return tid

    def backing_file(self, name: str, size: int) -> Path:
        path = self.workdir / name
        with open(path, "wb") as fh:
            fh.truncate(size)
        return path

    def url(self, iqn: str, lun: int, *, user: str | None = None, secret: str | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = f"{user}%{secret}@" if user is not None else ""
        return f"iscsi://{auth}{host}:{self.port}/{iqn}/{lun}"

    def close(self) -> None:
        # tgtd catches SIGTERM and carries on (usr/tgtd.c signal_catch); this instance is private
        # and its backing files are throwaway, so SIGKILL is the clean way out.
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self.log.close()

    def __enter__(self) -> Tgtd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
