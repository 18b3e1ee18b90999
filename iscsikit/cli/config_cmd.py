"""``iscsikit config show|get|set``: iscsikit's own TOML config, edited with comments kept."""

from __future__ import annotations

from typing import Annotated

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, emit, note

app = typer.Typer(help="Show and edit iscsikit's config file (comments and order are kept).", no_args_is_help=True)


EffectiveOpt = Annotated[
    bool,
    typer.Option(
        "--effective",
        help="The values in effect for this run: global flags (--db-root, --sysfs-root, --host) and "
        "ISCSIKIT_* variables laid over the file; SOURCE says default, file, env or flag.",
    ),
]


@app.command("show")
def show(ctx: typer.Context, effective: EffectiveOpt = False) -> None:
    """Every setting with its value and where it came from (file or default).

    Global flags and environment variables (--host, --db-root, ISCSIKIT_DB_ROOT...) override
    these for the run they are given to; --effective shows them laid over the file.
    """
    actx = AppContext.of(ctx)
    rows = actx.effective() if effective else actx.config.effective()
    if actx.json:
        doc = {"path": str(actx.config.path), "settings": {r["key"]: r["value"] for r in rows}}
        if effective:
            doc["sources"] = {r["key"]: r["source"] for r in rows}
        emit(actx, doc)
        return
    emit(
        actx,
        rows,
        [
            Column("key", "KEY"),
            Column("value", "VALUE"),
            Column("source", "SOURCE"),
            Column("help", "MEANING"),
        ],
        title=f"iscsikit config ({actx.config.path})",
    )


@app.command("get")
def get(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted key, e.g. timeouts.login.")],
    effective: EffectiveOpt = False,
) -> None:
    """Print one setting's value from the config file, or its default (flags and environment
    variables given to a run override it for that run only: --effective shows that value)."""
    actx = AppContext.of(ctx)
    value = actx.config.get(key)  # checks the key
    if effective:
        value = next(r["value"] for r in actx.effective() if r["key"] == key)
    emit(actx, {key: value}) if actx.json else typer.echo(value)


@app.command("set")
def set_(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="Dotted key, e.g. timeouts.login.")],
    value: Annotated[str, typer.Argument(help="New value; checked against the key's type.")],
) -> None:
    """Set KEY to VALUE in the config file, creating it if needed; comments survive."""
    from iscsikit.config import Config

    actx = AppContext.of(ctx)
    cfg = Config.load(actx.config_path, must_exist=False)  # `set` may create the file
    stored = cfg.set(key, value)
    if actx.dry_run:
        note(actx, f"dry-run: would write {cfg.path}:")
        typer.echo(cfg.dumps(), nl=False)
        return
    cfg.save()
    if actx.json:
        emit(actx, {"path": str(cfg.path), "key": key, "value": stored})
    else:
        note(actx, f"{key} = {stored!r} written to {cfg.path}")
