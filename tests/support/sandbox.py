"""The real iscsiadm on a private DB: a long-lived mount namespace for interop tests.

A holder process is started with ``unshare -m`` after bind-mounting, inside that namespace
only, a temporary directory over ``/etc/iscsi`` (the Debian DB root), a private lock
directory over ``/run/lock``, and optionally a sysfs tree over ``/sys``. Commands then run
in that namespace through iscsikit's own :class:`~iscsikit.runner.Runner` in ``ns`` mode,
pointed at the holder, which also exercises the runner's nsenter path for real.

Nothing touches the host's /etc/iscsi, /run/lock/iscsi or /sys.

The host kernel has no iSCSI transport, so iscsiadm refuses discovery (exit 12) unless it
sees ``/sys/class/iscsi_transport/tcp``. ``sysfs="transport"`` binds a minimal tree that has
it: iscsiadm then does SendTargets discovery itself, over real TCP, in userspace.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from iscsikit.runner import CommandResult, Runner

HOLDER_NAME = "isk-sandbox"  # the holder's comm; the runner finds the namespace by it
DEBIAN_DB = "/etc/iscsi"


def make_transport_sysfs(root: Path) -> Path:
    """A sysfs tree with only the tcp transport, as the kernel shows it with iscsi_tcp loaded."""
    dev = root / "devices/virtual/iscsi_transport/tcp"
    dev.mkdir(parents=True, exist_ok=True)
    (dev / "caps").write_text("0x39\n")
    (dev / "handle").write_text("18446744072640000000\n")
    (dev / "uevent").write_text("")
    cls = root / "class/iscsi_transport"
    cls.mkdir(parents=True, exist_ok=True)
    link = cls / "tcp"
    if not link.exists():
        link.symlink_to("../../devices/virtual/iscsi_transport/tcp")
    for sub in ("class/iscsi_session", "class/iscsi_host", "class/iscsi_connection", "class/scsi_host"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


class IscsiadmSandbox:
    """A private open-iscsi DB with the real iscsiadm; see the module docstring.

    Attributes: ``db`` (the directory bound over /etc/iscsi), ``lock_dir`` (bound over
    /run/lock), ``runner`` (a Runner whose commands run inside the namespace).
    """

    def __init__(self, base: Path | None = None, *, sysfs: str | Path | None = None) -> None:
        self._own_base = base is None
        self.base = Path(tempfile.mkdtemp(prefix="isk-sbx-")) if base is None else base
        self.db = self.base / "etc-iscsi"
        self.lock_parent = self.base / "run-lock"
        self.lock_dir = self.lock_parent / "iscsi"
        self.db.mkdir(parents=True, exist_ok=True)
        self.lock_parent.mkdir(parents=True, exist_ok=True)
        for name in ("initiatorname.iscsi", "iscsid.conf"):
            src = Path(DEBIAN_DB) / name
            if src.exists() and not (self.db / name).exists():
                shutil.copy2(src, self.db / name)
        if sysfs == "transport":
            sysfs = make_transport_sysfs(self.base / "sys")
        self.sysfs = Path(sysfs) if sysfs is not None else None
        self._holder_bin = self.base / HOLDER_NAME
        shutil.copy("/bin/sleep", self._holder_bin)
        mounts = [
            f"mount --bind {self.db} {DEBIAN_DB}",
            f"mount --bind {self.lock_parent} /run/lock",
        ]
        if self.sysfs is not None:
            mounts.append(f"mount --bind {self.sysfs} /sys")
        script = " && ".join([*mounts, f"exec {self._holder_bin} infinity"])
        self._proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
            start_new_session=True,
        )
        self._wait_for_holder()
        self.runner = Runner("ns", ns_pid=self._proc.pid)  # pinned: other sandboxes may run at once

    def _wait_for_holder(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"sandbox holder exited with {self._proc.returncode}")
            try:
                if Path(f"/proc/{self._proc.pid}/comm").read_text().strip() == HOLDER_NAME:
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("sandbox holder did not start")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def iscsiadm(self, *args: str, timeout: float = 60) -> CommandResult:
        """Run the real iscsiadm inside the sandbox; never raises for its exit status."""
        return self.runner.run(["iscsiadm", *args], timeout=timeout, check=False)

    def run(self, argv: Sequence[str], timeout: float = 60) -> CommandResult:
        return self.runner.run(list(argv), timeout=timeout, check=False)

    def tree(self) -> dict[str, tuple[str, int, bytes | str]]:
        """Every DB entry under the sandbox root: relpath -> (kind, mode, content or link)."""
        out: dict[str, tuple[str, int, bytes | str]] = {}
        for dirpath, dirnames, filenames in os.walk(self.db):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel = str(path.relative_to(self.db))
                st = path.lstat()
                mode = st.st_mode & 0o7777
                if path.is_symlink():
                    out[rel] = ("link", mode, os.readlink(path))
                elif path.is_dir():
                    out[rel] = ("dir", mode, "")
                else:
                    out[rel] = ("file", mode, path.read_bytes())
        return out

    def close(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> IscsiadmSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
