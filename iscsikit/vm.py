"""A throwaway Linux VM with a real iSCSI initiator, for hosts whose kernel has none.

``GuestVM`` boots the host's own stock kernel once under QEMU with virtme-ng (``vng``),
with the host's filesystem shared read-only into the guest (``/etc``, ``/var``, ``/tmp``...
are throwaway overlays there), and then runs many scripts in it. Inside, a small agent
(:mod:`iscsikit._vm_agent`) has loaded ``iscsi_tcp``, made udev settle, given open-iscsi an
empty database and started ``iscsid`` for the whole session. The guest's network is its own
loopback only.

Example::

    from iscsikit.vm import GuestVM

    if (why := GuestVM.available()) is not None:
        raise SystemExit(f"no VM here: {why}")
    with GuestVM() as vm:
        r = vm.run("iscsiadm -m iface")
        print(r.returncode, r.stdout)
        vm.run("tgtd -f >/dev/null 2>&1 &", check=True)    # state persists between runs
        vm.run_python("import os; print(os.uname().release)").check()

Files: ``vm.workdir`` holds ``console.log`` (everything vng/QEMU printed: the kernel console
and the agent's stdout) and ``shared/``, a directory seen at the same path by host and
guest: scripts can leave files there for the host (``vm.shared``). ``shared/agent/`` is the
request channel and ``shared/agent/agent.log`` the agent's own log; ``shared/iscsid.log`` is
iscsid's output.

Speed: virtme-ng's 9p root is mounted without caching, so under TCG every ``stat`` and
``open`` is a round trip to the host, and a Python program pays for each of the hundreds of
files it imports (``iscsikit --version`` took 3 s idle, 5-10 s on a loaded host). With
``cached_tools`` (the default) the host's ``/`` is exported a second time, read-only, and the
agent mounts it with ``cache=loose`` over the trees that do not change while a VM runs:
``/usr`` (as the lower layer of a writable overlay), the virtualenv and the iscsikit package.
The same program then starts in about half the time. The price: a file changed on the host
under those trees while the VM runs may be seen stale in the guest (boot a new VM after
editing iscsikit). ``ISCSIKIT_VM_CACHED_TOOLS=0`` turns it off. Requests go through a shared
directory; the host rings a doorbell (a virtio serial port on an abstract unix socket) after
each, so the agent sleeps instead of polling: an idle guest costs a host core 3 % instead of
25 %.

Environment: ``ISCSIKIT_VM_KERNEL`` picks the kernel image (default: the newest
``/boot/vmlinuz-*``); ``ISCSIKIT_VNG`` the vng program (default: next to the running Python,
then ``PATH``); ``ISCSIKIT_VM_CPUS`` the number of vCPUs (default: one per two host cores,
at most two; see :func:`default_cpus`).

Why ``subprocess`` here, not :class:`iscsikit.runner.Runner`: the Runner runs commands to
completion; a VM is a long-lived child that must be watched and, whatever happens to this
process, killed. Three layers make sure no QEMU is left behind: :meth:`GuestVM.close` (clean
poweroff, then SIGTERM/SIGKILL to vng's whole process group), an ``atexit`` hook, and a
small reaper process that holds a pipe from us and kills the group when that pipe closes,
i.e. when this process dies in any way, SIGKILL included.
"""

from __future__ import annotations

import atexit
import compileall
import itertools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from iscsikit._vm_agent import BELL_PORT
from iscsikit.errors import GuestCommandError, UsageError, VMBootError, VMError, VMTimeoutError

__all__ = ["GuestResult", "GuestVM", "default_cpus", "find_kernel"]

KERNEL_ENV = "ISCSIKIT_VM_KERNEL"
VNG_ENV = "ISCSIKIT_VNG"
CACHED_TOOLS_ENV = "ISCSIKIT_VM_CACHED_TOOLS"
CPUS_ENV = "ISCSIKIT_VM_CPUS"
#: 9p tag of the second, read-only export of the host's ``/`` that the agent mounts cached.
CACHED_ROOT_TAG = "iscsikit-ro"
CONSOLE_TAIL_LINES = 40
#: Extra time the host gives the agent to answer after a script's own timeout has passed.
ANSWER_GRACE = 30.0
_AGENT = Path(__file__).with_name("_vm_agent.py")
#: Modules udev would load for QEMU's q35 devices and the emulated CPU's features, which an
#: iSCSI guest never uses. Under TCG every module load costs real seconds (kvm alone ~5 s):
#: ``modprobe.blacklist=`` on the kernel command line keeps udev's coldplug from loading them.
SKIP_MODULES: tuple[str, ...] = (
    "kvm", "kvm_amd", "kvm_intel", "ccp", "irqbypass",  # -cpu max advertises SVM/VMX
    "aesni_intel", "ghash_clmulni_intel", "sha1_ssse3", "sha256_ssse3", "sha512_ssse3", "polyval_clmulni",
    "crc32_pclmul", "crct10dif_pclmul", "cryptd", "crypto_simd",  # CPU-feature crypto
    "ahci", "libahci", "sr_mod", "cdrom",  # q35's SATA controller and DVD drive
    "psmouse", "pcspkr", "evdev", "serio_raw", "button",  # input and legacy devices
    "i2c_i801", "lpc_ich", "iTCO_wdt", "iTCO_vendor_support", "intel_pmc_bxt", "i6300esb",
    "qemu_fw_cfg",
)  # fmt: skip
#: The CPU QEMU emulates. virtme-ng asks for ``max``, which under TCG advertises AVX2: glibc
#: then picks its AVX2 string and memory routines, which TCG runs slower than the SSE ones.
#: Westmere (x86-64-v2: SSE4.2, POPCNT, the CRC32C instruction) is all a test guest needs;
#: with it and ``mitigations=off`` (Spectre retpolines cost extra under emulation) a Python
#: program started in 1.3 s instead of 1.9 s in the guest.
TCG_CPU = "Westmere"
# Characters that vng's --rwdir (``guest=host``) or QEMU's -fsdev option parsing would misread.
_BAD_PATH = re.compile(r"[=,:\s\"'\\]")

# Kills vng's process group when the pipe on its stdin closes (the host process died).
_REAPER = """\
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
sys.stdin.buffer.read()
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except (ProcessLookupError, PermissionError):
    pass
"""

_live: weakref.WeakSet[GuestVM] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # pragma: no cover - exercised by interrupted sessions
    for vm in list(_live):
        vm.close(timeout=5)


@dataclass(frozen=True, slots=True)
class GuestResult:
    """What a script run in the guest returned. ``stdout``/``stderr`` are decoded UTF-8."""

    command: str
    returncode: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self) -> GuestResult:
        """Return ``self``, or raise :class:`GuestCommandError` if the exit status was not 0."""
        if self.returncode != 0:
            raise GuestCommandError(self.command, self.returncode, self.stdout, self.stderr)
        return self


def _version_key(path: Path) -> list[int | str]:
    parts = re.split(r"(\d+)", path.name)
    return [int(p) if p.isdigit() else p for p in parts]


def find_kernel(boot: Path = Path("/boot")) -> Path | None:
    """The kernel to boot: ``$ISCSIKIT_VM_KERNEL`` if set, else the newest ``boot/vmlinuz-*``."""
    override = os.environ.get(KERNEL_ENV)
    if override:
        return Path(override)
    candidates = sorted(boot.glob("vmlinuz-*"), key=_version_key)
    return candidates[-1] if candidates else None


def _kernel_release(kernel: Path) -> str | None:
    name = kernel.name
    return name[len("vmlinuz-") :] if name.startswith("vmlinuz-") else None


def _find_vng() -> str | None:
    override = os.environ.get(VNG_ENV)
    if override:
        return override if os.access(override, os.X_OK) else None
    beside = Path(sys.executable).parent / "vng"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("vng")


def _qemu_binary() -> str:
    machine = platform.machine()
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return f"qemu-system-{arch}"


def _project_root() -> Path | None:
    """The source checkout iscsikit is imported from, if any (scripts run there by default)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _cached_view(venv: str) -> dict[str, Any]:
    """What the agent mounts from the cached export (see the module docstring).

    The package's bytecode is brought up to date first: the guest cannot write any, so a
    module without a current ``.pyc`` would be compiled again by every process there.
    """
    package = Path(__file__).resolve().parent
    try:
        compileall.compile_dir(str(package), quiet=2)
    except OSError:  # a read-only install: its bytecode came with it
        pass
    binds = [str(package)]
    if venv and not venv.startswith("/usr/"):
        binds.insert(0, venv)
    return {"tag": CACHED_ROOT_TAG, "overlays": ["/usr"], "binds": binds, "files": _plain_editable_hooks(venv)}


def _plain_editable_hooks(venv: str) -> dict[str, str]:
    """For a ``pip install -e`` checkout: its editable-install ``.pth``, as a plain path line.

    setuptools' ``.pth`` imports a finder module at every interpreter start, which in the
    guest costs about 0.09 CPU-seconds (8 %) of each ``iscsikit`` run. A ``.pth`` naming the
    checkout imports the same files. Keys are guest paths, values their new text.
    """
    root = _project_root()
    if not venv or root is None:
        return {}
    return {
        str(pth): f"{root}\n"
        for pth in Path(venv).glob("lib/python3*/site-packages/__editable__.iscsikit-*.pth")
        if pth.is_file()
    }


def default_cpus() -> int:
    """vCPUs for a guest: ``$ISCSIKIT_VM_CPUS``, else one per two host cores, at most two.

    Under TCG each vCPU is a host thread. A guest with more vCPUs than the host has cores to
    spare pays for it: a vCPU holding a guest spinlock is descheduled by the host while the
    other spins. Measured on this project's 2-core CI machine, the same guest work cost 50-58
    CPU-seconds with 2 vCPUs and 30 with 1 while two VMs ran side by side; a boot cost 45 vs 30.
    """
    override = os.environ.get(CPUS_ENV)
    if override:
        try:
            cpus = int(override)
        except ValueError:
            raise UsageError(f"${CPUS_ENV}={override!r}: expected a number of vCPUs, e.g. 1") from None
        if cpus < 1:
            raise UsageError(f"${CPUS_ENV}={override!r}: a VM needs at least 1 vCPU")
        return cpus
    return max(1, min(2, (os.cpu_count() or 1) // 2))


def _doorbell_device(socket_name: str) -> str:
    """QEMU options for the doorbell: a virtio serial port backed by an abstract unix socket.

    Abstract, so nothing is left on disk and no path length limit applies; QEMU listens
    (``wait=off``: it does not wait for us), the host connects once the guest is ready.
    """
    return (
        f"-chardev socket,id=iscsikitbell,path={socket_name},abstract=on,server=on,wait=off"
        f" -device virtio-serial-pci,id=iscsikitserial"
        f" -device virtserialport,bus=iscsikitserial.0,name={BELL_PORT},chardev=iscsikitbell"
    )


def _cached_root_export() -> str:
    """QEMU options exporting the host's ``/`` read-only as a second 9p share."""
    return (
        f"-fsdev local,id=iscsikitro,path=/,security_model=none,readonly=on,multidevs=remap"
        f" -device virtio-9p-pci,fsdev=iscsikitro,mount_tag={CACHED_ROOT_TAG}"
    )


class GuestVM:
    """One booted VM running many scripts; a context manager. See the module docstring.

    ``memory`` and ``cpus`` go to QEMU (``cpus`` default: :func:`default_cpus`); ``kernel``
    overrides :func:`find_kernel`;
    ``boot_timeout`` bounds the boot *and* the agent's preparation (seconds). ``workdir``
    (default: a new directory under /tmp, removed on a clean close) keeps the console log
    and the shared directory; a caller-given workdir is never removed. ``cwd`` is where
    scripts run (default: the iscsikit source checkout if there is one, else ``shared``).
    ``console_loglevel`` is the kernel's console log level (7: everything, the default: on an
    idle host it costs no measurable boot time; 4: warnings and worse).
    ``skip_modules`` are kept from loading in the guest (default :data:`SKIP_MODULES`: hardware
    drivers an iSCSI guest does not need, which make boots slower).
    ``cached_tools`` (default: on unless ``$ISCSIKIT_VM_CACHED_TOOLS`` is ``0``) serves
    ``/usr``, the virtualenv and the iscsikit package from a cached read-only view (see the
    module docstring).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        memory: str = "1G",
        cpus: int | None = None,
        kernel: Path | None = None,
        boot_timeout: float = 120,
        *,
        cwd: Path | None = None,
        console_loglevel: int = 7,
        skip_modules: Sequence[str] = SKIP_MODULES,
        cached_tools: bool | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="iscsikit-vm-", dir="/tmp")) if workdir is None else workdir
        self.workdir = self.workdir.resolve()
        if _BAD_PATH.search(str(self.workdir)):
            raise UsageError(f"VM workdir {str(self.workdir)!r}: the path must not contain = , : quotes or spaces")
        self.memory = memory
        self.cpus = default_cpus() if cpus is None else cpus
        self.kernel = kernel
        self.boot_timeout = boot_timeout
        self.cwd = cwd
        self.console_loglevel = console_loglevel
        self.skip_modules = tuple(skip_modules)
        self.cached_tools = os.environ.get(CACHED_TOOLS_ENV, "1") != "0" if cached_tools is None else cached_tools
        self.shared = self.workdir / "shared"
        self.console_log = self.workdir / "console.log"
        self.info: dict[str, Any] = {}
        self.boot_seconds: float | None = None
        self._agent_dir = self.shared / "agent"
        self._bell_name = f"iscsikit-vm-bell-{os.getpid()}-{id(self):x}"
        self._bell: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._console_thread: threading.Thread | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._failed = False

    # ---- availability -------------------------------------------------------------------

    @staticmethod
    def available(kernel: Path | None = None) -> str | None:
        """None when a VM can be booted here, else the reason it cannot (for loud skips)."""
        vng = _find_vng()
        if vng is None:
            return "vng not found (pip install virtme-ng, or set ISCSIKIT_VNG)"
        qemu = _qemu_binary()
        if shutil.which(qemu) is None:
            return f"{qemu} not found (apt-get install qemu-system-x86)"
        kernel = kernel or find_kernel()
        if kernel is None:
            return "no kernel image: no /boot/vmlinuz-* (apt-get install linux-image-amd64) and no $ISCSIKIT_VM_KERNEL"
        if not kernel.is_file():
            return f"kernel image {kernel} does not exist"
        if not os.access(kernel, os.R_OK):
            return f"kernel image {kernel} is not readable by this user"
        release = _kernel_release(kernel)
        if release is not None and not Path("/lib/modules", release).is_dir():
            return f"no modules for kernel {release}: /lib/modules/{release} is missing (iscsi_tcp cannot load)"
        if shutil.which("busybox") is None:
            return "busybox not found (apt-get install busybox-static); vng needs it for the guest's initramfs"
        return None

    # ---- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> GuestVM:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._failed = True
        self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._exit_status() is None and not self._closed

    @property
    def pid(self) -> int | None:
        """PID of vng, which is also the process group of everything the VM runs on the host (QEMU)."""
        return None if self._proc is None else self._proc.pid

    @property
    def initiator_name(self) -> str:
        return str(self.info.get("initiator_name", ""))

    def start(self) -> GuestVM:
        """Boot, wait for the agent to be ready; raise :class:`VMBootError` with the console tail."""
        if self._proc is not None:
            return self
        why = self.available(self.kernel)
        if why is not None:
            raise VMError(f"cannot boot a VM here: {why}")
        kernel = self.kernel or find_kernel()
        assert kernel is not None  # available() checked
        self.kernel = kernel
        vng = _find_vng()
        assert vng is not None
        self._agent_dir.mkdir(parents=True, exist_ok=True)
        # A reused workdir: nothing from an earlier boot may look like a request or an answer.
        (self._agent_dir / "ready.json").unlink(missing_ok=True)
        for sub in ("req", "res"):
            (self._agent_dir / sub).mkdir(exist_ok=True)
            for stale in (self._agent_dir / sub).iterdir():
                stale.unlink()
        venv = os.environ.get("VIRTUAL_ENV") or (sys.prefix if sys.prefix != sys.base_prefix else "")
        cwd = self.cwd or _project_root() or self.shared
        (self._agent_dir / "config.json").write_text(
            json.dumps(
                {
                    "shared": str(self.shared),
                    "venv_bin": str(Path(sys.executable).parent),
                    "venv": venv,
                    "cwd": str(cwd),
                    "cached": _cached_view(venv) if self.cached_tools else None,
                }
            )
        )
        # -S: the agent needs only the standard library, and site's .pth processing is slow over 9p.
        agent_cmd = shlex.join([sys.executable, "-S", str(_AGENT), str(self._agent_dir)])
        argv = [
            vng,
            "--run", str(kernel),
            "--disable-kvm",  # /dev/kvm may exist, but a stock distro kernel does not run under it here
            "--force-9p",  # skips waiting seconds for a virtiofsd that is not there
            "--verbose",  # kernel console and virtme-ng-init's progress to our log (boot failures need it)
            "--append", f"loglevel={self.console_loglevel}",
            "--append", "mitigations=off",  # a throwaway guest that runs only our tests
            *(["--append", f"modprobe.blacklist={','.join(self.skip_modules)}"] if self.skip_modules else []),
            "--name", "iscsikit-vm",
            "--cpus", str(self.cpus),
            "--memory", self.memory,
            "--rwdir", str(self.shared),
            "--exec", agent_cmd,
            f"--qemu-opts=-cpu {TCG_CPU}",  # QEMU takes the last -cpu given
            f"--qemu-opts={_doorbell_device(self._bell_name)}",
            *([f"--qemu-opts={_cached_root_export()}"] if self.cached_tools else []),
        ]  # fmt: skip
        env = dict(os.environ)
        env["PATH"] = f"{Path(vng).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        started = time.monotonic()
        # A pipe, not the log file itself: QEMU reopens its stdout and stderr through
        # /proc/self/fd/N, which for a regular file would truncate it and give each reopened
        # descriptor its own offset (the two streams would overwrite each other).
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(self.workdir),
            start_new_session=True,
        )
        self._console_thread = threading.Thread(
            target=_copy_console, args=(self._proc, self.console_log), name="iscsikit-vm-console", daemon=True
        )
        self._console_thread.start()
        self._reaper = subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(self._proc.pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _live.add(self)
        try:
            self._wait_ready(started)
        except BaseException:
            self._failed = True
            self.close(timeout=5)
            raise
        self.boot_seconds = time.monotonic() - started
        self._connect_bell()
        return self

    def _connect_bell(self) -> None:
        """Connect to the doorbell port; without it the agent polls (slower, never wrong)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect("\0" + self._bell_name)
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        self._bell = sock

    def _ring(self) -> None:
        """Tell the agent that ``req/`` changed. A full buffer means rings are pending anyway."""
        bell = self._bell
        if bell is None:
            return
        try:
            bell.send(b"!")
        except BlockingIOError:
            pass
        except OSError:
            self._bell = None
            bell.close()

    def _wait_ready(self, started: float) -> None:
        ready = self._agent_dir / "ready.json"
        deadline = started + self.boot_timeout
        assert self._proc is not None
        while not ready.exists():
            if (status := self._exit_status()) is not None:
                raise VMBootError(
                    f"the VM exited during boot with status {status} (kernel {self.kernel})",
                    self.console_tail(),
                    self.console_log,
                )
            if time.monotonic() > deadline:
                agent_log = self._agent_dir / "agent.log"
                if agent_log.exists():
                    stage = "the guest agent started but its preparation did not finish; its log:\n"
                    stage += self._agent_log_tail()
                else:
                    stage = "the guest never started the agent (stuck in the kernel, the initramfs or udev)"
                    if self.console_loglevel < 7:
                        stage += f"; the console shows loglevel<{self.console_loglevel} only, boot with 7 to see all"
                raise VMBootError(
                    f"boot timed out: the guest agent was not ready within {self.boot_timeout:g} s "
                    f"(kernel {self.kernel}, TCG; a loaded host makes boots slow: raise boot_timeout). {stage}",
                    self.console_tail(),
                    self.console_log,
                )
            time.sleep(0.05)
        self.info = json.loads(ready.read_text())
        if "error" in self.info:
            raise VMBootError(
                f"the guest agent failed to prepare the guest: {self.info['error']}",
                self.console_tail() + "\n--- agent.log ---\n" + self._agent_log_tail(),
                self.console_log,
            )

    def console_tail(self, lines: int = CONSOLE_TAIL_LINES) -> str:
        """The last lines the guest console printed (the whole log is :attr:`console_log`)."""
        try:
            data = self.console_log.read_bytes()[-64 * 1024 :]
        except OSError:
            return "(no console log)"
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def _agent_log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self._agent_dir / "agent.log").read_text().splitlines()[-lines:])
        except OSError:
            return "(no agent log)"

    def close(self, timeout: float = 30) -> None:
        """Power the guest off cleanly; kill QEMU if it does not stop within ``timeout``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        proc = self._proc
        if proc is not None:
            if self._exit_status() is None:
                try:
                    (self._agent_dir / "req" / "stop").touch()
                except OSError:
                    pass
                self._ring()
                if not self._wait_exit(timeout):
                    self._kill_group(signal.SIGTERM)
                    if not self._wait_exit(5):
                        self._kill_group(signal.SIGKILL)
                        self._wait_exit(None)
            # vng may be gone while QEMU lingers in its group; make sure nothing is left. vng is
            # not reaped yet (see _exit_status), so its pid cannot have been reused as a group id.
            self._kill_group(signal.SIGKILL)
            proc.wait()
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        if self._console_thread is not None:
            self._console_thread.join(5)
        if self._reaper is not None:
            self._reaper.kill()
            self._reaper.wait()
            if self._reaper.stdin is not None:
                self._reaper.stdin.close()
        if self._own_workdir and not self._failed:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _exit_status(self) -> int | None:
        """vng's exit status if it has exited, else None; never reaps it.

        Popen.poll() would reap vng, freeing its pid (= the process group id) for reuse
        while QEMU may still be in that group; close() must be able to kill the group
        safely, so vng stays a zombie until close() has done so.
        """
        if self._proc is None:
            return None
        if self._proc.returncode is not None:
            return self._proc.returncode
        info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None or info.si_pid == 0:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _wait_exit(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._exit_status() is None:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _kill_group(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # ---- running scripts ----------------------------------------------------------------

    def run(
        self,
        script: str,
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        *,
        cwd: str | Path | None = None,
        check: bool = False,
    ) -> GuestResult:
        """Run ``script`` with bash in the guest, as root, and wait for it.

        PATH starts with this Python's bin directory (the venv: ``iscsikit``, ``python``),
        then the usual sbin/bin. ``env`` adds or overrides variables. Background processes
        the script starts (``tgtd &``) keep running after it returns, unless the script
        times out: then its whole process group is killed and :class:`VMTimeoutError` is
        raised (with the output so far). ``check`` raises :class:`GuestCommandError` on a
        non-zero exit.
        """
        return self._request({"script": script}, script, timeout, env, cwd, check)

    def run_python(
        self,
        code: str,
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        *,
        args: Sequence[str] = (),
        cwd: str | Path | None = None,
        check: bool = False,
    ) -> GuestResult:
        """Run ``code`` with this Python (the venv's, so ``import iscsikit`` works) in the guest."""
        argv = [sys.executable, "-c", code, *args]
        return self._request({"argv": argv}, f"python -c {code!r}", timeout, env, cwd, check)

    def _request(
        self,
        body: dict[str, Any],
        shown: str,
        timeout: float,
        env: Mapping[str, str] | None,
        cwd: str | Path | None,
        check: bool,
    ) -> GuestResult:
        if not self.alive:
            state = "was closed" if self._closed else "is not running"
            raise VMError(f"the VM {state}; cannot run: {_first_line(shown)}")
        with self._lock:
            job_id = f"{os.getpid()}-{next(self._ids)}"
        body = dict(body, id=job_id, timeout=timeout, env=dict(env or {}), cwd=None if cwd is None else str(cwd))
        req = self._agent_dir / "req"
        tmp = req / f".{job_id}.tmp"
        tmp.write_text(json.dumps(body))
        os.rename(tmp, req / f"{job_id}.json")
        self._ring()
        try:
            result = self._wait_result(job_id, shown, timeout)
        except KeyboardInterrupt:
            (req / f"{job_id}.cancel").touch()
            self._ring()
            raise
        if result.get("timed_out"):
            raise VMTimeoutError(
                f"guest script timed out after {timeout:g} s and was killed (with its process group): "
                f"{_first_line(shown)}",
                stdout=result.get("stdout", ""),
                stderr=result.get("stderr", ""),
            )
        if "error" in result:
            raise VMError(f"the guest agent could not run {_first_line(shown)}: {result['error']}")
        out = GuestResult(
            command=shown,
            returncode=int(result["returncode"]),
            stdout=result["stdout"],
            stderr=result["stderr"],
            duration=float(result["duration"]),
        )
        return out.check() if check else out

    def _wait_result(self, job_id: str, shown: str, timeout: float) -> dict[str, Any]:
        path = self._agent_dir / "res" / f"{job_id}.json"
        deadline = time.monotonic() + timeout + ANSWER_GRACE
        delay = 0.0005
        while True:
            try:
                data = path.read_text()
            except FileNotFoundError:
                pass
            else:
                path.unlink(missing_ok=True)
                loaded: dict[str, Any] = json.loads(data)
                return loaded
            assert self._proc is not None
            if (status := self._exit_status()) is not None:
                raise VMError(
                    f"the VM died (vng exit status {status}) while running: {_first_line(shown)}\n"
                    f"last console lines:\n{self.console_tail()}\n(full log: {self.console_log})"
                )
            if time.monotonic() > deadline:
                raise VMTimeoutError(
                    f"the guest agent did not answer within {timeout + ANSWER_GRACE:g} s "
                    f"(script timeout {timeout:g} s + {ANSWER_GRACE:g} s grace): {_first_line(shown)}; "
                    f"agent log: {self._agent_dir / 'agent.log'}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.005)


def _copy_console(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Copy everything vng/QEMU prints into the console log until the pipe closes."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with open(log, "wb") as out:
        while chunk := os.read(fd, 65536):
            out.write(chunk)
            out.flush()
    proc.stdout.close()


def _first_line(text: str, limit: int = 120) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    more = " ..." if len(lines) > 1 else ""
    return (first[:limit] + "...") if len(first) > limit else first + more
