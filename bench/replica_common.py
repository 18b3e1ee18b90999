"""Shared set-up of the replica benchmarks: replica servers and targets as real processes on loopback.

``AUTHS`` are the security set-ups a benchmark can run with (``--auth``): ``none``, ``secret``
(a shared secret: the AUTH handshake once per connection) and ``tls`` (TLS with certificates from
a throwaway CA, plus the secret). :meth:`Procs.replica` starts a server with the set-up's flags,
:meth:`Procs.lun_options` gives the LUN spec keys, :meth:`Procs.credentials` the same for a
controller built in-process.
"""

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
AUTHS = ("none", "secret", "tls")


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
        self._secret: Path | None = None
        self._ca: Any = None
        self._certs: dict[str, tuple[str, str, str]] = {}

    def _secret_file(self) -> Path:
        if self._secret is None:
            from iscsikit.replica.auth import new_secret

            self._secret = self.workdir / "bench.secret"
            self._secret.write_text(new_secret() + "\n")
        return self._secret

    def _cert(self, name: str) -> tuple[str, str, str]:
        from tests.support.tlscerts import TestCA

        if self._ca is None:
            self._ca = TestCA(self.workdir / "pki")
        if name not in self._certs:
            issued = self._ca.issue(name)
            self._certs[name] = (str(issued.cert), str(issued.key), str(self._ca.cert))
        return self._certs[name]

    def server_flags(self, auth: str, name: str) -> list[str]:
        """``replica serve`` flags for the set-up ``auth`` (one of ``AUTHS``)."""
        flags = [] if auth == "none" else ["--secret-file", str(self._secret_file())]
        if auth == "tls":
            cert, key, ca = self._cert(name)
            flags += ["--tls-cert", cert, "--tls-key", key, "--tls-ca", ca]
        return flags

    def lun_options(self, auth: str) -> str:
        """``,secret_file=...[,tls_*=...]`` for a ``replicated:`` spec with the set-up ``auth``."""
        if auth == "none":
            return ""
        opts = f",secret_file={self._secret_file()}"
        if auth == "tls":
            cert, key, ca = self._cert("controller")
            opts += f",tls_cert={cert},tls_key={key},tls_ca={ca}"
        return opts

    def credentials(self, auth: str) -> Any:
        """The same as :meth:`lun_options`, for a controller built in this process (None for ``none``)."""
        from iscsikit.replica.spec import credentials

        opts = dict(o.split("=", 1) for o in self.lun_options(auth).split(",") if o)
        return credentials(opts, "bench")

    def start(self, argv: list[str], log: str) -> subprocess.Popen[Any]:
        fh = open(self.workdir / log, "a")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def replica(self, name: str, size: int, auth: str = "none") -> tuple[str, subprocess.Popen[Any]]:
        port = free_port()
        proc = self.start(
            [BIN, "replica", "serve", str(self.workdir / name), "--size", str(size), "--listen", f"127.0.0.1:{port}",
             *self.server_flags(auth, name)],
            f"{name}.log",
        )  # fmt: skip
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
