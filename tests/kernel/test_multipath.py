"""dm-multipath for real: multipathd in the guest, one LUN exported on two portals.

127.0.0.1 and 127.0.0.2 reach the same tgtd, so both paths carry the same LUN identity and
multipathd builds one map over them.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from typing import Any

import pytest

MiB = 1024 * 1024
PORTALS = ("127.0.0.1:3260", "127.0.0.2:3260")
TARGET_KINDS = ["tgtd"]

START_MULTIPATHD = """
set -e
printf 'defaults {\\n  find_multipaths no\\n  user_friendly_names yes\\n}\\n' > /etc/multipath.conf
modprobe dm_multipath
pidof multipathd >/dev/null || (setsid multipathd -d -s > "$ISCSIKIT_VM_SHARED/multipathd.log" 2>&1 < /dev/null &)
for i in $(seq 200); do multipathd show status >/dev/null 2>&1 && break; sleep 0.05; done
multipathd show status >/dev/null
"""


@pytest.fixture(params=TARGET_KINDS)
def target(request: pytest.FixtureRequest, guest: Any) -> Any:
    if request.param == "tgtd":
        return guest.target(
            iqn=f"iqn.2026-11.io.iscsikit.test:mp{uuid.uuid4().hex[:6]}", luns=[32 * MiB], portals=PORTALS
        )
    raise AssertionError(request.param)


def connector(guest: Any, st: str, t: Any, body: str) -> Any:
    code = textwrap.dedent(
        f"""
        import json, os, subprocess
        from iscsikit.connector import Connector, VolumeSpec, Timeouts
        c = Connector(state_dir={st!r})
        spec = VolumeSpec(volume_id="mp1", target={t.iqn!r}, portals={PORTALS!r}, lun=1, multipath=True,
                          timeouts=Timeouts(replacement_timeout=5))
        """
    ) + textwrap.dedent(body)
    out = guest.python(code, timeout=300).stdout.splitlines()
    return json.loads(out[-1])


def test_multipath_connect_path_loss_restore_disconnect(guest, target):
    guest.sh(START_MULTIPATHD)
    st = f"/run/iscsikit-test/state-{uuid.uuid4().hex[:8]}"
    a = connector(guest, st, target, "print(json.dumps(c.connect(spec, timeout=200).to_dict()))")
    assert a["device"].startswith("/dev/dm-") and a["multipath_name"].startswith("/dev/mapper/")
    assert len(a["paths"]) == 2 and len({p["sid"] for p in a["paths"]}) == 2
    assert sorted(p["portal"].split(",")[0] for p in a["paths"]) == sorted(PORTALS)
    dm = a["device"].removeprefix("/dev/")
    slaves = guest.sh(f"ls /sys/block/{dm}/slaves").stdout.split()
    assert sorted(slaves) == sorted(p["device"].removeprefix("/dev/") for p in a["paths"])

    # I/O through the map while one path is dropped.
    pat = "/run/iscsikit-test/mp.pat"
    guest.sh(f"dd if=/dev/urandom of={pat} bs=64k count=8 && dd if={pat} of={a['device']} oflag=direct bs=64k")
    second = next(p for p in a["paths"] if p["portal"].startswith("127.0.0.2"))
    guest.sh(f"iscsiadm -m session -r {second['sid']} -u")
    guest.sh(f"for i in $(seq 200); do [ $(ls /sys/block/{dm}/slaves | wc -l) = 1 ] && break; sleep 0.05; done")
    guest.sh(f"cmp -n 524288 /run/iscsikit-test/mp.pat {a['device']}")

    # connect again restores the dropped path into the same map
    b = connector(guest, st, target, "print(json.dumps(c.connect(spec, timeout=200).to_dict()))")
    assert b["device"] == a["device"] and len(b["paths"]) == 2
    assert len(guest.sh(f"ls /sys/block/{dm}/slaves").stdout.split()) == 2

    connector(guest, st, target, "c.disconnect('mp1'); print('[]')")
    left = guest.sh(
        "ls /sys/class/iscsi_session; dmsetup ls --target multipath | grep -v 'No devices'; "
        "ls /dev/disk/by-path | grep -- -iscsi-; iscsiadm -m node",
        ok=(0, 1, 2, 21),
    )
    assert left.stdout.strip() == "", left.stdout
