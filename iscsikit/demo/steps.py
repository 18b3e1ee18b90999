"""The demo's steps, in order, each a small function over the :class:`DemoContext`.

Everything is real: ``iscsikit replica serve`` and ``iscsikit target serve`` processes, the
open-iscsi initiator through :mod:`iscsikit.iscsiadm` and :mod:`iscsikit.connector`,
``mkfs.ext4`` and ``mount`` through the Runner, a replica killed with SIGKILL, its rebuild
watched on the target's control socket, and the cleanup done by :mod:`iscsikit.clean`.

The last four steps are cleanup steps: they run after a failure too, each doing only what
is still needed (nothing mounted: nothing to unmount), so the run ends with nothing left.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from iscsikit.demo.context import VOLUME_ID, DemoContext, MiB
from iscsikit.demo.flow import Done, Step
from iscsikit.demo.procs import Daemon, free_ports, iscsikit_argv, port_open, wait_for
from iscsikit.errors import DemoStepError, IscsikitError
from iscsikit.units import format_size

__all__ = ["STEPS", "STEP_NAMES"]

CHUNK = MiB
#: Which replica the demo kills (0-based): the second, so the first stays the rebuild source.
VICTIM = 1


def _replica_status(ctx: DemoContext) -> list[dict[str, Any]]:
    from iscsikit.target.control import request

    volumes = request(ctx.control, "replica status", timeout=min(30.0, ctx.options.step_timeout))
    if not volumes:
        raise DemoStepError(f"the target at {ctx.control} reports no replicated LUN")
    replicas: list[dict[str, Any]] = volumes[0]["replicas"]
    return replicas


def _modes(ctx: DemoContext) -> list[str]:
    """Each replica's mode, in the order of the LUN spec."""
    by_address = {str(r["address"]): str(r["mode"]) for r in _replica_status(ctx)}
    return [by_address.get(ctx.replica_address(i), "missing") for i in range(len(ctx.replica_ports))]


def _replica(ctx: DemoContext, i: int) -> dict[str, Any]:
    address = ctx.replica_address(i)
    for rep in _replica_status(ctx):
        if rep["address"] == address:
            return rep
    raise DemoStepError(f"the target no longer lists replica {address}")


def _replica_daemon(ctx: DemoContext, i: int) -> Daemon:
    argv = iscsikit_argv(
        "replica", "serve", str(ctx.replica_dir(i)),
        "--size", str(ctx.options.size),
        "--listen", f"127.0.0.1:{ctx.replica_ports[i]}",
    )  # fmt: skip
    assert ctx.workdir is not None
    return Daemon(f"replica {i + 1}", argv, ctx.workdir / f"replica{i + 1}.log")


def _wait_listening(ctx: DemoContext, daemon: Daemon, port: int) -> None:
    def up() -> bool:
        daemon.check_alive()
        return port_open("127.0.0.1", port, timeout=2.0)

    wait_for(up, ctx.options.step_timeout, lambda: f"{daemon.name} does not listen on 127.0.0.1:{port}", interval=0.1)


# ---- the flow -----------------------------------------------------------------------------


def target_up(ctx: DemoContext) -> Done:
    """Three replica servers, then the target serving one replicated LUN over them."""
    from iscsikit.names import Portal
    from iscsikit.target.control import ControlError, request

    opts = ctx.options
    assert ctx.workdir is not None
    ports = free_ports(opts.replicas + 1)
    ctx.replica_ports, port = ports[:-1], ports[-1]
    ctx.portal = Portal("127.0.0.1", port)
    # All replicas start at once: Python start-up is the slow part (seconds each under TCG).
    ctx.replicas = [_replica_daemon(ctx, i).start() for i in range(opts.replicas)]
    for i, daemon in enumerate(ctx.replicas):
        _wait_listening(ctx, daemon, ctx.replica_ports[i])
    spec = "replicated:" + ",".join(ctx.replica_address(i) for i in range(opts.replicas))
    spec += f",size={opts.size},timeout={opts.replica_timeout:g}"
    argv = iscsikit_argv(
        "target", "serve", "--iqn", ctx.iqn, "--portal", f"127.0.0.1:{port}",
        "--lun", f"1={spec}", "--control", str(ctx.control),
    )  # fmt: skip
    ctx.target = Daemon("the target", argv, ctx.workdir / "target.log").start()
    target = ctx.target

    def answering() -> bool:
        target.check_alive()
        if not ctx.control.exists():
            return False
        try:
            request(ctx.control, "ping", timeout=5)
        except ControlError:
            return False
        return True

    wait_for(answering, opts.step_timeout, lambda: f"the target's control socket {ctx.control} does not answer")

    def all_rw() -> list[str] | None:
        modes = _modes(ctx)
        return modes if all(m == "rw" for m in modes) else None

    modes = wait_for(
        all_rw,
        opts.step_timeout,
        lambda: f"not every replica is rw: {_modes(ctx)}",
        interval=0.2,
    )
    return Done(
        f"{ctx.iqn} on {ctx.portal}, LUN 1: {format_size(opts.size)} on {len(modes)} replicas ({', '.join(modes)})",
        {
            "iqn": ctx.iqn,
            "portal": str(ctx.portal),
            "size_bytes": opts.size,
            "replicas": [ctx.replica_address(i) for i in range(opts.replicas)],
            "modes": modes,
            "pids": {"target": target.pid, "replicas": [d.pid for d in ctx.replicas]},
        },
    )


def discover(ctx: DemoContext) -> Done:
    """SendTargets discovery with the real iscsiadm: the portal must offer the demo's target."""
    from iscsikit.iscsiadm import Iscsiadm

    assert ctx.portal is not None
    adm = Iscsiadm(ctx.runner, timeout=ctx.options.step_timeout)
    found = adm.discover_sendtargets(ctx.portal)
    names = sorted({t.target for t in found})
    if ctx.iqn not in names:
        raise DemoStepError(f"{ctx.portal} offers {names or 'no target'}, not {ctx.iqn}")
    return Done(
        f"{ctx.portal} offers {ctx.iqn}",
        {"targets": [{"target": t.target, "portal": str(t.portal)} for t in found]},
    )


def login(ctx: DemoContext) -> Done:
    """The connector logs in (node record, login, scan of LUN 1) and waits for the disk."""
    from iscsikit.connector import Connector, VolumeSpec

    assert ctx.portal is not None
    ctx.connector = Connector(runner=ctx.runner, sysfs_root=ctx.options.sysfs_root, state_dir=ctx.state_dir)
    ctx.spec = VolumeSpec(volume_id=VOLUME_ID, target=ctx.iqn, portals=(ctx.portal,), lun=1)
    ctx.attachment = ctx.connector.connect(ctx.spec, timeout=ctx.options.step_timeout)
    ctx.device = ctx.attachment.device
    sids = [p.sid for p in ctx.attachment.paths]
    return Done(
        f"session {', '.join(map(str, sids))} to {ctx.portal}; LUN 1 is {ctx.device}",
        {"sessions": sids, "device": ctx.device, "state_dir": str(ctx.state_dir)},
    )


def device(ctx: DemoContext) -> Done:
    """The disk as sysfs and udev show it: size, WWN, the by-path link udev made."""
    from iscsikit.devices.inventory import Inventory

    assert ctx.device is not None
    name = Path(ctx.device).name
    inventory = Inventory(ctx.options.sysfs_root)

    def described() -> Any:
        for info in inventory.devices():
            if info.name == name and info.target == ctx.iqn and info.by_path is not None:
                return info
        return None

    info = wait_for(
        described,
        min(60.0, ctx.options.step_timeout),
        lambda: f"{ctx.device} of {ctx.iqn} has no /dev/disk/by-path link (is udev running?)",
        interval=0.1,
    )
    if info.size_bytes != ctx.options.size:
        raise DemoStepError(f"{ctx.device} is {info.size_bytes} bytes; the LUN is {ctx.options.size}")
    if info.read_only:
        raise DemoStepError(f"{ctx.device} is read-only")
    return Done(
        f"{ctx.device}: {format_size(info.size_bytes)}, WWN {info.wwn}, {info.by_path}",
        {"device": info.devnode, "by_path": info.by_path, "wwn": info.wwn, "size_bytes": info.size_bytes,
         "hctl": info.hctl, "lun": info.lun},
    )  # fmt: skip


def mkfs_mount(ctx: DemoContext) -> Done:
    assert ctx.device is not None
    timeout = ctx.options.step_timeout
    ctx.runner.run(["mkfs.ext4", "-q", "-F", "-L", "iscsikit-demo", ctx.device], timeout=timeout, mutating=True)
    ctx.mountpoint.mkdir(exist_ok=True)
    ctx.runner.run(["mount", "-t", "ext4", ctx.device, str(ctx.mountpoint)], timeout=timeout, mutating=True)
    return Done(f"ext4 on {ctx.device}, mounted at {ctx.mountpoint}", {"mountpoint": str(ctx.mountpoint)})


def _write_files(ctx: DemoContext, prefix: str) -> Done:
    opts = ctx.options
    written = {}
    for n in range(1, opts.files + 1):
        name = f"{prefix}{n}.bin"
        digest = hashlib.sha256()
        fd = os.open(ctx.mountpoint / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            left = opts.file_size
            while left:
                chunk = os.urandom(min(CHUNK, left))
                digest.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
                left -= len(chunk)
            os.fsync(fd)  # through ext4 and iSCSI to the replicas: acknowledged only when they have it
        finally:
            os.close(fd)
        written[name] = ctx.checksums[name] = digest.hexdigest()
        ctx.progress(n / opts.files, name)
    total = opts.files * opts.file_size
    return Done(
        f"{opts.files} files, {format_size(total)} of random data, fsynced; sha256 noted",
        {"files": written, "bytes": total},
    )


def write(ctx: DemoContext) -> Done:
    return _write_files(ctx, "before-")


def kill_replica(ctx: DemoContext) -> Done:
    """SIGKILL one replica server; the target notices and marks it failed (err)."""
    victim = ctx.replicas[VICTIM]
    pid = victim.pid
    victim.kill()
    ctx.killed = VICTIM
    modes = wait_for(
        lambda: m if (m := _modes(ctx))[VICTIM] == "err" else None,
        ctx.options.step_timeout,
        lambda: f"the target still shows {ctx.replica_address(VICTIM)} as {_modes(ctx)[VICTIM]}",
        interval=0.1,
    )
    return Done(
        f"replica {VICTIM + 1} ({ctx.replica_address(VICTIM)}, pid {pid}) killed with SIGKILL; "
        f"modes now {', '.join(modes)}",
        {"replica": ctx.replica_address(VICTIM), "pid": pid, "modes": modes},
    )


def write_degraded(ctx: DemoContext) -> Done:
    done = _write_files(ctx, "degraded-")
    modes = _modes(ctx)
    if modes[VICTIM] == "rw":
        raise DemoStepError(f"{ctx.replica_address(VICTIM)} is rw again although its server is dead: {modes}")
    return Done(
        done.detail + f" with replica {VICTIM + 1} down (modes {', '.join(modes)})",
        {**done.data, "modes": modes},
    )


def rebuild(ctx: DemoContext) -> Done:
    """Restart the killed replica on its old directory; the target reconnects and rebuilds it."""
    i = VICTIM
    daemon = _replica_daemon(ctx, i).start()
    ctx.replicas[i] = daemon
    _wait_listening(ctx, daemon, ctx.replica_ports[i])
    seen: list[str] = []

    def rebuilt() -> dict[str, Any] | None:
        daemon.check_alive()
        rep = _replica(ctx, i)
        if not seen or seen[-1] != rep["mode"]:
            seen.append(str(rep["mode"]))
        if rep["mode"] == "wo":
            ctx.progress(float(rep.get("rebuild_progress") or 0.0), "rebuilding")
        return rep if rep["mode"] == "rw" else None

    rep = wait_for(rebuilt, ctx.options.step_timeout, lambda: f"{ctx.replica_address(i)} is still {seen[-1:]}",
                   interval=0.1)  # fmt: skip
    ctx.progress(1.0, "rebuilt")
    info = rep.get("rebuild") or {}
    modes = _modes(ctx)
    detail = f"replica {i + 1} back ({' -> '.join(seen)})"
    if info:
        detail += (
            f"; rebuilt from {info.get('source')} via {info.get('via')}: "
            f"{format_size(int(info.get('copied_bytes', 0)))} copied, "
            f"{format_size(int(info.get('skipped_bytes', 0)))} already equal, in {info.get('seconds')} s"
        )
    return Done(detail, {"replica": ctx.replica_address(i), "modes": modes, "transitions": seen, "rebuild": info,
                         "rebuild_progress": rep.get("rebuild_progress")})  # fmt: skip


def _reread(path: Path) -> str:
    """sha256 of a file read from the device: its cached pages are dropped first."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _compare_images(paths: list[Path]) -> tuple[list[str], int | None]:
    """sha256 of each file and the first offset where any differs from the first (None: identical)."""
    digests = [hashlib.sha256() for _ in paths]
    first_diff: int | None = None
    files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed below
    try:
        offset = 0
        while True:
            chunks = [f.read(CHUNK) for f in files]
            for d, c in zip(digests, chunks, strict=True):
                d.update(c)
            if first_diff is None and any(c != chunks[0] for c in chunks[1:]):
                first_diff = offset + _first_difference(chunks)
            if not any(chunks):
                break
            offset += CHUNK
    finally:
        for f in files:
            f.close()
    return [d.hexdigest() for d in digests], first_diff


def _first_difference(chunks: list[bytes]) -> int:
    ref = chunks[0]
    best = max(len(c) for c in chunks)
    for c in chunks[1:]:
        n = min(len(ref), len(c))
        pos = next((k for k in range(n) if ref[k] != c[k]), n if len(ref) != len(c) else best)
        best = min(best, pos)
    return best


def verify(ctx: DemoContext) -> Done:
    """Re-read every file from the device, then freeze ext4 and byte-compare the replicas' images."""
    bad = []
    for name, want in ctx.checksums.items():
        got = _reread(ctx.mountpoint / name)
        if got != want:
            bad.append(f"{name}: sha256 {got[:12]} != {want[:12]}")
    if bad:
        raise DemoStepError(f"{len(bad)} of {len(ctx.checksums)} files read back wrong: " + "; ".join(bad))
    from iscsikit.replica.store import DATA_FILE

    images = [ctx.replica_dir(i) / DATA_FILE for i in range(ctx.options.replicas)]
    # Frozen: ext4 has written everything and issues nothing until thawed, so the replicas hold
    # exactly what the initiator wrote, with no write in flight.
    ctx.runner.run(["fsfreeze", "--freeze", str(ctx.mountpoint)], timeout=ctx.options.step_timeout, mutating=True)
    ctx.frozen = True
    try:
        digests, diff = _compare_images(images)
    finally:
        ctx.runner.run(["fsfreeze", "--unfreeze", str(ctx.mountpoint)], timeout=ctx.options.step_timeout,
                       mutating=True)  # fmt: skip
        ctx.frozen = False
    replicas = [
        {"address": ctx.replica_address(i), "image": str(images[i]), "sha256": digests[i]}
        for i in range(ctx.options.replicas)
    ]
    if diff is not None:
        raise DemoStepError(
            f"the replicas' images differ (first at byte {diff}): "
            + ", ".join(f"{r['address']} {r['sha256'][:12]}" for r in replicas)
        )
    return Done(
        f"{len(ctx.checksums)} files read back with the same sha256; the {len(images)} replica images are "
        f"byte-identical (sha256 {digests[0][:12]}...)",
        {"files": dict(ctx.checksums), "files_ok": len(ctx.checksums), "replicas": replicas, "identical": True},
    )


# ---- cleanup: these run after a failure too -----------------------------------------------


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


def unmount(ctx: DemoContext) -> Done:
    if ctx.workdir is None or not _mounted(ctx.mountpoint):
        return Done("nothing mounted")
    timeout = ctx.options.step_timeout
    if ctx.frozen:
        ctx.runner.run(["fsfreeze", "--unfreeze", str(ctx.mountpoint)], timeout=timeout, check=False, mutating=True)
        ctx.frozen = False
    result = ctx.runner.run(["umount", str(ctx.mountpoint)], timeout=timeout, check=False, mutating=True)
    if result.returncode != 0:
        # Detach it anyway so the logout can go on; say what was wrong.
        ctx.runner.run(["umount", "--lazy", str(ctx.mountpoint)], timeout=timeout, check=False, mutating=True)
        raise DemoStepError(f"umount {ctx.mountpoint} failed ({result.stderr.strip()}); detached it lazily")
    return Done(f"unmounted {ctx.mountpoint}")


def logout(ctx: DemoContext) -> Done:
    """The connector removes the disk, logs the session out and deletes the node record."""
    from iscsikit.session.sysfs import Sessions

    if ctx.connector is None or ctx.spec is None:
        return Done("not logged in")
    before = [s.sid for s in Sessions(ctx.options.sysfs_root).find(ctx.iqn)]
    ctx.connector.disconnect(ctx.spec, timeout=ctx.options.step_timeout, force=_mounted(ctx.mountpoint))
    left = [s.sid for s in Sessions(ctx.options.sysfs_root).find(ctx.iqn)]
    if left:
        raise DemoStepError(f"session(s) {left} to {ctx.iqn} still exist after the disconnect")
    what = f"{ctx.device} removed, " if ctx.device else ""
    sessions = ", ".join(map(str, before)) or "none"
    return Done(f"{what}session {sessions} logged out, node record deleted", {"sessions": before})


def clean(ctx: DemoContext) -> Done:
    """Stop the target, then the replicas; ``iscsikit clean`` for what is left of the demo's target."""
    parts = []
    if ctx.target is not None:
        parts.append(ctx.target.stop(timeout=min(60.0, ctx.options.step_timeout)))
    for daemon in ctx.replicas:
        parts.append(daemon.stop(timeout=min(30.0, ctx.options.step_timeout)))
    actions = _clean_records(ctx) if ctx.portal is not None else []
    parts.append("cleanup removed " + (", ".join(actions) if actions else "nothing (nothing was left)"))
    if ctx.workdir is not None and not ctx.options.keep:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
        parts.append(f"{ctx.workdir} removed")
    elif ctx.workdir is not None:
        parts.append(f"{ctx.workdir} kept (--keep)")
    return Done("; ".join(parts), {"clean_actions": actions})


def _clean_records(ctx: DemoContext) -> list[str]:
    from iscsikit.clean import Executor, Selection, collect, plan
    from iscsikit.db.database import Database
    from iscsikit.iscsiadm import Iscsiadm

    try:
        db = Database(ctx.options.db_root, runner=ctx.runner)
    except IscsikitError as exc:
        return [f"nothing: no open-iscsi database ({exc})"]
    opts = ctx.options
    survey = collect(db, sysfs_root=opts.sysfs_root, proc_root=opts.proc_root, state_dir=ctx.state_dir,
                     remember_failures=False)  # fmt: skip
    # By portal, not by target: the discovery record at the portal has no node left once the
    # connector deleted its node record, and a target selection only takes discovery records
    # that found its nodes. The portal is the demo's own (a free port its target listens on).
    assert ctx.portal is not None
    todo = plan(survey, Selection(portals=(ctx.portal,)))
    if not todo.actions:
        return []
    assert ctx.workdir is not None
    executor = Executor(
        db,
        runner=ctx.runner,
        iscsiadm=Iscsiadm(ctx.runner, timeout=opts.step_timeout),
        sysfs_root=opts.sysfs_root,
        proc_root=opts.proc_root,
        state_dir=ctx.state_dir,
        backup_path=ctx.workdir / "clean-backup.tar.gz",
        argv=["iscsikit", "demo"],
    )
    result = executor.apply(todo)
    done = [f"{o.action.kind.value} ({o.action.detail})" for o in result.outcomes]
    if not result.ok:
        failed = [f"{o.action.kind.value}: {o.status} {o.message or ''}".strip() for o in result.outcomes
                  if o.status in ("blocked", "failed")]  # fmt: skip
        raise DemoStepError("cleanup could not remove everything: " + "; ".join(failed))
    return done


def nothing_left(ctx: DemoContext) -> Done:
    """No session, no node or discovery record, no mount, no demo process (and no workdir)."""
    from iscsikit.session.sysfs import Sessions

    left: list[str] = []
    checked: list[str] = []
    opts = ctx.options
    left += [f"session {s.sid} to {ctx.iqn}" for s in Sessions(opts.sysfs_root).find(ctx.iqn)]
    checked.append("no session")
    records = _records_left(ctx)
    left += records
    checked.append("no node or discovery record")
    if ctx.workdir is not None:
        left += [f"mount {m}" for m in _mounts_under(ctx.workdir, opts.proc_root)]
        checked.append("no mount")
    daemons = [*ctx.replicas, *([ctx.target] if ctx.target else [])]
    left += [f"{d.name} (pid {d.pid})" for d in daemons if d.alive]
    if ctx.workdir is not None:
        left += [f"process {pid}: {cmd}" for pid, cmd in _processes_mentioning(str(ctx.workdir), opts.proc_root)]
    checked.append("no demo process")
    if ctx.workdir is not None and not opts.keep:
        if ctx.workdir.exists():
            left.append(f"directory {ctx.workdir}")
        checked.append("work directory gone")
    if left:
        raise DemoStepError("left behind: " + "; ".join(left))
    return Done(", ".join(checked), {"checked": checked})


def _records_left(ctx: DemoContext) -> list[str]:
    from iscsikit.db.database import Database

    try:
        inv = Database(ctx.options.db_root, runner=ctx.runner).inventory()
    except IscsikitError:
        return []
    out = [f"node record {n.target} {n.portal_entry} ({n.iface})" for n in inv.nodes if n.target == ctx.iqn]
    if ctx.portal is not None:
        out += [
            f"discovery record {d.entry}"
            for d in inv.discoveries
            if d.address == ctx.portal.address and d.port == ctx.portal.port
        ]
    return out


def _mounts_under(directory: Path, proc_root: Path) -> list[str]:
    from iscsikit.devices.inventory import read_mountinfo

    prefix = str(directory)
    return sorted(
        point
        for points in read_mountinfo(proc_root / "self/mountinfo").values()
        for point in points
        if point == prefix or point.startswith(prefix + "/")
    )


def _processes_mentioning(text: str, proc_root: Path) -> list[tuple[int, str]]:
    """Processes (other than this one) whose command line names ``text``."""
    found = []
    me = os.getpid()
    for entry in os.listdir(proc_root):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            raw = (proc_root / entry / "cmdline").read_bytes()
        except OSError:
            continue
        cmd = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
        if text in cmd:
            found.append((int(entry), cmd[:200]))
    return found


STEPS: list[Step[DemoContext]] = [
    Step("target-up", "start the target with its replicas", target_up),
    Step("discover", "discover the target (SendTargets)", discover),
    Step("login", "log in", login),
    Step("device", "find the block device", device),
    Step("mkfs-mount", "make ext4 and mount it", mkfs_mount),
    Step("write", "write files, note their checksums", write),
    Step("kill-replica", "kill a replica (SIGKILL)", kill_replica),
    Step("write-degraded", "keep writing with a replica down", write_degraded),
    Step("rebuild", "bring the replica back; wait for its rebuild", rebuild),
    Step("verify", "verify files and every replica's image", verify),
    Step("unmount", "unmount", unmount, cleanup=True),
    Step("logout", "log out", logout, cleanup=True),
    Step("clean", "stop the target and replicas; clean up", clean, cleanup=True),
    Step("nothing-left", "check that nothing is left", nothing_left, cleanup=True),
]
STEP_NAMES = [s.name for s in STEPS]
