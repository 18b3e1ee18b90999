"""``iscsikit target serve|status|acl``: the built-in userspace iSCSI target."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, emit, note

app = typer.Typer(help="The built-in userspace iSCSI target.", no_args_is_help=True)

ControlOpt = Annotated[
    Path | None,
    typer.Option(
        "--control",
        envvar="ISCSIKIT_TARGET_CONTROL",
        metavar="SOCKET",
        help="Control socket (default /run/iscsikit/target.sock, or the config's `control`).",
    ),
]


@app.command("serve")
def serve(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", envvar="ISCSIKIT_TARGET_CONFIG", metavar="FILE", help="Target TOML config."),
    ] = None,
    portal: Annotated[
        list[str] | None,
        typer.Option(
            "--portal",
            metavar="ADDR:PORT[,TPGT]",
            help="Listen here (repeat for several portals; default 127.0.0.1:3260). A non-loopback portal needs "
            "CHAP or an ACL on every target, or --insecure-open.",
        ),
    ] = None,
    iqn: Annotated[str | None, typer.Option("--iqn", metavar="IQN", help="Target name the flags apply to.")] = None,
    lun: Annotated[
        list[str] | None,
        typer.Option(
            "--lun",
            metavar="N=SPEC",
            help="A LUN: file:PATH[,size=SIZE], memory:size=SIZE or replicated:tcp://HOST:PORT,...[,size=SIZE].",
        ),
    ] = None,
    chap_user: Annotated[
        str | None, typer.Option("--chap-user", metavar="USER", help="CHAP user initiators must use.")
    ] = None,
    chap_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--chap-secret-file", metavar="FILE", help="File with the CHAP secret (or env ISCSIKIT_CHAP_SECRET)."
        ),
    ] = None,
    mutual_user: Annotated[
        str | None, typer.Option("--mutual-user", metavar="USER", help="Our user name for mutual CHAP.")
    ] = None,
    mutual_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--mutual-secret-file", metavar="FILE", help="Our mutual CHAP secret (or env ISCSIKIT_MUTUAL_SECRET)."
        ),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            metavar="INITIATOR_IQN",
            help="Only these initiators may log in (repeatable): ACL entries using the target's CHAP, if any.",
        ),
    ] = None,
    discovery_chap_user: Annotated[
        str | None,
        typer.Option("--discovery-chap-user", metavar="USER", help="CHAP user for discovery (SendTargets) sessions."),
    ] = None,
    discovery_chap_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--discovery-chap-secret-file",
            metavar="FILE",
            help="File with the discovery CHAP secret (or env ISCSIKIT_DISCOVERY_CHAP_SECRET).",
        ),
    ] = None,
    discovery_mutual_user: Annotated[
        str | None,
        typer.Option("--discovery-mutual-user", metavar="USER", help="Our user name for mutual discovery CHAP."),
    ] = None,
    discovery_mutual_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--discovery-mutual-secret-file",
            metavar="FILE",
            help="Our mutual discovery CHAP secret (or env ISCSIKIT_DISCOVERY_MUTUAL_SECRET).",
        ),
    ] = None,
    insecure_open: Annotated[
        bool,
        typer.Option(
            "--insecure-open",
            help="Serve targets without CHAP or ACL on non-loopback portals too (anyone reaching the port gets in; "
            "logged as a warning at start and at each login).",
        ),
    ] = False,
    control: ControlOpt = None,
    header_digest: Annotated[
        str | None,
        typer.Option("--header-digest", metavar="none|crc32c|any", help="Header digests to accept (default any)."),
    ] = None,
    data_digest: Annotated[
        str | None,
        typer.Option("--data-digest", metavar="none|crc32c|any", help="Data digests to accept (default any)."),
    ] = None,
    loop: Annotated[
        str, typer.Option("--loop", metavar="auto|asyncio|uvloop", help="Event loop (uvloop is faster when installed).")
    ] = "auto",
) -> None:
    """Run the target in the foreground until SIGTERM/SIGINT (then finish in-flight I/O, flush, exit).

    Secrets are read from files or the environment, never from the command line.
    """
    import logging

    from iscsikit.errors import ConfigError, UsageError
    from iscsikit.target.config import ServeConfig, load_config, merge_flags

    actx = AppContext.of(ctx)
    if not actx.quiet and actx.verbose == 0:
        logging.getLogger("iscsikit").setLevel(logging.INFO)
    if loop not in ("auto", "asyncio", "uvloop"):
        raise UsageError(f"--loop {loop!r}: choose auto, asyncio or uvloop")
    base = load_config(config) if config is not None else ServeConfig()
    cfg = merge_flags(
        base,
        portals=portal or (),
        iqn=iqn,
        luns=lun or (),
        allow=allow or (),
        chap_user=chap_user,
        chap_secret_file=chap_secret_file,
        mutual_user=mutual_user,
        mutual_secret_file=mutual_secret_file,
        control=control,
        header_digest=header_digest,
        data_digest=data_digest,
        discovery_chap_user=discovery_chap_user,
        discovery_chap_secret_file=discovery_chap_secret_file,
        discovery_mutual_user=discovery_mutual_user,
        discovery_mutual_secret_file=discovery_mutual_secret_file,
        insecure_open=insecure_open,
    )
    if not cfg.targets:
        raise ConfigError("no target to serve: give --iqn and --lun N=SPEC, or a --config with [[targets]]")
    runner = _loop_runner(loop)
    from iscsikit.heap import keep_large_buffers

    keep_large_buffers()
    runner(_serve(actx, cfg))


def _loop_runner(choice: str) -> Any:
    import asyncio

    if choice in ("auto", "uvloop"):
        try:
            import uvloop

            return uvloop.run
        except ImportError:
            if choice == "uvloop":
                from iscsikit.errors import UsageError

                raise UsageError("--loop uvloop: uvloop is not installed (pip install 'iscsikit[fast]')") from None
    return asyncio.run


async def _serve(actx: AppContext, cfg: Any) -> None:
    import asyncio
    import logging
    import signal

    from iscsikit.target.config import check_exposure
    from iscsikit.target.control import ControlServer
    from iscsikit.target.server import server_from_config

    server = server_from_config(cfg)  # every LUN checked: a bad one is the only line printed
    for warning in check_exposure(cfg):
        logging.getLogger("iscsikit.target").warning("%s", warning)
    await server.start()
    ctl = ControlServer(server, cfg.control) if cfg.control is not None else None
    try:
        if ctl is not None:
            await ctl.start()
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        ports = ", ".join(p.target_address() for p in server.portals)
        note(actx, f"serving {', '.join(server.targets)} on {ports}" + (f"; control {cfg.control}" if ctl else ""))
        await stopping.wait()
        note(actx, "stopping: finishing in-flight commands and flushing")
    finally:
        await server.stop()
        if ctl is not None:
            await ctl.stop()


TARGET_COLUMNS = [
    Column("iqn", "TARGET"),
    Column("portal", "PORTAL"),
    Column("sessions", "SESSIONS"),
    Column("luns", "LUNS", lambda luns: ", ".join(f"{x['lun']}:{x['backend']}:{x['size_bytes']}" for x in luns)),
]


@app.command("status")
def status(
    ctx: typer.Context,
    control: ControlOpt = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            metavar="SECONDS",
            help="Wait up to SECONDS for a target that is still starting (its control socket opens once it listens).",
        ),
    ] = 0.0,
) -> None:
    """Targets, sessions and LUNs of a running `target serve` (JSON with --json)."""
    from iscsikit.target.control import request

    actx = AppContext.of(ctx)
    path = actx.control_socket(control, may_be_missing=wait > 0)
    result = request(path, "status", wait=wait)
    if actx.json:
        emit(actx, result)
        return
    emit(actx, result["targets"], TARGET_COLUMNS, title="iSCSI targets")


acl_app = typer.Typer(
    help="Initiator ACLs of a running target (LIO's node ACLs), changed at run time.", no_args_is_help=True
)
app.add_typer(acl_app, name="acl")

TargetOpt = Annotated[
    str | None,
    typer.Option("--target", metavar="IQN", help="The target (default: the only one the process serves)."),
]

ACL_COLUMNS = [
    Column("initiator", "INITIATOR"),
    Column("chap_user", "CHAP USER", lambda v: v or "-"),
    Column("chap_secret", "SECRET", lambda v: v or "-"),
    Column("mutual_user", "MUTUAL USER", lambda v: v or "-"),
    Column("mutual_secret", "MUTUAL SECRET", lambda v: v or "-"),
    Column("sessions", "SESSIONS"),
]


def _which_target(path: Path, target: str | None) -> str:
    """``--target``, or the only target of the running process (exit 2 when there are several)."""
    from iscsikit.target.acl import resolve_target
    from iscsikit.target.control import request

    names = [t["iqn"] for t in request(path, "status")["targets"]]
    return resolve_target(names, target)


@acl_app.command("list")
def acl_list(ctx: typer.Context, control: ControlOpt = None, target: TargetOpt = None) -> None:
    """The target's ACL entries (secrets masked); JSON {"target", "open", "target_chap", "acls"} with --json."""
    from iscsikit.target.control import request

    actx = AppContext.of(ctx)
    path = actx.control_socket(control)
    result = request(path, "acl list", {"target": _which_target(path, target)})
    if actx.json:
        emit(actx, result)
        return
    if result["open"]:
        chap = " that knows its CHAP secret" if result["target_chap"] else ""
        note(actx, f"{result['target']} has no ACL: it admits every initiator name{chap}")
    emit(actx, result["acls"], ACL_COLUMNS, title=f"ACL of {result['target']}")


@acl_app.command("add")
def acl_add(
    ctx: typer.Context,
    initiator: Annotated[str, typer.Argument(metavar="INITIATOR_IQN", help="The initiator name to admit.")],
    control: ControlOpt = None,
    target: TargetOpt = None,
    chap_user: Annotated[
        str | None, typer.Option("--chap-user", metavar="USER", help="CHAP user this initiator must log in with.")
    ] = None,
    chap_secret_file: Annotated[
        Path | None, typer.Option("--chap-secret-file", metavar="FILE", help="File with that initiator's secret.")
    ] = None,
    mutual_user: Annotated[
        str | None, typer.Option("--mutual-user", metavar="USER", help="Our user name for mutual CHAP with it.")
    ] = None,
    mutual_secret_file: Annotated[
        Path | None, typer.Option("--mutual-secret-file", metavar="FILE", help="File with our mutual secret.")
    ] = None,
) -> None:
    """Admit INITIATOR_IQN, with its own CHAP (one-way or mutual) or the target's.

    The secrets are read here from their files and sent over the control socket, never on a
    command line. A target that had no ACL admits only its ACL's initiators from now on.
    """
    import base64

    from iscsikit.errors import UsageError
    from iscsikit.target.config import acl_entry, read_secret
    from iscsikit.target.control import request
    from iscsikit.target.proto.chap import ChapCredentials

    actx = AppContext.of(ctx)
    if (chap_user is None) != (chap_secret_file is None):
        raise UsageError("--chap-user and --chap-secret-file go together")
    if (mutual_user is None) != (mutual_secret_file is None):
        raise UsageError("--mutual-user and --mutual-secret-file go together")
    args: dict[str, Any] = {"initiator": initiator}
    chap = mutual = None
    if chap_user is not None and chap_secret_file is not None:
        secret = read_secret(file=chap_secret_file, where="--chap-secret-file")
        chap = ChapCredentials(chap_user, secret)
        args.update(chap_user=chap_user, chap_secret_b64=base64.b64encode(secret).decode())
    if mutual_user is not None and mutual_secret_file is not None:
        secret = read_secret(file=mutual_secret_file, where="--mutual-secret-file")
        mutual = ChapCredentials(mutual_user, secret)
        args.update(mutual_user=mutual_user, mutual_secret_b64=base64.b64encode(secret).decode())
    acl_entry(initiator, where="INITIATOR_IQN", chap=chap, mutual=mutual)  # the checks, before anything is sent
    path = actx.control_socket(control)
    args["target"] = _which_target(path, target)
    result = request(path, "acl add", args)
    if actx.json:
        emit(actx, result)
        return
    closed = result["sessions_closed"]
    others = f"; {closed} session(s) of others closed" if closed else ""
    note(actx, f"{result['target']}: {initiator} admitted{others}")


@acl_app.command("remove")
def acl_remove(
    ctx: typer.Context,
    initiator: Annotated[str, typer.Argument(metavar="INITIATOR_IQN", help="The initiator to refuse from now on.")],
    control: ControlOpt = None,
    target: TargetOpt = None,
) -> None:
    """Remove INITIATOR_IQN's ACL entry and close its sessions on the target (as LIO does)."""
    from iscsikit.target.config import check_initiator_name
    from iscsikit.target.control import request

    actx = AppContext.of(ctx)
    check_initiator_name(initiator, "INITIATOR_IQN")
    path = actx.control_socket(control)
    result = request(path, "acl remove", {"initiator": initiator, "target": _which_target(path, target)})
    if actx.json:
        emit(actx, result)
        return
    note(actx, f"{result['target']}: {initiator} removed; {result['sessions_closed']} session(s) closed")
