"""The one way iscsikit runs external commands (iscsiadm, tgtadm, multipath, blockdev...).

Why not plain ``subprocess`` scattered around: go-iscsi-helper and csi-lib-iscsi lost
stderr and hung on timeouts. Here every command

* is an argv list, never a shell string;
* runs in a new session, and on timeout the *whole process group* is killed (``sh``'s own
  timeout only kills the direct child, leaving grandchildren running);
* has stdout and stderr captured, and logged at debug with secrets masked;
* runs where iscsid lives, by host mode:

  ``local``
      as is, in iscsikit's own namespaces;
  ``ns``
      ``nsenter`` into the mount and network namespaces of the running ``iscsid`` (found
      by scanning ``/proc``, re-resolved whenever that iscsid is gone, e.g. after a restart),
      falling back to PID 1's namespaces when no iscsid runs. This is what a CSI node
      plugin container needs;
  ``chroot:DIR``
      ``chroot DIR`` first (host root mounted into a container at DIR).

* and, in dry-run mode, commands marked ``mutating`` are recorded instead of run.

Example::

    >>> r = Runner("local")
    >>> r.run(["echo", "hi"]).stdout
    'hi\\n'
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iscsikit.errors import CommandError, CommandNotFoundError, CommandTimeoutError, UsageError

log = logging.getLogger("iscsikit.runner")

DEFAULT_TIMEOUT = 120.0
#: What every secret is shown as, in output, JSON, logs and errors (the one definition; iscsiadm
#: prints secrets the same way).
MASK = "********"

# What nsenter/chroot print when the program is missing inside the namespace or chroot.
_NOT_FOUND_MARKERS = ("failed to execute", "failed to run command", "No such file or directory")
_NS_GONE_MARKER = "cannot open"


@dataclass(frozen=True, slots=True)
class CommandResult:
    """What a finished (or, in dry-run, recorded) command returned."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float = 0.0
    recorded: bool = False  # True when dry-run recorded it instead of running it

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass(frozen=True, slots=True)
class RecordedAction:
    """One change that dry-run mode did not make: a command, or a file write (sysfs)."""

    kind: str  # "command" or "write"
    argv: list[str] = field(default_factory=list)
    path: str = ""
    data: str = ""

    def describe(self) -> str:
        if self.kind == "write":
            return f"write {self.data.strip()!r} to {self.path}"
        return " ".join(self.argv)


@dataclass(frozen=True, slots=True)
class HostMode:
    """Where commands run: ``local``, ``ns`` or ``chroot:DIR`` (see module docstring)."""

    kind: str
    root: str = ""

    @classmethod
    def parse(cls, text: str) -> HostMode:
        text = text.strip()
        if text in ("local", "ns"):
            return cls(text)
        if text.startswith("chroot:") and len(text) > len("chroot:"):
            root = text[len("chroot:") :]
            if not os.path.isabs(root):
                raise UsageError(f"--host chroot:DIR needs an absolute DIR, got {root!r}")
            return cls("chroot", root)
        raise UsageError(f"--host must be 'local', 'ns' or 'chroot:DIR', got {text!r}")

    def __str__(self) -> str:
        return f"chroot:{self.root}" if self.kind == "chroot" else self.kind


class NamespaceResolver:
    """Finds the namespaces of the running iscsid under a proc root.

    The answer is cached by (pid, start time) and checked on every use, so a restarted
    iscsid (new pid) is found again instead of failing with a stale ``/proc/PID/ns`` path
    (longhorn/longhorn#10544).
    """

    def __init__(self, proc_root: str = "/proc", process_name: str = "iscsid", pid: int | None = None) -> None:
        self.proc_root = Path(proc_root)
        self.process_name = process_name
        self.pinned_pid = pid  # enter exactly this process's namespaces (tests, sandboxes)
        self._cached: tuple[int, str] | None = None

    def _start_time(self, pid: int) -> str | None:
        try:
            stat = (self.proc_root / str(pid) / "stat").read_text()
        except OSError:
            return None
        # Field 22 (starttime) counted after the ")" that ends the command name.
        return stat.rsplit(")", 1)[-1].split()[19]

    def _comm(self, pid: int) -> str | None:
        try:
            return (self.proc_root / str(pid) / "comm").read_text().strip()
        except OSError:
            return None

    def find_pid(self) -> int | None:
        """PID of the oldest process named iscsid (or the pinned pid), or None."""
        if self.pinned_pid is not None:
            return self.pinned_pid if (self.proc_root / str(self.pinned_pid)).exists() else None
        if self._cached is not None:
            pid, start = self._cached
            if self._comm(pid) == self.process_name and self._start_time(pid) == start:
                return pid
            self._cached = None
        candidates = []
        try:
            entries = os.listdir(self.proc_root)
        except OSError:
            return None
        for entry in entries:
            if entry.isdigit() and self._comm(int(entry)) == self.process_name:
                candidates.append(int(entry))
        if not candidates:
            return None
        pid = min(candidates)
        started = self._start_time(pid)
        if started is not None:
            self._cached = (pid, started)
        return pid

    def invalidate(self) -> None:
        self._cached = None

    def target_pid(self) -> int:
        """iscsid's PID, or 1 (the host's init) when no iscsid runs."""
        pid = self.find_pid()
        return 1 if pid is None else pid

    def nsenter_prefix(self) -> list[str]:
        pid = self.target_pid()
        base = self.proc_root / str(pid) / "ns"
        return ["nsenter", f"--mount={base}/mnt", f"--net={base}/net", "--"]


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by :data:`MASK` (the one masking function)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


def mask_argv(argv: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """An argv as it may be shown, logged or carried by an error: secrets masked."""
    secrets = [s for s in secrets if s]
    return [mask(a, secrets) for a in argv]


class Runner:
    """Runs commands in the configured host mode; see the module docstring."""

    def __init__(
        self,
        host: str | HostMode = "local",
        *,
        proc_root: str = "/proc",
        ns_process: str = "iscsid",
        ns_pid: int | None = None,
        dry_run: bool = False,
        default_timeout: float = DEFAULT_TIMEOUT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host if isinstance(host, HostMode) else HostMode.parse(host)
        self.dry_run = dry_run
        self.default_timeout = default_timeout
        self.resolver = NamespaceResolver(proc_root, ns_process, ns_pid)
        self.recorded: list[RecordedAction] = []
        base_env = dict(os.environ if env is None else env)
        base_env["LC_ALL"] = "C"  # stable, parseable output from every tool
        self._env = base_env

    # ---- building the real argv -----------------------------------------------------

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The argv actually executed for ``argv`` in this host mode."""
        if self.host.kind == "ns":
            return [*self.resolver.nsenter_prefix(), *argv]
        if self.host.kind == "chroot":
            return ["chroot", self.host.root, *argv]
        return list(argv)

    def host_path(self, path: str) -> Path:
        """Where ``path`` of the host mode's filesystem is visible from here.

        ``local``: the path itself; ``chroot:DIR``: DIR/path; ``ns``: /proc/PID/root/path
        of iscsid (or PID 1).
        """
        rel = path.lstrip("/")
        if self.host.kind == "chroot":
            return Path(self.host.root) / rel
        if self.host.kind == "ns":
            return self.resolver.proc_root / str(self.resolver.target_pid()) / "root" / rel
        return Path(path)

    def where(self) -> str:
        if self.host.kind == "ns":
            return f"the namespaces of pid {self.resolver.target_pid()}"
        if self.host.kind == "chroot":
            return f"chroot {self.host.root}"
        return "this host"

    # ---- running --------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        check: bool = True,
        ok_codes: Iterable[int] = (0,),
        input: str | bytes | None = None,
        mutating: bool = False,
        redact: Iterable[str] = (),
    ) -> CommandResult:
        """Run ``argv``; return its result, or raise.

        Raises CommandNotFoundError, CommandTimeoutError, or (with ``check``) CommandError
        when the exit status is not in ``ok_codes``. Callers that map exit codes to their
        own errors (the iscsiadm wrapper) pass ``check=False``.
        """
        argv = [str(a) for a in argv]
        if not argv:
            raise ValueError("empty argv")
        secrets = [s for s in redact if s]
        shown: str = mask(" ".join(argv), secrets)
        if mutating and self.dry_run:
            self.recorded.append(RecordedAction("command", argv=mask_argv(argv, secrets)))
            log.info("dry-run: would run %s", shown)
            return CommandResult(argv, 0, "", "", 0.0, recorded=True)
        timeout = self.default_timeout if timeout is None else timeout
        result = self._execute(argv, timeout, input, shown, secrets)
        if self.host.kind == "ns" and result.returncode != 0 and f"nsenter: {_NS_GONE_MARKER}" in result.stderr:
            # iscsid went away between lookup and exec (restart): resolve again, once.
            self.resolver.invalidate()
            result = self._execute(argv, timeout, input, shown, secrets)
        if result.returncode == 127 and (
            self.host.kind != "local" and any(m in result.stderr for m in _NOT_FOUND_MARKERS)
        ):
            raise CommandNotFoundError(mask_argv(argv, secrets), self.where())
        if check and result.returncode not in set(ok_codes):
            raise CommandError(
                mask_argv(argv, secrets), result.returncode, mask(result.stdout, secrets), mask(result.stderr, secrets)
            )
        return result

    def _execute(
        self,
        argv: list[str],
        timeout: float,
        input: str | bytes | None,
        shown: str,
        secrets: list[str],
    ) -> CommandResult:
        import sh  # heavy (~70 ms); only paid when a command really runs

        real = self.wrap(argv)
        log.debug("run [%s]: %s", self.host, shown)
        started = time.monotonic()
        try:
            cmd = sh.Command(real[0])
        except sh.CommandNotFound:
            raise CommandNotFoundError(mask_argv(argv, secrets), self.where()) from None
        kwargs: dict[str, Any] = dict(
            _bg=True,
            _bg_exc=False,
            _new_session=True,
            _ok_code=list(range(256)),
            _return_cmd=True,
            _tty_out=False,
            _env=self._env,
            _decode_errors="replace",
        )
        if input is not None:
            kwargs["_in"] = input
        proc = cmd(*real[1:], **kwargs)
        timed_out = threading.Event()

        def kill_group() -> None:
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill_group)
        timer.daemon = True
        timer.start()
        try:
            try:
                proc.wait()
                code = proc.exit_code
            except sh.SignalException as exc:
                code = exc.exit_code
            except sh.ErrorReturnCode as exc:  # pragma: no cover - _ok_code covers 0-255
                code = exc.exit_code
        finally:
            timer.cancel()
        duration = time.monotonic() - started
        stdout = _decode(proc.stdout)
        stderr = _decode(proc.stderr)
        if timed_out.is_set():
            log.debug("timeout after %.3fs: %s", duration, shown)
            raise CommandTimeoutError(mask_argv(argv, secrets), timeout, mask(stdout, secrets), mask(stderr, secrets))
        if code is None:
            code = -1
        log.debug(
            "exit %s in %.3fs: %s\n  stdout: %s\n  stderr: %s",
            code,
            duration,
            shown,
            mask(stdout, secrets).strip()[:4000],
            mask(stderr, secrets).strip()[:4000],
        )
        return CommandResult(argv, code, stdout, stderr, duration)

    # ---- other host-side effects ----------------------------------------------------

    def write_file(self, path: str | os.PathLike[str], data: str) -> None:
        """Write ``data`` to a kernel attribute file (sysfs scan, delete, rescan...).

        Recorded instead of written in dry-run mode. sysfs is shared across mount
        namespaces of one host, so this writes directly under the configured sysfs root.
        """
        path = os.fspath(path)
        if self.dry_run:
            self.recorded.append(RecordedAction("write", path=path, data=data))
            log.info("dry-run: would write %r to %s", data, path)
            return
        log.debug("write %r to %s", data, path)
        with open(path, "w") as fh:
            fh.write(data)

    def which(self, program: str) -> bool:
        """Whether ``program`` can be run in this host mode."""
        if self.host.kind == "local":
            import shutil

            return shutil.which(program, path=self._env.get("PATH")) is not None
        try:
            result = self.run(["sh", "-c", 'command -v "$0"', program], timeout=10, check=False)
        except CommandNotFoundError:
            return False
        return result.returncode == 0


def _decode(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data
