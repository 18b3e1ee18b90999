"""``iscsikit demo`` for real: the README's main command run word for word, its JSON report checked step by step.

The first test runs ``bash scripts/demo --json`` on the host, as a user would: this host's
kernel has no initiator, so the demo boots its own throwaway VM and runs the flow in it
(``iscsikit --json demo --no-vm --events FILE`` in the guest), streaming the guest's steps to
stderr as they finish. The second makes a step fail on purpose in the kernel tier's VM and
checks that the cleanup steps still run, leave nothing behind, and the command exits 1.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from iscsikit.demo.steps import STEPS
from iscsikit.vm import GuestVM
from tests.support import tiers
from tests.support.tiers import ROOT

FLOW = [s.name for s in STEPS]
CLEANUP = [s.name for s in STEPS if s.cleanup]
NO_DEMO_PROCESS = "! pgrep -f 'iscsikit (replica|target) serve'"


def test_the_readme_main_command_runs_every_step(request: pytest.FixtureRequest) -> None:
    tiers.require_root(request)
    why = GuestVM.available()
    if why is not None:
        tiers.unavailable(request, f"cannot boot a VM: {why}")
    res = subprocess.run(["bash", "scripts/demo", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    doc = json.loads(res.stdout)
    failed = doc["failed_step"]
    assert res.returncode == 0 and doc["ok"], f"step {failed} failed:\n{res.stderr[-4000:]}"
    assert [s["name"] for s in doc["steps"]] == ["vm-boot", *FLOW, "vm-poweroff"]
    assert doc["vm"] is True and doc["skipped"] == [] and "no iSCSI initiator" in doc["vm_reason"]
    step = {s["name"]: s["data"] for s in doc["steps"]}

    iqn = step["target-up"]["iqn"]
    assert step["target-up"]["modes"] == ["rw", "rw", "rw"]
    offered = {(t["target"], t["portal"]) for t in step["discover"]["targets"]}
    assert offered == {(iqn, step["target-up"]["portal"] + ",1")}
    assert step["device"]["device"] == step["login"]["device"]
    assert step["device"]["size_bytes"] == 64 << 20 and step["device"]["lun"] == 1
    assert step["device"]["wwn"] and step["device"]["by_path"].endswith(f"{iqn}-lun-1")
    killed = step["kill-replica"]["replica"]
    assert step["kill-replica"]["modes"][1] == "err"
    assert step["write-degraded"]["modes"][1] != "rw"
    assert step["rebuild"]["replica"] == killed and step["rebuild"]["transitions"][-1] == "rw"
    assert step["rebuild"]["modes"] == ["rw", "rw", "rw"]
    assert step["rebuild"]["rebuild"]["via"] in ("pull", "relay")
    assert step["verify"]["identical"] is True and step["verify"]["files_ok"] == 8
    assert len({r["sha256"] for r in step["verify"]["replicas"]}) == 1
    assert step["verify"]["files"] == {**step["write"]["files"], **step["write-degraded"]["files"]}
    assert "no session" in step["nothing-left"]["checked"]

    # The guest's steps were shown on stderr as they finished, one plain line each, in order.
    shown = [line.split()[2] for line in res.stderr.splitlines() if line.split()[:1] in (["ok"], ["FAIL"])]
    assert shown == ["vm-boot", *FLOW, "vm-poweroff"], res.stderr


def test_a_failing_step_still_cleans_up_and_exits_1(guest: Any) -> None:
    # One second is far too short for three replicas and a target to start under emulation.
    res = guest.sh("iscsikit --json demo --no-vm --step-timeout 1", ok=(1,), timeout=600)
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and doc["failed_step"] == "target-up"
    ran = [s["name"] for s in doc["steps"]]
    assert ran == ["target-up", *CLEANUP]
    assert doc["skipped"] == [n for n in FLOW if n not in ran]
    assert all(s["ok"] for s in doc["steps"][1:]), doc["steps"]
    assert doc["steps"][0]["detail"].startswith("gave up after 1 s: "), doc["steps"][0]
    guest.sh(NO_DEMO_PROCESS)
