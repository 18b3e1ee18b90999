"""Who uses a device: mountinfo (every namespace, escapes, anonymous device numbers), swaps, fds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iscsikit.clean.model import Usage
from iscsikit.clean.usage import UsageScanner
from tests.support import tiers


def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    for pid, ns in ((1, "mnt:[1]"), (50, "mnt:[1]"), (900, "mnt:[2]")):
        d = root / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "ns").mkdir()
        (d / "ns/mnt").symlink_to(ns)
        (d / "comm").write_text(f"proc{pid}\n")
        (d / "mountinfo").write_text("")
    (root / "self").symlink_to("50")
    return root


def test_mounts_in_every_namespace_with_escapes_and_by_source(tmp_path: Path) -> None:
    root = proc(tmp_path)
    (root / "1/mountinfo").write_text(
        "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "90 22 8:16 / /mnt/my\\040data rw shared:40 - ext4 /dev/sdb rw\n"
        "91 22 0:55 / /srv/btrfs rw - btrfs /dev/sdc rw,space_cache\n"
    )
    (root / "900/mountinfo").write_text("95 80 8:16 / /var/lib/kubelet/pods/x/vol rw - ext4 /dev/sdb rw\n")
    found = UsageScanner(root).scan({"8:16": "sdb", "8:32": "sdc"})
    assert found == {
        "8:16": [
            Usage("mount", "/mnt/my data"),
            Usage("mount", "/var/lib/kubelet/pods/x/vol (mount namespace of pid 900)"),
        ],
        "8:32": [Usage("mount", "/srv/btrfs")],
    }


def test_swaps_and_open_descriptors_but_not_our_own(tmp_path: Path) -> None:
    root = proc(tmp_path)
    (root / "swaps").write_text("Filename Type Size Used Priority\n/dev/dm-3 partition 1024 0 -2\n")
    os.symlink("/dev/sdb", root / "900/fd/4")
    os.symlink("/dev/sdb", root / "50/fd/3")  # iscsikit itself (/proc/self)
    os.symlink("socket:[123]", root / "900/fd/5")
    os.symlink("/dev/mapper/mpatha", root / "1/fd/9")
    found = UsageScanner(root).scan({"8:16": "sdb", "253:3": "dm-3"}, aliases={"mpatha": "253:3"})
    assert found == {
        "8:16": [Usage("open", "pid 900 (proc900)")],
        "253:3": [Usage("swap", "/dev/dm-3"), Usage("open", "pid 1 (proc1)")],
    }
    assert str(found["253:3"][0]) == "used as swap" and str(found["8:16"][0]) == "open by pid 900 (proc900)"


def test_open_descriptors_are_matched_by_device_number(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    root = proc(tmp_path)
    disks = [p for p in sorted(Path("/dev").iterdir()) if p.is_block_device()]
    if not disks:
        tiers.unavailable(request, "no block device in /dev to point a descriptor at")
    rdev = disks[0].stat().st_rdev
    devnum = f"{os.major(rdev)}:{os.minor(rdev)}"
    os.symlink(str(disks[0]), root / "900/fd/4")  # in a container /dev names differ: the number decides
    assert UsageScanner(root).scan({devnum: "sdz"}) == {devnum: [Usage("open", "pid 900 (proc900)")]}
    null = os.stat("/dev/null").st_rdev  # a character device with a disk's numbers is not that disk
    os.symlink("/dev/null", root / "900/fd/5")
    assert UsageScanner(root).scan({f"{os.major(null)}:{os.minor(null)}": "sdy"}) == {}


def test_nothing_wanted_or_no_proc_reads_nothing(tmp_path: Path) -> None:
    assert UsageScanner(tmp_path / "none").scan({"8:16": "sdb"}) == {}
    assert UsageScanner(proc(tmp_path)).scan({}) == {}
