"""The demo's settings (:class:`DemoOptions`) and the state its steps share (:class:`DemoContext`)."""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from iscsikit.demo.flow import NullObserver, Observer
from iscsikit.errors import UsageError

if TYPE_CHECKING:
    from iscsikit.connector import Attachment, Connector, VolumeSpec
    from iscsikit.demo.procs import Daemon
    from iscsikit.names import Portal
    from iscsikit.runner import Runner

MiB = 1 << 20
MIN_SIZE = 32 * MiB  # ext4 with a journal, plus the demo's files, with room to spare
MAX_REPLICAS = 9
VOLUME_ID = "iscsikit-demo"
IQN_PREFIX = "iqn.2026-11.io.iscsikit:demo-"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What ``iscsikit demo`` was asked to do (its flags), with the embedded defaults.

    ``workdir`` is the directory the demo makes its own temporary directory in (default: the
    system's temp dir); ``keep`` leaves that directory behind. ``vm``: None = decide
    (a VM only when this kernel cannot log in), True/False = force. ``step_timeout`` bounds
    every wait inside a step; ``boot_timeout`` the VM's boot.
    """

    size: int = 64 * MiB
    replicas: int = 3
    workdir: Path | None = None
    keep: bool = False
    vm: bool | None = None
    step_timeout: float = 300.0
    boot_timeout: float = 300.0
    files: int = 4
    #: The replicated LUN's ``timeout=``: seconds before a silent replica is failed. The default
    #: of the LUN spec (2 s) is tight for five Python processes under TCG emulation.
    replica_timeout: float = 5.0
    db_root: Path | None = None
    sysfs_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")
    host: str = "local"

    def __post_init__(self) -> None:
        if self.size < MIN_SIZE:
            raise UsageError(f"--size {self.size}: the demo needs at least {MIN_SIZE // MiB} MiB")
        if self.size % 4096:
            raise UsageError(f"--size {self.size}: must be a multiple of 4096 bytes")
        if not 2 <= self.replicas <= MAX_REPLICAS:
            raise UsageError(f"--replicas {self.replicas}: choose 2 to {MAX_REPLICAS} (one is killed on purpose)")
        if self.step_timeout <= 0 or self.boot_timeout <= 0:
            raise UsageError("--step-timeout and --boot-timeout must be positive")

    @property
    def file_size(self) -> int:
        """Size of each file written: a sixteenth of the volume over ``files`` files, whole MiB."""
        return max(MiB, (self.size // 16 // self.files) // MiB * MiB)


@dataclass
class DemoContext:
    """State the steps share; each step reads what earlier steps left and adds its part."""

    options: DemoOptions
    runner: Runner
    observer: Observer = field(default_factory=NullObserver)
    workdir: Path | None = None
    iqn: str = field(default_factory=lambda: IQN_PREFIX + secrets.token_hex(4))
    portal: Portal | None = None
    replica_ports: list[int] = field(default_factory=list)
    replicas: list[Daemon] = field(default_factory=list)
    target: Daemon | None = None
    connector: Connector | None = None
    spec: VolumeSpec | None = None
    attachment: Attachment | None = None
    device: str | None = None
    frozen: bool = False
    checksums: dict[str, str] = field(default_factory=dict)
    killed: int | None = None
    step: str = ""

    def make_workdir(self) -> Path:
        """Create the demo's own temporary directory (under ``options.workdir`` if given)."""
        parent = self.options.workdir
        if parent is not None:
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"--workdir {parent}: {exc.strerror or exc}") from None
        self.workdir = Path(tempfile.mkdtemp(prefix="iscsikit-demo-", dir=parent)).resolve()
        return self.workdir

    @property
    def control(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "target.sock"

    @property
    def mountpoint(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "mnt"

    @property
    def state_dir(self) -> Path:
        """The connector's and the cleanup's state (attachment records, clean journal)."""
        assert self.workdir is not None
        return self.workdir / "state"

    def replica_dir(self, i: int) -> Path:
        assert self.workdir is not None
        return self.workdir / f"replica{i + 1}"

    def replica_address(self, i: int) -> str:
        return f"tcp://127.0.0.1:{self.replica_ports[i]}"

    def progress(self, fraction: float, text: str = "") -> None:
        self.observer.step_progress(self.step, fraction, text)
