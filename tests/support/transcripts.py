"""Run the ``console`` examples of README.md and docs/*.md, and check what they print.

A console block is a transcript::

    ```console
    $ iscsikit node list
    TARGET  ADDRESS ...
    $ iscsikit node set iqn.x node.startup=Automatic
    iscsikit: error: cannot set node.startup ...
    ```

Lines starting with ``$ `` are commands (a trailing ``\\`` continues one); the lines after a
command, up to the next one, are its expected output. Matching is by line: each expected line
must equal the printed line, except that a line of just ``...`` matches any number of lines
and ``...`` inside a line matches any text there (``/dev/sd...`` any disk, a line ending in
``...`` any line starting with the text before it). A command
whose expected output starts with ``iscsikit: error:`` must fail; every other must exit 0.
A command with no expected output only has to succeed.

Blocks are run in order, as one shell session per block (``cd`` and variables carry over
between commands of a block). Where they run (host sandbox, VM) is up to the test.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_FENCE = re.compile(r"^```console[^\n]*\n(.*?)^```", re.S | re.M)
ERROR_PREFIX = "iscsikit: error:"


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)

    @property
    def must_fail(self) -> bool:
        return bool(self.expected) and self.expected[0].startswith(ERROR_PREFIX)


@dataclass
class Transcript:
    path: Path
    line: int  # line of the opening fence, for messages
    steps: list[Step]

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def transcripts(path: Path) -> list[Transcript]:
    """Every console block of a Markdown file."""
    text = path.read_text()
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        steps: list[Step] = []
        pending = ""
        for raw in m.group(1).splitlines():
            if pending:
                pending += "\n" + raw
                if not raw.endswith("\\"):
                    steps.append(Step(pending))
                    pending = ""
                continue
            if raw.startswith("$ "):
                if raw.endswith("\\"):
                    pending = raw[2:]
                else:
                    steps.append(Step(raw[2:]))
            elif steps:
                steps[-1].expected.append(raw)
        for step in steps:
            while step.expected and not step.expected[-1].strip():
                step.expected.pop()
        out.append(Transcript(path, line, steps))
    return out


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Line matching with ``...`` wildcards (see the module docstring)."""

    def match(i: int, j: int) -> bool:
        if i == len(expected):
            return j == len(actual)
        exp = expected[i]
        if exp.strip() == "...":
            return any(match(i + 1, k) for k in range(j, len(actual) + 1))
        if j == len(actual):
            return False
        got = actual[j].rstrip()
        if "..." in exp:
            pattern = ".*".join(re.escape(part) for part in exp.rstrip().split("..."))
            ok = re.fullmatch(pattern, got, re.S) is not None
        else:
            ok = got == exp.rstrip()
        return ok and match(i + 1, j + 1)

    return match(0, 0)


def script_for(transcript: Transcript, marker: str = "@@STEP@@") -> str:
    """One bash script running every step, printing a marker line with the exit status after each."""
    parts = ["exec 2>&1"]
    for n, step in enumerate(transcript.steps):
        parts.append(step.command)
        parts.append(f"echo {shlex.quote(marker)} {n} $?")
    return "\n".join(parts) + "\n"


def check(transcript: Transcript, run: Callable[[str], str], marker: str = "@@STEP@@") -> None:
    """Run a transcript through ``run(script) -> combined output`` and assert every step."""
    output = run(script_for(transcript, marker))
    chunks: list[list[str]] = [[]]
    statuses: list[int] = []
    for line in output.splitlines():
        if line.startswith(marker + " "):
            statuses.append(int(line.split()[2]))
            chunks.append([])
        else:
            chunks[-1].append(line)
    assert len(statuses) == len(transcript.steps), (
        f"{transcript.where}: the script stopped after {len(statuses)} of {len(transcript.steps)} commands:\n{output}"
    )
    for step, status, printed in zip(transcript.steps, statuses, chunks, strict=False):
        shown = "\n".join(printed)
        if step.must_fail:
            assert status != 0, f"{transcript.where}: `{step.command}` should fail but exited 0:\n{shown}"
        else:
            assert status == 0, f"{transcript.where}: `{step.command}` exited {status}:\n{shown}"
        if step.expected:
            assert output_matches(step.expected, printed), (
                f"{transcript.where}: `{step.command}` printed\n{shown}\n--- expected\n" + "\n".join(step.expected)
            )
