"""The demo inside a throwaway VM, for hosts whose kernel has no iSCSI initiator.

The host boots a :class:`~iscsikit.vm.GuestVM` (this machine's kernel image under QEMU with
virtme-ng; open-iscsi, udev and the iscsi_tcp module ready inside) and runs the very same
flow in it: ``iscsikit --json demo --no-vm --events FILE`` in the guest. The guest appends
each event (step started, progress, step finished) to ``FILE`` in the directory both sides
share; the host tails it and shows the guest's steps as they happen, then takes the guest's
JSON report and puts its own steps around it: ``vm-boot`` first, ``vm-poweroff`` last (a
cleanup step: it runs after any failure, and checks that QEMU is gone). Everything the
demo made lives and dies with the guest; the host keeps nothing unless ``--keep``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iscsikit.demo.context import DemoOptions
from iscsikit.demo.flow import Done, Observer, Step, describe_error, run_flow
from iscsikit.demo.procs import iscsikit_argv
from iscsikit.demo.render import EventTail, replay
from iscsikit.demo.report import Report, StepResult
from iscsikit.errors import DemoStepError

if TYPE_CHECKING:
    from iscsikit.vm import GuestResult, GuestVM

__all__ = ["GUEST_EVENTS", "guest_argv", "run_in_vm"]

GUEST_EVENTS = "demo-events.jsonl"
GUEST_STEP = "demo-in-vm"  # reported only when the guest's own report is missing
INSTALL_HINT = "`bash scripts/demo` installs what the VM needs (QEMU, a kernel image, virtme-ng)"


@dataclass
class _VmContext:
    options: DemoOptions
    vm: GuestVM | None = None
    own_vm: bool = True
    own_dir: Path | None = None
    guest: dict[str, Any] = field(default_factory=dict)


def guest_argv(options: DemoOptions, events: Path) -> list[str]:
    """The demo's command line in the guest: the same flow, here, with events to ``events``."""
    argv = iscsikit_argv(
        "--json", "demo", "--no-vm", "--events", str(events),
        "--size", str(options.size), "--replicas", str(options.replicas),
        "--step-timeout", f"{options.step_timeout:g}",
    )  # fmt: skip
    if options.keep:
        argv.append("--keep")
    return argv


def run_in_vm(options: DemoOptions, observer: Observer, reason: str, *, vm: GuestVM | None = None) -> Report:
    """Boot a VM (or use the running ``vm`` given, which is left running) and run the demo in it."""
    report = Report(vm=True, vm_reason=reason)
    observer.note(
        f"{reason}.\nSo the demo runs the same flow inside a throwaway VM: this machine's kernel image under "
        "QEMU (virtme-ng), with open-iscsi in it. Nothing is installed or left on this host."
    )
    ctx = _VmContext(options, vm=vm, own_vm=vm is None)
    run_flow([Step("vm-boot", "boot a throwaway VM (QEMU, no KVM: slow)", _boot)], ctx, observer, report=report)
    if report.ok:
        try:
            _run_guest(ctx, observer, report)
        except KeyboardInterrupt:
            report.interrupted = True
    run_flow([Step("vm-poweroff", "power the VM off", _poweroff, cleanup=True)], ctx, observer, report=report)
    if ctx.own_dir is not None and options.keep:
        report.workdir = str(ctx.own_dir)
    return report


def _boot(ctx: _VmContext) -> Done:
    from iscsikit.vm import GuestVM

    if ctx.vm is not None:
        return Done(f"using the running VM (kernel {ctx.vm.info.get('kernel')})", {"reused": True})
    why = GuestVM.available()
    if why is not None:
        raise DemoStepError(f"cannot boot a VM here: {why}; {INSTALL_HINT}")
    opts = ctx.options
    parent = opts.workdir
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    ctx.own_dir = Path(tempfile.mkdtemp(prefix="iscsikit-demo-vm-", dir=parent or "/tmp")).resolve()
    vm = ctx.vm = GuestVM(workdir=ctx.own_dir, boot_timeout=opts.boot_timeout)
    vm.start()
    warnings = vm.info.get("warnings") or []
    if warnings:
        raise DemoStepError("the VM booted but its preparation had problems: " + "; ".join(map(str, warnings)))
    kernel = vm.info.get("kernel")
    return Done(
        f"kernel {kernel} up in {vm.boot_seconds or 0:.1f} s (QEMU, TCG); iscsid running, "
        f"initiator {vm.initiator_name}",
        {"kernel": kernel, "boot_seconds": vm.boot_seconds, "initiator": vm.initiator_name,
         "workdir": str(vm.workdir)},
    )  # fmt: skip


def _run_guest(ctx: _VmContext, observer: Observer, report: Report) -> None:
    vm = ctx.vm
    assert vm is not None
    opts = ctx.options
    events = vm.shared / GUEST_EVENTS
    events.unlink(missing_ok=True)
    argv = guest_argv(opts, events)
    from iscsikit.demo.steps import STEPS

    timeout = opts.step_timeout * (len(STEPS) + 1)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = vm.run(shlex.join(argv), timeout=timeout)
        except BaseException as exc:  # handed to the main thread
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=work, name="iscsikit-demo-guest", daemon=True)
    thread.start()
    tail = EventTail(events)
    streamed: list[StepResult] = []

    def pump() -> None:
        for event in tail.read():
            result = replay(event, observer)
            if result is not None:
                streamed.append(result)

    try:
        while thread.is_alive():
            thread.join(0.1)
            pump()
        pump()
    except KeyboardInterrupt:
        report.steps += streamed
        result = StepResult(GUEST_STEP, False, time.monotonic() - started,
                            "interrupted (Ctrl-C or SIGTERM): the VM goes, with everything in it")  # fmt: skip
        report.steps.append(result)
        observer.step_finished(result)
        raise
    guest = _guest_report(box)
    if isinstance(guest, Report):
        for result in guest.steps[len(streamed) :]:  # normally none: every step was streamed
            observer.step_finished(result)
        report.steps += guest.steps
        report.skipped += guest.skipped
        report.interrupted = report.interrupted or guest.interrupted
        report.extra.update({k: v for k, v in guest.extra.items() if k not in ("vm", "vm_reason")})
        report.extra["guest_workdir"] = guest.workdir
        if opts.keep and guest.workdir:
            _export_guest_workdir(vm, guest.workdir)
        return
    report.steps += streamed
    failure = StepResult(GUEST_STEP, False, time.monotonic() - started, guest)
    report.steps.append(failure)
    observer.step_finished(failure)


def _guest_report(box: dict[str, Any]) -> Report | str:
    """The guest's report, or what went wrong instead."""
    if "error" in box:
        return f"running the demo in the VM failed: {describe_error(box['error'])}"
    result: GuestResult = box["result"]
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("steps"), list):
        return Report.from_json(doc)
    stderr = "\n".join(result.stderr.strip().splitlines()[-15:])
    if isinstance(doc, dict) and "error" in doc:
        return f"the demo in the VM stopped with an error: {doc['error'].get('message')}"
    return f"the demo in the VM exited with status {result.returncode} without a report; its stderr ends:\n{stderr}"


def _export_guest_workdir(vm: GuestVM, workdir: str) -> None:
    """With --keep: the guest's work directory (logs, replica metadata; not the images) to the host."""
    dest = vm.shared / "guest-workdir"
    dest.mkdir(exist_ok=True)
    vm.run(
        f"tar -C {shlex.quote(workdir)} --exclude=volume.img -cf - . | tar -C {shlex.quote(str(dest))} -xf -",
        timeout=120,
    )


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _poweroff(ctx: _VmContext) -> Done:
    vm = ctx.vm
    if vm is None:
        return Done("no VM was started")
    if not ctx.own_vm:
        return Done("the VM was given to the demo; it stays running")
    pid = vm.pid
    vm.close()
    if pid is not None and _group_alive(pid):
        raise DemoStepError(f"QEMU (process group {pid}) is still running after the poweroff")
    detail = "QEMU stopped"
    if ctx.own_dir is not None:
        if ctx.options.keep:
            detail += f"; its directory is kept: {ctx.own_dir} (console.log, shared/)"
        else:
            shutil.rmtree(ctx.own_dir, ignore_errors=True)
            detail += f"; {ctx.own_dir} removed"
    return Done(detail, {"pid": pid})
