"""``iscsikit demo``: the whole job end to end (see :mod:`iscsikit.demo` and docs/demo.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from iscsikit.cli.context import AppContext


def demo(
    ctx: typer.Context,
    size: Annotated[str, typer.Option("--size", metavar="SIZE", help="Size of the replicated volume.")] = "64M",
    replicas: Annotated[
        int, typer.Option("--replicas", metavar="N", min=2, max=9, help="Replica servers (one is killed).")
    ] = 3,
    workdir: Annotated[
        Path | None,
        typer.Option(
            "--workdir", metavar="DIR", help="Make the demo's temporary directory here (default: the system's)."
        ),
    ] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the temporary directory for inspection.")] = False,
    vm: Annotated[
        bool | None,
        typer.Option(
            "--vm/--no-vm",
            help="Run in a throwaway VM / on this host (default: a VM only when this kernel cannot log in).",
            show_default=False,
        ),
    ] = None,
    step_timeout: Annotated[
        float, typer.Option("--step-timeout", metavar="SECONDS", min=1, help="Give up on a step after this long.")
    ] = 300,
    boot_timeout: Annotated[
        float, typer.Option("--boot-timeout", metavar="SECONDS", min=1, help="Give up on the VM's boot after this.")
    ] = 300,
    events: Annotated[
        Path | None,
        typer.Option("--events", metavar="FILE", hidden=True, help="Also append each event as a JSON line here."),
    ] = None,
) -> None:
    """Run the whole flow end to end: replicated target, login, ext4, a replica killed and rebuilt, cleanup.

    Steps: target up with its replicas, discover, login, device found, mkfs + mount, write and
    checksum files, kill a replica (SIGKILL), keep writing, replica back and rebuilt, files and
    every replica's image verified, unmount, logout, clean, nothing left. Everything is real
    (open-iscsi, the kernel's initiator, ext4) and small (a 64 MiB volume). When this kernel
    has no iSCSI initiator the same flow runs in a throwaway VM (QEMU, no KVM: a few minutes).

    With --json: one report {"steps": [{"name", "ok", "seconds", "detail", "data"}], "ok", ...}
    on stdout, the step lines on stderr. Exit status: 0 when every step passed, 1 when one
    failed (the cleanup steps still ran), 130 when interrupted.
    """
    import signal
    import sys

    from iscsikit.cli.output import print_json
    from iscsikit.demo import DemoOptions, run_demo
    from iscsikit.demo.flow import NullObserver, Observer
    from iscsikit.demo.render import EventWriter, PlainRenderer, RichRenderer, Tee, summary
    from iscsikit.errors import UsageError
    from iscsikit.units import parse_size

    actx = AppContext.of(ctx)
    if actx.dry_run:
        raise UsageError("--dry-run: the demo only makes sense for real (it changes nothing outside its own target)")
    # checked before any step runs: a step failing on them would leave a half-run demo to clean up
    if workdir is not None and workdir.exists() and not workdir.is_dir():
        raise UsageError(f"--workdir {workdir}: not a directory; give a directory (or leave it out)")
    if events is not None and (events.is_dir() or not events.parent.is_dir()):
        what = "is a directory" if events.is_dir() else f"directory {events.parent} does not exist"
        raise UsageError(f"--events {events}: {what}; give a file in an existing directory")
    options = DemoOptions(
        size=parse_size(size, "--size"),
        replicas=replicas,
        workdir=workdir,
        keep=keep,
        vm=vm,
        step_timeout=step_timeout,
        boot_timeout=boot_timeout,
        db_root=actx.db_root,
        sysfs_root=actx.sysfs_root,
        proc_root=actx.proc_root,
        host=actx.host,
    )
    stream = sys.stderr if actx.json else sys.stdout
    screen: Observer
    rich = None
    if actx.quiet:
        screen = NullObserver()
    elif stream.isatty():
        from iscsikit.cli.output import console

        rich = screen = RichRenderer(console(stderr=actx.json))
    else:
        screen = PlainRenderer(stream)
    writer = EventWriter(events) if events is not None else None
    observer: Observer = Tee(screen, writer) if writer is not None else screen
    # SIGTERM is handled like Ctrl-C: the running step stops, the cleanup steps run.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run_demo(options, observer)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if rich is not None:
            rich.close()
        if writer is not None:
            writer.close()
    if actx.json:
        print_json(report.to_json())
    line = summary(report)
    if rich is not None:
        from rich.markup import escape

        mark = "[green]✓[/green]" if report.ok else "[bold red]✗[/bold red]"
        rich.console.print(f"{mark} {escape(line)}", highlight=False)
    elif not actx.quiet:
        stream.write(line + "\n")
    elif not report.ok:
        sys.stderr.write(line + "\n")
    if not report.ok:
        raise typer.Exit(130 if report.interrupted else 1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
