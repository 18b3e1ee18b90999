"""The kernel tier: scenarios run inside ONE virtme-ng VM per pytest session.

Fixtures for every kernel test file (including the ones you add):

``vm`` (session)
    The booted :class:`iscsikit.vm.GuestVM`. ``vm.run(script)`` runs bash in the guest
    (root, PATH has the venv's ``iscsikit`` and ``python``, cwd is the checkout);
    ``vm.run_python(code)``; ``vm.shared`` is a directory both sides see at the same path.
    State persists between runs, so use ``guest`` unless you clean up after yourself.

``guest`` (function)
    A :class:`Guest` over the same VM, after a *clean slate*: every iSCSI session logged
    out, open-iscsi's DB back to what it was at boot (no node/discovery/iface records,
    iscsid.conf and initiatorname restored), multipathd stopped and its maps flushed, every
    tgtd killed, scratch LUN files removed, iscsid running. It fails the test's setup
    (naming what was left) if that cannot be reached. Helpers::

        target = guest.target(luns=[16 * MiB, 8 * MiB])        # tgtd on 127.0.0.1:3260
        target = guest.target(chap=("user", "secret12345"), portals=("127.0.0.1:3260", "127.0.0.2:3260"))
        devices = guest.login(target)                             # {lun: "/dev/sdX"}
        guest.sh("iscsiadm -m session -P 3")                      # fails the test on exit != 0
        guest.sh("iscsiadm -m session", ok=(0, 21))

    Several targets can share one tgtd: ``t = guest.tgtd(); t.add_target(...)``.

Skips are loud (tests.support.tiers): a host that cannot boot the VM skips every test that
uses ``vm``/``guest`` with the reason, and with CI=true fails them instead. A VM that fails
to *boot* is an error, reported with the console tail, never a skip.
"""

from __future__ import annotations

import itertools
import shlex
import sys
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from iscsikit.vm import GuestResult, GuestVM
from tests.support import tiers

MiB = 1024 * 1024
KERNEL_BOOT_TIMEOUT = 300  # TCG on a loaded 2-core machine: boots take 20-50 s, leave room
SCRATCH = "/run/iscsikit-test"  # guest tmpfs: LUN backing files, tgtd pid files, DB snapshot
DEFAULT_PORTAL = "127.0.0.1:3260"
CLEAN_SLATE = Path(__file__).with_name("clean_slate.py")  # run in the guest before every test
# Prepended (as one line) to every guest.sh script: `waitfor SECONDS CMD...`
# retries CMD every 0.1 s until it succeeds or SECONDS of wall clock pass. Poll loops must be
# bounded by time, not by a count: under TCG each `sleep` or `ss` costs a process start of
# 0.2-0.6 s, so `for i in $(seq 300); ... sleep 0.1` can run for minutes.
WAITFOR = (
    'waitfor() { local end=$((SECONDS + $1)); shift; until "$@"; do '
    '[ "$SECONDS" -ge "$end" ] && return 1; sleep 0.1; done; }'
)


@cache
def _why_no_vm() -> str | None:
    return GuestVM.available()


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Loud skip (CI: failure) for every test that needs the VM when none can boot here.

    Done here rather than in the session fixture so the skip is recorded against each test
    (and its tier) instead of against the session.
    """
    if "vm" in getattr(item, "fixturenames", ()):
        why = _why_no_vm()
        if why is not None:
            tiers.unavailable(SimpleNamespace(node=item), f"cannot boot the kernel-tier VM: {why}")  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestVM]:
    """One VM for the whole session; see the module docstring."""
    workdir = tmp_path_factory.mktemp("vm")
    with GuestVM(workdir=workdir, boot_timeout=KERNEL_BOOT_TIMEOUT) as machine:
        prepare_vm(machine)
        yield machine


def prepare_vm(vm: GuestVM) -> None:
    """Once per boot: check the agent's preparation, snapshot the pristine open-iscsi config."""
    warnings = vm.info.get("warnings") or []
    assert not warnings, f"the VM booted but its preparation had problems: {warnings}"
    vm.run(
        f"mkdir -p {SCRATCH}/luns {SCRATCH}/tgtd && rm -rf {SCRATCH}/etc-iscsi && "
        f"cp -a /etc/iscsi {SCRATCH}/etc-iscsi && "
        f"{{ [ -e /etc/multipath.conf ] && touch {SCRATCH}/had-multipath-conf || true; }}",
        check=True,
    )


def clean_slate(vm: GuestVM) -> Guest:
    """Bring the guest back to its state after :func:`prepare_vm`; fail (naming what is left) if it cannot."""
    result = vm.run(shlex.join([sys.executable, "-S", str(CLEAN_SLATE), SCRATCH]), timeout=240)
    if result.returncode != 0:
        pytest.fail(
            "the kernel-tier VM could not be brought back to a clean slate after the previous test:\n"
            + result.stdout
            + result.stderr,
            pytrace=False,
        )
    return Guest(vm)


# ---- helpers --------------------------------------------------------------------------------


def _fail_script(what: str, script: str, result: GuestResult) -> str:
    return (
        f"{what} (exit {result.returncode})\n"
        f"--- script ---\n{textwrap.dedent(script).strip()}\n"
        f"--- stdout ---\n{result.stdout.rstrip()}\n"
        f"--- stderr ---\n{result.stderr.rstrip()}"
    )


@dataclass
class GuestTarget:
    """A tgtd target in the guest: ``luns`` maps LUN number to its backing file (guest path)."""

    iqn: str
    tid: int
    portals: tuple[str, ...]
    luns: dict[int, str]
    sizes: dict[int, int]
    chap: tuple[str, str] | None = None
    mutual_chap: tuple[str, str] | None = None
    tgtd: GuestTgtd | None = field(default=None, repr=False)

    @property
    def portal(self) -> str:
        return self.portals[0]

    def by_path(self, lun: int, portal: str | None = None) -> str:
        """The udev by-path link of one LUN, e.g. /dev/disk/by-path/ip-127.0.0.1:3260-iscsi-IQN-lun-1."""
        return f"/dev/disk/by-path/ip-{portal or self.portal}-iscsi-{self.iqn}-lun-{lun}"


class GuestTgtd:
    """One tgtd in the guest (own control port ``-C``), listening on ``portals``."""

    def __init__(self, guest: Guest, control: int, portals: Sequence[str]) -> None:
        self.guest = guest
        self.control = control
        self.portals = tuple(portals)
        self._tids = itertools.count(1)
        self.log = guest.vm.shared / f"tgtd-{control}.log"

    def start(self) -> GuestTgtd:
        first, rest = self.portals[0], self.portals[1:]
        adds = "\n".join(
            f"tgtadm -C {self.control} --lld iscsi --op new --mode portal --param portal={p}" for p in rest
        )
        waits = "\n".join(_wait_listening(p) for p in self.portals)
        self.guest.sh(
            f"""
            set -e
            {_add_loopback_aliases(self.portals)}
            setsid tgtd -f -C {self.control} --iscsi portal={first} >{self.log} 2>&1 </dev/null &
            echo $! > {SCRATCH}/tgtd/{self.control}.pid
            pid=$(cat {SCRATCH}/tgtd/{self.control}.pid)
            ready() {{
                kill -0 $pid || {{ cat {self.log}; exit 1; }}
                tgtadm -C {self.control} --op show --mode sys >/dev/null 2>&1
            }}
            waitfor 60 ready || {{ echo "tgtd -C {self.control} did not answer tgtadm within 60 s"; exit 1; }}
            {adds}
            {waits}
            """,
            what=f"start tgtd -C {self.control} on {', '.join(self.portals)}",
        )
        return self

    def tgtadm(self, *args: str) -> GuestResult:
        return self.guest.sh(shlex.join(["tgtadm", "-C", str(self.control), "--lld", "iscsi", *args]))

    def add_target(
        self,
        iqn: str,
        luns: Sequence[int] | Mapping[int, int] = (16 * MiB,),
        *,
        chap: tuple[str, str] | None = None,
        mutual_chap: tuple[str, str] | None = None,
        allow: str = "ALL",
    ) -> GuestTarget:
        """A target with file-backed LUNs (sizes in bytes; a list numbers them from 1)."""
        sizes = dict(luns) if isinstance(luns, Mapping) else {i + 1: size for i, size in enumerate(luns)}
        tid = next(self._tids)
        tg = f"tgtadm -C {self.control} --lld iscsi"
        lines = [f"{tg} --op new --mode target --tid {tid} --targetname {shlex.quote(iqn)}"]
        files: dict[int, str] = {}
        for lun, size in sizes.items():
            path = f"{SCRATCH}/luns/c{self.control}-t{tid}-lun{lun}.img"
            files[lun] = path
            lines.append(f"truncate -s {size} {path}")
            lines.append(f"{tg} --op new --mode logicalunit --tid {tid} --lun {lun} --backing-store {path}")
        if chap is not None:
            user, secret = chap
            lines.append(f"{tg} --op new --mode account --user {shlex.quote(user)} --password {shlex.quote(secret)}")
            lines.append(f"{tg} --op bind --mode account --tid {tid} --user {shlex.quote(user)}")
        if mutual_chap is not None:
            user, secret = mutual_chap
            lines.append(f"{tg} --op new --mode account --user {shlex.quote(user)} --password {shlex.quote(secret)}")
            lines.append(f"{tg} --op bind --mode account --tid {tid} --user {shlex.quote(user)} --outgoing")
        lines.append(f"{tg} --op bind --mode target --tid {tid} --initiator-address {shlex.quote(allow)}")
        self.guest.sh("set -e\n" + "\n".join(lines), what=f"create target {iqn} in tgtd -C {self.control}")
        return GuestTarget(iqn, tid, self.portals, files, sizes, chap, mutual_chap, self)


def _wait_listening(portal: str) -> str:
    host, port = portal.rsplit(":", 1)
    return (
        f"listening() {{ ss -Hltn 'sport = :{port}' | grep -qF '{host}:{port}'; }}; "
        f"waitfor 60 listening || {{ echo 'tgtd does not listen on {portal}'; exit 1; }}"
    )


def _add_loopback_aliases(portals: Iterable[str]) -> str:
    """127.0.0.2 etc. answer on lo without an address, but iscsiadm/multipath like seeing it."""
    cmds = []
    for portal in portals:
        host = portal.rsplit(":", 1)[0]
        if host.startswith("127.") and host != "127.0.0.1":
            cmds.append(f"ip addr show dev lo | grep -qF ' {host}/' || ip addr add {host}/8 dev lo")
    return "\n".join(cmds)


class Guest:
    """Per-test view of the session VM with scenario helpers (see the module docstring)."""

    _controls = itertools.count(100)

    def __init__(self, vm: GuestVM) -> None:
        self.vm = vm

    def sh(
        self,
        script: str,
        *,
        ok: Iterable[int] = (0,),
        timeout: float = 180,
        env: Mapping[str, str] | None = None,
        what: str = "guest script failed",
    ) -> GuestResult:
        """Run bash in the guest; fail the test (showing script, stdout, stderr) unless exit in ``ok``."""
        script = textwrap.dedent(script)
        result = self.vm.run(f"{WAITFOR}\n{script}", timeout=timeout, env=env)
        if result.returncode not in set(ok):
            pytest.fail(_fail_script(what, script, result), pytrace=False)
        return result

    def python(self, code: str, *args: str, ok: Iterable[int] = (0,), timeout: float = 180) -> GuestResult:
        """Run Python (the venv's: ``import iscsikit`` works) in the guest; fail the test unless exit in ``ok``."""
        code = textwrap.dedent(code)
        result = self.vm.run_python(code, timeout=timeout, args=args)
        if result.returncode not in set(ok):
            pytest.fail(_fail_script("guest python failed", code, result), pytrace=False)
        return result

    def tgtd(self, portals: Sequence[str] = (DEFAULT_PORTAL,)) -> GuestTgtd:
        """Start a tgtd in the guest on ``portals`` (it is killed by the next clean slate)."""
        return GuestTgtd(self, next(self._controls), portals).start()

    def target(
        self,
        iqn: str = "iqn.2026-11.io.iscsikit.test:target",
        luns: Sequence[int] | Mapping[int, int] = (16 * MiB,),
        *,
        chap: tuple[str, str] | None = None,
        mutual_chap: tuple[str, str] | None = None,
        portals: Sequence[str] = (DEFAULT_PORTAL,),
    ) -> GuestTarget:
        """A fresh tgtd with one target: the common case in one call."""
        return self.tgtd(portals).add_target(iqn, luns, chap=chap, mutual_chap=mutual_chap)

    def login(self, target: GuestTarget, portal: str | None = None, *, timeout: float = 60) -> dict[int, str]:
        """Discover and log in with iscsiadm (CHAP set from the target), wait for every LUN's
        by-path link; returns ``{lun: "/dev/sdX"}``."""
        portal = portal or target.portal
        node = f"iscsiadm -m node -T {shlex.quote(target.iqn)} -p {portal}"
        lines = ["set -e", f"iscsiadm -m discovery -t st -p {portal} >/dev/null"]
        if target.chap is not None:
            lines += [
                f"{node} -o update -n node.session.auth.authmethod -v CHAP",
                f"{node} -o update -n node.session.auth.username -v {shlex.quote(target.chap[0])}",
                f"{node} -o update -n node.session.auth.password -v {shlex.quote(target.chap[1])}",
            ]
        if target.mutual_chap is not None:
            lines += [
                f"{node} -o update -n node.session.auth.username_in -v {shlex.quote(target.mutual_chap[0])}",
                f"{node} -o update -n node.session.auth.password_in -v {shlex.quote(target.mutual_chap[1])}",
            ]
        lines.append(f"{node} --login >/dev/null")
        for lun in target.luns:
            link = target.by_path(lun, portal)
            lines.append(
                f"waitfor {int(timeout)} test -e {link} || {{ echo 'no {link}'; ls -l /dev/disk/by-path; exit 1; }}; "
                f"echo {lun} $(readlink -f {link})"
            )
        result = self.sh("\n".join(lines), what=f"login to {target.iqn} at {portal}", timeout=timeout + 60)
        devices = {}
        for line in result.stdout.splitlines():
            lun, dev = line.split()
            devices[int(lun)] = dev
        return devices

    def sessions(self) -> list[str]:
        """Names in /sys/class/iscsi_session (e.g. ``["session1"]``)."""
        return self.sh("ls /sys/class/iscsi_session").stdout.split()

    def info(self) -> dict[str, Any]:
        return self.vm.info


@pytest.fixture
def guest(vm: GuestVM) -> Guest:
    """The session VM after a clean slate; see the module docstring."""
    return clean_slate(vm)
