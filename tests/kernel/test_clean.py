"""``iscsikit clean`` on a real kernel initiator: a stale session, orphan records, a mounted filesystem.

Three targets are logged in: two in one tgtd on 127.0.0.1:3260 (one of them carries a mounted
ext4), one in a second tgtd on 127.0.0.1:3261. That tgtd is killed with SIGKILL, so its session
goes FAILED and iscsid retries it forever; its LUN is blocked. Orphan node records (of volumes
deleted long ago) are added with iscsiadm. Then:

* ``clean --stale-only --yes`` removes exactly the stale session, its disk, its node record and
  its discovery record; the mounted filesystem, the other sessions and the orphan records stay;
* ``restore`` brings the records back: ``iscsiadm`` shows them exactly as before;
* a clean of the mounted target is blocked and names the mount point, then succeeds once it is
  unmounted, and a decommission leaves no session, disk or record behind.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest

from tests.kernel.conftest import SCRATCH, Guest, MiB

BASE = "iqn.2026-11.io.iscsikit.test:clean"
LIVE, MOUNTED, STALE = f"{BASE}-live", f"{BASE}-mounted", f"{BASE}-stale"
ORPHANS = (f"{BASE}-deleted-1", f"{BASE}-deleted-2")
MNT = f"{SCRATCH}/clean-mnt"


def iscsikit_json(guest: Guest, *args: str, ok: tuple[int, ...] = (0,)) -> dict[str, Any]:
    out = guest.sh(f"iscsikit --json {shlex.join(args)}", ok=ok, timeout=240, what=f"iscsikit {' '.join(args)}")
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def what_iscsiadm_sees(guest: Guest) -> str:
    """Every node and discovery record as iscsiadm prints them (lists and full -o show)."""
    return guest.sh(
        """
        iscsiadm -m node -P 1 2>&1
        iscsiadm -m discovery -P 1 2>&1
        for t in $(iscsiadm -m node | awk '{print $2}' | sort -u); do iscsiadm -m node -T "$t" -o show; done
        """,
        ok=(0, 21),
    ).stdout


@pytest.mark.timeout(1800)  # nine iscsikit runs and two tgtds under TCG emulation
def test_stale_only_then_restore_then_a_blocked_mount(guest: Guest) -> None:
    main = guest.tgtd(("127.0.0.1:3260",))
    main.add_target(LIVE, [16 * MiB])
    mounted = main.add_target(MOUNTED, [32 * MiB])
    doomed = guest.tgtd(("127.0.0.1:3261",))
    stale = doomed.add_target(STALE, [16 * MiB])
    for target in (mounted, stale):
        guest.login(target)
    live_dev = guest.sh(
        f"iscsiadm -m node -T {LIVE} -p 127.0.0.1:3260 --login >/dev/null && "
        f"waitfor 60 test -e /dev/disk/by-path/ip-127.0.0.1:3260-iscsi-{LIVE}-lun-1 && "
        f"readlink -f /dev/disk/by-path/ip-127.0.0.1:3260-iscsi-{LIVE}-lun-1"
    ).stdout.strip()
    mounted_dev = guest.sh(f"readlink -f {mounted.by_path(1)}").stdout.strip()
    stale_dev = guest.sh(f"readlink -f {stale.by_path(1)}").stdout.strip()
    guest.sh(
        f"""
        set -e
        for t in {" ".join(ORPHANS)}; do iscsiadm -m node -o new -T $t -p 127.0.0.1:3299,1 >/dev/null; done
        mkfs.ext4 -q -F {mounted_dev}
        mkdir -p {MNT} && mount {mounted_dev} {MNT}
        echo data > {MNT}/file && sync
        """,
        what="orphan records and a mounted filesystem",
    )
    before = what_iscsiadm_sees(guest)
    # The target of one session dies: its session goes FAILED and its LUN is blocked.
    guest.sh(
        f"""
        kill -9 $(cat {SCRATCH}/tgtd/{doomed.control}.pid)
        failed() {{ grep -l FAILED /sys/class/iscsi_session/session*/state >/dev/null 2>&1; }}
        waitfor 90 failed || {{ iscsiadm -m session -P 1; exit 1; }}
        """,
        what="kill the stale target's tgtd and wait for its session to fail",
        timeout=150,
    )
    stale_sid = int(
        guest.sh(
            "for s in /sys/class/iscsi_session/session*; do "
            f'[ "$(cat $s/targetname)" = {STALE} ] && basename $s | tr -dc 0-9; done; true'
        ).stdout
    )

    # 1. The plan, then the clean: exactly the stale session, its disk and its records.
    plan = iscsikit_json(guest, "clean", "--stale-only")
    assert [(a["kind"], a["target"]) for a in plan["actions"]] == [
        ("remove-device", STALE),
        ("logout", STALE),
        ("delete-node", STALE),
        ("delete-discovery", None),
    ], plan
    assert plan["actions"][1]["sid"] == stale_sid and not plan["summary"]["blocked"]
    done = iscsikit_json(guest, "clean", "--stale-only", "--yes")
    assert [a["status"] for a in done["actions"]] == ["done"] * 4, done
    state = guest.sh(
        f"""
        for s in /sys/class/iscsi_session/session*; do cat $s/targetname; done | sort
        echo ---
        test -e {stale_dev} && echo "{stale_dev} still there" || true
        test -e {live_dev} && test -e {mounted_dev} && echo disks-ok
        findmnt -n -o SOURCE {MNT}
        cat {MNT}/file
        echo ---
        iscsiadm -m node | awk '{{print $2}}' | sort -u
        echo ---
        iscsiadm -m discovery
        """
    ).stdout.split("---\n")
    assert state[0].split() == sorted([LIVE, MOUNTED])
    assert state[1].split() == ["disks-ok", mounted_dev, "data"]
    assert state[2].split() == sorted([LIVE, MOUNTED, *ORPHANS])
    assert state[3].split() == ["127.0.0.1:3260", "via", "sendtargets"]
    assert iscsikit_json(guest, "clean", "--stale-only")["actions"] == []

    # 2. restore: iscsiadm sees the records exactly as before.
    restored = iscsikit_json(guest, "restore", done["backup"])
    assert restored["restored"] and not restored["overwritten"]
    assert what_iscsiadm_sees(guest) == before

    # 3. The mounted target: blocked, and the plan says by what; fine once unmounted.
    blocked = iscsikit_json(guest, "clean", "--target", MOUNTED, "--yes", ok=(1,))
    statuses = {a["kind"]: a["status"] for a in blocked["actions"]}
    assert statuses["remove-device"] == statuses["logout"] == "blocked", blocked
    assert f"{mounted_dev} is mounted at {MNT}" in blocked["actions"][0]["message"]
    assert guest.sh(f"findmnt -n -o SOURCE {MNT}").stdout.strip() == mounted_dev
    guest.sh(f"umount {MNT}")

    # 4. Decommission: every session, disk and record goes (the restored stale records included).
    gone = iscsikit_json(guest, "clean", "--yes")
    assert all(a["status"] in ("done", "gone") for a in gone["actions"]), gone
    left = guest.sh(
        "ls /sys/class/iscsi_session; ls /dev/disk/by-path 2>/dev/null | grep -c iscsi; iscsiadm -m node",
        ok=(0, 1, 21),
    ).stdout
    assert left.split() == ["0"], left
