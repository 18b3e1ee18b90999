"""``iscsikit session list|show|rescan``: sessions read from sysfs, no iscsiadm needed."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, emit, emit_mapping, note

app = typer.Typer(help="iSCSI sessions (read from sysfs; no iscsiadm or iscsid needed).", no_args_is_help=True)


def _disks(row: list[dict[str, Any]]) -> str:
    return ", ".join(f"{d['lun']}:{d['device'].removeprefix('/dev/')}" for d in row if d.get("device")) or "-"


SESSION_COLUMNS = [
    Column("sid", "SID"),
    Column("target", "TARGET"),
    Column("address", "ADDRESS"),
    Column("port", "PORT"),
    Column("tpgt", "TPGT"),
    Column("iface", "IFACE"),
    Column("state", "STATE"),
    Column("host", "HOST"),
    Column("devices", "DISKS", _disks),
]


@app.command("list")
def list_(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option("--target", "-T", metavar="IQN", help="Only this target.")] = None,
) -> None:
    """List sessions with their portal, state, SCSI host and disks."""
    from iscsikit.names import validate_iscsi_name
    from iscsikit.session.sysfs import Sessions

    actx = AppContext.of(ctx)
    if target is not None:
        validate_iscsi_name(target, "--target", strict=False)
    sessions = Sessions(actx.sysfs_root).find(target)
    emit(actx, [s.to_json() for s in sessions], SESSION_COLUMNS, title="iSCSI sessions")


@app.command("show")
def show(ctx: typer.Context, sid: Annotated[int, typer.Argument(metavar="SID")]) -> None:
    """Everything sysfs knows about one session: portals, iface, timeouts, parameters, LUNs."""
    from iscsikit.session.sysfs import Sessions

    actx = AppContext.of(ctx)
    s = Sessions(actx.sysfs_root).from_sid(sid)
    data = s.to_json()
    data["params"] = dict(s.params)
    data["connection"] = (
        {
            "persistent_address": s.connection.persistent_address,
            "persistent_port": s.connection.persistent_port,
            "address": s.connection.address,
            "port": s.connection.port,
            "state": s.connection.state,
            **s.connection.params,
        }
        if s.connection
        else None
    )
    data["host_info"] = {
        "transport": s.host.transport,
        "initiator_name": s.host.initiator_name,
        "ip_address": s.host.ip_address,
        "netdev": s.host.netdev,
    }
    if actx.json:
        emit(actx, data)
        return
    flat = {k: v for k, v in data.items() if k not in ("devices", "timeouts", "params", "connection", "host_info")}
    for group in ("timeouts", "params", "connection", "host_info"):
        for k, v in (data[group] or {}).items():
            flat[f"{group}.{k}"] = v
    emit_mapping(actx, flat)
    for d in data["devices"]:
        sys_line = f"lun {d['lun']}: {d['hctl']} {d['device'] or '(no disk)'} state={d['state']}"
        typer.echo(sys_line)


@app.command("rescan")
def rescan(
    ctx: typer.Context,
    sid: Annotated[int | None, typer.Argument(metavar="[SID]", help="Session id (default: every session).")] = None,
    lun: Annotated[int | None, typer.Option("--lun", metavar="N", help="Scan only this LUN (via sysfs).")] = None,
) -> None:
    """Rescan sessions for new or grown LUNs. With --lun only that LUN is scanned."""
    from iscsikit.devices.scsi import ScsiOps
    from iscsikit.iscsiadm import Iscsiadm
    from iscsikit.session.sysfs import Sessions

    actx = AppContext.of(ctx)
    sessions_db = Sessions(actx.sysfs_root)
    sessions = [sessions_db.from_sid(sid)] if sid is not None else sessions_db.all()
    done = []
    for s in sessions:
        if lun is not None:
            existing = s.device(lun)
            ops = ScsiOps(actx.runner(), actx.sysfs_root)
            if existing is not None and existing.block is not None:
                ops.rescan(existing.block.name)
            else:
                ops.scan_lun(s.host.host_no, 0, s.target_id or 0, lun)
        else:
            Iscsiadm(actx.runner(), timeout=actx.timeout("iscsiadm")).rescan_session(s.sid)
        done.append(s.sid)
    if actx.json:
        emit(actx, {"rescanned": done, "lun": lun})
    else:
        note(actx, f"rescanned sessions: {', '.join(map(str, done)) or 'none'}")
