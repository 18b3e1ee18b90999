"""A simulated initiator host for connector unit tests: the seam is the Runner.

iscsiadm and the kernel cannot run on this host, so :class:`FakeHost` plays both behind a
:class:`~iscsikit.runner.Runner` subclass: ``iscsiadm`` argv is interpreted against an in-memory
node DB and answers with iscsiadm 2.1.8's real texts and exit codes (from the fixtures), and a
login builds the sysfs layout the kernel builds (``devices/platform/hostH/sessionS/...`` with
the class links, open-iscsi-format.md section 5.1) under a temporary sysfs root; writes to
``scan`` / ``delete`` add and remove LUN devices as the kernel does. The real connector, sysfs
reader and waiter code then run unchanged on top. Behaviour on a real kernel is covered by
tests/kernel.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iscsikit.connector import Connector
from iscsikit.devices.udev import PollingEventSource
from iscsikit.iscsiadm import Iscsiadm
from iscsikit.names import Portal
from iscsikit.runner import CommandResult, Runner


@dataclass
class FakeTarget:
    iqn: str
    luns: dict[int, int] = field(default_factory=dict)  # lun -> size in bytes
    portals: tuple[str, ...] = ("127.0.0.1:3260",)
    chap: tuple[str, str] | None = None
    #: the (username, password) SendTargets discovery asks for
    discovery_chap: tuple[str, str] | None = None
    #: LUNs that are SCSI devices without a block device (type 12, like tgt's LUN 0 controller)
    controllers: tuple[int, ...] = ()


class FakeHost(Runner):
    """See the module docstring. ``calls`` records every argv run."""

    def __init__(self, root: Path, targets: Iterable[FakeTarget]) -> None:
        super().__init__("local")
        self.sys = root
        self.targets = {t.iqn: t for t in targets}
        self.nodes: dict[tuple[str, str, str], dict[str, str]] = {}
        self.ifaces: dict[str, dict[str, str]] = {"default": {"iface.transport_name": "tcp"}}
        #: SendTargets discovery records (the discoverydb), by portal
        self.discoveries: dict[str, dict[str, str]] = {}
        self.calls: list[list[str]] = []
        self.fail_next: dict[str, int] = {}  # argv substring -> exit code, once
        #: multipathd with find_multipaths: a LUN seen on two sessions gets a map (dm-N) over its paths
        self.multipathd = False
        #: disks whose ``delete`` and ``rescan`` the kernel does not act on (a LUN stuck in error handling),
        #: and multipath maps (dm-N) that ``multipath -f`` and ``multipathd resize map`` answer for but leave as is
        self.stuck: set[str] = set()
        #: the SCSI target id of new sessions (iscsi_tcp: 0; None: a kernel without the attribute, read as 0)
        self.target_id: int | None = 0
        #: argv substring -> what happens on the host right after that command (another process's doing), once
        self.meanwhile: dict[str, Callable[[], None]] = {}
        #: every sysfs write, in order
        self.writes: list[tuple[str, str]] = []
        #: seconds between a ``scan`` or ``delete`` write and the kernel adding or removing the device
        self.async_delay = 0.0
        #: seconds between ``multipathd resize map`` answering and the map showing the new size
        self.map_resize_delay = 0.0
        #: portals that answer SendTargets without offering any of ``targets``
        self.answering: set[str] = set()
        self._next_sid = 1
        self._next_host = 2
        self._next_disk = 0
        self._lock = threading.RLock()
        for sub in (
            "devices/virtual/block",
            "class/iscsi_session",
            "class/iscsi_connection",
            "class/iscsi_host",
            "class/scsi_host",
            "class/block",
            "bus/scsi/devices",
            "devices/platform",
        ):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # ---- the Runner seam --------------------------------------------------------------

    def run(  # type: ignore[override]
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
        argv = [str(a) for a in argv]
        if mutating and self.dry_run:
            return super().run(argv, mutating=True)  # recorded, not run
        with self._lock:
            self.calls.append(argv)
            joined = " ".join(argv)
            result = self._run(argv, joined)
            for needle, action in list(self.meanwhile.items()):
                if needle in joined:
                    del self.meanwhile[needle]
                    action()
        return result

    def _run(self, argv: list[str], joined: str) -> CommandResult:
        for needle, code in list(self.fail_next.items()):
            if needle in joined:
                del self.fail_next[needle]
                return CommandResult(argv, code, "", f"iscsiadm: injected failure {code}\n")
        if argv[0] == "iscsiadm":
            rc, out, err = self._iscsiadm(argv[1:])
        elif argv[:2] == ["multipath", "-f"] and self.multipathd:
            rc, out, err = self._flush_map(argv[2])
        elif argv[:3] == ["multipathd", "resize", "map"] and self.multipathd:
            rc, out, err = self._resize_map(argv[3])
        elif argv[0] in ("blockdev", "multipath", "multipathd"):
            rc, out, err = 0, "", ""
        else:
            raise AssertionError(f"unexpected command {argv}")
        return CommandResult(argv, rc, out, err)

    def write_file(self, path: str | os.PathLike[str], data: str) -> None:
        if self.dry_run:
            return super().write_file(path, data)  # recorded, not written
        if not isinstance(data, str):
            raise TypeError(f"write() argument must be str, not {type(data).__name__}")
        path = Path(path)
        with self._lock:
            self.writes.append((str(path), data))
            if path.name == "scan" and path.parent.parent.name == "scsi_host":
                host = int(path.parent.name.removeprefix("host"))
                channel, target_id, lun = data.split()
                # iSCSI has one channel and one target per host; the kernel scans only what exists
                if (channel, target_id) == ("0", str(self._target_id_of_host(host))):
                    self._later(self._scan, host, int(lun))
            elif path.name == "delete":
                ldir = Path(os.path.realpath(path.parent))
                if not any(d.name in self.stuck for d in (ldir / "block").glob("*")):
                    self._later(self._delete_lun, ldir)
            elif path.name == "rescan":
                lun_dir = Path(os.path.realpath(path.parent))
                self._resize(lun_dir)
            else:
                raise AssertionError(f"unexpected sysfs write {path}")

    def _later(self, action: Callable[..., None], *args: object) -> None:
        """What the kernel does for a sysfs write: at once, or ``async_delay`` seconds later."""
        if not self.async_delay:
            action(*args)
            return

        def run() -> None:
            with self._lock:
                action(*args)

        timer = threading.Timer(self.async_delay, run)
        timer.daemon = True
        timer.start()

    # ---- iscsiadm -----------------------------------------------------------------------

    def _iscsiadm(self, args: list[str]) -> tuple[int, str, str]:
        opts: dict[str, str] = {}
        flags: set[str] = set()
        i = 0
        while i < len(args):
            a = args[i]
            if a in ("-m", "-T", "-p", "-I", "-o", "-n", "-v", "-r", "-t", "-P"):
                opts[a] = args[i + 1]
                i += 2
            else:
                flags.add(a)
                i += 1
        mode = opts.get("-m")
        if mode == "node":
            return self._node(opts, flags)
        if mode == "session":
            return self._session(opts, flags)
        if mode == "iface":
            return self._iface(opts)
        if mode == "discovery" and opts.get("-t") == "st":
            return self._discover(self._portal(opts["-p"]), opts.get("-I", "default"))
        if mode == "discoverydb" and opts.get("-t") == "st" and "--discover" in flags:
            portal = self._portal(opts["-p"])
            return self._discover(portal, opts.get("-I", "default"), self.discoveries.get(portal, {}))
        raise AssertionError(f"unexpected iscsiadm {args}")

    def _portal(self, text: str) -> str:
        return Portal.parse(text).host_port

    def _node(self, opts: dict[str, str], flags: set[str]) -> tuple[int, str, str]:
        target, iface = opts.get("-T", ""), opts.get("-I", "default")
        portal = self._portal(opts["-p"]) if "-p" in opts else None
        keys = [k for k in self.nodes if k[0] == target and (portal is None or k[1] == portal) and k[2] == iface]
        op = opts.get("-o")
        if op == "new":
            assert portal is not None
            self.nodes.setdefault((target, portal, iface), {"node.startup": "automatic"})
            return 0, f"New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if={iface}] {portal} {target}] added\n", ""
        if not keys:
            return 21, "", "iscsiadm: No records found\n"
        if op == "show":
            return 0, "".join(f"{k} = {v}\n" for key in keys for k, v in self.nodes[key].items()), ""
        if op == "update":
            for key in keys:
                self.nodes[key][opts["-n"]] = opts["-v"]
            return 0, "", ""
        if op == "delete":
            for key in keys:
                del self.nodes[key]
            return 0, "", ""
        if "--login" in flags:
            return self._login(keys)
        raise AssertionError(f"unexpected node op {opts} {flags}")

    def _discover(self, portal: str, iface: str, record: Mapping[str, str] | None = None) -> tuple[int, str, str]:
        """SendTargets: the targets behind the portal, each stored as a node record."""
        found = [t for t in self.targets.values() if portal in t.portals]
        sent = (
            (record.get("discovery.sendtargets.auth.username"), record.get("discovery.sendtargets.auth.password"))
            if record
            else None
        )
        if any(t.discovery_chap is not None and t.discovery_chap != sent for t in found):
            # iscsiadm's last line and exit code for a portal that refuses the discovery login
            err = "iscsiadm: Could not perform SendTargets discovery: iSCSI login failed due to authorization failure\n"
            return 24, "", err
        if not found and not any(portal in t.portals for t in self.targets.values()) and portal not in self.answering:
            p = Portal.parse(portal)
            err = (
                f"iscsiadm: cannot make connection to {p.address}: Connection refused\n"
                "iscsiadm: connection login retries (reopen_max) 5 exceeded\n"
                "iscsiadm: Could not perform SendTargets discovery: encountered connection failure\n"
            )
            return 4, "", err
        out = ""
        for t in found:
            self.nodes.setdefault((t.iqn, portal, iface), {"node.startup": "automatic"})
            out += f"{portal},1 {t.iqn}\n"
        return (0, out, "") if out else (21, "", "iscsiadm: No portals found\n")

    def _login(self, keys: list[tuple[str, str, str]]) -> tuple[int, str, str]:
        out, err, rc = "", "", 0
        for target, portal, iface in keys:
            p = Portal.parse(portal)
            label = f"[iface: {iface}, target: {target}, portal: {p.address},{p.port}]"
            if self._find_session(target, portal, iface) is not None:
                err += f"iscsiadm: {iface}: 1 session requested, but 1 already present.\n"
                rc = 15
                continue
            t = self.targets.get(target)
            if t is None or portal not in t.portals:
                err += f"iscsiadm: Could not login to {label}.\n"
                err += "iscsiadm: initiator reported error (8 - connection timed out)\n"
                return 8, out, err
            record = self.nodes[(target, portal, iface)]
            if (
                t.chap is not None
                and (
                    record.get("node.session.auth.username"),
                    record.get("node.session.auth.password"),
                )
                != t.chap
            ):
                err += f"iscsiadm: Could not login to {label}.\n"
                err += "iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n"
                return 24, out, err
            out += f"Logging in to {label}\n"
            self._create_session(target, p, iface, scan=record.get("node.session.scan", "auto") == "auto")
            out += f"Login to {label} successful.\n"
        if rc == 15:
            err += "iscsiadm: Could not log into all portals\n"
        return rc, out, err

    def _session(self, opts: dict[str, str], flags: set[str]) -> tuple[int, str, str]:
        sid = int(opts["-r"])
        sdir = self.sys / "class/iscsi_session" / f"session{sid}"
        if not sdir.exists():
            return (
                22,
                "",
                f"iscsiadm: could not read session targetname: 5\niscsiadm: Could not get session info for sid {sid}\n",
            )
        if "-u" in flags:
            self._destroy_session(sid)
            return 0, f"Logout of [sid: {sid}] successful.\n", ""
        if "--rescan" in flags:
            return 0, "", ""
        raise AssertionError(f"unexpected session op {opts} {flags}")

    def _iface(self, opts: dict[str, str]) -> tuple[int, str, str]:
        name, op = opts["-I"], opts.get("-o")
        if op == "new":
            self.ifaces.setdefault(name, {})
            return 0, f"New interface {name} added\n", ""
        if name not in self.ifaces:
            return 6, "", f"iscsiadm: Could not read iface {name}. Error 6\n"
        if op == "show":
            rec = {"iface.iscsi_ifacename": name, **self.ifaces[name]}
            return 0, "".join(f"{k} = {v}\n" for k, v in rec.items()), ""
        if op == "update":
            self.ifaces[name][opts["-n"]] = opts["-v"]
            return 0, f"{name} updated.\n", ""
        if op == "delete":
            del self.ifaces[name]
            return 0, f"{name} unbound and deleted.\n", ""
        raise AssertionError(f"unexpected iface op {opts}")

    # ---- the simulated kernel ------------------------------------------------------------

    def _find_session(self, target: str, portal: str, iface: str) -> int | None:
        for link in (self.sys / "class/iscsi_session").iterdir():
            d = Path(os.path.realpath(link))
            sid = int(link.name.removeprefix("session"))
            cdir = d.parent.parent / f"connection{sid}:0/iscsi_connection/connection{sid}:0"
            if (
                (d / "targetname").read_text().strip() == target
                and (d / "ifacename").read_text().strip() == iface
                and Portal(
                    (cdir / "persistent_address").read_text().strip(), int((cdir / "persistent_port").read_text())
                ).host_port
                == portal
            ):
                return sid
        return None

    def sessions(self) -> list[int]:
        return sorted(int(p.name.removeprefix("session")) for p in (self.sys / "class/iscsi_session").iterdir())

    def _create_session(self, target: str, portal: Portal, iface: str, *, scan: bool) -> None:
        sid, host = self._next_sid, self._next_host
        self._next_sid += 1
        self._next_host += 1
        hdir = self.sys / f"devices/platform/host{host}"
        sdir = hdir / f"session{sid}"
        attrs = sdir / f"iscsi_session/session{sid}"
        attrs.mkdir(parents=True)
        for k, v in {
            "targetname": target,
            "tpgt": "1",
            "state": "LOGGED_IN",
            **({} if self.target_id is None else {"target_id": str(self.target_id)}),
            "ifacename": iface,
            "initiatorname": self.ifaces.get(iface, {}).get("iface.initiatorname", "iqn.1993-08.org.debian:01:x"),
            "recovery_tmo": "120",
            "abort_tmo": "15",
            "lu_reset_tmo": "30",
            "tgt_reset_tmo": "30",
            "creator": "1000",
        }.items():
            (attrs / k).write_text(v + "\n")
        cdir = sdir / f"connection{sid}:0/iscsi_connection/connection{sid}:0"
        cdir.mkdir(parents=True)
        for k, v in {
            "persistent_address": portal.address,
            "persistent_port": str(portal.port),
            "address": portal.address,
            "port": str(portal.port),
            "state": "up",
        }.items():
            (cdir / k).write_text(v + "\n")
        (hdir / f"scsi_host/host{host}").mkdir(parents=True)
        (hdir / f"scsi_host/host{host}/proc_name").write_text("iscsi_tcp\n")
        (hdir / f"scsi_host/host{host}/state").write_text("running\n")
        (hdir / f"scsi_host/host{host}/scan").write_text("")
        (hdir / f"iscsi_host/host{host}").mkdir(parents=True)
        (sdir / f"target{host}:0:{self.target_id or 0}").mkdir()
        self._link(
            f"class/iscsi_session/session{sid}", f"devices/platform/host{host}/session{sid}/iscsi_session/session{sid}"
        )
        self._link(
            f"class/iscsi_connection/connection{sid}:0",
            f"devices/platform/host{host}/session{sid}/connection{sid}:0/iscsi_connection/connection{sid}:0",
        )
        self._link(f"class/scsi_host/host{host}", f"devices/platform/host{host}/scsi_host/host{host}")
        self._link(f"class/iscsi_host/host{host}", f"devices/platform/host{host}/iscsi_host/host{host}")
        if scan:
            for lun in self.targets[target].luns:
                self._scan(host, lun)

    def _link(self, rel: str, to: str) -> None:
        link = self.sys / rel
        link.symlink_to(os.path.relpath(self.sys / to, link.parent))

    def _target_id_of_host(self, host: int) -> int:
        sdir = self._session_dir_of_host(host)
        (tdir,) = sdir.glob("target*")
        return int(tdir.name.rsplit(":", 1)[1])

    def _session_dir_of_host(self, host: int) -> Path:
        hdir = self.sys / f"devices/platform/host{host}"
        (sdir,) = [p for p in hdir.iterdir() if p.name.startswith("session")]
        return sdir

    def _scan(self, host: int, lun: int) -> None:
        sdir = self._session_dir_of_host(host)
        sid = int(sdir.name.removeprefix("session"))
        target = (sdir / f"iscsi_session/session{sid}/targetname").read_text().strip()
        t = self.targets[target]
        if lun not in t.luns:
            return
        tid = self._target_id_of_host(host)
        ldir = sdir / f"target{host}:0:{tid}/{host}:0:{tid}:{lun}"
        if ldir.exists():
            return
        if lun in t.controllers:  # a SCSI device the sd driver does not take: no block device
            ldir.mkdir(parents=True)
            for k, v in {"state": "running", "type": "12", "vendor": "IET", "model": "Controller"}.items():
                (ldir / k).write_text(v + "\n")
            for k in ("delete", "rescan"):
                (ldir / k).write_text("")
            self._link(f"bus/scsi/devices/{host}:0:{tid}:{lun}", str(ldir.relative_to(self.sys)))
            return
        disk = "sd" + "abcdefghijklmnopqrstuvwxyz"[self._next_disk % 26] * (1 + self._next_disk // 26)
        self._next_disk += 1
        bdir = ldir / "block" / disk
        (bdir / "holders").mkdir(parents=True)
        (bdir / "dev").write_text(f"8:{16 * self._next_disk}\n")
        (bdir / "size").write_text(f"{t.luns[lun] // 512}\n")
        (bdir / "ro").write_text("0\n")
        for k, v in {
            "state": "running",
            "type": "0",
            "vendor": "IET",
            "model": "VIRTUAL-DISK",
            "wwid": f"naa.60000000000000000e000000000{sid:03d}{lun:02d}",
        }.items():
            (ldir / k).write_text(v + "\n")
        for k in ("delete", "rescan"):
            (ldir / k).write_text("")
        (bdir / "device").symlink_to("../..")
        self._link(f"class/block/{disk}", str(bdir.relative_to(self.sys)))
        self._link(f"bus/scsi/devices/{host}:0:{tid}:{lun}", str(ldir.relative_to(self.sys)))
        if self.multipathd:
            self._add_path(target, lun, disk)

    def _delete_lun(self, ldir: Path) -> None:
        for disk in (ldir / "block").iterdir() if (ldir / "block").exists() else []:
            (self.sys / f"class/block/{disk.name}").unlink()
            for dm in (self.sys / "devices/virtual/block").iterdir():  # the map loses the path
                if os.path.lexists(dm / "slaves" / disk.name):
                    (dm / "slaves" / disk.name).unlink()
        (self.sys / f"bus/scsi/devices/{ldir.name}").unlink()
        shutil.rmtree(ldir)

    def _resize(self, ldir: Path) -> None:
        host, _c, _t, lun = (int(x) for x in ldir.name.split(":"))
        sdir = self._session_dir_of_host(host)
        sid = int(sdir.name.removeprefix("session"))
        target = (sdir / f"iscsi_session/session{sid}/targetname").read_text().strip()
        for disk in (ldir / "block").iterdir():
            if disk.name not in self.stuck:
                (disk / "size").write_text(f"{self.targets[target].luns[lun] // 512}\n")

    def _destroy_session(self, sid: int) -> None:
        link = self.sys / f"class/iscsi_session/session{sid}"
        sdir = Path(os.path.realpath(link)).parent.parent
        hdir = sdir.parent
        host = int(hdir.name.removeprefix("host"))
        for tdir in sdir.glob("target*"):
            for ldir in list(tdir.iterdir()):
                self._delete_lun(ldir)
        for rel in (
            f"class/iscsi_session/session{sid}",
            f"class/iscsi_connection/connection{sid}:0",
            f"class/scsi_host/host{host}",
            f"class/iscsi_host/host{host}",
        ):
            (self.sys / rel).unlink()
        shutil.rmtree(hdir)

    # ---- the simulated multipathd ----------------------------------------------------------

    def _map_dir(self, target: str, lun: int) -> Path:
        return self.sys / "devices/virtual/block" / f"dm-{sorted(self.targets).index(target) * 256 + lun}"

    def _add_path(self, target: str, lun: int, disk: str) -> None:
        """A second path of a LUN makes multipathd create its map; later paths join it."""
        d = self._map_dir(target, lun)
        paths = [
            p.name
            for p in (self.sys / "class/block").iterdir()
            if p.name.startswith("sd") and self._lun_of(p.name) == (target, lun)
        ]
        if not d.exists():
            if len(paths) < 2:
                return
            (d / "holders").mkdir(parents=True)
            (d / "slaves").mkdir()
            (d / "dm").mkdir()
            (d / "dev").write_text(f"253:{d.name.removeprefix('dm-')}\n")
            (d / "size").write_text(f"{self.targets[target].luns[lun] // 512}\n")
            (d / "ro").write_text("0\n")
            (d / "dm/name").write_text(f"mpath-{lun}\n")
            (d / "dm/uuid").write_text(f"mpath-3600000000000000000e00000000{lun:04d}\n")
            self._link(f"class/block/{d.name}", str(d.relative_to(self.sys)))
        for name in paths:
            bdir = Path(os.path.realpath(self.sys / f"class/block/{name}"))
            if not os.path.lexists(d / "slaves" / name):
                (d / "slaves" / name).symlink_to(os.path.relpath(bdir, d / "slaves"))
                (bdir / "holders" / d.name).symlink_to(os.path.relpath(d, bdir / "holders"))

    def _lun_of(self, disk: str) -> tuple[str, int]:
        ldir = Path(os.path.realpath(self.sys / f"class/block/{disk}")).parent.parent
        sid = next(p.name for p in ldir.parents if p.name.startswith("session")).removeprefix("session")
        sdir = next(p for p in ldir.parents if p.name.startswith("session"))
        target = (sdir / f"iscsi_session/session{sid}/targetname").read_text().strip()
        return target, int(ldir.name.split(":")[-1])

    def _named_map(self, name: str) -> Path | None:
        for d in (self.sys / "devices/virtual/block").iterdir():
            if (d / "dm/name").read_text().strip() == name:
                return d
        return None

    def _flush_map(self, name: str) -> tuple[int, str, str]:
        d = self._named_map(name)
        if d is None:
            return 1, "", f"{name}: no such map\n"
        if d.name in self.stuck:
            return 0, "", ""
        if any((d / "holders").iterdir()):
            return 1, "", f"{name}: map in use\n"
        for slave in (d / "slaves").iterdir():
            holder = Path(os.path.realpath(slave)) / "holders" / d.name
            if os.path.lexists(holder):
                holder.unlink()
        (self.sys / f"class/block/{d.name}").unlink()
        shutil.rmtree(d)
        return 0, "", ""

    def _resize_map(self, name: str) -> tuple[int, str, str]:
        d = self._named_map(name)
        if d is None:
            return 1, "fail\n", ""
        sizes = {(Path(os.path.realpath(s)) / "size").read_text() for s in (d / "slaves").iterdir()}
        if len(sizes) != 1:
            return 1, "fail\n", ""
        size = sizes.pop()
        if d.name in self.stuck:
            return 0, "ok\n", ""
        if self.map_resize_delay:  # the kernel reloads the table a moment after multipathd answers
            threading.Timer(self.map_resize_delay, (d / "size").write_text, (size,)).start()
        else:
            (d / "size").write_text(size)
        return 0, "ok\n", ""

    def maps(self) -> dict[str, list[str]]:
        """dm-N -> its path devices."""
        return {
            d.name: sorted(p.name for p in (d / "slaves").iterdir())
            for d in sorted((self.sys / "devices/virtual/block").iterdir())
        }

    def disks(self) -> list[str]:
        return sorted(p.name for p in (self.sys / "class/block").iterdir() if p.name.startswith("sd"))


def connector_on(host: FakeHost, tmp_path: Path, *, state_dir: Path | None = None, instant: bool = False) -> Connector:
    """A Connector whose commands, sysfs and device nodes are ``host``'s.

    ``instant``: nothing sleeps and the clock moves 0.1 s per look, so a timeout passes at once
    (for examples that wait on purpose); otherwise sysfs is polled every millisecond.
    """
    ticks = iter(range(10**9))

    def events() -> PollingEventSource:
        return PollingEventSource(interval=0, sleep=lambda s: None) if instant else PollingEventSource(interval=0.001)

    return Connector(
        runner=host,
        sysfs_root=host.sys,
        dev_root=tmp_path / "dev",
        state_dir=state_dir if state_dir is not None else tmp_path / "state",
        iscsiadm=FakeRecordsIscsiadm(host),
        event_source=events,
        **({"clock": lambda: float(next(ticks)) / 10} if instant else {}),
    )


class FakeRecordsIscsiadm(Iscsiadm):
    """The real wrapper, whose direct record writes (CHAP secrets) land in the fake host's records."""

    def write_discovery_settings(self, portal: Portal, settings: Mapping[str, str]) -> dict[str, str] | None:
        with self.host._lock:
            record = self.host.discoveries.get(portal.host_port)
            previous = None if record is None else {k: record.get(k, "") for k in settings}
            self.host.discoveries.setdefault(portal.host_port, {}).update(settings)
        return previous

    def __init__(self, host: FakeHost) -> None:
        super().__init__(host, sleep=lambda s: None)
        self.host = host

    def write_node_settings(
        self, target: str, portal: Portal | None, settings: Mapping[str, str], *, iface: str | None = None
    ) -> None:
        # straight into the fake DB (not through run(): nothing is on a command line)
        for key, value in settings.items():
            with self.host._lock:
                code, _, err = self.host._iscsiadm(
                    [*self._node_args(target, portal, iface), "-o", "update", "-n", key, "-v", value]
                )
            assert code == 0, err
