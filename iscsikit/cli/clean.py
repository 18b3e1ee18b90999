"""``iscsikit clean`` and ``iscsikit restore``: garbage-collect iSCSI state, plan first, with a backup.

The command parses its flags into a :class:`~iscsikit.clean.plan.Selection`, surveys the
host, prints the plan, and only with ``--yes`` carries it out (see :mod:`iscsikit.clean`).
Everything heavy is imported inside the functions: CLI start-up stays fast.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, emit, note, print_json, progress, stdout_is_terminal

if TYPE_CHECKING:
    from iscsikit.clean.apply import ApplyReport
    from iscsikit.clean.plan import Plan, Selection

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d|w)?", re.IGNORECASE)
_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_KIND_TITLES = {
    "flush-map": "Flush multipath maps",
    "remove-device": "Flush and remove SCSI devices",
    "logout": "Log out sessions",
    "delete-node": "Delete node records",
    "delete-link": "Delete dangling links",
    "delete-discovery": "Delete discovery records",
    "delete-iface": "Delete iface records",
    "delete-entry": "Delete entries that are not records",
    "delete-config": "Delete configuration files",
    "delete-attachment": "Delete connector attachment records",
}


def parse_duration(text: str, flag: str = "--older-than") -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``2h``, ``1d``, ``1h30m``; UsageError naming the flag otherwise.

    >>> parse_duration("1h30m"), parse_duration("45")
    (5400.0, 45.0)
    """
    from iscsikit.errors import UsageError

    compact = text.strip().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(compact):
        m = _DURATION_RE.match(compact, pos)
        if m is None or m.end() == pos:
            break
        total += float(m.group(1)) * _UNITS[(m.group(2) or "").lower()]
        pos = m.end()
    if not compact or pos != len(compact):
        raise UsageError(f"{flag} {text!r} is not a duration; write e.g. 90, 90s, 10m, 2h, 1d or 1h30m")
    return total


def _selection(
    target: list[str] | None,
    portal: list[str] | None,
    stale_only: bool,
    older_than: str | None,
    unreachable: bool,
    desired: Path | None,
    keep: list[str] | None,
    reset: bool,
    keep_config: bool,
    force: bool,
) -> Selection:
    from iscsikit.clean.desired import load_desired
    from iscsikit.clean.plan import Selection
    from iscsikit.errors import InvalidNameError, UsageError
    from iscsikit.names import Portal

    if desired is not None and (target or portal or stale_only or unreachable):
        raise UsageError("--desired reconciles the whole host; it cannot be combined with --target, --portal, "
                         "--stale-only or --unreachable (use --keep to protect more)")  # fmt: skip
    if older_than is not None and not stale_only:
        raise UsageError("--older-than only applies with --stale-only")
    if not keep_config and not reset:
        raise UsageError("--no-keep-config only applies with --reset")
    portals = []
    for text in portal or []:
        try:
            portals.append(Portal.parse(text))
        except InvalidNameError as exc:
            raise UsageError(f"--portal: {exc}") from None
    return Selection(
        targets=tuple(target or ()),
        portals=tuple(portals),
        stale_only=stale_only,
        older_than=parse_duration(older_than) if older_than is not None else 0.0,
        unreachable=unreachable,
        desired=load_desired(desired) if desired is not None else None,
        keep=tuple(keep or ()),
        reset=reset,
        keep_config=keep_config,
        force=force,
    )


def clean(
    ctx: typer.Context,
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-T", metavar="GLOB", help="Only targets matching this glob (repeatable)."),
    ] = None,
    portal: Annotated[
        list[str] | None,
        typer.Option("--portal", "-p", metavar="ADDR[:PORT][,TPGT]", help="Only this portal (repeatable)."),
    ] = None,
    stale_only: Annotated[
        bool,
        typer.Option("--stale-only", help="Only failing sessions (and what they leave), dead LUNs and orphans."),
    ] = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="With --stale-only: failing for at least this long (90s, 10m, 2h, 1d). Default 0.",
        ),
    ] = None,
    unreachable: Annotated[
        bool, typer.Option("--unreachable", help="Only sessions and records whose portal does not answer TCP.")
    ] = False,
    probe_timeout: Annotated[
        float, typer.Option("--probe-timeout", metavar="SECONDS", help="TCP probe timeout for --unreachable.")
    ] = 2.0,
    desired: Annotated[
        Path | None,
        typer.Option("--desired", metavar="FILE", help="Keep what this list names, remove the rest ('-': stdin)."),
    ] = None,
    keep: Annotated[
        list[str] | None,
        typer.Option("--keep", metavar="GLOB", help="Never touch targets matching this glob (repeatable)."),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Full reset: also remove every record and the record directories.")
    ] = False,
    keep_config: Annotated[
        bool,
        typer.Option(
            "--keep-config/--no-keep-config", help="With --reset: keep initiatorname.iscsi and iscsid.conf (default)."
        ),
    ] = True,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Carry the plan out (without it: print the plan only).")] = (
        False
    ),
    backup: Annotated[
        Path | None,
        typer.Option("--backup", metavar="FILE", help="Where to write the backup tarball (default: in the state dir)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also remove what is mounted, open or held (data loss!).")
    ] = False,
) -> None:
    """Garbage-collect iSCSI state: sessions, devices, multipath maps, records, attachments.

    Without a selector everything goes (decommission); --target/--portal/--stale-only/
    --unreachable narrow it; --desired keeps what a list names and removes the rest; --keep
    is never touched. Without --yes (or with --dry-run) only the plan is printed.

    Order: multipath maps are flushed, SCSI devices flushed and removed, sessions logged
    out, then records deleted. Nothing is unmounted: a device that is mounted, open or held
    blocks its session (the plan says by what) unless --force. Every removed record is
    first copied to a backup tarball; iscsikit restore BACKUP puts it back.

    Exit status: 0 when the plan was printed, or applied in full (or there was nothing to
    do); 1 when some actions were blocked or failed (the rest was done; run again after
    fixing, it converges); 2 for a usage error.
    """
    from iscsikit.clean.collect import collect
    from iscsikit.clean.plan import plan as make_plan
    from iscsikit.cli.node import open_db
    from iscsikit.errors import UsageError

    actx = AppContext.of(ctx)
    sel = _selection(target, portal, stale_only, older_than, unreachable, desired, keep, reset, keep_config, force)
    if probe_timeout <= 0:
        raise UsageError(f"--probe-timeout {probe_timeout:g}: must be more than 0 seconds")
    if backup is not None and not backup.parent.is_dir():
        raise UsageError(f"--backup {backup}: directory {backup.parent} does not exist; create it or choose another")
    db = open_db(actx)

    def probe_only(t: str | None, _portal: Any) -> bool:
        from fnmatch import fnmatchcase

        return t is None or not any(fnmatchcase(t, g) for g in sel.keep)

    survey = collect(
        db,
        sysfs_root=actx.sysfs_root,
        proc_root=actx.proc_root,
        state_dir=actx.state_dir,
        probe_timeout=probe_timeout if unreachable else None,
        probe_filter=probe_only,
        remember_failures=not actx.dry_run,
    )
    the_plan = make_plan(survey, sel)
    if not yes or actx.dry_run:
        _print_plan(actx, the_plan)
        if the_plan.actions and not actx.json:
            runnable = len(the_plan.runnable)
            note(actx, f"{'Would carry out' if actx.dry_run else 'Run again with --yes to carry out'} "
                       f"{runnable} action(s).")  # fmt: skip
        return
    report = _apply(actx, db, the_plan, backup, force)
    _print_report(actx, the_plan, report)
    if not report.ok:
        raise typer.Exit(1)


def _apply(actx: AppContext, db: Any, the_plan: Plan, backup: Path | None, force: bool) -> ApplyReport:
    from iscsikit.clean.apply import Executor
    from iscsikit.iscsiadm import Iscsiadm

    runner = actx.runner()
    executor = Executor(
        db,
        runner=runner,
        iscsiadm=Iscsiadm(runner, timeout=actx.timeout("iscsiadm")),
        sysfs_root=actx.sysfs_root,
        proc_root=actx.proc_root,
        state_dir=actx.state_dir,
        force=force,
        lock_timeout=actx.timeout("lock"),
        backup_path=backup,
        argv=["iscsikit", *sys.argv[1:]],
    )
    with progress(actx, len(the_plan.actions), "cleaning") as bar:
        return executor.apply(the_plan, on_step=lambda _o: bar.advance())


# ---- output -----------------------------------------------------------------------------------

_PLAN_COLUMNS = [
    Column("order", "ORDER"),
    Column("kind", "KIND"),
    Column("target", "TARGET"),
    Column("portal", "PORTAL"),
    Column("detail", "DETAIL"),
    Column("blocked_by", "BLOCKED BY"),
]
_RESULT_COLUMNS = [
    Column("order", "ORDER"),
    Column("kind", "KIND"),
    Column("status", "STATUS"),
    Column("target", "TARGET"),
    Column("detail", "DETAIL"),
    Column("message", "MESSAGE"),
]


def _print_plan(actx: AppContext, the_plan: Plan) -> None:
    if actx.json:
        print_json({**the_plan.to_json(), "applied": False})
        return
    for line in the_plan.notes:
        note(actx, f"note: {line}")
    if not the_plan.actions:
        note(actx, f"Nothing to clean ({the_plan.selection.describe()}).")
        return
    if stdout_is_terminal():
        _plan_tree(the_plan)
    else:
        emit(actx, [a.to_json() for a in the_plan.actions], _PLAN_COLUMNS)


def _plan_tree(the_plan: Plan) -> None:
    from rich.markup import escape
    from rich.tree import Tree

    from iscsikit.cli.output import console

    blocked = len(the_plan.blocked)
    head = f"[bold]Plan[/bold]: {len(the_plan.actions)} action(s)"
    if blocked:
        head += f", [red]{blocked} blocked[/red]"
    head += f" [dim]({escape(the_plan.selection.describe())}; DB {escape(the_plan.db_root)})[/dim]"
    tree = Tree(head)
    groups: dict[str, Any] = {}
    for a in the_plan.actions:
        kind = str(a.kind)
        if kind not in groups:
            groups[kind] = tree.add(f"[bold]{_KIND_TITLES.get(kind, kind)}[/bold]")
        where = " ".join(x for x in (a.target, a.portal) if x)
        line = f"{a.order}. {escape(a.detail)}" + (f" [dim]{escape(where)}[/dim]" if where else "")
        node = groups[kind].add(line if not a.blocked else f"[red]{line}[/red]")
        for reason in a.blocked_by:
            node.add(f"[red]blocked: {escape(reason)}[/red]")
    console().print(tree)


def _print_report(actx: AppContext, the_plan: Plan, report: ApplyReport) -> None:
    counts = report.counts()
    if actx.json:
        print_json(
            {
                "actions": [o.to_json() for o in report.outcomes],
                "summary": {"total": len(report.outcomes), **counts},
                "selection": the_plan.selection.to_json(),
                "db_root": the_plan.db_root,
                "notes": the_plan.notes,
                "backup": report.backup,
                "applied": True,
            }
        )
        return
    for line in the_plan.notes:
        note(actx, f"note: {line}")
    if not report.outcomes:
        note(actx, f"Nothing to clean ({the_plan.selection.describe()}).")
        return
    rows = [o.to_json() for o in sorted(report.outcomes, key=lambda o: o.action.order)]
    emit(actx, rows, _RESULT_COLUMNS, title="clean")
    summary = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    note(actx, f"clean: {summary}" + (f"; backup of removed records: {report.backup}" if report.backup else ""))
    if report.backup:
        note(actx, f"undo with: iscsikit restore {report.backup}")


# ---- restore ------------------------------------------------------------------------------------


def restore(
    ctx: typer.Context,
    backup: Annotated[Path, typer.Argument(metavar="BACKUP", help="A tarball written by iscsikit clean.")],
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite records that changed since the backup was taken.")
    ] = False,
    include_config: Annotated[
        bool,
        typer.Option("--include-config", help="Also restore iscsid.conf and initiatorname.iscsi from the backup."),
    ] = False,
) -> None:
    """Put back the records a clean removed (node, discovery and iface records, links, attachments).

    Entries already present as in the backup are left alone, so restoring twice is
    harmless. An entry that exists with different content is a conflict: nothing is
    restored (exit status 1, the conflicts are listed) unless --force. Sessions and devices
    are not restored: log in again (iscsikit login, or iscsiadm -m node -L all).

    Only the record directories are written (nodes, send_targets, isns, static, fw, ifaces)
    and the connector's attachment records; links only as iscsiadm makes them; no path is
    followed through a link; setuid, setgid, sticky and world-writable bits are dropped.
    iscsid.conf and initiatorname.iscsi only with --include-config. A member that breaks a
    rule is named and nothing is restored.
    """
    from iscsikit.clean.backup import read_backup, restore_backup
    from iscsikit.cli.node import open_db

    actx = AppContext.of(ctx)
    data = read_backup(backup)
    db = open_db(actx)
    report = restore_backup(data, db, actx.state_dir, force=force, include_config=include_config)
    if actx.json:
        print_json({"backup": str(backup), **report.to_json()})
        return
    for line in report.notes:
        note(actx, f"note: {line}")
    verb = "would restore" if report.dry_run else "restored"
    count = len(report.restored)
    sys.stdout.write(
        f"{verb} {count} DB entr{'y' if count == 1 else 'ies'}"
        + (f" ({len(report.overwritten)} overwritten)" if report.overwritten else "")
        + f", {len(report.attachments_restored)} attachment record(s); "
        f"{len(report.unchanged) + len(report.attachments_unchanged)} already in place\n"
    )
    if actx.verbose:
        for path in report.restored:
            sys.stdout.write(f"  {path}\n")
