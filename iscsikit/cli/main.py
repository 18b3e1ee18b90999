"""The ``iscsikit`` command: global options, command groups, error reporting.

Start-up is kept light (typer only); each command imports what it needs when it runs.
The output flags ``--json``, ``--dry-run``, ``-v`` and ``-q`` may also be written after the
command (``iscsikit node list --json``): :func:`main` moves them in front.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import typer._click.exceptions as typer_click_exceptions
from typer.core import TyperGroup

from iscsikit import __version__
from iscsikit.cli.context import AppContext

# Every command, loaded only when invoked: building typer's tree for all of them costs ~140 ms
# of start-up. name -> (module, attribute: a Typer group or a command function, one-line help
# for `iscsikit --help`; tests/unit/core/test_cli.py checks it matches the command's own help).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "doctor": (
        "iscsikit.cli.doctor",
        "doctor",
        "Check iscsiadm, iscsid, initiator name, kernel, DB root, lock dir, udev and multipathd.",
    ),
    "discover": (
        "iscsikit.cli.initiator",
        "discover",
        "Ask a portal (SendTargets) or an iSNS server which targets it offers.",
    ),
    "login": ("iscsikit.cli.initiator", "login", "Log in to a target (node records must exist: run discover first)."),
    "logout": ("iscsikit.cli.initiator", "logout", "Log out of a target's sessions (or one session by --sid)."),
    "session": ("iscsikit.cli.session", "app", "iSCSI sessions (read from sysfs; no iscsiadm or iscsid needed)."),
    "device": ("iscsikit.cli.device", "app", "iSCSI block devices (from sysfs, /dev/disk and mountinfo)."),
    "node": (
        "iscsikit.cli.node",
        "app",
        "open-iscsi node records (read and written directly, as iscsiadm 2.1.8 does).",
    ),
    "discovery": ("iscsikit.cli.discovery", "app", "open-iscsi discovery records (SendTargets and iSNS servers)."),
    "iface": ("iscsikit.cli.iface", "app", "open-iscsi iface records (default and iser are built in)."),
    "clean": (
        "iscsikit.cli.clean",
        "clean",
        "Garbage-collect iSCSI state: sessions, devices, multipath maps, records, attachments.",
    ),
    "restore": (
        "iscsikit.cli.clean",
        "restore",
        "Put back the records a clean removed (node, discovery and iface records, links, attachments).",
    ),
    "target": ("iscsikit.cli.target", "app", "The built-in userspace iSCSI target."),
    "replica": ("iscsikit.cli.replica", "app", "Replica servers and the replicated LUNs of a running target."),
    "config": ("iscsikit.cli.config_cmd", "app", "Show and edit iscsikit's config file (comments and order are kept)."),
    "demo": (
        "iscsikit.cli.demo",
        "demo",
        "Run the whole flow end to end: replicated target, login, ext4, a replica killed and rebuilt, cleanup.",
    ),
}


def _noop() -> None:
    pass


def build_command(name: str) -> Any:
    """Import one command's module and build its click command (a group for a Typer)."""
    module, attr, _ = COMMANDS[name]
    obj = getattr(importlib.import_module(module), attr)
    holder = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False)
    holder.callback()(_noop)  # always a group, so a one-command Typer stays a group too
    if isinstance(obj, typer.Typer):
        holder.add_typer(obj, name=name)
    else:
        holder.command(name)(obj)
    return typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]


class _RootGroup(TyperGroup):
    """Loads commands lazily, and turns IscsikitError from any command into the documented output."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS) + [n for n in super().list_commands(ctx) if n not in COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in COMMANDS:
            cmd = self.commands[cmd_name] = build_command(cmd_name)
        return cmd

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(name, help_text) for name, (_, _, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def make_context(self, info_name: Any, args: Any, parent: Any = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except _ClickUsageError as exc:
            if isinstance(exc, _NoArgsIsHelp):
                raise
            raise typer.Exit(report_error(_one_line_usage(exc), json_mode="--json" in args)) from None

    def invoke(self, ctx: typer.Context) -> object:  # type: ignore[override]
        from iscsikit.errors import IscsikitError

        try:
            return super().invoke(ctx)
        except (IscsikitError, _ClickUsageError) as exc:
            if isinstance(exc, _NoArgsIsHelp):
                raise
            obj = ctx.obj
            error = _one_line_usage(exc) if isinstance(exc, _ClickUsageError) else exc
            ctx.exit(report_error(error, json_mode=isinstance(obj, AppContext) and obj.json))


# typer (pinned <0.29) vendors click; its usage errors print the usage, a hint and the error on
# four lines. Every bad input is reported on one line instead: the command, what was wrong, where
# to look.
_ClickUsageError = typer_click_exceptions.UsageError
_NoArgsIsHelp = typer_click_exceptions.NoArgsIsHelpError


def _one_line_usage(exc: Any) -> Exception:
    from iscsikit.errors import UsageError

    path = exc.ctx.command_path if exc.ctx is not None else "iscsikit"
    where = path.partition(" ")[2]  # report_error already says "iscsikit: error:"
    message = exc.format_message().rstrip(".")
    return UsageError(f"{where + ': ' if where else ''}{message}; see '{path} --help'")


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
    # click's ParameterSource, by name (typer vendors click): where each option came from
    given = {"COMMANDLINE": "flag", "ENVIRONMENT": "env"}
    sources = {
        name: given[src.name]
        for name in ("db_root", "sysfs_root", "host", "config")
        if (src := ctx.get_parameter_source(name)) is not None and src.name in given
    }
    ctx.obj = AppContext(
        json=json_,
        dry_run=dry_run,
        verbose=verbose,
        quiet=quiet,
        config_path=config,
        db_root_flag=db_root,
        sysfs_root_flag=sysfs_root,
        host_flag=host,
        sources=sources,
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
        from iscsikit.cli.output import print_json

        payload = exc.to_json() if isinstance(exc, IscsikitError) else {}
        payload.update(code=code, name=name, message=message)
        print_json({"error": payload})  # like every other document: compact when piped
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
