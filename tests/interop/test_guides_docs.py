"""docs/user-guide.md: the examples that can run on the host run here, as written.

Each executable block of the guide is preceded by ``<!-- run: host -->`` or ``<!-- run: vm -->``.
The ``host`` blocks run in document order (state carries over, as for a reader following the
guide) against the REAL iscsiadm on a private database (tests.support.sandbox), in a private
network namespace (the fixed ports 3260, 3261, 9701 and 9702 on its own loopback), from one
scratch directory; ``/tmp/isk`` becomes a scratch path. ``sh`` blocks must exit 0 under
``bash -e``; ``console`` blocks are transcripts checked by tests.support.transcripts. Servers the
guide starts in the background (``&``) are stopped when the test ends. The ``vm`` blocks and
docs/csi-guide.md run in tests/kernel/test_guides_docs.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import tiers
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tiers import ROOT
from tests.support.transcripts import Transcript, check, transcripts

USER_GUIDE = ROOT / "docs" / "user-guide.md"
CSI_GUIDE = ROOT / "docs" / "csi-guide.md"
EXECUTABLE = ("console", "sh", "python")
VENV_BIN = Path(sys.executable).parent

_FENCE = re.compile(r"^(?:<!-- run: (\w+) -->\n)?```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)


@dataclass
class Example:
    tier: str | None  # "host", "vm" or None (no marker)
    lang: str
    body: str
    line: int


def examples(path: Path) -> list[Example]:
    """Every fenced block of a Markdown file, with the tier marker on the line before it."""
    text = path.read_text()
    return [
        Example(m.group(1), m.group(2), m.group(3), text.count("\n", 0, m.start()) + 1) for m in _FENCE.finditer(text)
    ]


def console_transcripts(path: Path, tier: str) -> list[Transcript]:
    """The console blocks of ``tier``, as tests.support.transcripts parses them (same order)."""
    marked = [e for e in examples(path) if e.lang == "console"]
    parsed = transcripts(path)
    assert len(marked) == len(parsed)
    return [t for e, t in zip(marked, parsed, strict=True) if e.tier == tier]


def test_every_executable_example_says_where_it_runs() -> None:
    text = USER_GUIDE.read_text()
    found = examples(USER_GUIDE)
    assert all(e.lang for e in found), [e.line for e in found if not e.lang]
    runnable = [e for e in found if e.lang in EXECUTABLE]
    assert len(runnable) == text.count("```console\n") + text.count("```sh\n") + text.count("```python\n")
    unmarked = [e.line for e in runnable if e.tier not in ("host", "vm")]
    assert not unmarked, f"docs/user-guide.md: executable blocks without <!-- run: host|vm --> at lines {unmarked}"
    assert {e.tier for e in runnable} == {"host", "vm"}
    # the CSI guide is all Python, run in the VM
    csi = examples(CSI_GUIDE)
    assert csi and {e.lang for e in csi} == {"python"}


@pytest.fixture
def host_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[IscsiadmSandbox, str]]:
    tiers.require_root(request)
    tiers.require(request, "iscsiadm", "unshare", "nsenter", "ip", "qemu-io")
    ns = f"iskguide{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        with IscsiadmSandbox() as sandbox:
            try:
                yield sandbox, ns
            finally:
                _stop_servers(ns)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _stop_servers(ns: str) -> None:
    """SIGTERM (then SIGKILL) every process the guide left running in our namespace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.strip():
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        else:
            return


def test_host_examples_run_in_order(host_env: tuple[IscsiadmSandbox, str], tmp_path: Path) -> None:
    sandbox, ns = host_env
    work = tmp_path / "work"
    work.mkdir()
    isk = tmp_path / "isk"
    out = tmp_path / "out.txt"

    def run(script: str, *, errexit: bool) -> tuple[int, str]:
        """bash in our netns and the sandbox's mount namespace; output through a file, not a
        pipe, because background servers keep their stdout open."""
        prologue = f"export PATH={VENV_BIN}:$PATH\ncd {work}\n"
        script = prologue + script.replace("/tmp/isk", str(isk))
        argv = ["nsenter", f"--net=/run/netns/{ns}", "nsenter", "-t", str(sandbox.pid), "-m", "--",
                "bash", *(["-e"] if errexit else []), "-c", script]  # fmt: skip
        with open(out, "w") as fh:
            res = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=300)
        return res.returncode, out.read_text()

    host_blocks = [e for e in examples(USER_GUIDE) if e.tier == "host"]
    consoles = iter(console_transcripts(USER_GUIDE, "host"))
    ran = 0
    for block in host_blocks:
        if block.lang == "sh":
            rc, text = run(block.body, errexit=True)
            assert rc == 0, f"docs/user-guide.md:{block.line}: the sh block exited {rc}:\n{block.body}\n---\n{text}"
        elif block.lang == "console":
            transcript = next(consoles)
            check(transcript, lambda script: run(script, errexit=False)[1])
        else:
            raise AssertionError(f"docs/user-guide.md:{block.line}: no host runner for {block.lang} blocks")
        ran += 1
    assert ran == len(host_blocks) >= 10
    # The replicated volume really held the data: both replica images are identical after the rebuild.
    images = [(work / f"r{i}" / "volume.img").read_bytes()[: 4 << 20] for i in (1, 2)]
    assert images[0] == images[1]
    assert images[0][: 1 << 20] == b"\x33" * (1 << 20) and images[0][1 << 20 :] == b"\x5a" * (3 << 20)
