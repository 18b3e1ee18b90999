"""docs/user-guide.md's ``vm`` examples and every example of docs/csi-guide.md, run in the VM.

The user guide's transcripts marked ``<!-- run: vm -->`` (doctor, discover, login, sessions,
devices, rescan, logout, ``--host ns``, clean and restore) run in document order against a
target named as in the guide: ``iqn.2026-11.org.example:disk1`` on 127.0.0.1:3260 with LUNs of
64 and 32 MiB. The guide suggests the built-in target for practice; here it is tgtd, which the
kernel tier starts in well under a second (the built-in target's own kernel scenarios are
tests/kernel/test_builtin_target.py, and the guide's block that starts it runs on the host in
tests/interop/test_guides_docs.py). The output the transcripts check does not depend on which
target it is.

The CSI guide's Python blocks run in order in one Python process, against a tgtd target
``iqn.2026-11.org.example:csi`` with two 16 MiB LUNs and CHAP, as the guide says.

Kept short on purpose: every iscsikit command costs 5-10 s of start-up under TCG emulation.
"""

from __future__ import annotations

import re

import pytest

from tests.interop.test_guides_docs import CSI_GUIDE, USER_GUIDE, console_transcripts, examples
from tests.kernel.conftest import SCRATCH, Guest, MiB
from tests.support.transcripts import check

WORK = f"{SCRATCH}/guide"
CSI_STATE = "/var/lib/csi-iscsi-example"


@pytest.mark.timeout(1200)  # ~12 CLI starts: 1-2 min on an idle host, 4-5 min under a loaded one
def test_user_guide_vm_examples(guest: Guest) -> None:
    vm_blocks = [e for e in examples(USER_GUIDE) if e.tier == "vm"]
    assert vm_blocks and {e.lang for e in vm_blocks} == {"console"}
    guest.target(iqn="iqn.2026-11.org.example:disk1", luns=[64 * MiB, 32 * MiB])
    guest.sh(f"rm -rf {WORK} && mkdir -p {WORK}")

    def run(script: str) -> str:
        result = guest.vm.run(f"cd {WORK}\n{script}", timeout=600)
        return result.stdout + result.stderr

    ran = 0
    for transcript in console_transcripts(USER_GUIDE, "vm"):
        check(transcript, run)
        ran += 1
    assert ran == len(vm_blocks)
    # The guide logged out and cleaned up after itself; only the restored records remain.
    assert guest.sessions() == []
    records = guest.sh("iscsiadm -m node").stdout
    assert records.strip() == "127.0.0.1:3260,1 iqn.2026-11.org.example:disk1"


@pytest.mark.timeout(900)
def test_csi_guide_runs_in_the_vm(guest: Guest) -> None:
    text = CSI_GUIDE.read_text()
    blocks = [e.body for e in examples(CSI_GUIDE) if e.lang == "python"]
    assert len(blocks) == text.count("```python\n") >= 4
    guest.target(iqn="iqn.2026-11.org.example:csi", luns=[16 * MiB, 16 * MiB], chap=("csi-node", "csi-secret-0001"))
    guest.sh(f"rm -rf {CSI_STATE}")
    try:
        result = guest.python("\n".join(blocks), timeout=600)
    finally:
        staging = re.search(r'STAGING = "([^"]+)"', text)
        assert staging is not None
        guest.sh(f"umount {staging.group(1)}/* 2>/dev/null; rm -rf {CSI_STATE} {staging.group(1)}; true")
    assert result.stdout.splitlines() == [
        "True True",  # two volumes, two disks, one shared session
        "True",  # expand
        "True",  # after unstaging pvc-1 the session is still there for pvc-2
        "[]",  # after pvc-2 it is gone
        "pvc-auth UNAUTHENTICATED",
        "pvc-nolun UNAVAILABLE",
        "True ['10.0.1.10:3260', '10.0.2.10:3260'] 15",
    ], result.stdout + result.stderr
    assert guest.sessions() == []
    assert guest.sh("iscsiadm -m node", ok=(0, 21)).stdout.strip() == ""  # the connector deleted its records
