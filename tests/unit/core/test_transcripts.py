"""The transcript runner behind the README/docs example tests: parsing and matching must be strict."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.transcripts import check, output_matches, transcripts

DOC = """
Text.

```console
$ echo one
one
$ printf 'a\\nb\\nc\\n'
a
...
$ echo long \\
    continued
long continued
$ sh -c 'echo "iscsikit: error: nope" >&2; exit 3'
iscsikit: error: nope
$ true
```

```sh
not a transcript
```
"""


def test_parse(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text(DOC)
    (t,) = transcripts(md)
    assert t.where == "x.md:4"
    assert [s.command for s in t.steps] == [
        "echo one",
        "printf 'a\\nb\\nc\\n'",
        "echo long \\\n    continued",
        "sh -c 'echo \"iscsikit: error: nope\" >&2; exit 3'",
        "true",
    ]
    assert t.steps[1].expected == ["a", "..."] and t.steps[3].must_fail and t.steps[4].expected == []


def test_passing_transcript_runs(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text(DOC)
    (t,) = transcripts(md)
    check(t, lambda script: subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout)


@pytest.mark.parametrize(
    "body",
    [
        "$ echo one\ntwo\n",  # wrong output
        "$ false\n",  # fails though it should succeed
        "$ true\niscsikit: error: x\n",  # succeeds though it should fail
        "$ printf 'a\\nb\\n'\na\n",  # extra line not covered by ...
    ],
)
def test_failing_transcripts_fail(tmp_path: Path, body: str) -> None:
    md = tmp_path / "x.md"
    md.write_text(f"```console\n{body}```\n")
    (t,) = transcripts(md)
    with pytest.raises(AssertionError):
        check(t, lambda script: subprocess.run(["bash", "-c", script], capture_output=True, text=True).stdout)


def test_matching_rules() -> None:
    assert output_matches(["x", "...", "z"], ["x", "y1", "y2", "z"])
    assert output_matches(["x", "...", "z"], ["x", "z"])
    assert output_matches(["start..."], ["start and more"])
    assert not output_matches(["start..."], ["other"])
    assert not output_matches(["x"], ["x", "y"])
    assert output_matches(["...\t1\t/dev/sd...\t64.0 MiB"], ["12\t1\t/dev/sdab\t64.0 MiB"])
    assert not output_matches(["...\t1\t/dev/sd...\t64.0 MiB"], ["12\t1\t/dev/vda\t64.0 MiB"])
    assert not output_matches(["a...b"], ["a-b-c"])
    assert output_matches(["a.b (x)..."], ["a.b (x) and more"]) and not output_matches(["a.b (x)..."], ["aXb (x)"])
