"""Shared set-up of the replica benchmarks: replica servers and targets as real processes on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BIN = str(Path(sys.executable).parent / "iscsikit")
MiB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.05)


class Procs:
    """Processes started by a benchmark; all killed (by process group) on exit."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="isk-bench-"))
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, argv: list[str], log: str) -> subprocess.Popen[Any]:
        fh = open(self.workdir / log, "a")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def replica(self, name: str, size: int) -> tuple[str, subprocess.Popen[Any]]:
        port = free_port()
        proc = self.start(
            [BIN, "replica", "serve", str(self.workdir / name), "--size", str(size), "--listen", f"127.0.0.1:{port}"],
            f"{name}.log",
        )
        wait_port(port)
        return f"tcp://127.0.0.1:{port}", proc

    def target(self, iqn: str, spec: str, name: str) -> tuple[str, subprocess.Popen[Any]]:
        port = free_port()
        proc = self.start(
            [BIN, "target", "serve", "--portal", f"127.0.0.1:{port}", "--iqn", iqn, "--lun", f"1={spec}",
             "--control", str(self.workdir / f"{name}.sock")],
            f"{name}.log",
        )  # fmt: skip
        wait_port(port)
        return f"iscsi://127.0.0.1:{port}/{iqn}/1", proc

    def kill(self, proc: subprocess.Popen[Any], sig: int = signal.SIGKILL) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            proc.wait(30)

    def close(self) -> None:
        for proc in self.procs:
            self.kill(proc)
        subprocess.run(["rm", "-rf", str(self.workdir)], check=False)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
