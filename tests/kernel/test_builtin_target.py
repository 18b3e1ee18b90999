"""The Linux kernel initiator (open-iscsi in the VM) against iscsikit's built-in target.

The target runs in the guest as ``iscsikit target serve`` (the venv's CLI, as a user runs it).
Scenarios: discovery and login; ext4 made, written, checked with fsck and re-read with equal
checksums across a target restart while the session stays logged in; mutual CHAP with CRC32C
header and data digests; one LUN on two portals under dm-multipath.

Other kernel scenarios can run against the built-in target too: :func:`builtin_target` returns a
``GuestTarget`` (what ``guest.target()`` returns for tgtd), so a fixture parametrized over
``["tgtd", "builtin"]`` calls ``builtin_target(guest, iqn, luns, portals=..., chap=...)`` for
the second kind; use the ``builtin_targets`` fixture (or :func:`stop_builtin_targets` in a
finalizer) so the target is stopped after the test.
"""

from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.kernel.conftest import DEFAULT_PORTAL, SCRATCH, Guest, GuestTarget, MiB, _add_loopback_aliases

PIDS = f"{SCRATCH}/isk"


@dataclass
class BuiltinTarget(GuestTarget):
    """A GuestTarget served by ``iscsikit target serve`` in the guest."""

    guest: Guest | None = field(default=None, repr=False)
    argv: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def control(self) -> str:
        return f"{PIDS}/{self.name}.sock"

    @property
    def log(self) -> str:
        return f"{PIDS}/{self.name}.log"

    def start(self) -> None:
        assert self.guest is not None
        # Python start-up under TCG on a loaded host can take a minute: wait on the control socket
        # (it appears after every portal listens), give up early if the process died.
        pid = f"$(cat {PIDS}/{self.name}.pid)"
        waits = (
            f"up() {{ kill -0 {pid} 2>/dev/null || {{ echo 'iscsikit target serve exited'; cat {self.log}; exit 1; }}; "
            f"test -S {self.control}; }}\n"
            f"waitfor 300 up || {{ echo 'target not up after 300 s'; ps aux | grep -c . ; cat {self.log}; exit 1; }}"
        )
        self.guest.sh(
            f"""
            set -e
            mkdir -p {PIDS}
            {_add_loopback_aliases(self.portals)}
            setsid {shlex.join(self.argv)} >>{self.log} 2>&1 </dev/null &
            echo $! > {PIDS}/{self.name}.pid
            {waits}
            """,
            what=f"start iscsikit target serve for {self.iqn}",
            timeout=400,
        )

    def stop(self) -> str:
        """SIGTERM, wait for a clean exit; returns the target's log."""
        assert self.guest is not None
        out = self.guest.sh(
            f"""
            pid=$(cat {PIDS}/{self.name}.pid)
            kill -TERM $pid
            waitfor 60 eval '! kill -0 $pid 2>/dev/null' || {{ echo 'target did not stop'; exit 1; }}
            rm -f {PIDS}/{self.name}.pid
            cat {self.log}
            """,
            what=f"stop the built-in target {self.iqn}",
            timeout=120,
        )
        return out.stdout

    def status(self) -> dict[str, Any]:
        assert self.guest is not None
        out = self.guest.sh(f"iscsikit --json target status --control {self.control}")
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc


def builtin_target(
    guest: Guest,
    iqn: str = "iqn.2026-11.io.iscsikit.test:builtin",
    luns: Sequence[int] | Mapping[int, int] = (16 * MiB,),
    *,
    chap: tuple[str, str] | None = None,
    mutual_chap: tuple[str, str] | None = None,
    portals: Sequence[str] = (DEFAULT_PORTAL,),
    digests: bool = False,
) -> BuiltinTarget:
    """Start ``iscsikit target serve`` in the guest with file LUNs; returns a GuestTarget-like handle."""
    sizes = dict(luns) if isinstance(luns, Mapping) else {i + 1: size for i, size in enumerate(luns)}
    name = "t" + uuid.uuid4().hex[:8]
    files = {lun: f"{SCRATCH}/luns/{name}-lun{lun}.img" for lun in sizes}
    argv = ["iscsikit", "-vv", "target", "serve", "--iqn", iqn, "--control", f"{PIDS}/{name}.sock"]
    for p in portals:
        argv += ["--portal", p]
    for lun, size in sizes.items():
        argv += ["--lun", f"{lun}={'file:' + files[lun]},size={size}"]
    secrets = []
    if chap is not None:
        secrets.append(f"printf %s {shlex.quote(chap[1])} > {PIDS}/{name}.chap")
        argv += ["--chap-user", chap[0], "--chap-secret-file", f"{PIDS}/{name}.chap"]
    if mutual_chap is not None:
        secrets.append(f"printf %s {shlex.quote(mutual_chap[1])} > {PIDS}/{name}.mutual")
        argv += ["--mutual-user", mutual_chap[0], "--mutual-secret-file", f"{PIDS}/{name}.mutual"]
    if digests:
        argv += ["--header-digest", "crc32c", "--data-digest", "crc32c"]
    if secrets:
        guest.sh("set -e\nmkdir -p " + PIDS + "\numask 077\n" + "\n".join(secrets))
    target = BuiltinTarget(iqn, 0, tuple(portals), files, sizes, chap, mutual_chap, None, guest, argv, name)
    target.start()
    return target


def stop_builtin_targets(guest: Guest) -> None:
    """Log out every session (while the targets still answer), then stop every built-in target.

    The targets' logs are printed, so a failing test shows them with its captured output.
    """
    result = guest.sh(
        f"""
        [ -n "$(ls /sys/class/iscsi_session 2>/dev/null)" ] && timeout 60 iscsiadm -m session -u >/dev/null 2>&1
        for f in {PIDS}/*.pid; do [ -e "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null; done
        waitfor 30 eval '! pgrep -f "iscsikit.* target serve" >/dev/null'
        pkill -9 -f "iscsikit.* target serve"
        rm -f {PIDS}/*.pid
        for f in {PIDS}/*.log; do [ -e "$f" ] && {{ echo "--- $f"; tail -50 "$f"; rm -f "$f"; }}; done
        true
        """,
        what="stop the built-in targets",
        timeout=120,
    )
    print(result.stdout)


@pytest.fixture
def builtin_targets(guest: Guest) -> Iterator[Any]:
    """A factory ``builtin_targets(iqn, luns, ...)``; every target it started is stopped afterwards."""

    def make(*args: Any, **kwargs: Any) -> BuiltinTarget:
        return builtin_target(guest, *args, **kwargs)

    yield make
    stop_builtin_targets(guest)


def _iqn(tag: str) -> str:
    return f"iqn.2026-11.io.iscsikit.test:{tag}{uuid.uuid4().hex[:6]}"


def test_ext4_survives_a_target_restart(guest: Guest, builtin_targets: Any) -> None:
    target = builtin_targets(_iqn("fs"), [64 * MiB])
    found = guest.sh(f"iscsiadm -m discovery -t st -p {target.portal}").stdout
    assert f"{target.portal},1 {target.iqn}" in found
    dev = guest.login(target)[1]
    guest.sh(
        f"""
        set -e
        mkfs.ext4 -q -F {dev}
        mkdir -p {SCRATCH}/mnt && mount {dev} {SCRATCH}/mnt
        for i in 1 2 3 4; do dd if=/dev/urandom of={SCRATCH}/mnt/f$i bs=1M count=4 status=none; done
        (cd {SCRATCH}/mnt && sha256sum f1 f2 f3 f4) > {SCRATCH}/sums
        sync
        umount {SCRATCH}/mnt
        fsck.ext4 -n -f {dev}
        """,
        what="mkfs, write, fsck",
        timeout=300,
    )
    status = target.status()
    assert status["targets"][0]["sessions"] == 1
    log = target.stop()
    assert "stopping: finishing in-flight commands" in log and "Traceback" not in log
    target.start()
    guest.sh(
        f"""
        set -e
        waitfor 90 eval 'iscsiadm -m session -P 1 | grep -q "iSCSI Session State: LOGGED_IN"'
        echo 3 > /proc/sys/vm/drop_caches
        fsck.ext4 -n -f {dev}
        mount {dev} {SCRATCH}/mnt
        (cd {SCRATCH}/mnt && sha256sum -c {SCRATCH}/sums)
        umount {SCRATCH}/mnt
        """,
        what="checksums after the target restart",
        timeout=300,
    )


def test_mutual_chap_with_both_digests(guest: Guest, builtin_targets: Any) -> None:
    target = builtin_targets(
        _iqn("chap"), [32 * MiB], chap=("alice", "initiator-secret1"), mutual_chap=("tgt", "target-secret-22"),
        digests=True,
    )  # fmt: skip
    node = f"iscsiadm -m node -T {target.iqn} -p {target.portal}"
    # Records made by discovery take their defaults from iscsid.conf (restored by the clean slate).
    guest.sh(
        """
        set -e
        echo 'node.conn[0].iscsi.HeaderDigest = CRC32C' >> /etc/iscsi/iscsid.conf
        echo 'node.conn[0].iscsi.DataDigest = CRC32C' >> /etc/iscsi/iscsid.conf
        """
    )
    dev = guest.login(target)[1]
    out = guest.sh("iscsiadm -m session -P 2").stdout
    assert "HeaderDigest: CRC32C" in out and "DataDigest: CRC32C" in out
    guest.sh(
        f"""
        set -e
        dd if=/dev/urandom of={SCRATCH}/pat bs=1M count=16 status=none
        dd if={SCRATCH}/pat of={dev} bs=1M oflag=direct status=none
        dd if={dev} of={SCRATCH}/back bs=1M count=16 iflag=direct status=none
        cmp {SCRATCH}/pat {SCRATCH}/back
        """,
        what="I/O with digests",
        timeout=300,
    )
    (session,) = target.status()["targets"][0]["session_list"]
    assert session["header_digest"] is True and session["data_digest"] is True
    # A wrong mutual secret on the initiator side: the kernel refuses the target.
    guest.sh("iscsiadm -m session -u >/dev/null")
    guest.sh(f"{node} -o update -n node.session.auth.password_in -v wrong-secret-0000")
    bad = guest.sh(f"timeout 60 {node} --login", ok=(5, 8, 19, 24, 255))
    assert bad.returncode != 0


def test_one_lun_on_two_portals_under_multipath(guest: Guest, builtin_targets: Any) -> None:
    portals = ("127.0.0.1:3260", "127.0.0.2:3260")
    target = builtin_targets(_iqn("mp"), [32 * MiB], portals=portals)
    guest.sh(
        """
        set -e
        printf 'defaults {\\n  find_multipaths no\\n  user_friendly_names yes\\n}\\n' > /etc/multipath.conf
        modprobe dm_multipath
        log="$ISCSIKIT_VM_SHARED/multipathd.log"
        pidof multipathd >/dev/null || (setsid multipathd -d -s > "$log" 2>&1 < /dev/null &)
        waitfor 30 multipathd show status >/dev/null 2>&1
        """
    )
    a = guest.login(target, portals[0])[1]
    b = guest.login(target, portals[1])[1]
    assert a != b
    ids = guest.sh(f"/lib/udev/scsi_id -g -u {a}; /lib/udev/scsi_id -g -u {b}").stdout.split()
    assert len(ids) == 2 and ids[0] == ids[1]  # the same LU identity on both portals
    out = guest.sh(
        f"""
        set -e
        multipath -r >/dev/null 2>&1 || true
        waitfor 60 eval '[ "$(multipath -ll | grep -c "active ready running")" -ge 2 ]'
        multipath -ll
        map=/dev/mapper/$(multipath -ll | awk 'NR==1 {{print $1}}')
        dd if=/dev/urandom of={SCRATCH}/mp bs=64k count=16 status=none
        dd if={SCRATCH}/mp of=$map bs=64k oflag=direct status=none
        cmp -n 1048576 {SCRATCH}/mp $map
        multipath -F
        """,
        what="multipath over two portals",
        timeout=300,
    )
    assert out.stdout.count("active ready running") >= 2
    assert target.status()["targets"][0]["sessions"] == 2


def test_manual_scan_of_one_lun(guest: Guest, builtin_targets: Any) -> None:
    """With node.session.scan = manual nothing appears until a LUN is scanned through sysfs.

    Linux then sends INQUIRY with the SCSI-2 LUN in CDB byte 1 bits 7-5; the target must ignore them.
    """
    target = builtin_targets(_iqn("scan"), [8 * MiB, 8 * MiB])
    node = f"iscsiadm -m node -T {target.iqn} -p {target.portal}"
    out = guest.sh(
        f"""
        set -e
        iscsiadm -m discovery -t st -p {target.portal} >/dev/null
        {node} -o update -n node.session.scan -v manual
        {node} --login >/dev/null
        sid=$(iscsiadm -m session | awk -F'[][]' '{{print $2}}')
        host=$(ls -d /sys/class/iscsi_session/session$sid/device/../host* 2>/dev/null | head -1 || true)
        h=$(basename $(readlink -f /sys/class/iscsi_session/session$sid/device/..))
        echo "host $h"
        ls /sys/class/scsi_device/ | sed 's/^/before: /' || true
        echo "0 0 2" > /sys/class/scsi_host/$h/scan
        waitfor 60 test -e {target.by_path(2)} || {{ ls /sys/class/scsi_device; exit 1; }}
        ls /sys/class/scsi_device/ | sed 's/^/after: /'
        """,
        what="manual scan of LUN 2",
        timeout=200,
    )
    after = [line for line in out.stdout.splitlines() if line.startswith("after:")]
    assert len(after) == 1, out.stdout
