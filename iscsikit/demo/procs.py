"""The demo's daemons: ``iscsikit replica serve`` and ``iscsikit target serve`` as real processes.

Why ``subprocess`` here and not :class:`iscsikit.runner.Runner`: the Runner runs a command to
completion; these are long-lived servers the demo starts, watches, kills with SIGKILL on
purpose, restarts and stops. Each runs in its own session (a Ctrl-C on the terminal reaches
the demo only, which then stops them in the right order: log out first, then the target),
logs to a file in the demo's work directory, and gets SIGTERM from the kernel if the demo
process dies (``PR_SET_PDEATHSIG``), so none outlives it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from iscsikit.errors import DemoStepError

__all__ = ["Daemon", "free_ports", "iscsikit_argv", "port_open", "wait_for"]

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1
#: Environment variables that would make a child serve something else than the demo asked for.
_SCRUB = ("ISCSIKIT_TARGET_CONFIG", "ISCSIKIT_TARGET_CONTROL")


def iscsikit_argv(*args: str) -> list[str]:
    """The command line of this iscsikit (the same Python, so the same venv), with ``args``."""
    return [sys.executable, "-m", "iscsikit", *args]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that were free on ``host`` a moment ago (the kernel picks them)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(
    check: Callable[[], T | None],
    timeout: float,
    what: Callable[[], str],
    *,
    interval: float = 0.05,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``check`` until it returns something other than None/False, for at most ``timeout`` s.

    Raises DemoStepError("... after N s: <what()>") when time runs out. ``check`` may raise to
    give up early (a daemon that died).
    """
    deadline = clock() + timeout
    delay = min(interval, 0.01)
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if clock() >= deadline:
            raise DemoStepError(f"gave up after {timeout:g} s: {what()}")
        sleep(delay)
        delay = min(interval, delay * 2)


def _pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Daemon:
    """One server process of the demo (see the module docstring)."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(os.environ if env is None else env)
        for key in _SCRUB:
            self.env.pop(key, None)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Daemon:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=_pdeathsig,  # only a prctl() between fork and exec
            )
        return self

    def log_tail(self, lines: int = 15) -> str:
        try:
            data = self.log.read_bytes()[-16384:]
        except OSError:
            return "(no log)"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise DemoStepError (with the log's tail) if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoStepError(
                f"{self.name} exited with status {self.proc.returncode}; last lines of {self.log}:\n{self.log_tail()}"
            )

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float) -> str:
        """SIGTERM and wait up to ``timeout`` s for a clean exit, else SIGKILL; says how it ended."""
        proc = self.proc
        if proc is None:
            return f"{self.name} was not started"
        if proc.poll() is not None:
            return f"{self.name} had already exited ({_status(proc.returncode)})"
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return f"{self.name} did not stop within {timeout:g} s of SIGTERM and was killed"
        return f"{self.name} stopped ({_status(proc.returncode)})"


def _status(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit {code}"
