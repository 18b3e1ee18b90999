"""Host checks: can this machine (or this container, in ``ns``/``chroot`` mode) do iSCSI?

Each check returns a :class:`Check` with ``ok``, a ``detail`` saying what was seen, and a
``fix`` hint when it failed. :func:`run_checks` runs them all; :func:`apply_fixes` applies
the safe fixes (lock directory, initiator name, loading iscsi_tcp) through the Runner, so
``--dry-run`` shows them without doing them.
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from iscsikit.errors import CommandError, InvalidNameError
from iscsikit.names import validate_iscsi_name
from iscsikit.runner import NamespaceResolver, Runner

CONFIG_ROOT = "/etc/iscsi"  # initiatorname.iscsi and iscsid.conf live here on every distro


@dataclass(frozen=True, slots=True)
class Check:
    check: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DoctorEnv:
    runner: Runner
    sysfs_root: Path
    proc_root: Path
    db_root: Path | None
    lock_dir: Path


def check_iscsiadm(env: DoctorEnv) -> Check:
    fix = "install open-iscsi (Debian: apt-get install open-iscsi; RHEL: dnf install iscsi-initiator-utils)"
    if not env.runner.which("iscsiadm"):
        return Check("iscsiadm", False, f"iscsiadm not found in {env.runner.where()}", fix)
    try:
        result = env.runner.run(["iscsiadm", "--version"], timeout=10, check=False)
    except CommandError as exc:
        return Check("iscsiadm", False, f"iscsiadm --version failed: {exc}", fix)
    version = result.stdout.strip() or result.stderr.strip()
    return Check("iscsiadm", result.returncode == 0, version or "no version printed", None)


def check_iscsid(env: DoctorEnv) -> Check:
    pid = NamespaceResolver(str(env.proc_root)).find_pid()
    if pid is None:
        return Check(
            "iscsid",
            False,
            f"no iscsid process found under {env.proc_root}",
            "start it: systemctl enable --now iscsid (or run `iscsid` as root)",
        )
    return Check("iscsid", True, f"running as pid {pid}")


def _read_initiator_name(path: Path) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("InitiatorName="):
            return line.split("=", 1)[1].strip()
    return ""


def check_initiator_name(env: DoctorEnv) -> Check:
    path = env.runner.host_path(f"{CONFIG_ROOT}/initiatorname.iscsi")
    fix = f'echo "InitiatorName=$(iscsi-iname)" > {CONFIG_ROOT}/initiatorname.iscsi (or iscsikit doctor --fix)'
    name = _read_initiator_name(path)
    if name is None:
        return Check("initiator-name", False, f"{path} does not exist or cannot be read", fix)
    if not name:
        return Check("initiator-name", False, f"{path} has no InitiatorName= line", fix)
    try:
        validate_iscsi_name(name, "initiator name")
    except InvalidNameError as exc:
        return Check("initiator-name", False, f"{path}: {exc}", fix)
    return Check("initiator-name", True, name)


def _module_files(release: str) -> list[Path]:
    base = Path("/lib/modules") / release
    if not base.is_dir():
        return []
    return [p for p in base.rglob("iscsi_tcp.ko*")]


def check_kernel(env: DoctorEnv) -> Check:
    transport = env.sysfs_root / "class/iscsi_transport/tcp"
    if transport.exists():
        return Check("kernel-iscsi", True, f"iscsi_tcp transport loaded ({transport})")
    release = platform.release()
    scsi = (env.sysfs_root / "bus/scsi").exists()
    modules = _module_files(release)
    if modules:
        return Check(
            "kernel-iscsi",
            False,
            f"iscsi_tcp is not loaded ({transport} is missing) but the module exists: {modules[0]}",
            "modprobe iscsi_tcp (or iscsikit doctor --fix)",
        )
    what = [f"{transport} is missing", f"/lib/modules/{release} has no iscsi_tcp module"]
    if not scsi:
        what.append(f"the kernel has no SCSI support ({env.sysfs_root}/bus/scsi is missing)")
    return Check(
        "kernel-iscsi",
        False,
        f"kernel {release} has no iSCSI initiator: " + "; ".join(what),
        "boot a kernel with CONFIG_ISCSI_TCP (e.g. Debian's linux-image-amd64), "
        "or try the whole flow in a VM with `iscsikit demo`",
    )


def check_db_root(env: DoctorEnv) -> Check:
    from iscsikit.db.locate import locate_db_root

    try:
        found = locate_db_root(env.db_root, runner=env.runner)
    except Exception as exc:  # report whatever went wrong; doctor must not crash
        return Check("db-root", False, str(exc), "pass --db-root DIR or set db_root in the config")
    return Check("db-root", True, f"{found.path} ({found.reason})")


def check_lock_dir(env: DoctorEnv) -> Check:
    lock_dir = env.runner.host_path(str(env.lock_dir))
    stale = lock_dir / "lock.write"
    if stale.exists():
        age = time.time() - stale.lstat().st_mtime
        return Check(
            "lock-dir",
            False,
            f"{stale} exists (held for {age:.0f} s): every iscsiadm waits 30 s for it",
            f"if no iscsiadm is running: rm {env.lock_dir}/lock.write",
        )
    if lock_dir.is_dir():
        return Check("lock-dir", True, f"{lock_dir} exists, unlocked")
    parent = lock_dir.parent
    if parent.is_dir() and os.access(parent, os.W_OK):
        return Check("lock-dir", True, f"{lock_dir} will be created on first use ({parent} is writable)")
    return Check(
        "lock-dir",
        False,
        f"neither {lock_dir} nor a writable {parent} exists: iscsiadm fails with exit 6",
        f"mkdir -p {env.lock_dir} (or iscsikit doctor --fix)",
    )


def check_udev(env: DoctorEnv) -> Check:
    control = env.runner.host_path("/run/udev/control")
    if control.exists():
        return Check("udev", True, "udevd is running (device links and events available)")
    return Check(
        "udev",
        False,
        "udevd is not running: no /dev/disk/by-path links and no device events",
        "start systemd-udevd (containers: mount the host's /run/udev)",
    )


def check_multipathd(env: DoctorEnv) -> Check:
    pid = NamespaceResolver(str(env.proc_root), "multipathd").find_pid()
    if pid is None:
        return Check("multipathd", True, "not running (only needed for multipath volumes)")
    return Check("multipathd", True, f"running as pid {pid}: iSCSI disks may be claimed by dm-multipath")


CHECKS: tuple[Callable[[DoctorEnv], Check], ...] = (
    check_iscsiadm,
    check_iscsid,
    check_initiator_name,
    check_kernel,
    check_db_root,
    check_lock_dir,
    check_udev,
    check_multipathd,
)


def run_checks(env: DoctorEnv) -> list[Check]:
    return [check(env) for check in CHECKS]


def apply_fixes(env: DoctorEnv, checks: list[Check]) -> list[str]:
    """Apply the safe fixes for failed checks; return what was done (or would be, in dry-run)."""
    done: list[str] = []
    failed = {c.check for c in checks if not c.ok}
    if "lock-dir" in failed:
        stale = env.runner.host_path(str(env.lock_dir)) / "lock.write"
        if not stale.exists():  # never remove a lock someone may hold
            env.runner.run(["mkdir", "-p", "-m", "0700", str(env.lock_dir)], mutating=True)
            done.append(f"created {env.lock_dir}")
    if "initiator-name" in failed and env.runner.which("iscsi-iname"):
        path = f"{CONFIG_ROOT}/initiatorname.iscsi"
        if _read_initiator_name(env.runner.host_path(path)) in (None, ""):
            name = env.runner.run(["iscsi-iname"], timeout=10).stdout.strip()
            if re.match(r"^iqn\.", name):
                env.runner.run(
                    ["sh", "-c", 'umask 077; printf "InitiatorName=%s\\n" "$1" > "$2"', "sh", name, path],
                    mutating=True,
                )
                done.append(f"wrote {path} with InitiatorName={name}")
    if "kernel-iscsi" in failed and _module_files(platform.release()):
        env.runner.run(["modprobe", "iscsi_tcp"], mutating=True, timeout=30)
        done.append("loaded iscsi_tcp")
    return done
