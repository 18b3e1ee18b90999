"""docs/go-iscsi-helper.md: the porting examples that need real tools run against them.

The tgt example drives a private tgtd on loopback; the discovery example runs the real iscsiadm
on a private DB (tests/support/sandbox.py) against that tgtd. The other examples run in
tests/unit/core/test_go_iscsi_helper_doc.py, which checks that the two sets cover every block.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from iscsikit.iscsiadm import Iscsiadm
from tests.support import tiers
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tgtd import Tgtd
from tests.unit.core.test_go_iscsi_helper_doc import DOC, IQN, Example, needs_real_tools, python_blocks, run_example

IFACE = "isk-doc"


def _run_tgt_example(example: Example, tgtd: Tgtd) -> None:
    backing = tgtd.backing_file("vol1.img", 64 << 20)
    out = run_example(
        example,
        {"Tgt()": "TGT", '"/var/lib/vol1.img"': repr(str(backing))},
        {"TGT": tgtd.tgt},
    )
    # tgt as Debian ships it has no "longhorn" backing store: the example took the fallback.
    assert out == "backing-store longhorn is not supported by this tgtd\n"
    assert tgtd.tgt.targets() == []  # torn down


def _run_discovery_example(example: Example, tgtd: Tgtd, base: Path) -> None:
    tgtd.add_target(IQN, luns={1: tgtd.backing_file("disc.img", 64 << 20)})
    with IscsiadmSandbox(base, sysfs="transport") as sandbox:
        # No iscsid runs here, so iscsiadm takes the initiator name for discovery from the iface
        # (with iscsid it asks iscsid): discovery goes through an iface that carries one.
        sandbox_adm = Iscsiadm(sandbox.runner)
        sandbox_adm.iface_new(IFACE)
        sandbox_adm.iface_update(IFACE, {"iface.initiatorname": "iqn.2026-11.io.iscsikit.test:initiator"})
        run_example(
            example,
            {
                'Runner("ns")': "SANDBOX_RUNNER",
                '"10.42.0.17:3260"': repr(f"127.0.0.1:{tgtd.port}"),
                "discover_sendtargets(portal)": f"discover_sendtargets(portal, iface={IFACE!r})",
            },
            {"SANDBOX_RUNNER": sandbox.runner},
        )
        # discovery really wrote to the DB: its record stays, the node record it made is gone
        assert list((sandbox.db / "send_targets").iterdir()) == [sandbox.db / "send_targets" / f"127.0.0.1,{tgtd.port}"]
        assert sandbox.iscsiadm("-m", "node", "-T", IQN).returncode == 21


def test_examples_with_real_tools(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tiers.require_root(request)
    tiers.require(request, "tgtd", "tgtadm", "iscsiadm", "unshare", "nsenter")
    todo = [e for e in python_blocks() if needs_real_tools(e.code)]
    ran = 0
    for i, example in enumerate(todo):
        with Tgtd() as tgtd:
            if "from iscsikit.tgt import" in example.code:
                _run_tgt_example(example, tgtd)
            elif "discover_sendtargets(" in example.code:
                base = tmp_path / f"sandbox{i}"
                base.mkdir()
                _run_discovery_example(example, tgtd, base)
            else:
                pytest.fail(f"no harness runs this example of {DOC.name}:\n{example.code}")
        ran += 1
    assert ran == len(todo) == 2
