"""Run the demo: here when this host can log in to iSCSI targets, else in a throwaway VM.

Example (what ``iscsikit demo --no-vm`` does, with the plain renderer)::

    from iscsikit.demo import DemoOptions, run_demo
    from iscsikit.demo.render import PlainRenderer

    report = run_demo(DemoOptions(vm=False), PlainRenderer())
    print(report.ok, [s.name for s in report.steps])
"""

from __future__ import annotations

from pathlib import Path

from iscsikit.demo.context import DemoContext, DemoOptions
from iscsikit.demo.flow import Observer, run_flow
from iscsikit.demo.report import Report, StepResult
from iscsikit.errors import UsageError

__all__ = ["initiator_missing", "run_demo", "run_local"]


class _Tracking:
    """Passes events on and keeps the context's current step name (for ``ctx.progress``)."""

    def __init__(self, ctx: DemoContext, inner: Observer) -> None:
        self.ctx = ctx
        self.inner = inner

    def note(self, message: str) -> None:
        self.inner.note(message)

    def step_started(self, name: str, title: str) -> None:
        self.ctx.step = name
        self.inner.step_started(name, title)

    def step_progress(self, name: str, fraction: float, text: str) -> None:
        self.inner.step_progress(name, fraction, text)

    def step_finished(self, result: StepResult) -> None:
        self.inner.step_finished(result)


def initiator_missing(options: DemoOptions) -> tuple[str, str | None] | None:
    """None when this host's kernel can log in (doctor's kernel-iscsi check passes); else
    (what is missing, how to fix it on this host)."""
    from iscsikit.doctor import DoctorEnv, check_kernel
    from iscsikit.runner import Runner

    runner = Runner(options.host)
    env = DoctorEnv(runner, options.sysfs_root, options.proc_root, options.db_root, Path("/run/lock/iscsi"))
    check = check_kernel(env)
    if check.ok:
        if not runner.which("iscsiadm"):
            return "iscsiadm is not installed", "apt-get install open-iscsi (bash scripts/demo installs it)"
        return None
    return check.detail, check.fix


def run_local(options: DemoOptions, observer: Observer) -> Report:
    """The whole flow on this host (see :mod:`iscsikit.demo.steps`)."""
    from iscsikit.demo.steps import STEPS
    from iscsikit.runner import Runner

    if options.host != "local":
        raise UsageError(f"--host {options.host}: the demo runs its target and daemons here; use --host local")
    ctx = DemoContext(options, Runner("local"))
    tracking = _Tracking(ctx, observer)
    ctx.observer = tracking
    workdir = ctx.make_workdir()
    observer.note(
        f"iscsikit demo: {options.replicas} replicas of {options.size >> 20} MiB, target {ctx.iqn}, "
        f"work directory {workdir}"
    )
    report = Report(workdir=str(workdir))
    report.extra["iqn"] = ctx.iqn
    return run_flow(STEPS, ctx, tracking, report=report)


def run_demo(options: DemoOptions, observer: Observer) -> Report:
    """Decide where the demo runs (``options.vm``: None = a VM only when needed) and run it."""
    from iscsikit.demo.vmmode import run_in_vm

    if options.vm is False:
        return run_local(options, observer)
    missing = initiator_missing(options)
    if options.vm is None and missing is None:
        return run_local(options, observer)
    if missing is None:
        reason = "--vm was given"
    else:
        what, fix = missing
        reason = what  # doctor's words: "kernel X has no iSCSI initiator: <what is missing>"
        if fix and fix.startswith("modprobe"):
            reason += f" (to run the demo on this host instead: {fix.split(' (')[0]})"
    return run_in_vm(options, observer, reason)
