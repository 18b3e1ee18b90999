"""The step runner: times each step, stops at the first failure, always runs the cleanup steps.

A step is a small function over a shared context that returns what it did (a detail line,
and optionally data for the JSON report) or raises. The runner turns that into a
:class:`~iscsikit.demo.report.StepResult`, tells an :class:`Observer` as it goes (the
terminal renderer, the guest's event stream), and returns the :class:`Report`::

    from iscsikit.demo.flow import Done, Step, run_flow
    from iscsikit.demo.render import PlainRenderer

    def hello(ctx):
        return Done("said hello", {"greeting": "hello"})

    def tidy(ctx):
        return "nothing to tidy"

    report = run_flow([Step("hello", "say hello", hello), Step("tidy", "tidy up", tidy, cleanup=True)],
                      ctx=None, observer=PlainRenderer())
    assert report.ok and [s.name for s in report.steps] == ["hello", "tidy"]

Rules: after a step fails, the remaining ordinary steps are skipped (named in
``report.skipped``) and every cleanup step still runs; a failing cleanup step does not stop
the next one. Ctrl-C (KeyboardInterrupt) fails the running step as "interrupted" and is
handled the same way: the cleanup steps run, and a second Ctrl-C only cuts short the cleanup
step it lands in.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from iscsikit.demo.report import Report, StepResult
from iscsikit.errors import IscsikitError

__all__ = ["Done", "NullObserver", "Observer", "Step", "run_flow"]

log = logging.getLogger("iscsikit.demo")

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Done:
    """What a step returns: a detail line for people, data for the JSON report."""

    detail: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Step(Generic[C]):
    """One step: ``name`` (stable, for the report), ``title`` (for people), the function."""

    name: str
    title: str
    run: Callable[[C], Done | str]
    cleanup: bool = False


class Observer(Protocol):
    """Told about the run as it happens (renderers, event streams)."""

    def note(self, message: str) -> None: ...
    def step_started(self, name: str, title: str) -> None: ...
    def step_progress(self, name: str, fraction: float, text: str) -> None: ...
    def step_finished(self, result: StepResult) -> None: ...


class NullObserver:
    """Observes nothing."""

    def note(self, message: str) -> None:
        pass

    def step_started(self, name: str, title: str) -> None:
        pass

    def step_progress(self, name: str, fraction: float, text: str) -> None:
        pass

    def step_finished(self, result: StepResult) -> None:
        pass


def describe_error(exc: BaseException) -> str:
    """The detail line of a failed step: our errors' own message, others with their type."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM)"
    if isinstance(exc, IscsikitError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def run_flow(
    steps: Sequence[Step[C]],
    ctx: C,
    observer: Observer,
    *,
    report: Report | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Run ``steps`` in order over ``ctx``; see the module docstring. Appends to ``report`` if given."""
    report = report if report is not None else Report()
    failed = False
    for step in steps:
        if failed and not step.cleanup:
            report.skipped.append(step.name)
            continue
        observer.step_started(step.name, step.title)
        started = clock()
        try:
            outcome = step.run(ctx)
        except KeyboardInterrupt as exc:
            report.interrupted = True
            result = StepResult(step.name, False, clock() - started, describe_error(exc), cleanup=step.cleanup)
        except Exception as exc:
            if not isinstance(exc, IscsikitError):
                log.debug("demo step %s failed:\n%s", step.name, traceback.format_exc())
            result = StepResult(step.name, False, clock() - started, describe_error(exc), cleanup=step.cleanup)
        else:
            done = outcome if isinstance(outcome, Done) else Done(str(outcome))
            result = StepResult(step.name, True, clock() - started, done.detail, dict(done.data), step.cleanup)
        failed = failed or not result.ok
        report.steps.append(result)
        try:
            observer.step_finished(result)
        except KeyboardInterrupt:
            report.interrupted = True
            failed = True
    return report
