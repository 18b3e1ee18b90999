"""``iscsikit node list|show|new|set|delete``: open-iscsi's node records, read and written
directly (byte-compatible with iscsiadm 2.1.8, under its lock); no iscsiadm needed.

TARGET may be a glob (``'iqn.2026-11.example:*'``). Settings are ``KEY=VALUE`` with the
keys iscsiadm uses (``node.startup=automatic``); ``--value-file KEY=PATH`` reads a value
(a CHAP secret) from a file instead of the command line.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, confirm, emit, note, stdout_is_terminal

if TYPE_CHECKING:
    from iscsikit.db.database import Database
    from iscsikit.db.layout import NodeRef
    from iscsikit.db.models import NodeRecord, WriteResult
    from iscsikit.db.record import Issue

app = typer.Typer(
    help="open-iscsi node records (read and written directly, as iscsiadm 2.1.8 does).", no_args_is_help=True
)

TargetArg = Annotated[str, typer.Argument(metavar="TARGET", help="Target name, or a glob such as 'iqn.2026-11.x:*'.")]
OptTargetArg = Annotated[
    str | None, typer.Argument(metavar="[TARGET]", help="Target name or glob (default: every target).")
]
PortalOpt = Annotated[
    str | None,
    typer.Option("--portal", "-p", metavar="ADDR[:PORT][,TPGT]", help="Only this portal (port 3260 if omitted)."),
]
IfaceOpt = Annotated[str | None, typer.Option("--iface", "-I", metavar="NAME", help="Only this iface.")]
SettingsArg = Annotated[
    list[str] | None, typer.Argument(metavar="[KEY=VALUE]...", help="Settings, as iscsiadm names them.")
]
ValueFileOpt = Annotated[
    list[str] | None,
    typer.Option("--value-file", metavar="KEY=PATH", help="Read KEY's value from PATH (e.g. a CHAP secret)."),
]
ShowSecretsOpt = Annotated[bool, typer.Option("--show-secrets", help="Print CHAP secrets instead of ********.")]

NODE_COLUMNS = [
    Column("target", "TARGET"),
    Column("address", "ADDRESS"),
    Column("port", "PORT"),
    Column("tpgt", "TPGT", lambda v: "-" if v is None else str(v)),
    Column("iface", "IFACE"),
]


# ---- shared with the discovery and iface commands -----------------------------------------


def open_db(actx: AppContext) -> Database:
    """The Database for this invocation: --db-root (or detected), lock dir and timeout from config."""
    from iscsikit.db.database import Database

    root = actx.db_root
    return Database(
        root,
        lock_dir=actx.lock_dir,
        lock_timeout=actx.timeout("lock"),
        dry_run=actx.dry_run,
        runner=actx.runner() if root is None else None,
    )


def parse_settings(pairs: Iterable[str] | None, value_files: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``KEY=VALUE`` arguments (and ``--value-file KEY=PATH``) -> ordered pairs."""
    from iscsikit.errors import UsageError

    out: list[tuple[str, str]] = []
    for item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {item!r}")
        out.append((key.strip(), value))
    for item in value_files or []:
        key, sep, path = item.partition("=")
        if not sep or not key or not path:
            raise UsageError(f"--value-file expects KEY=PATH, got {item!r}")
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UsageError(f"--value-file {key}: cannot read {path}: {exc.strerror}") from exc
        out.append((key.strip(), text[:-1] if text.endswith("\n") else text))
    return out


def print_json_fast(data: Any) -> None:
    """One compact JSON document (the C encoder; indenting large listings is 10x slower)."""
    sys.stdout.write(json.dumps(data))
    sys.stdout.write("\n")


def report_problems(actx: AppContext, issues: Iterable[Issue]) -> int:
    """Problems of records go to stderr as ``file:line: message`` (also with --json)."""
    count = 0
    for issue in issues:
        count += 1
        if not actx.quiet:
            sys.stderr.write(f"{issue.severity}: {issue}\n")
    return count


def report_result(actx: AppContext, result: WriteResult, what: str) -> None:
    """Print what a write did: JSON, or a line per change, warnings on stderr."""
    for warning in result.warnings:
        note(actx, f"warning: {warning}")
    if actx.json:
        print_json_fast({"dry_run": actx.dry_run, **result.to_json()})
        return
    if actx.dry_run or actx.verbose:
        prefix = "would " if actx.dry_run else ""
        for path in result.written:
            note(actx, f"{prefix}write {path}")
        for path in result.removed:
            note(actx, f"{prefix}remove {path}")
    note(actx, what)


def write_show_text(records: Iterable[tuple[str, dict[str, str]]]) -> None:
    """``iscsiadm -o show`` format (pipes) or a rich table per record (terminals)."""
    from iscsikit.db.schema import BEGIN_RECORD, END_RECORD

    if stdout_is_terminal():
        from rich.table import Table

        from iscsikit.cli.output import console

        con = console()
        for title, settings in records:
            table = Table(title=title, show_header=False, title_justify="left")
            table.add_column("key", style="bold")
            table.add_column("value")
            for key, value in settings.items():
                table.add_row(key, value)
            con.print(table)
        return
    out = sys.stdout
    for _, settings in records:
        out.write(BEGIN_RECORD + "\n")
        out.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
        out.write(END_RECORD + "\n")


def _node_title(node: NodeRecord) -> str:
    return str(node.ref)


# ---- commands ----------------------------------------------------------------------------


@app.command("list")
def list_(ctx: typer.Context, target: OptTargetArg = None, portal: PortalOpt = None, iface: IfaceOpt = None) -> None:
    """List node records from the DB's directory names alone (no record is parsed)."""
    # Only the directory walk is imported: no record is read, so no lock either.
    from iscsikit.db.layout import filter_nodes, select_nodes
    from iscsikit.db.locate import locate_db_root

    actx = AppContext.of(ctx)
    root = locate_db_root(actx.db_root, runner=actx.runner() if actx.db_root is None else None).path
    scan = select_nodes(root, target)
    refs = filter_nodes(scan.nodes, portal, iface)
    if not actx.quiet:
        for problem in scan.problems:
            sys.stderr.write(f"warning: {root / problem.relpath}: {problem.message}\n")
    rows = [r.to_json() for r in refs]
    if actx.json:
        print_json_fast(rows)
    else:
        emit(actx, rows, NODE_COLUMNS, title=f"node records in {root}")


@app.command("show")
def show(
    ctx: typer.Context,
    target: OptTargetArg = None,
    portal: PortalOpt = None,
    iface: IfaceOpt = None,
    show_secrets: ShowSecretsOpt = False,
) -> None:
    """Every setting of matching node records, as ``iscsiadm -m node -o show`` prints them.

    A malformed record is reported (file:line on stderr, ``problems`` in JSON) and the
    others are still shown.
    """
    from iscsikit.errors import RecordNotFoundError

    actx = AppContext.of(ctx)
    db = open_db(actx)
    with _no_cyclic_gc():
        refs = db.nodes(target, portal, iface)
    if not refs and target is not None:
        raise RecordNotFoundError(f"no node record matches {target}")
    with _no_cyclic_gc():
        files = db.read_node_files(refs)  # all read (under the lock) before anything is printed
        _show_files(actx, db, files, show_secrets)


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Parsing 10,000 records allocates no reference cycles, but enough containers to make
    the cyclic collector rescan the growing heap over and over (about 40% of a `node show`)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _show_files(actx: AppContext, db: Database, files: list[tuple[NodeRef, bytes]], show_secrets: bool) -> None:
    if actx.json:
        out = sys.stdout
        out.write("[")
        batch: list[str] = []
        first = True
        for ref, data in files:
            node = db.node_record(ref, data)
            report_problems(actx, node.problems)
            batch.append(node.to_json_text(show_secrets))
            if len(batch) >= 256:
                out.write(("" if first else ",") + ",".join(batch))
                first, batch = False, []
        if batch:
            out.write(("" if first else ",") + ",".join(batch))
        out.write("]\n")
        return

    def records() -> Iterable[tuple[str, dict[str, str]]]:
        for ref, data in files:
            node = db.node_record(ref, data)
            report_problems(actx, node.problems)
            yield _node_title(node), node.settings(show_secrets)

    write_show_text(records())


@app.command("new")
def new(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="TARGET", help="Target name (iqn., eui. or naa.).")],
    portal: Annotated[str, typer.Option("--portal", "-p", metavar="ADDR[:PORT][,TPGT]", help="The portal (required).")],
    iface: IfaceOpt = None,
    settings: SettingsArg = None,
    value_file: ValueFileOpt = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Reset an existing record to defaults (as iscsiadm -o new does).")
    ] = False,
    lenient_name: Annotated[
        bool, typer.Option("--lenient-name", help="Accept a target name that is not RFC 7143-valid.")
    ] = False,
) -> None:
    """Create a node record (``iscsiadm -m node -o new``), then apply any KEY=VALUE settings.

    Without a tpgt in --portal the record is old style, as iscsiadm 2.1.8 writes it.
    """
    actx = AppContext.of(ctx)
    db = open_db(actx)
    with db.transaction() as tx:
        node = db.new_node(
            target,
            portal,
            iface,
            settings=parse_settings(settings, value_file),
            overwrite=overwrite,
            strict_names=not lenient_name,
        )
        result = tx.result
    report_result(actx, result, f"{'would add' if actx.dry_run else 'added'} node record {node.ref}")


@app.command("set")
def set_(
    ctx: typer.Context,
    target: TargetArg,
    settings: SettingsArg = None,
    portal: PortalOpt = None,
    iface: IfaceOpt = None,
    value_file: ValueFileOpt = None,
) -> None:
    """Change settings of matching node records (``iscsiadm -m node -o update``).

    iface.* settings are changed with ``iscsikit iface set``, which updates the nodes too.
    """
    actx = AppContext.of(ctx)
    pairs = parse_settings(settings, value_file)
    if not pairs:
        from iscsikit.errors import UsageError

        raise UsageError("give at least one KEY=VALUE to set")
    result = open_db(actx).update_nodes(pairs, target, portal, iface)
    verb = "would update" if actx.dry_run else "updated"
    report_result(actx, result, f"{verb} {len(result.nodes)} node record(s)")


@app.command("delete")
def delete(
    ctx: typer.Context,
    target: OptTargetArg = None,
    portal: PortalOpt = None,
    iface: IfaceOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete every node record.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask when several targets match.")] = False,
) -> None:
    """Delete matching node records with their discovery links (``iscsiadm -m node -o delete``)."""
    from iscsikit.errors import UsageError

    actx = AppContext.of(ctx)
    if target is None and not all_:
        raise UsageError("give a TARGET (or a glob), or --all")
    if target is not None and all_:
        raise UsageError("give a TARGET or --all, not both")
    db = open_db(actx)
    refs = db.nodes(target, portal, iface)
    targets = {r.target for r in refs}
    if (all_ or len(targets) > 1) and refs and not actx.dry_run:
        question = f"Delete {len(refs)} node record(s) of {len(targets)} target(s)?"
        if not confirm(actx, question, yes):
            raise UsageError(f"not confirmed: {len(refs)} records of {len(targets)} targets match; pass --yes")
    result = db.delete_nodes(target, portal, iface)
    verb = "would delete" if actx.dry_run else "deleted"
    report_result(actx, result, f"{verb} {len(result.nodes)} node record(s)")
