"""docs/connector.md's code blocks, run for real in the VM against tgtd (mkfs, mount, unmount)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from tests.unit.connector.test_docs import python_blocks

MiB = 1024 * 1024

RUNNER = """
import json, sys
blocks = json.loads(sys.argv[1])
ns = {"__name__": "connector_doc", "STATE_DIR": sys.argv[2], "STAGING_DIR": sys.argv[3],
      "TARGET_IQN": sys.argv[4], "SYSFS_ROOT": "/sys"}
for block in blocks:
    exec(compile(block, "docs/connector.md", "exec"), ns)
print("DOC-OK")
"""


def test_connector_doc_runs_in_the_vm(guest: Any) -> None:
    t = guest.target(iqn=f"iqn.2026-11.io.iscsikit.test:doc{uuid.uuid4().hex[:6]}", luns=[32 * MiB])
    run_id = uuid.uuid4().hex[:8]
    result = guest.python(
        RUNNER,
        json.dumps(python_blocks()),
        f"/run/iscsikit-test/doc-state-{run_id}",
        f"/run/iscsikit-test/doc-staging-{run_id}",
        t.iqn,
        timeout=600,
    )
    assert "DOC-OK" in result.stdout
    assert "AttachmentError" in result.stdout  # the bad-LUN stage answered with a typed error
    left = guest.sh("ls /sys/class/iscsi_session; iscsiadm -m node", ok=(0, 21))
    assert left.stdout.strip() == ""
