"""How a demo run is shown: rich lines on a terminal, plain lines in a pipe, an event stream.

All are :class:`~iscsikit.demo.flow.Observer`\\ s:

* :class:`RichRenderer`: a spinner on the running step, a progress bar while a step reports
  progress (the rebuild), and one line per finished step with ✓/✗ and its seconds;
* :class:`PlainRenderer`: one line per finished step (``ok``/``FAIL``, seconds, name,
  detail), stable for logs and ``grep``;
* :class:`EventWriter`: JSON lines in a file, which the demo in a VM writes and the host
  reads back (:class:`EventTail`, :func:`replay`) to show the guest's steps as they happen.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from iscsikit.demo.flow import Observer
from iscsikit.demo.report import Report, StepResult

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["EventTail", "EventWriter", "PlainRenderer", "RichRenderer", "Tee", "replay", "summary"]


def summary(report: Report) -> str:
    """One line saying how the run ended."""
    where = " in a VM" if report.vm else ""
    if report.ok:
        return f"demo passed{where}: {len(report.steps)} steps in {report.seconds:.1f} s"
    failed = report.first_failure
    if report.interrupted:
        head = "demo interrupted"
    elif failed is not None:
        head = f"demo FAILED at {failed.name}: {failed.detail}"
    else:
        head = "demo FAILED"
    if report.skipped:
        head += f" (skipped: {', '.join(report.skipped)})"
    return head


class PlainRenderer:
    """Plain lines (see the module docstring); ``stream`` defaults to stdout."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def _out(self) -> IO[str]:
        return self.stream if self.stream is not None else sys.stdout

    def note(self, message: str) -> None:
        self._out().write(message + "\n")
        self._out().flush()

    def step_started(self, name: str, title: str) -> None:
        pass

    def step_progress(self, name: str, fraction: float, text: str) -> None:
        pass

    def step_finished(self, result: StepResult) -> None:
        status = "ok" if result.ok else "FAIL"
        self._out().write(f"{status:<4} {result.seconds:7.1f}s  {result.name:<14} {result.detail}\n")
        self._out().flush()

    def close(self) -> None:
        pass


class RichRenderer:
    """Live spinner and progress bar, then ✓/✗ lines (see the module docstring)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._titles: dict[str, str] = {}

    def _live(self) -> Any:
        if self._progress is None:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                _optional_bar(),
                TextColumn("{task.fields[percent]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.start()
        return self._progress

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def step_started(self, name: str, title: str) -> None:
        self._titles[name] = title
        self._tasks[name] = self._live().add_task(title, total=None, percent="")

    def step_progress(self, name: str, fraction: float, text: str) -> None:
        task = self._tasks.get(name)
        if task is None:
            return
        desc = self._titles.get(name, name) + (f" [dim]({text})[/dim]" if text else "")
        self._live().update(task, total=1.0, completed=fraction, description=desc, percent=f"{100 * fraction:3.0f}%")

    def step_finished(self, result: StepResult) -> None:
        from rich.markup import escape

        task = self._tasks.pop(result.name, None)
        if task is not None:
            self._live().remove_task(task)
        title = self._titles.get(result.name, result.name)
        mark = "[green]✓[/green]" if result.ok else "[bold red]✗[/bold red]"
        detail = escape(result.detail)
        if not result.ok:
            detail = f"[red]{detail}[/red]"
        self.console.print(f"{mark} {escape(title):<46} [dim]{result.seconds:6.1f} s[/dim]  {detail}", highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _optional_bar() -> Any:
    """A progress bar only for tasks with a total (the rebuild); nothing for the others."""
    from rich.progress import BarColumn
    from rich.text import Text

    class OptionalBar(BarColumn):
        def render(self, task: Any) -> Any:
            return super().render(task) if task.total is not None else Text("")

    return OptionalBar(bar_width=30)


class EventWriter:
    """Appends each event as one JSON line to ``path`` (flushed at once, for a reader elsewhere)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def _emit(self, event: dict[str, Any]) -> None:
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()

    def note(self, message: str) -> None:
        self._emit({"event": "note", "message": message})

    def step_started(self, name: str, title: str) -> None:
        self._emit({"event": "start", "name": name, "title": title})

    def step_progress(self, name: str, fraction: float, text: str) -> None:
        self._emit({"event": "progress", "name": name, "fraction": fraction, "text": text})

    def step_finished(self, result: StepResult) -> None:
        self._emit({"event": "finish", "step": result.to_json()})

    def close(self) -> None:
        self._file.close()


class Tee:
    """Passes every event to each observer in turn."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers

    def note(self, message: str) -> None:
        for o in self.observers:
            o.note(message)

    def step_started(self, name: str, title: str) -> None:
        for o in self.observers:
            o.step_started(name, title)

    def step_progress(self, name: str, fraction: float, text: str) -> None:
        for o in self.observers:
            o.step_progress(name, fraction, text)

    def step_finished(self, result: StepResult) -> None:
        for o in self.observers:
            o.step_finished(result)


def replay(event: dict[str, Any], observer: Observer) -> StepResult | None:
    """Hand one event read back from an :class:`EventWriter` file to ``observer``.

    Returns the step result of a ``finish`` event (the caller keeps them, in case the
    writer dies before its report); unknown events are ignored.
    """
    kind = event.get("event")
    if kind == "note":
        observer.note(str(event.get("message", "")))
    elif kind == "start":
        observer.step_started(str(event["name"]), str(event.get("title") or event["name"]))
    elif kind == "progress":
        observer.step_progress(str(event["name"]), float(event["fraction"]), str(event.get("text", "")))
    elif kind == "finish":
        result = StepResult.from_json(event["step"])
        observer.step_finished(result)
        return result
    return None


class EventTail:
    """Reads the complete lines another process appended to an event file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read(self) -> list[dict[str, Any]]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            os.lseek(fd, self._offset, os.SEEK_SET)
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
        finally:
            os.close(fd)
        self._offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not ours; the writer only writes whole JSON lines
            if isinstance(event, dict):
                events.append(event)
        return events
