"""A synthetic initiator host for the clean tests: sysfs, /proc, the open-iscsi DB and the state dir.

The kernel has no iSCSI here, so :class:`SyntheticHost` writes the sysfs layout the kernel
builds for sessions, LUNs, partitions, dm-multipath maps and other dm holders
(open-iscsi-format.md section 5; ../shared/fixtures/sysfs), a /proc with mount namespaces,
open file descriptors and swaps, real DB records through :class:`~iscsikit.db.database.Database`
(byte-identical to iscsiadm's, see tests/interop), and connector attachment records through
the real :class:`~iscsikit.connector.state.StateStore`.

:meth:`SyntheticHost.runner` is the seam for what cannot run here: a Runner whose
``iscsiadm -m session -r SID -u``, ``multipath -f``, ``multipathd del path``, ``blockdev``
and sysfs ``delete`` writes act on the tree as the kernel would, answering with iscsiadm
2.1.8's real texts. ``fake_commands(bin_dir)`` installs the same behaviour as executables,
for tests that run the ``iscsikit`` CLI as a process.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from iscsikit.db.database import Database
from iscsikit.names import Portal
from iscsikit.runner import CommandResult, Runner

T = "iqn.2026-11.org.example"


class SyntheticHost:
    """See the module docstring. ``sys``, ``proc``, ``dev``, ``db_root``, ``state``, ``lock`` are paths."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.sys = base / "sys"
        self.proc = base / "proc"
        self.dev = base / "dev"
        self.db_root = base / "db"
        self.state = base / "state"
        self.lock = base / "lock"
        for d in (self.db_root, self.state, self.dev, self.lock):
            d.mkdir(parents=True, exist_ok=True)
        for sub in (
            "class/iscsi_session",
            "class/iscsi_connection",
            "class/iscsi_host",
            "class/scsi_host",
            "class/block",
            "bus/scsi/devices",
            "devices/platform",
            "devices/virtual/block",
        ):
            (self.sys / sub).mkdir(parents=True, exist_ok=True)
        self.db = Database(self.db_root, lock_dir=self.lock, lock_timeout=5)
        self._next = {"sid": 1, "host": 2, "disk": 0, "dm": 0, "minor": 0}
        self._process(1, "systemd", "mnt:[4026531840]")
        (self.proc / "self").symlink_to("1")
        (self.proc / "swaps").write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
        (self.proc / "sys/kernel/random").mkdir(parents=True)
        (self.proc / "sys/kernel/random/boot_id").write_text("6f1c3d2e-0000-4000-8000-000000000001\n")

    # ---- /proc ----------------------------------------------------------------------------------

    def _process(self, pid: int, comm: str, ns: str) -> Path:
        d = self.proc / str(pid)
        (d / "fd").mkdir(parents=True, exist_ok=True)
        (d / "ns").mkdir(exist_ok=True)
        if not (d / "ns/mnt").is_symlink():
            (d / "ns/mnt").symlink_to(ns)
        (d / "comm").write_text(comm + "\n")
        if not (d / "mountinfo").exists():
            (d / "mountinfo").write_text("22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw\n")
        return d

    def process(self, pid: int, comm: str, *, own_namespace: bool = False) -> int:
        self._process(pid, comm, f"mnt:[{4026532000 + pid}]" if own_namespace else "mnt:[4026531840]")
        return pid

    def mount(self, device: str, mountpoint: str, *, pid: int = 1) -> None:
        """Mount ``device`` (sdb, sdb1, dm-0) at ``mountpoint`` in ``pid``'s mount namespace."""
        devnum = self.devnum(device)
        escaped = mountpoint.replace(" ", "\\040")
        with open(self.proc / str(pid) / "mountinfo", "a") as fh:
            fh.write(f"90 22 {devnum} / {escaped} rw,relatime shared:40 - ext4 /dev/{device} rw\n")

    def open_fd(self, device: str, pid: int, comm: str = "qemu-system-x86", fd: int = 7) -> None:
        self._process(pid, comm, "mnt:[4026531840]")
        link = self.proc / str(pid) / "fd" / str(fd)
        link.symlink_to(f"/dev/{device}")

    def swap(self, device: str) -> None:
        with open(self.proc / "swaps", "a") as fh:
            fh.write(f"/dev/{device}                               partition\t1048572\t\t0\t\t-2\n")

    # ---- sysfs: sessions and LUNs -----------------------------------------------------------------

    def _link(self, rel: str, to: Path) -> None:
        link = self.sys / rel
        link.symlink_to(os.path.relpath(to, link.parent))

    def session(
        self,
        target: str,
        portal: str = "127.0.0.1:3260,1",
        *,
        iface: str = "default",
        state: str = "LOGGED_IN",
        conn_state: str = "up",
        recovery_tmo: int = 120,
        luns: Mapping[int, str] | Sequence[int] = (1,),
        controller_lun0: bool = False,
        flash: bool = False,
    ) -> int:
        """A session with LUNs (``{lun: scsi state}`` or a list of running LUNs); returns its SID."""
        sid, host = self._next["sid"], self._next["host"]
        self._next["sid"] += 1
        self._next["host"] += 1
        p = Portal.parse(portal)
        hdir = self.sys / f"devices/platform/host{host}"
        sdir = hdir / f"session{sid}"
        attrs = sdir / f"iscsi_session/session{sid}"
        attrs.mkdir(parents=True)
        for k, v in {
            "targetname": target,
            "tpgt": str(p.tpgt if p.tpgt is not None else 1),
            "state": state,
            "target_state": "SCANNED",
            "target_id": "0",
            "ifacename": iface,
            "initiatorname": "iqn.1993-08.org.debian:01:synthetic",
            "recovery_tmo": str(recovery_tmo),
            "abort_tmo": "15",
            "lu_reset_tmo": "30",
            "tgt_reset_tmo": "30",
            "creator": "-1" if flash else "1000",
        }.items():
            (attrs / k).write_text(v + "\n")
        cdir = sdir / f"connection{sid}:0/iscsi_connection/connection{sid}:0"
        cdir.mkdir(parents=True)
        for k, v in {
            "persistent_address": p.address,
            "persistent_port": str(p.port),
            "address": p.address,
            "port": str(p.port),
            "state": conn_state,
        }.items():
            (cdir / k).write_text(v + "\n")
        (hdir / f"scsi_host/host{host}").mkdir(parents=True)
        (hdir / f"scsi_host/host{host}/proc_name").write_text("iscsi_tcp\n")
        (hdir / f"scsi_host/host{host}/state").write_text("running\n")
        (hdir / f"iscsi_host/host{host}").mkdir(parents=True)
        (sdir / f"target{host}:0:0").mkdir()
        self._link(f"class/iscsi_session/session{sid}", attrs)
        self._link(f"class/iscsi_connection/connection{sid}:0", cdir)
        self._link(f"class/scsi_host/host{host}", hdir / f"scsi_host/host{host}")
        self._link(f"class/iscsi_host/host{host}", hdir / f"iscsi_host/host{host}")
        if controller_lun0:
            self._lun(host, sdir, 0, "running", block=False)
        states = dict(luns) if isinstance(luns, Mapping) else {lun: "running" for lun in luns}
        for lun, st in states.items():
            self._lun(host, sdir, lun, st)
        return sid

    def _lun(self, host: int, sdir: Path, lun: int, state: str, *, block: bool = True) -> str | None:
        ldir = sdir / f"target{host}:0:0/{host}:0:0:{lun}"
        ldir.mkdir(parents=True)
        for k, v in {
            "state": state,
            "type": "0" if block else "12",
            "vendor": "IET",
            "model": "VIRTUAL-DISK",
            "wwid": f"naa.60000000000000000e0000000{host:03d}{lun:04d}",
        }.items():
            (ldir / k).write_text(v + "\n")
        for k in ("delete", "rescan"):
            (ldir / k).write_text("")
        self._link(f"bus/scsi/devices/{host}:0:0:{lun}", ldir)
        if not block:
            return None
        n = self._next["disk"]
        self._next["disk"] += 1
        disk = "sd" + "abcdefghijklmnopqrstuvwxyz"[n % 26] * (1 + n // 26)
        bdir = ldir / "block" / disk
        (bdir / "holders").mkdir(parents=True)
        self._next["minor"] += 16
        (bdir / "dev").write_text(f"8:{self._next['minor']}\n")
        (bdir / "size").write_text("32768\n")
        (bdir / "ro").write_text("0\n")
        (bdir / "device").symlink_to("../..")
        self._link(f"class/block/{disk}", bdir)
        return disk

    def lun(self, sid: int, lun: int, state: str = "running") -> str:
        """Add a LUN to a session; returns its disk name."""
        sdir = self._session_dir(sid)
        host = int(sdir.parent.name.removeprefix("host"))
        disk = self._lun(host, sdir, lun, state)
        assert disk is not None
        return disk

    def orphan_device(self, lun: int = 1) -> str:
        """A SCSI disk left on an iSCSI host whose session class entry is gone."""
        sid = self.session(f"{T}:orphaned", luns=[lun])
        disk = self.disks_of(sid)[0]
        os.unlink(self.sys / f"class/iscsi_session/session{sid}")
        os.unlink(self.sys / f"class/iscsi_connection/connection{sid}:0")
        return disk

    def set_state(self, sid: int, state: str, conn_state: str | None = None) -> None:
        sdir = self._session_dir(sid)
        (sdir / f"iscsi_session/session{sid}/state").write_text(state + "\n")
        if conn_state is not None:
            (sdir / f"connection{sid}:0/iscsi_connection/connection{sid}:0/state").write_text(conn_state + "\n")

    def set_device_state(self, disk: str, state: str) -> None:
        (self._block_dir(disk) / "device" / "state").write_text(state + "\n")

    def _session_dir(self, sid: int) -> Path:
        return Path(os.path.realpath(self.sys / f"class/iscsi_session/session{sid}")).parent.parent

    def _block_dir(self, name: str) -> Path:
        return Path(os.path.realpath(self.sys / f"class/block/{name}"))

    def disks_of(self, sid: int) -> list[str]:
        out = []
        for tdir in self._session_dir(sid).glob("target*"):
            for ldir in sorted(tdir.iterdir()):
                if (ldir / "block").is_dir():
                    out += sorted(p.name for p in (ldir / "block").iterdir())
        return out

    def devnum(self, name: str) -> str:
        return (self._block_dir(name) / "dev").read_text().strip()

    def partition(self, disk: str, number: int = 1) -> str:
        bdir = self._block_dir(disk)
        name = f"{disk}{number}"
        pdir = bdir / name
        (pdir / "holders").mkdir(parents=True)
        major, minor = self.devnum(disk).split(":")
        (pdir / "dev").write_text(f"{major}:{int(minor) + number}\n")
        (pdir / "partition").write_text(f"{number}\n")
        (pdir / "size").write_text("16384\n")
        self._link(f"class/block/{name}", pdir)
        return name

    # ---- sysfs: device mapper ---------------------------------------------------------------------

    def _dm(self, name: str, uuid: str, slaves: Iterable[str]) -> str:
        dm = f"dm-{self._next['dm']}"
        self._next["dm"] += 1
        d = self.sys / f"devices/virtual/block/{dm}"
        (d / "holders").mkdir(parents=True)
        (d / "slaves").mkdir()
        (d / "dm").mkdir()
        (d / "dev").write_text(f"253:{self._next['dm'] - 1}\n")
        (d / "size").write_text("32768\n")
        (d / "ro").write_text("0\n")
        (d / "dm/name").write_text(name + "\n")
        (d / "dm/uuid").write_text(uuid + "\n")
        self._link(f"class/block/{dm}", d)
        for slave in slaves:
            sdir = self._block_dir(slave)
            (d / "slaves" / slave).symlink_to(os.path.relpath(sdir, d / "slaves"))
            (sdir / "holders" / dm).symlink_to(os.path.relpath(d, sdir / "holders"))
        return dm

    def multipath_map(
        self, paths: Sequence[str], name: str = "mpatha", wwid: str = "360000000000000000e00000000010001"
    ) -> str:
        return self._dm(name, f"mpath-{wwid}", paths)

    def map_partition(self, dm: str, number: int = 1) -> str:
        uuid = (self._block_dir(dm) / "dm/uuid").read_text().strip()
        name = (self._block_dir(dm) / "dm/name").read_text().strip()
        return self._dm(f"{name}{number}", f"part{number}-{uuid}", [dm])

    def lvm(self, on: Sequence[str], name: str = "vg0-data") -> str:
        return self._dm(name, f"LVM-{name}", on)

    # ---- state dir ---------------------------------------------------------------------------------

    def attachment(
        self, volume_id: str, target: str, portals: Sequence[str] = ("127.0.0.1:3260",), lun: int = 1,
        state: str = "attached",
    ) -> None:  # fmt: skip
        from iscsikit.connector.spec import Attachment, VolumeSpec
        from iscsikit.connector.state import StateStore

        spec = VolumeSpec(volume_id=volume_id, target=target, portals=tuple(portals), lun=lun)  # type: ignore[arg-type]
        StateStore(self.state).save(Attachment(volume_id, spec, state))  # type: ignore[arg-type]

    # ---- running iscsikit against it ---------------------------------------------------------------

    def config(self) -> Path:
        path = self.base / "config.toml"
        path.write_text(
            f'lock_dir = "{self.lock}"\nstate_dir = "{self.state}"\nsysfs_root = "{self.sys}"\n'
            f'proc_root = "{self.proc}"\n[timeouts]\nlock = 5\n'
        )
        return path

    def env(self) -> dict[str, str]:
        return {"ISCSIKIT_CONFIG": str(self.config()), "ISCSIKIT_DB_ROOT": str(self.db_root)}

    def runner(self) -> SimulatedRunner:
        return SimulatedRunner(self.sys)

    def survey(self, **kwargs: object) -> object:
        from iscsikit.clean.collect import collect

        return collect(self.db, sysfs_root=self.sys, proc_root=self.proc, state_dir=self.state, **kwargs)  # type: ignore[arg-type]

    def tree(self) -> dict[str, tuple[str, int, bytes | str]]:
        """Every DB entry: relpath -> (kind, mode, content or link target)."""
        out: dict[str, tuple[str, int, bytes | str]] = {}
        for dirpath, dirnames, filenames in os.walk(self.db_root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel = str(path.relative_to(self.db_root))
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode):
                    out[rel] = ("link", 0, os.readlink(path))
                elif stat.S_ISDIR(st.st_mode):
                    out[rel] = ("dir", stat.S_IMODE(st.st_mode), "")
                else:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
        return out


# ---- the simulated kernel and tools ---------------------------------------------------------------


def logout(sys_root: Path, sid: int) -> tuple[int, str, str]:
    """``iscsiadm -m session -r SID -u``: the kernel removes the LUNs, the session and its host."""
    link = sys_root / f"class/iscsi_session/session{sid}"
    if not os.path.lexists(link):
        return (
            22,
            "",
            f"iscsiadm: could not read session targetname: 5\niscsiadm: Could not get session info for sid {sid}\n",
        )
    sdir = Path(os.path.realpath(link)).parent.parent
    hdir = sdir.parent
    host = int(hdir.name.removeprefix("host"))
    target = (sdir / f"iscsi_session/session{sid}/targetname").read_text().strip()
    conn = sdir / f"connection{sid}:0/iscsi_connection/connection{sid}:0"
    portal = f"{(conn / 'persistent_address').read_text().strip()},{(conn / 'persistent_port').read_text().strip()}"
    for tdir in sdir.glob("target*"):
        for ldir in list(tdir.iterdir()):
            delete_lun(sys_root, ldir)
    for rel in (
        f"class/iscsi_session/session{sid}",
        f"class/iscsi_connection/connection{sid}:0",
        f"class/scsi_host/host{host}",
        f"class/iscsi_host/host{host}",
    ):
        if os.path.lexists(sys_root / rel):
            (sys_root / rel).unlink()
    shutil.rmtree(hdir)
    label = f"[sid: {sid}, target: {target}, portal: {portal}]"
    return 0, f"Logging out of session {label}\nLogout of {label} successful.\n", ""


def delete_lun(sys_root: Path, ldir: Path) -> None:
    """Writing 1 to ``device/delete``: the disk and its class links go; holders keep dangling slaves."""
    for disk in (ldir / "block").iterdir() if (ldir / "block").exists() else []:
        for part in disk.iterdir():
            if (part / "partition").exists() and os.path.lexists(sys_root / f"class/block/{part.name}"):
                (sys_root / f"class/block/{part.name}").unlink()
        (sys_root / f"class/block/{disk.name}").unlink()
        for dm in (sys_root / "devices/virtual/block").iterdir():
            slave = dm / "slaves" / disk.name
            if os.path.lexists(slave):
                slave.unlink()
    if os.path.lexists(sys_root / f"bus/scsi/devices/{ldir.name}"):
        (sys_root / f"bus/scsi/devices/{ldir.name}").unlink()
    shutil.rmtree(ldir)


def flush_map(sys_root: Path, name: str) -> tuple[int, str, str]:
    """``multipath -f NAME``: the map (and its partitions) go when nothing holds them."""
    for dm in sorted((sys_root / "devices/virtual/block").iterdir()):
        if (dm / "dm/name").read_text().strip() != name:
            continue
        for part in list((dm / "holders").iterdir()):
            pdir = Path(os.path.realpath(part))
            if any((pdir / "holders").iterdir()):
                return 1, "", f"{name}: map in use\n"
        if any(
            not (Path(os.path.realpath(h)) / "dm/uuid").read_text().startswith("part")
            for h in (dm / "holders").iterdir()
        ):
            return 1, "", f"{name}: map in use\n"
        for part in list((dm / "holders").iterdir()):
            _remove_dm(sys_root, Path(os.path.realpath(part)))
        _remove_dm(sys_root, dm)
        return 0, "", ""
    return 1, "", f"{name}: no such map\n"


def _remove_dm(sys_root: Path, dm: Path) -> None:
    for slave in (dm / "slaves").iterdir():
        sdir = Path(os.path.realpath(slave))
        if os.path.lexists(sdir / "holders" / dm.name):
            (sdir / "holders" / dm.name).unlink()
    (sys_root / f"class/block/{dm.name}").unlink()
    shutil.rmtree(dm)


def del_path(sys_root: Path, name: str) -> tuple[int, str, str]:
    """``multipathd del path sdX``: the map drops the path."""
    for dm in (sys_root / "devices/virtual/block").iterdir():
        slave = dm / "slaves" / name
        if os.path.lexists(slave):
            slave.unlink()
            holder = Path(os.path.realpath(sys_root / f"class/block/{name}")) / "holders" / dm.name
            if os.path.lexists(holder):
                holder.unlink()
            return 0, "ok\n", ""
    return 1, "fail\n", ""


def simulate(sys_root: Path, argv: Sequence[str]) -> tuple[int, str, str]:
    """Run one command against the synthetic host (see :class:`SimulatedRunner`)."""
    prog = os.path.basename(argv[0])
    if prog == "iscsiadm" and list(argv[1:3]) == ["-m", "session"] and argv[3:4] == ["-r"] and "-u" in argv:
        return logout(sys_root, int(argv[4]))
    if prog == "multipath" and argv[1:2] == ["-f"]:
        return flush_map(sys_root, argv[2])
    if prog == "multipathd" and list(argv[1:3]) == ["del", "path"]:
        return del_path(sys_root, argv[3])
    if prog == "blockdev":
        return 0, "", ""
    return 127, "", f"{prog}: not simulated on the synthetic host: {' '.join(argv)}\n"


class SimulatedRunner(Runner):
    """A Runner whose commands and sysfs writes act on the synthetic tree; ``calls`` records them."""

    def __init__(self, sys_root: Path) -> None:
        super().__init__("local")
        self.sys_root = sys_root
        self.calls: list[list[str]] = []
        self.writes: list[tuple[str, str]] = []
        #: per call: (timeout, mutating), what a dry run and a hung tool depend on
        self.flags: list[tuple[float | None, bool]] = []

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
        from iscsikit.errors import CommandError

        argv = [str(a) for a in argv]
        self.calls.append(argv)
        self.flags.append((timeout, mutating))
        rc, out, err = simulate(self.sys_root, argv)
        if check and rc not in set(ok_codes):
            raise CommandError(argv, rc, out, err)
        return CommandResult(argv, rc, out, err)

    def write_file(self, path: str | os.PathLike[str], data: str) -> None:
        path = Path(path)
        self.writes.append((str(path), data))
        if path.name == "delete":
            delete_lun(self.sys_root, Path(os.path.realpath(path.parent)))
            return
        raise AssertionError(f"unexpected sysfs write {path}")


class KernelWatcher:
    """For ``iscsikit`` run as a process: acts on ``1`` written to a LUN's ``delete`` attribute, as the
    kernel does (the real Runner writes the file; a thread here removes the LUN). ``settle()`` waits
    until every such write has been acted on."""

    def __init__(self, sys_root: Path, interval: float = 0.02) -> None:
        import threading

        self.sys_root = sys_root
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _pending(self) -> list[Path]:
        out = []
        for link in (self.sys_root / "bus/scsi/devices").iterdir():
            ldir = Path(os.path.realpath(link))
            try:
                if (ldir / "delete").read_text().strip() == "1":
                    out.append(ldir)
            except OSError:
                continue
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for ldir in self._pending():
                try:
                    delete_lun(self.sys_root, ldir)
                except OSError:
                    pass

    def settle(self, timeout: float = 10.0) -> None:
        import time

        deadline = time.monotonic() + timeout
        while self._pending() and time.monotonic() < deadline:
            time.sleep(self.interval)

    def __enter__(self) -> KernelWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


FAKE_COMMAND = """#!{python}
import sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.unit.clean.synthetic import simulate
rc, out, err = simulate(Path({sys_root!r}), sys.argv)
sys.stdout.write(out)
sys.stderr.write(err)
sys.exit(rc)
"""


def fake_commands(bin_dir: Path, sys_root: Path) -> None:
    """Install ``iscsiadm``, ``multipath``, ``multipathd`` and ``blockdev`` acting on ``sys_root``."""
    from tests.support.tiers import ROOT

    bin_dir.mkdir(parents=True, exist_ok=True)
    text = FAKE_COMMAND.format(python=sys.executable, root=str(ROOT), sys_root=str(sys_root))
    for name in ("iscsiadm", "multipath", "multipathd", "blockdev"):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)
