"""How commands print: one JSON document, a rich table on a terminal, plain text in a pipe.

* ``--json``: exactly one JSON document on stdout and nothing else there (notes and
  progress go to stderr or are dropped).
* stdout is a terminal: rich tables and trees; colours unless ``NO_COLOR`` is set
  (rich honours it) or ``TERM=dumb``.
* stdout is a pipe or file: tab-separated lines with a header line, stable for ``cut``
  and ``awk``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from iscsikit.runner import MASK

if TYPE_CHECKING:
    from rich.console import Console

    from iscsikit.cli.context import AppContext


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: the row key, its header, and an optional formatter."""

    key: str
    header: str
    fmt: Callable[[Any], str] | None = None

    def cell(self, row: Mapping[str, Any]) -> str:
        value = row.get(self.key)
        if self.fmt is not None:
            return self.fmt(value)
        return _text(value)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(v) for v in value) if value else "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def print_json(data: Any) -> None:
    """One JSON document: indented for a person at a terminal, compact (and much faster:
    ``indent`` forces Python's pure-Python encoder) when piped to a program."""
    if sys.stdout.isatty():
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")


def emit(
    actx: AppContext,
    data: Any,
    columns: Sequence[Column] | None = None,
    title: str | None = None,
) -> None:
    """Print a listing (a list of mappings) or any JSON-able value in the invocation's mode."""
    if actx.json:
        print_json(data)
        return
    if isinstance(data, Mapping) and columns is None:
        emit_mapping(actx, data)
        return
    rows: list[Mapping[str, Any]] = list(data)
    if columns is None:
        keys = list(rows[0].keys()) if rows else []
        columns = [Column(k, k) for k in keys]
    if stdout_is_terminal():
        from rich.table import Table

        table = Table(title=title, show_lines=False, header_style="bold")
        for col in columns:
            table.add_column(col.header)
        for row in rows:
            table.add_row(*(col.cell(row) for col in columns))
        if not rows:
            from rich.markup import escape

            console().print(f"[dim]{escape(title) + ': ' if title else ''}nothing found[/dim]")
            return
        console().print(table)
    else:
        out = sys.stdout
        out.write("\t".join(col.header for col in columns) + "\n")
        for row in rows:
            out.write("\t".join(col.cell(row) for col in columns) + "\n")


def emit_mapping(actx: AppContext, mapping: Mapping[str, Any]) -> None:
    """Print one record as ``key = value`` lines (iscsiadm's own show format)."""
    if actx.json:
        print_json(mapping)
        return
    out = sys.stdout
    for key, value in mapping.items():
        out.write(f"{key} = {_text(value) if not isinstance(value, str) else value}\n")


def note(actx: AppContext, message: str) -> None:
    """A human message on stderr, printed as is (no rich markup: ``[fd00::5]`` is an address,
    not a style); silent with -q."""
    if actx.quiet:
        return
    if sys.stderr.isatty():
        console(stderr=True).print(message, markup=False)
    else:
        sys.stderr.write(message + "\n")


def confirm(actx: AppContext, question: str, yes: bool) -> bool:
    """True if ``yes`` was given, or the user says so on a terminal; never prompts when piped."""
    if yes:
        return True
    if not sys.stdin.isatty() or actx.json:
        return False
    import typer

    return bool(typer.confirm(question, default=False, err=True))


def mask_secret(value: str | None, show: bool) -> str | None:
    """``********`` for a non-empty secret unless ``show``."""
    if not value or show:
        return value
    return MASK


class _Progress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self, n: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def update(self, completed: float, total: float | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=total)


@contextmanager
def progress(actx: AppContext, total: float | None, label: str) -> Iterator[_Progress]:
    """A rich progress bar on a terminal (stderr); a no-op in pipes, with -q and --json."""
    if actx.quiet or actx.json or not sys.stderr.isatty() or os.environ.get("TERM") == "dumb":
        yield _Progress(None, None)
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield _Progress(bar, task)
