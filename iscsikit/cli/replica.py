"""``iscsikit replica serve|secret|info|status|add|remove``: replica servers and the replicated LUNs of a target."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from iscsikit.cli.context import AppContext
from iscsikit.cli.output import Column, emit, emit_mapping, note, progress

app = typer.Typer(help="Replica servers and the replicated LUNs of a running target.", no_args_is_help=True)

ControlOpt = Annotated[
    Path | None,
    typer.Option(
        "--control",
        envvar="ISCSIKIT_TARGET_CONTROL",
        metavar="SOCKET",
        help="The target's control socket (default /run/iscsikit/target.sock).",
    ),
]
TargetOpt = Annotated[
    str | None, typer.Option("--target", metavar="IQN", help="Target of the LUN (when several are served).")
]
LunOpt = Annotated[int | None, typer.Option("--lun", metavar="N", help="The replicated LUN (when several).")]


def _check_replica_dir(directory: Path, *, may_create: bool) -> None:
    """DIR as given: an existing directory, or (for serve) one that can be created there."""
    from iscsikit.errors import UsageError

    if directory.is_dir():
        return
    if directory.exists():
        raise UsageError(f"DIR {directory}: not a directory; give a replica directory")
    if not may_create:
        raise UsageError(f"DIR {directory}: does not exist; give the directory `iscsikit replica serve` uses")
    parent = next((p for p in directory.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise UsageError(f"DIR {directory}: {parent} is not a directory; choose another place for the replica")


@app.command("serve")
def serve(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Replica directory (created if missing).")],
    size: Annotated[
        str | None, typer.Option("--size", metavar="SIZE", help="Volume size (1G, 512M...); needed to create DIR.")
    ] = None,
    listen: Annotated[
        str, typer.Option("--listen", metavar="ADDR:PORT", help="Address to serve the replica protocol on.")
    ] = "127.0.0.1:9700",
    io_threads: Annotated[int, typer.Option("--io-threads", min=1, max=64, help="Threads for disk I/O.")] = 4,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            "--secret-file",
            metavar="FILE",
            help="The secret shared with the controllers (LUN spec secret_file=); make one with `replica secret`.",
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", metavar="FILE", help="TLS: this server's certificate (PEM).")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", metavar="FILE", help="TLS: its private key.")] = None,
    tls_ca: Annotated[
        Path | None,
        typer.Option("--tls-ca", metavar="FILE", help="TLS: the CA that signed the peers' certificates (required)."),
    ] = None,
    insecure_open: Annotated[
        bool,
        typer.Option(
            "--insecure-open", help="Serve a non-loopback address without a secret (anyone reaching it may write)."
        ),
    ] = False,
) -> None:
    """Serve one replica in the foreground until SIGTERM/SIGINT (logs to stderr)."""
    import logging

    from iscsikit.errors import InvalidNameError, UsageError
    from iscsikit.heap import keep_large_buffers
    from iscsikit.names import Portal, is_loopback
    from iscsikit.replica import auth
    from iscsikit.units import parse_size

    actx = AppContext.of(ctx)
    if not actx.quiet and actx.verbose == 0:
        logging.getLogger("iscsikit").setLevel(logging.INFO)
    _check_replica_dir(directory, may_create=True)
    want = parse_size(size, "--size") if size is not None else None
    try:
        portal = Portal.parse(listen, default_port=9700)
    except InvalidNameError as exc:
        raise UsageError(f"--listen: {exc}") from None
    secret = auth.read_secret_file(secret_file, "--secret-file") if secret_file is not None else None
    files = auth.tls_files(
        str(tls_cert) if tls_cert else None, str(tls_key) if tls_key else None, str(tls_ca) if tls_ca else None,
        "--tls-cert/--tls-key/--tls-ca",
    )  # fmt: skip
    security = auth.ServerSecurity(
        secret,
        auth.server_tls(*files, where="--tls-cert") if files else None,
        auth.Credentials(secret, auth.client_tls(*files, where="--tls-cert") if files else None),
    )
    if secret is None and not is_loopback(portal.address):
        if not insecure_open:
            raise UsageError(
                f"--listen {listen}: {portal.address} is not a loopback address and there is no --secret-file; "
                "give one (make it with `iscsikit replica secret`) or, on a trusted storage network only, "
                "--insecure-open"
            )
        logging.getLogger("iscsikit.replica.server").warning(
            "--insecure-open: serving %s without authentication; anyone who reaches it can claim and "
            "overwrite this replica", listen,
        )  # fmt: skip
    keep_large_buffers()
    _run(_serve(actx, directory, want, portal.address, portal.port, io_threads, security))


@app.command("secret")
def secret(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write it to a new FILE (mode 0600) instead of stdout."),
    ] = None,
) -> None:
    """Print a new random secret (32 random bytes, hex) for `replica serve --secret-file` and `secret_file=`."""
    from iscsikit.errors import UsageError
    from iscsikit.replica.auth import new_secret

    actx = AppContext.of(ctx)
    value = new_secret()
    if output is None:
        if actx.json:
            emit(actx, {"secret": value})
        else:
            typer.echo(value)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise UsageError(f"--output {output}: the file exists; a secret is never overwritten") from None
    except OSError as exc:
        raise UsageError(f"--output {output}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    if actx.json:
        emit(actx, {"file": str(output)})
    else:
        note(actx, f"wrote a new secret to {output}")


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        import asyncio

        asyncio.run(coro)


async def _serve(
    actx: AppContext, directory: Path, size: int | None, host: str, port: int, threads: int, security: Any
) -> None:
    import asyncio
    import signal

    from iscsikit.replica.server import ReplicaServer
    from iscsikit.replica.store import ReplicaStore

    store = ReplicaStore.open(directory, size)
    server = ReplicaServer(store, io_threads=threads, security=security)
    try:
        await server.start(host, port)
    except OSError as exc:
        store.close()
        from iscsikit.errors import ReplicaError

        raise ReplicaError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    note(actx, f"replica {store.meta.replica_id} of {directory} serving on {host}:{server.port}")
    await stopping.wait()
    note(actx, "stopping: flushing the replica")
    await server.close()


@app.command("info")
def info(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="Replica directory.")],
) -> None:
    """Show a replica directory's metadata (works while the server is stopped)."""
    from iscsikit.replica.store import DATA_FILE, read_meta

    actx = AppContext.of(ctx)
    _check_replica_dir(directory, may_create=False)
    meta = read_meta(directory)
    data = meta.to_json()
    try:
        data["allocated_bytes"] = (directory / DATA_FILE).lstat().st_blocks * 512
    except OSError:
        data["allocated_bytes"] = None
    if actx.json:
        emit(actx, data)
        return
    data["members"] = ", ".join(f"{m['address']} ({m['id'][:8]})" for m in meta.members)
    data["fenced_controllers"] = ", ".join(meta.fenced_controllers)
    emit_mapping(actx, data)


REPLICA_COLUMNS = [
    Column("target", "TARGET"),
    Column("lun", "LUN"),
    Column("address", "REPLICA"),
    Column("mode", "MODE"),
    Column("revision", "REVISION"),
    Column("rebuild_progress", "REBUILD", lambda v: "" if v is None else f"{100 * v:.0f}%"),
    Column("rebuild", "VIA", lambda v: "" if not v else str(v.get("via", ""))),  # pull or relay
    Column("last_error", "LAST ERROR"),
]


@app.command("status")
def status(ctx: typer.Context, control: ControlOpt = None) -> None:
    """Replicas of every replicated LUN of a running target: mode, revision, rebuild progress."""
    from iscsikit.target.control import request

    actx = AppContext.of(ctx)
    result = request(actx.control_socket(control), "replica status")
    if actx.json:
        emit(actx, result)
        return
    rows = [{"target": v["target"], "lun": v["lun"], **r} for v in result for r in v["replicas"]]
    emit(actx, rows, REPLICA_COLUMNS, title="Replicas")


@app.command("add")
def add(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(metavar="tcp://HOST:PORT", help="The replica server to add.")],
    target: TargetOpt = None,
    lun: LunOpt = None,
    control: ControlOpt = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the rebuild is done.")] = True,
    timeout: Annotated[float, typer.Option("--timeout", metavar="SECONDS", help="Give up waiting after.")] = 3600,
) -> None:
    """Add a replica to a replicated LUN; it rebuilds (write-only) and then serves reads."""
    from iscsikit.replica.spec import check_replica_address
    from iscsikit.target.control import request

    actx = AppContext.of(ctx)
    check_replica_address(address, "tcp://HOST:PORT")
    path = actx.control_socket(control)
    result = request(path, "replica add", {"address": address, "target": target, "lun": lun}, timeout=60)
    if wait:
        result = _wait_rebuilt(actx, path, result["target"], result["lun"], result["address"], timeout)
    if actx.json:
        emit(actx, result)
    else:
        note(actx, f"{result['address']}: {result['mode']}")


def _wait_rebuilt(actx: AppContext, path: Path, iqn: str, lun: int, address: str, timeout: float) -> dict[str, Any]:
    import time

    from iscsikit.errors import ReplicaError
    from iscsikit.target.control import request

    deadline = time.monotonic() + timeout
    with progress(actx, 1.0, f"rebuilding {address}") as bar:
        while True:
            volumes = request(path, "replica status")
            rep = next(
                (r for v in volumes if v["target"] == iqn and v["lun"] == lun for r in v["replicas"]
                 if r["address"] == address),
                None,
            )  # fmt: skip
            if rep is None:
                raise ReplicaError("was removed while rebuilding", address)
            bar.update(rep["rebuild_progress"] or 0.0)
            if rep["mode"] == "rw":
                return {"target": iqn, "lun": lun, **rep}
            if rep["mode"] == "err":
                raise ReplicaError(f"rebuild failed: {rep['last_error']}", address)
            if time.monotonic() > deadline:
                raise ReplicaError(f"still rebuilding after {timeout:g} s", address)
            time.sleep(0.2)


@app.command("remove")
def remove(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(metavar="tcp://HOST:PORT", help="The replica to stop using.")],
    target: TargetOpt = None,
    lun: LunOpt = None,
    control: ControlOpt = None,
) -> None:
    """Stop using a replica (its data stays on its server; it is no longer a member)."""
    from iscsikit.replica.spec import check_replica_address
    from iscsikit.target.control import request

    actx = AppContext.of(ctx)
    check_replica_address(address, "tcp://HOST:PORT")
    result = request(actx.control_socket(control), "replica remove", {"address": address, "target": target, "lun": lun})
    if actx.json:
        emit(actx, result)
    else:
        note(actx, f"removed {result['removed']}")
