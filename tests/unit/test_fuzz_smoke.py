"""A short libFuzzer run of every fuzz harness (fuzz/, docs/fuzzing.md): CI's fuzzing step.

Each harness runs in a child process (libFuzzer ends its process on a crash) over its committed
seeds, with a fixed seed and a bounded number of inputs, so a run is repeatable; the time cap
only guards a slow machine. A crash fails the test and prints the exception, the input (base64)
and how to replay it. Longer runs are done by hand with ``scripts/fuzz``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from fuzz._common import HARNESSES
from fuzz.run import REPO, run_harness

#: Inputs per harness: each costs a few seconds here (the harnesses differ ~50x in speed).
RUNS = {
    "pdu": 20000,
    "login": 2500,
    "replica_frames": 1500,
    "replica_auth": 10000,
    "db_record": 800,
    "restore_member": 15000,
}
#: A cap per harness on a slow machine; all of them together stay well under a minute.
SECONDS = 8


@pytest.mark.slow
@pytest.mark.parametrize("name", HARNESSES)
def test_a_short_fuzz_run_finds_no_crash(name: str, tmp_path: Path) -> None:
    result = run_harness(
        name, runs=RUNS[name], seconds=SECONDS, seed=1, work=tmp_path / "work", crashes=tmp_path / "crashes"
    )
    assert result.ok, f"fuzzing {name} broke an invariant:\n{result.reproducer()}"
    assert result.runs > 0 and result.coverage > 0, result.log[-2000:]


def test_the_examples_of_docs_fuzzing_md_run(tmp_path: Path) -> None:
    """Every ```sh block of docs/fuzzing.md runs as written (repeatable, short)."""
    doc = (REPO / "docs" / "fuzzing.md").read_text()
    sh_blocks = re.findall(r"```sh\n(.*?)```", doc, re.S)
    assert len(sh_blocks) == 1
    env = dict(os.environ, ISCSIKIT_FUZZ_OUT=str(tmp_path))
    output = ""
    for line in sh_blocks[0].strip().splitlines():
        proc = subprocess.run(line, shell=True, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{line}\n{proc.stdout}\n{proc.stderr[-3000:]}"
        output += proc.stdout + proc.stderr
    assert "pdu: 3000 runs" in output and "Executed fuzz/regressions/pdu/" in output, output[-3000:]
    assert not (tmp_path / "crashes").exists() or not any((tmp_path / "crashes").iterdir())
