"""README.md's tour, its library example and its other commands, run as written in the VM.

The console blocks are transcripts (tests/support/transcripts.py): each command must succeed and
print what the README shows. The python block needs the tour's target, so it runs between the
tour's set-up lines (replicas, target, ``target status --wait``) and its ``kill``. The README's
two ``sh`` blocks are the set-up commands: ``bash scripts/test`` is what CI runs, and
``bash scripts/demo`` runs in tests/kernel/test_demo.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.support.tiers import ROOT
from tests.support.transcripts import Transcript, check, transcripts

README = ROOT / "README.md"
WORKDIR = "/run/iscsikit-test/readme"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), re.S | re.M)


def sh_blocks() -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```", README.read_text(), re.S | re.M)


def runner(guest: Any) -> Any:
    def run(script: str) -> str:
        res = guest.vm.run(f"rm -rf {WORKDIR}; mkdir -p {WORKDIR}; cd {WORKDIR}\n{script}", timeout=900)
        print(res.stdout + res.stderr)  # shown with -s, and by pytest when the test fails
        return str(res.stdout + res.stderr)

    return run


def test_the_readme_has_what_this_file_runs() -> None:
    tour, more = transcripts(README)
    assert [s.command.split()[1] for s in tour.steps[:3]] == ["replica"] * 3
    assert "target serve" in tour.steps[3].command and "target status" in tour.steps[4].command
    assert tour.steps[-1].command.startswith("kill ")
    assert len(python_blocks()) == 1
    assert [b.strip() for b in sh_blocks()] == ["bash scripts/demo", "bash scripts/test"]
    assert len(more.steps) >= 3


def test_the_tour_runs_as_written(guest: Any) -> None:
    tour, _ = transcripts(README)
    check(tour, runner(guest))
    assert guest.sessions() == []


def test_the_library_example_runs_against_the_tour_s_target(guest: Any) -> None:
    tour, _ = transcripts(README)
    setup = Transcript(tour.path, tour.line, tour.steps[:5])
    (code,) = python_blocks()
    script = "\n".join(s.command for s in setup.steps) + "\n"
    script += f"python - <<'EOF'\n{code}EOF\nrc=$?\nkill %4 %1 %2 %3; wait\nexit $rc\n"
    res = guest.vm.run(f"rm -rf {WORKDIR}; mkdir -p {WORKDIR}; cd {WORKDIR}\n{script}", timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    device, size = res.stdout.split()[-2:]
    assert re.fullmatch(r"/dev/sd[a-z]+", device) and size == str(64 << 20), res.stdout
    assert guest.sessions() == []  # disconnect logged out: no other volume used the session


def test_more_commands_run_and_doctor_is_all_green_in_the_vm(guest: Any) -> None:
    _, more = transcripts(README)
    check(more, runner(guest))
    doc = json.loads(guest.sh("iscsikit doctor --json").stdout)
    checks = doc["checks"] if isinstance(doc, dict) else doc
    bad = [c for c in checks if not c["ok"]]
    assert checks and not bad, bad
