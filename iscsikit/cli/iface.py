"""``iscsikit iface list|show|new|set|delete``: open-iscsi iface records (``ifaces/``), read
and written directly as iscsiadm 2.1.8 does. ``default`` and ``iser`` are built in.

Setting an iface also updates the node records bound to it, and deleting it deletes them,
as iscsiadm does. Unlike iscsiadm 2.1.8, ``set`` needs no kernel module.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.node import (
    SettingsArg,
    ShowSecretsOpt,
    ValueFileOpt,
    open_db,
    parse_settings,
    print_json_fast,
    report_problems,
    report_result,
    write_show_text,
)
from iscsikit.cli.output import Column, confirm, emit

app = typer.Typer(help="open-iscsi iface records (default and iser are built in).", no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(metavar="NAME", help="The iface name (1-64 characters).")]

COLUMNS = [
    Column("name", "NAME"),
    Column("transport", "TRANSPORT"),
    Column("hwaddress", "HWADDRESS"),
    Column("ipaddress", "IPADDRESS"),
    Column("netdev", "NETDEV"),
    Column("initiatorname", "INITIATOR"),
]


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List ifaces as ``iscsiadm -m iface`` does: stored ones, then default and iser."""
    from iscsikit.db.layout import scan_ifaces

    actx = AppContext.of(ctx)
    db = open_db(actx)
    rows = []
    for ref in db.ifaces():
        record = db.iface(ref.name)
        report_problems(actx, record.problems)
        rows.append(record.summary())
    if not actx.quiet:
        for problem in scan_ifaces(db.root)[1]:
            sys.stderr.write(f"warning: {db.path(problem.relpath)}: {problem.message}\n")
    if actx.json:
        print_json_fast(rows)
    else:
        emit(actx, rows, COLUMNS, title=f"ifaces in {db.root}")


@app.command("show")
def show(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(metavar="[NAME]", help="Default: every iface.")] = None,
    show_secrets: ShowSecretsOpt = False,
) -> None:
    """Every setting of an iface, as ``iscsiadm -m iface -I NAME -o show`` prints them."""
    actx = AppContext.of(ctx)
    db = open_db(actx)
    names = [name] if name is not None else [r.name for r in db.ifaces()]
    records = [db.iface(n) for n in names]
    for record in records:
        report_problems(actx, record.problems)
    if actx.json:
        sys.stdout.write(json.dumps([r.to_json(show_secrets) for r in records]) + "\n")
        return
    write_show_text((f"iface {r.name}", r.settings(show_secrets)) for r in records)


@app.command("new")
def new(
    ctx: typer.Context,
    name: NameArg,
    settings: SettingsArg = None,
    value_file: ValueFileOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reset an existing iface to defaults.")] = False,
) -> None:
    """Create an iface record (``iscsiadm -m iface -I NAME -o new [-n KEY -v VALUE]...``)."""
    actx = AppContext.of(ctx)
    db = open_db(actx)
    with db.transaction() as tx:
        db.new_iface(name, settings=parse_settings(settings, value_file), overwrite=overwrite)
        result = tx.result
    report_result(actx, result, f"{'would add' if actx.dry_run else 'added'} iface {name}")


@app.command("set")
def set_(ctx: typer.Context, name: NameArg, settings: SettingsArg = None, value_file: ValueFileOpt = None) -> None:
    """Change an iface and the node records bound to it (``iscsiadm -m iface -o update``)."""
    from iscsikit.errors import UsageError

    actx = AppContext.of(ctx)
    pairs = parse_settings(settings, value_file)
    if not pairs:
        raise UsageError("give at least one KEY=VALUE to set")
    result = open_db(actx).update_iface(name, pairs)
    bound = len(result.nodes)
    report_result(actx, result, f"{'would update' if actx.dry_run else 'updated'} iface {name} and {bound} node(s)")


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask when node records are bound to it.")] = False,
) -> None:
    """Delete an iface and every node record bound to it (as iscsiadm does)."""
    from iscsikit.errors import UsageError

    actx = AppContext.of(ctx)
    db = open_db(actx)
    bound = db.bound_nodes(name)
    if (
        bound
        and not actx.dry_run
        and not confirm(actx, f"Delete iface {name} and its {len(bound)} node record(s)?", yes)
    ):
        raise UsageError(f"not confirmed: {len(bound)} node records are bound to {name}; pass --yes")
    result = db.delete_iface(name)
    verb = "would delete" if actx.dry_run else "deleted"
    report_result(actx, result, f"{verb} iface {name} and {len(result.nodes)} node record(s)")
