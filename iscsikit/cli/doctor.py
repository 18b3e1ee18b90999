"""``iscsikit doctor``: can this host do iSCSI, and what to fix if not."""

from __future__ import annotations

from typing import Annotated

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, emit, note


def _ok(value: object) -> str:
    return "ok" if value else "FAIL"


def doctor(
    ctx: typer.Context,
    fix: Annotated[
        bool, typer.Option("--fix", help="Apply the safe fixes (lock dir, initiator name, modprobe).")
    ] = False,
) -> None:
    """Check iscsiadm, iscsid, initiator name, kernel, DB root, lock dir, udev and multipathd.

    Exits 0 when every check passes, 1 otherwise. Each check has a fix hint.
    """
    from iscsikit.doctor import DoctorEnv, apply_fixes, run_checks

    actx = AppContext.of(ctx)
    env = DoctorEnv(
        runner=actx.runner(),
        sysfs_root=actx.sysfs_root,
        proc_root=actx.proc_root,
        db_root=actx.db_root,
        lock_dir=actx.lock_dir,
    )
    checks = run_checks(env)
    if fix:
        for line in apply_fixes(env, checks):
            note(actx, ("would: " if actx.dry_run else "fixed: ") + line)
        if not actx.dry_run:
            checks = run_checks(env)
    emit(
        actx,
        [c.to_json() for c in checks],
        [
            Column("check", "CHECK"),
            Column("ok", "STATUS", _ok),
            Column("detail", "DETAIL"),
            Column("fix", "FIX", lambda v: v or ""),
        ],
        title="iscsikit doctor",
    )
    if not all(c.ok for c in checks):
        raise typer.Exit(1)
