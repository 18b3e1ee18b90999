"""docs/database.md: its console session and Python example run against a private DB with the real iscsiadm."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.support import tiers
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tiers import ROOT
from tests.support.transcripts import check, transcripts

DOC = ROOT / "docs" / "database.md"
VENV_BIN = Path(sys.executable).parent


def test_console_session(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tiers.require_root(request)
    tiers.require(request, "iscsiadm", "unshare", "nsenter")
    (session,) = transcripts(DOC)
    with IscsiadmSandbox() as sandbox:

        def run(script: str) -> str:
            prologue = f"export PATH={VENV_BIN}:$PATH\ncd {tmp_path}\n"
            return sandbox.run(["bash", "-c", prologue + script], timeout=300).stdout

        check(session, run)


def test_python_example(request: pytest.FixtureRequest) -> None:
    tiers.require_root(request)
    tiers.require(request, "iscsiadm", "unshare", "nsenter")
    (code,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    with IscsiadmSandbox() as sandbox:
        res = sandbox.run([sys.executable, "-c", code], timeout=120)
        assert res.returncode == 0, res.stderr
        assert res.stdout == "iqn.2026-11.org.example:disk3 10.0.0.6:3260 default\n"
        assert not list((sandbox.db / "nodes").iterdir())  # the example cleaned up after itself
