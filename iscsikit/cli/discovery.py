"""``iscsikit discovery list|show|new|set|delete``: SendTargets and iSNS discovery records
(``send_targets/`` and ``isns/``), read and written directly as iscsiadm 2.1.8 does.

Running a discovery is ``iscsikit discover``; these commands only manage the records.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated

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
from iscsikit.cli.output import Column, emit

if TYPE_CHECKING:
    from iscsikit.db.schema import RecordKind

app = typer.Typer(help="open-iscsi discovery records (SendTargets and iSNS servers).", no_args_is_help=True)

TypeOpt = Annotated[
    str | None,
    typer.Option("--type", "-t", metavar="st|isns", help="sendtargets (st) or isns (default: whichever exists)."),
]
PortalArg = Annotated[str, typer.Argument(metavar="ADDR[:PORT]", help="The discovery portal (3260, iSNS 3205).")]

COLUMNS = [
    Column("type", "TYPE"),
    Column("address", "ADDRESS"),
    Column("port", "PORT"),
    Column("nodes", "NODES"),
]


def _kind(text: str | None) -> RecordKind | None:
    from iscsikit.db.schema import RecordKind
    from iscsikit.errors import UsageError

    if text is None:
        return None
    value = text.lower()
    if value in ("st", "sendtargets", "send_targets"):
        return RecordKind.SENDTARGETS
    if value == "isns":
        return RecordKind.ISNS
    raise UsageError(f"--type must be st (sendtargets) or isns, not {text!r}")


@app.command("list")
def list_(ctx: typer.Context, type_: TypeOpt = None) -> None:
    """List discovery records and how many node records each one links to."""
    from iscsikit.db.layout import scan_discovery

    actx = AppContext.of(ctx)
    db = open_db(actx)
    kind = _kind(type_)
    scan = scan_discovery(db.root) if kind is None else scan_discovery(db.root, (kind,))
    counts = {ref: sum(1 for link in scan.links if link.discovery == ref) for ref in scan.records}
    rows = [{**ref.to_json(), "nodes": counts[ref]} for ref in scan.records]
    if not actx.quiet:
        for problem in scan.problems:
            sys.stderr.write(f"warning: {db.path(problem.relpath)}: {problem.message}\n")
    if actx.json:
        print_json_fast(rows)
    else:
        emit(actx, rows, COLUMNS, title=f"discovery records in {db.root}")


@app.command("show")
def show(
    ctx: typer.Context,
    portal: Annotated[str | None, typer.Argument(metavar="[ADDR[:PORT]]", help="Default: every record.")] = None,
    type_: TypeOpt = None,
    show_secrets: ShowSecretsOpt = False,
) -> None:
    """Every setting of discovery records, as ``iscsiadm -m discoverydb -o show`` prints them."""
    actx = AppContext.of(ctx)
    db = open_db(actx)
    kind = _kind(type_)
    refs = [db.discovery(portal, kind).ref] if portal is not None else db.discoveries(kind)
    records = [db.discovery(ref) for ref in refs]
    for record in records:
        report_problems(actx, record.problems)
    if actx.json:
        sys.stdout.write(json.dumps([r.to_json(show_secrets) for r in records]) + "\n")
        return
    write_show_text((str(r.ref), r.settings(show_secrets)) for r in records)


@app.command("new")
def new(
    ctx: typer.Context,
    portal: PortalArg,
    type_: TypeOpt = None,
    settings: SettingsArg = None,
    value_file: ValueFileOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reset an existing record to defaults.")] = False,
) -> None:
    """Create a discovery record without discovering (``iscsiadm -m discoverydb -o new``)."""
    from iscsikit.db.schema import RecordKind

    actx = AppContext.of(ctx)
    db = open_db(actx)
    with db.transaction() as tx:
        record = db.new_discovery(
            portal,
            _kind(type_) or RecordKind.SENDTARGETS,
            settings=parse_settings(settings, value_file),
            overwrite=overwrite,
        )
        result = tx.result
    report_result(actx, result, f"{'would add' if actx.dry_run else 'added'} discovery record {record.ref}")


@app.command("set")
def set_(
    ctx: typer.Context,
    portal: PortalArg,
    settings: SettingsArg = None,
    type_: TypeOpt = None,
    value_file: ValueFileOpt = None,
) -> None:
    """Change settings of a discovery record (``iscsiadm -m discoverydb -o update``)."""
    from iscsikit.errors import UsageError

    actx = AppContext.of(ctx)
    pairs = parse_settings(settings, value_file)
    if not pairs:
        raise UsageError("give at least one KEY=VALUE to set")
    result = open_db(actx).update_discovery(portal, pairs, _kind(type_))
    report_result(actx, result, f"{'would update' if actx.dry_run else 'updated'} discovery record {portal}")


@app.command("delete")
def delete(
    ctx: typer.Context,
    portal: PortalArg,
    type_: TypeOpt = None,
    prune_dangling: Annotated[
        bool, typer.Option("--prune-dangling", help="Also remove links to node records that no longer exist.")
    ] = False,
) -> None:
    """Delete a discovery record and every node record it discovered (as iscsiadm does)."""
    actx = AppContext.of(ctx)
    result = open_db(actx).delete_discovery(portal, _kind(type_), prune_dangling=prune_dangling)
    verb = "would delete" if actx.dry_run else "deleted"
    report_result(actx, result, f"{verb} discovery record {portal} and {len(result.nodes)} node record(s)")
