"""``iscsikit device list``: every iSCSI disk with its session, LUN, size, WWN and users."""

from __future__ import annotations

from typing import Annotated

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, emit

app = typer.Typer(help="iSCSI block devices (from sysfs, /dev/disk and mountinfo).", no_args_is_help=True)


def _size(value: object) -> str:
    if not isinstance(value, int):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


@app.command("list")
def list_(
    ctx: typer.Context,
    target: Annotated[str | None, typer.Option("--target", "-T", metavar="IQN", help="Only this target.")] = None,
) -> None:
    """List iSCSI disks: device, session, LUN, size, WWN, by-path, holders, mount points."""
    from iscsikit.devices.inventory import Inventory
    from iscsikit.names import validate_iscsi_name

    actx = AppContext.of(ctx)
    if target is not None:
        validate_iscsi_name(target, "--target", strict=False)
    rows = [d.to_json() for d in Inventory(actx.sysfs_root).devices() if target is None or d.target == target]
    emit(
        actx,
        rows,
        [
            Column("device", "DEVICE"),
            Column("sid", "SID"),
            Column("target", "TARGET"),
            Column("lun", "LUN"),
            Column("size_bytes", "SIZE", _size),
            Column("wwn", "WWN"),
            Column("by_path", "BY-PATH"),
            Column("holders", "HOLDERS"),
            Column("mountpoints", "MOUNTED"),
        ],
        title="iSCSI devices",
    )
