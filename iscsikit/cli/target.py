"""``iscsikit target serve|status``: the built-in userspace iSCSI target."""

from __future__ import annotations

import os
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
        typer.Option("--portal", metavar="ADDR:PORT[,TPGT]", help="Listen here (repeat for several portals)."),
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
        typer.Option("--allow", metavar="INITIATOR_IQN", help="Only these initiators may log in (repeatable)."),
    ] = None,
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
    import signal

    from iscsikit.target.control import ControlServer
    from iscsikit.target.server import server_from_config

    server = server_from_config(cfg)
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
    from iscsikit.target.config import DEFAULT_CONTROL
    from iscsikit.target.control import request

    actx = AppContext.of(ctx)
    path = control or Path(os.environ.get("ISCSIKIT_TARGET_CONTROL", str(DEFAULT_CONTROL)))
    result = request(path, "status", wait=wait)
    if actx.json:
        emit(actx, result)
        return
    emit(actx, result["targets"], TARGET_COLUMNS, title="iSCSI targets")
