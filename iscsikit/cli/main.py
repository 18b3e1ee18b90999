"""The ``iscsikit`` command: global options, command groups, error reporting.

Start-up is kept light (typer only); each command imports what it needs when it runs.
The output flags ``--json``, ``--dry-run``, ``-v`` and ``-q`` may also be written after the
command (``iscsikit node list --json``): :func:`main` moves them in front.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from iscsikit import __version__
from iscsikit.cli import clean, config_cmd, device, discovery, doctor, iface, initiator, node, replica, session, target
from iscsikit.cli.context import AppContext


class _RootGroup(TyperGroup):
    """Turns IscsikitError from any command into the documented output and exit code."""

    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        from iscsikit.errors import IscsikitError

        try:
            return super().invoke(ctx)
        except IscsikitError as exc:
            obj = ctx.obj
            ctx.exit(report_error(exc, json_mode=isinstance(obj, AppContext) and obj.json))


app = typer.Typer(
    name="iscsikit",
    cls=_RootGroup,
    help=(
        "The iSCSI toolkit: open-iscsi's database, discovery, login and devices, cleanup, "
        "and a replicated userspace iSCSI target.\n\n"
        "The output flags --json, --dry-run, -v and -q may be given before or after the command."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"iscsikit {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    db_root: Annotated[
        Path | None,
        typer.Option(
            "--db-root", envvar="ISCSIKIT_DB_ROOT", metavar="DIR", help="open-iscsi DB root (default: detected)."
        ),
    ] = None,
    sysfs_root: Annotated[
        Path | None,
        typer.Option(
            "--sysfs-root", envvar="ISCSIKIT_SYSFS_ROOT", metavar="DIR", help="Where sysfs is mounted (default /sys)."
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            envvar="ISCSIKIT_HOST",
            metavar="ns|chroot:DIR|local",
            help="Where external commands run: local, ns (iscsid's namespaces) or chroot:DIR.",
        ),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would change; change nothing.")] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More logging (-vv: debug).")] = 0,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Only errors.")] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="ISCSIKIT_CONFIG",
            metavar="FILE",
            help="TOML config file (default /etc/iscsikit/config.toml if present).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Global options; see ``iscsikit COMMAND --help`` for each command."""
    if host is not None:
        from iscsikit.runner import HostMode

        HostMode.parse(host)  # fail early, with the flag named
    ctx.obj = AppContext(
        json=json_,
        dry_run=dry_run,
        verbose=verbose,
        quiet=quiet,
        config_path=config,
        db_root_flag=db_root,
        sysfs_root_flag=sysfs_root,
        host_flag=host,
    )
    _setup_logging(verbose, quiet)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("iscsikit")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False


# --- command groups -------------------------------------------------------------------
app.command("doctor")(doctor.doctor)
app.add_typer(config_cmd.app, name="config")
app.command("discover")(initiator.discover)
app.command("login")(initiator.login)
app.command("logout")(initiator.logout)
app.add_typer(session.app, name="session")
app.add_typer(device.app, name="device")
app.add_typer(target.app, name="target")
app.add_typer(replica.app, name="replica")
app.add_typer(node.app, name="node")
app.add_typer(discovery.app, name="discovery")
app.add_typer(iface.app, name="iface")
app.command("clean")(clean.clean)
app.command("restore")(clean.restore)


# --- entry point ----------------------------------------------------------------------
_HOISTED_FLAGS = frozenset({"--json", "--dry-run", "-q", "--quiet", "-v", "-vv", "-vvv", "--verbose"})


def hoist_global_flags(argv: list[str]) -> list[str]:
    """Move output flags written after the command in front of it (stops at ``--``)."""
    front: list[str] = []
    rest: list[str] = []
    for i, arg in enumerate(argv):
        if arg == "--":
            rest.extend(argv[i:])
            break
        (front if arg in _HOISTED_FLAGS else rest).append(arg)
    return front + rest


def report_error(exc: BaseException, json_mode: bool) -> int:
    """Print an error the way the CLI contract says; return the exit code."""
    from iscsikit.errors import IscsiadmError, IscsikitError

    if isinstance(exc, IscsiadmError):
        code, name = exc.error_code, exc.name
    elif isinstance(exc, IscsikitError):
        code, name = exc.exit_code, type(exc).__name__
    else:
        code, name = 1, type(exc).__name__
    message = str(exc)
    if json_mode:
        import json

        payload = exc.to_json() if isinstance(exc, IscsikitError) else {}
        payload.update(code=code, name=name, message=message)
        sys.stdout.write(json.dumps({"error": payload}, indent=2, default=str) + "\n")
    else:
        sys.stderr.write(f"iscsikit: error: {message}\n")
    return code if 0 < code < 256 else 1


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = hoist_global_flags(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="iscsikit", standalone_mode=True)
    except KeyboardInterrupt:
        sys.stderr.write("iscsikit: interrupted\n")
        sys.exit(130)
