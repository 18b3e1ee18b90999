"""The first kernel-tier scenario: a real Linux initiator logs in to tgtd, I/O goes through the disk.

Discovery, login and logout run through :class:`iscsikit.runner.Runner` inside the guest, so
the Runner is exercised against the real iscsiadm talking to a real iscsid and kernel.
Each step asserts on its own, so a failure names the step that broke.
"""

from __future__ import annotations

import json
import textwrap

from tests.kernel.conftest import Guest, MiB

IQN = "iqn.2026-11.io.iscsikit.test:smoke"
PORTAL = "127.0.0.1:3260"
LUN_SIZE = 16 * MiB

# Runs argv through iscsikit's Runner in the guest and prints the CommandResult as JSON.
RUNNER = textwrap.dedent(
    """
    import dataclasses, json, sys
    from iscsikit.runner import Runner
    result = Runner("local").run(sys.argv[1:], timeout=90, check=False)
    print(json.dumps(dataclasses.asdict(result)))
    """
)


def runner(guest: Guest, *argv: str) -> dict[str, object]:
    out = guest.python(RUNNER, *argv, timeout=150)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def _explain(step: str, result: dict[str, object]) -> str:
    return f"{step}: {' '.join(map(str, result['argv']))} -> exit {result['returncode']}\n" + (
        f"stdout: {result['stdout']}\nstderr: {result['stderr']}"
    )


def test_login_io_logout_through_the_kernel_initiator(guest: Guest) -> None:
    target = guest.target(IQN, luns=[LUN_SIZE], portals=(PORTAL,))
    link = target.by_path(1)
    assert guest.sessions() == [], "step 0: the clean slate still has sessions"

    # 1. SendTargets discovery, through the Runner.
    disc = runner(guest, "iscsiadm", "-m", "discovery", "-t", "st", "-p", PORTAL)
    assert disc["returncode"] == 0, _explain("step 1 (discovery)", disc)
    assert f"{PORTAL},1 {IQN}" in str(disc["stdout"]).splitlines(), _explain("step 1 (discovery output)", disc)

    # 2. Login, through the Runner.
    login = runner(guest, "iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL, "--login")
    assert login["returncode"] == 0, _explain("step 2 (login)", login)
    assert "successful" in str(login["stdout"]), _explain("step 2 (login message)", login)
    assert len(guest.sessions()) == 1, "step 2: login reported success but no session is in sysfs"

    # 3. udev made the by-path link, to a SCSI disk of the LUN's size.
    dev = guest.sh(
        f"""
        waitfor 60 test -e {link} || {{ echo "step 3: no {link}"; ls -l /dev/disk/by-path; exit 1; }}
        udevadm settle --timeout=30
        dev=$(readlink -f {link})
        echo "$dev $(blockdev --getsize64 "$dev") $(cat /sys/class/block/$(basename "$dev")/device/vendor)"
        """,
        what="step 3 (by-path device)",
    ).stdout.split()
    assert dev[0].startswith("/dev/sd"), f"step 3: {link} points at {dev[0]}, not a SCSI disk"
    assert int(dev[1]) == LUN_SIZE, f"step 3: {dev[0]} has {dev[1]} bytes, the LUN has {LUN_SIZE}"
    assert dev[2] == "IET", f"step 3: {dev[0]} vendor is {dev[2]!r}, not tgt's 'IET'"

    # 4. Write with O_DIRECT, read back with O_DIRECT; the bytes also reached tgtd's backing file.
    io = guest.sh(
        f"""
        set -e
        head -c 262144 /dev/urandom > /run/smoke.pattern
        dd if=/run/smoke.pattern of={link} bs=64k seek=16 oflag=direct conv=fsync status=none
        dd if={link} of=/run/smoke.readback bs=64k skip=16 count=4 iflag=direct status=none
        cmp /run/smoke.pattern /run/smoke.readback && echo device-matches
        dd if={target.luns[1]} bs=64k skip=16 count=4 status=none | cmp - /run/smoke.pattern
        echo backing-file-matches
        """,
        what="step 4 (O_DIRECT write and read-back)",
    )
    assert io.stdout.split() == ["device-matches", "backing-file-matches"], f"step 4: {io.stdout} {io.stderr}"

    # 5. Logout, through the Runner; nothing is left.
    logout = runner(guest, "iscsiadm", "-m", "node", "-T", IQN, "-p", PORTAL, "--logout")
    assert logout["returncode"] == 0, _explain("step 5 (logout)", logout)
    assert "successful" in str(logout["stdout"]), _explain("step 5 (logout message)", logout)
    left = guest.sh(f"udevadm settle --timeout=30; ls /sys/class/iscsi_session; ls {link} 2>/dev/null; true")
    assert left.stdout.split() == [], f"step 5: after logout still present: {left.stdout.split()}"
    after = runner(guest, "iscsiadm", "-m", "session")
    assert after["returncode"] == 21, _explain("step 5 (iscsiadm -m session should say no sessions, 21)", after)
