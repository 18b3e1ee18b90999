"""``iscsikit discover``, ``login`` and ``logout``: the initiator commands.

Each command parses its options, calls the library (:mod:`iscsikit.iscsiadm`,
:mod:`iscsikit.session`, :mod:`iscsikit.devices`) and prints the result; heavy imports happen
inside the functions so CLI start-up stays fast.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, emit, note

if TYPE_CHECKING:
    from iscsikit.iscsiadm import Chap, Iscsiadm
    from iscsikit.names import Portal
    from iscsikit.session.sysfs import IscsiSession

IfaceOpt = Annotated[str | None, typer.Option("--iface", "-I", metavar="NAME", help="open-iscsi iface to use.")]


def _iscsiadm(actx: AppContext) -> Iscsiadm:
    """The wrapper; its record writes (CHAP secrets) go to --db-root when one is given."""
    from iscsikit.iscsiadm import Iscsiadm

    db = None
    if actx.db_root is not None and actx.runner().host.kind == "local":
        from iscsikit.cli.node import open_db

        db = open_db(actx)
    return Iscsiadm(actx.runner(), timeout=actx.timeout("iscsiadm"), login_timeout=actx.timeout("login"), db=db)


def _read_secret(path: Path, flag: str) -> str:
    from iscsikit.errors import UsageError

    try:
        secret = path.read_text().rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror}") from None
    if not secret:
        raise UsageError(f"{flag} {path}: the file is empty")
    return secret


def _chap(user: str | None, secret_file: Path | None) -> Chap | None:
    from iscsikit.errors import UsageError
    from iscsikit.iscsiadm import Chap

    if user is None and secret_file is None:
        return None
    if user is None or secret_file is None:
        raise UsageError("--chap-user and --chap-secret-file go together")
    return Chap(user, _read_secret(secret_file, "--chap-secret-file"))


def _portal(text: str, flag: str = "--portal", *, default_port: int = 3260) -> Portal:
    from iscsikit.errors import InvalidNameError, UsageError
    from iscsikit.names import Portal

    try:
        return Portal.parse(text, default_port=default_port)
    except InvalidNameError as exc:
        raise UsageError(f"{flag}: {exc}") from None


DISCOVERY_COLUMNS = [
    Column("target", "TARGET"),
    Column("address", "ADDRESS"),
    Column("port", "PORT"),
    Column("tpgt", "TPGT"),
]


def discover(
    ctx: typer.Context,
    portal: Annotated[str, typer.Argument(metavar="PORTAL", help="ADDR[:PORT] of the portal (or iSNS server).")],
    chap_user: Annotated[str | None, typer.Option("--chap-user", metavar="U", help="Discovery CHAP user.")] = None,
    chap_secret_file: Annotated[
        Path | None, typer.Option("--chap-secret-file", metavar="F", help="File holding the CHAP secret.")
    ] = None,
    iface: IfaceOpt = None,
    no_persist: Annotated[
        bool, typer.Option("--no-persist", help="Do not create node records (only list what the portal offers).")
    ] = False,
    kind: Annotated[str, typer.Option("--type", "-t", metavar="st|isns", help="sendtargets (default) or isns.")] = "st",
) -> None:
    """Ask a portal (SendTargets) or an iSNS server which targets it offers.

    Prints one row per target portal. Without --no-persist the node records are created,
    as ``iscsiadm -m discovery`` does.
    """
    from iscsikit.errors import UsageError

    actx = AppContext.of(ctx)
    adm = _iscsiadm(actx)
    chap = _chap(chap_user, chap_secret_file)
    if kind in ("st", "sendtargets"):
        found = adm.discover_sendtargets(_portal(portal, "PORTAL"), iface=iface, chap=chap, persist=not no_persist)
    elif kind == "isns":
        if chap is not None:
            raise UsageError("--chap-user applies to SendTargets discovery, not iSNS")
        server = _portal(portal, "PORTAL", default_port=3205)
        found = adm.discover_isns(server, iface=iface, persist=not no_persist)
    else:
        raise UsageError(f"--type must be 'st' or 'isns', got {kind!r}")
    emit(actx, [t.to_json() for t in found], DISCOVERY_COLUMNS, title=f"targets at {portal}")


def _session_row(s: IscsiSession) -> dict[str, Any]:
    p = s._portal_or_none()
    return {
        "sid": s.sid,
        "address": p.address if p else None,
        "port": p.port if p else None,
        "tpgt": s.tpgt,
        "iface": s.iface_name,
        "state": s.state,
    }


def _only_portal(actx: AppContext, target: str, iface: str | None) -> None:
    """Without --portal/--all-portals: fine when the target's node records name one portal, else say which."""
    from iscsikit.cli.node import open_db
    from iscsikit.errors import UsageError

    found = sorted({f"{r.address}:{r.port}" for r in open_db(actx).nodes(target, iface=iface)})
    if not found:
        raise UsageError(f"no node record for {target}: run `iscsikit discover PORTAL` first, or give --portal P")
    if len(found) > 1:
        raise UsageError(f"{target} has {len(found)} portals ({', '.join(found)}): give --portal P or --all-portals")


def login(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TARGET", help="Target IQN.")],
    portal: Annotated[
        list[str] | None, typer.Option("--portal", "-p", metavar="P", help="Portal ADDR[:PORT] (repeatable).")
    ] = None,
    all_portals: Annotated[bool, typer.Option("--all-portals", help="Log in to every portal of the target.")] = False,
    lun: Annotated[int | None, typer.Option("--lun", metavar="N", help="Scan and wait for this LUN.")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the block devices.")] = True,
    timeout: Annotated[
        float | None, typer.Option("--timeout", metavar="S", help="Seconds to wait for devices.")
    ] = None,
    iface: IfaceOpt = None,
) -> None:
    """Log in to a target (node records must exist: run discover first). Already logged in is success.

    Without --portal or --all-portals the target must have node records for one portal only.

    With --wait (the default) the command returns once the devices are there, found by udev
    events (or sysfs without udev). With --lun only that LUN is scanned and waited for.
    """
    from iscsikit.devices.inventory import Inventory
    from iscsikit.devices.scsi import ScsiOps
    from iscsikit.devices.udev import DeviceWaiter
    from iscsikit.errors import DeviceTimeoutError, UsageError
    from iscsikit.names import validate_iscsi_name
    from iscsikit.session.sysfs import Sessions

    actx = AppContext.of(ctx)
    validate_iscsi_name(target, "TARGET", strict=False)
    portals = [_portal(p) for p in portal or []]
    if portals and all_portals:
        raise UsageError("give --portal or --all-portals, not both")
    if not portals and not all_portals:
        _only_portal(actx, target, iface)  # one portal in the DB: that one (as iscsiadm -m node -T T -l)
    if lun is not None and not 0 <= lun <= 65535:
        raise UsageError(f"--lun must be 0-65535, got {lun}")
    adm = _iscsiadm(actx)
    sessions_db = Sessions(actx.sysfs_root)
    wait_s = actx.timeout("device") if timeout is None else timeout
    with DeviceWaiter(actx.sysfs_root) as waiter:  # started before login: no event missed
        if portals:
            for p in portals:
                adm.login(target, p, iface=iface)
        else:
            adm.login(target, None, iface=iface)
        if actx.dry_run:
            emit(actx, {"target": target, "sessions": [], "devices": []})
            return
        sessions = [
            s for s in sessions_db.find(target, iface=iface) if not portals or any(s.matches(portal=p) for p in portals)
        ]
        if not sessions:
            raise UsageError(f"login to {target} succeeded but no session for it is in {actx.sysfs_root}")
        if lun is not None:
            ops = ScsiOps(actx.runner(), actx.sysfs_root)
            for s in sessions:
                if s.device(lun) is None:
                    ops.scan_lun(s.host.host_no, 0, s.target_id or 0, lun)
        if wait:
            for s in sessions:
                if lun is not None:
                    waiter.wait_for_lun(s.sid, lun, wait_s)
                else:
                    try:
                        waiter.wait_until(
                            partial(_any_disk, sessions_db, s.sid),
                            wait_s,
                            partial(str, f"expected session {s.sid} of {target} to show at least one disk"),
                        )
                    except DeviceTimeoutError as exc:
                        note(actx, f"warning: {exc}")
    inv = Inventory(actx.sysfs_root)
    sessions = [sessions_db.from_sid(s.sid) for s in sessions]
    devices = []
    for s in sessions:
        for d in s.devices:
            if lun is not None and d.lun != lun:
                continue
            info = inv.describe(s, d)
            if info is None:
                continue
            devices.append(
                {
                    "lun": info.lun,
                    "device": info.devnode,
                    "by_path": info.by_path,
                    "wwn": info.wwn,
                    "size_bytes": info.size_bytes,
                    "multipath": f"/dev/{info.multipath}" if info.multipath else None,
                    "sid": s.sid,
                }
            )
    result = {"target": target, "sessions": [_session_row(s) for s in sessions], "devices": devices}
    if actx.json:
        emit(actx, result)
        return
    emit(
        actx,
        devices,
        [
            Column("sid", "SID"),
            Column("lun", "LUN"),
            Column("device", "DEVICE"),
            Column("size_bytes", "SIZE"),
            Column("wwn", "WWN"),
            Column("by_path", "BY-PATH"),
        ],
        title=f"logged in to {target} (sessions {', '.join(str(s.sid) for s in sessions)})",
    )


def _any_disk(sessions_db: Any, sid: int) -> bool | None:
    from iscsikit.errors import NoSuchSessionError

    try:
        s = sessions_db.from_sid(sid)
    except NoSuchSessionError:
        return None
    return True if any(d.block is not None for d in s.devices) else None


def logout(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Argument(metavar="TARGET", help="Target IQN.")] = None,
    portal: Annotated[str | None, typer.Option("--portal", "-p", metavar="P", help="Only this portal.")] = None,
    sid: Annotated[int | None, typer.Option("--sid", metavar="N", help="Log out of this session id.")] = None,
    if_unused: Annotated[
        bool,
        typer.Option("--if-unused", help="Keep sessions with a mounted or held disk, or a connector attachment."),
    ] = False,
    iface: IfaceOpt = None,
) -> None:
    """Log out of a target's sessions (or one session by --sid). Not logged in is success.

    Logout is done per session id, so it works even when the node records are gone.
    """
    from iscsikit.errors import UsageError
    from iscsikit.names import validate_iscsi_name
    from iscsikit.session.sysfs import Sessions

    actx = AppContext.of(ctx)
    if (target is None) == (sid is None):
        raise UsageError("give a TARGET or --sid N (one of them)")
    adm = _iscsiadm(actx)
    sessions_db = Sessions(actx.sysfs_root)
    if sid is not None:
        if target is not None or portal is not None:
            raise UsageError("--sid cannot be combined with TARGET or --portal")
        candidates = [s for s in sessions_db.all() if s.sid == sid]
        if not candidates:
            note(actx, f"session {sid} is not logged in")
    else:
        assert target is not None
        validate_iscsi_name(target, "TARGET", strict=False)
        p = _portal(portal) if portal else None
        candidates = sessions_db.find(target, p, iface)
        if not candidates:
            note(actx, f"no session for {target}{' at ' + portal if portal else ''}: nothing to do")
    logged_out: list[int] = []
    kept: list[dict[str, Any]] = []
    for s in candidates:
        reason = _busy_reason(actx, s) if if_unused else None
        if reason:
            kept.append({"sid": s.sid, "reason": reason})
            continue
        adm.logout_session(s.sid)
        logged_out.append(s.sid)
    result = {"target": target, "logged_out": logged_out, "kept": kept}
    if actx.json:
        emit(actx, result)
        return
    for k in kept:
        note(actx, f"kept session {k['sid']}: {k['reason']}")
    for n in logged_out:
        note(actx, f"{'would log' if actx.dry_run else 'logged'} out of session {n}")


def _busy_reason(actx: AppContext, session: IscsiSession) -> str | None:
    from iscsikit.connector.state import StateStore
    from iscsikit.devices.inventory import Inventory

    inv = Inventory(actx.sysfs_root)
    for dev in session.devices:
        info = inv.describe(session, dev)
        if info is None:
            continue
        if info.mountpoints:
            return f"{info.devnode} is mounted on {', '.join(info.mountpoints)}"
        if info.holders:
            return f"{info.devnode} is held by {', '.join(info.holders)}"
    for att in StateStore(actx.state_dir).all():
        if att.spec.target == session.target and any(p.sid == session.sid for p in att.paths):
            return f"connector attachment {att.volume_id} uses it"
    return None
