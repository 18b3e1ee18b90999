"""Record real kernel-initiator captures into tests/fixtures/kernel/ (run by hand).

    .venv/bin/python -m tests.kernel.record_captures [--out tests/fixtures/kernel]

Boots the kernel-tier VM, starts tgtd on 127.0.0.1:3260 with two targets (one with two LUNs,
one with one LUN behind CHAP), and records, with a fixed initiator name so reruns differ
only where the kernel does (device names, timings):

* ``iscsiadm/NAME.{cmd,stdout,stderr,rc}``: the exact output and exit status of iscsiadm
  (discovery, node, iface, login/logout and their failures, session -P 0/1/2/3, host),
  ``udevadm info`` of the disks, ``lsblk``, by-path listing, the kernel's iSCSI messages;
* ``sysfs/sys-kernel.tar.gz``: the iSCSI-related sysfs subtrees while both sessions are
  logged in (attribute files read, symlinks kept as the kernel's relative links), with
  ``sys-kernel.listing.txt`` (``path = value|`` / ``path -> target``) and
  ``sys-kernel.unreadable.txt`` (attributes whose read fails in the kernel, with errno);
* ``etc-iscsi.tar.gz``: open-iscsi's DB (/etc/iscsi) after discovery and login;
* ``versions.txt``.

See tests/fixtures/kernel/README.md for the scenario table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

from iscsikit.vm import GuestVM
from tests.kernel.conftest import MiB, clean_slate, prepare_vm

ROOT = Path(__file__).resolve().parent.parent.parent
INITIATOR = "iqn.2026-11.io.iscsikit.capture:initiator"
T1 = "iqn.2026-11.io.iscsikit.capture:disk1"
T2 = "iqn.2026-11.io.iscsikit.capture:disk2"
PORTAL = "127.0.0.1:3260"
CHAP = ("capuser", "capture-secret1")

# Runs in the guest. $OUT is the capture directory (shared with the host).
PREAMBLE = r"""
set -u
mkdir -p "$OUT/iscsiadm"
cap() {  # cap NAME CMD...: record CMD's exact stdout, stderr and exit status
    local name=$1; shift
    printf '$ %s\n' "$*" > "$OUT/iscsiadm/$name.cmd"
    "$@" > "$OUT/iscsiadm/$name.stdout" 2> "$OUT/iscsiadm/$name.stderr"
    echo $? > "$OUT/iscsiadm/$name.rc"
}
"""

SET_INITIATOR = f"""
set -e
printf 'InitiatorName={INITIATOR}\\n' > /etc/iscsi/initiatorname.iscsi
kill $(pidof iscsid); waitfor 20 eval '! pidof iscsid >/dev/null'
setsid iscsid -f >>"$ISCSIKIT_VM_SHARED/iscsid.log" 2>&1 </dev/null &
waitfor 30 grep -q ISCSIADM_ABSTRACT_NAMESPACE /proc/net/unix
dmesg -C
"""

LOGGED_IN = f"""
N1="iscsiadm -m node -T {T1} -p {PORTAL}"
N2="iscsiadm -m node -T {T2} -p {PORTAL}"
cap disc-st-refused iscsiadm -m discovery -t st -p 127.0.0.1:3261
cap disc-st iscsiadm -m discovery -t st -p {PORTAL}
cap disc-list iscsiadm -m discovery
cap disc-list-P1 iscsiadm -m discovery -P 1
cap discdb-show-st iscsiadm -m discoverydb -t st -p {PORTAL} -o show
cap node-list iscsiadm -m node
cap node-list-P1 iscsiadm -m node -P 1
cap node-show-t1 $N1 -o show
cap iface iscsiadm -m iface
cap iface-P1 iscsiadm -m iface -P 1
cap iface-default-show iscsiadm -m iface -I default -o show
cap session-none iscsiadm -m session
cap node-update-authmethod $N2 -o update -n node.session.auth.authmethod -v CHAP
cap node-update-username $N2 -o update -n node.session.auth.username -v {CHAP[0]}
cap node-update-password $N2 -o update -n node.session.auth.password -v {CHAP[1]}
cap login-t1 $N1 --login
cap login-t2 $N2 --login
cap login-exists $N1 --login
udevadm settle --timeout=60
for link in /dev/disk/by-path/ip-{PORTAL}-iscsi-{T1}-lun-1 /dev/disk/by-path/ip-{PORTAL}-iscsi-{T1}-lun-2 \\
            /dev/disk/by-path/ip-{PORTAL}-iscsi-{T2}-lun-1; do
    waitfor 60 test -e $link || echo "missing $link" >&2
done
udevadm settle --timeout=60
cap node-show-t2 $N2 -o show
cap session-P0 iscsiadm -m session
cap session-P1 iscsiadm -m session -P 1
cap session-P2 iscsiadm -m session -P 2
cap session-P3 iscsiadm -m session -P 3
cap session-P3-S iscsiadm -m session -P 3 -S
cap session-r1 iscsiadm -m session -r 1
cap session-r1-P3 iscsiadm -m session -r 1 -P 3
cap session-r1-o-show iscsiadm -m session -r 1 -o show
cap session-r99 iscsiadm -m session -r 99
cap session-sysfsdir iscsiadm -m session -r "$(readlink -f /sys/class/iscsi_session/session1/device)"
cap session-rescan iscsiadm -m session -r 1 --rescan
cap host-P0 iscsiadm -m host
cap host-P1 iscsiadm -m host -P 1
for lun in 1 2; do
    dev=$(readlink -f /dev/disk/by-path/ip-{PORTAL}-iscsi-{T1}-lun-$lun)
    cap udevadm-info-t1-lun$lun udevadm info --query=all --name=$dev
done
dev=$(readlink -f /dev/disk/by-path/ip-{PORTAL}-iscsi-{T2}-lun-1)
cap udevadm-info-t2-lun1 udevadm info --query=all --name=$dev
cap udevadm-info-t1-lun1-export udevadm info --export --query=property \\
    --name=/dev/disk/by-path/ip-{PORTAL}-iscsi-{T1}-lun-1
cap by-path-listing ls -l /dev/disk/by-path
cap lsblk lsblk -o NAME,KNAME,MAJ:MIN,HCTL,TRAN,VENDOR,MODEL,REV,SERIAL,WWN,SIZE,RO,TYPE
cap lsblk-json lsblk -J -o NAME,KNAME,HCTL,TRAN,VENDOR,MODEL,SERIAL,WWN,SIZE,TYPE
tar -C / -czf "$OUT/etc-iscsi.tar.gz" --sort=name --mtime=@0 --owner=0 --group=0 etc/iscsi
"""

LOGGED_OUT = f"""
N1="iscsiadm -m node -T {T1} -p {PORTAL}"
N2="iscsiadm -m node -T {T2} -p {PORTAL}"
cap logout-t1 $N1 --logout
cap logout-none $N1 --logout
cap logoutall iscsiadm -m node --logoutall=all
udevadm settle --timeout=60
cap session-after-logout iscsiadm -m session
cap node-update-password-wrong $N2 -o update -n node.session.auth.password -v wrong-secret1
cap login-authfail $N2 --login
cap node-delete-t1 $N1 -o delete
cap node-delete-all iscsiadm -m node -o delete
cap node-list-after-delete iscsiadm -m node
dmesg | grep -Ei 'iscsi|scsi|sd[a-z]|connection[0-9]' > "$OUT/dmesg-iscsi.txt"
{{
    echo "kernel: $(uname -r)"
    echo "iscsiadm: $(iscsiadm --version)"
    echo "iscsid: $(iscsid --version)"
    echo "tgtd: $(dpkg-query -W -f '${{Version}}' tgt)"
    echo "udev: $(udevadm --version)"
    echo "scsi_transport_iscsi: $(cat /sys/module/scsi_transport_iscsi/version 2>/dev/null)"
}} > "$OUT/versions.txt"
"""

# Runs in the guest with the guest's Python: copy the sysfs subtrees into a tarball.
SYSFS_SNAPSHOT = r"""
import errno, gzip, io, os, sys, tarfile

out = sys.argv[1]
entries = {}      # arcname -> ("dir",) | ("link", target) | ("file", bytes, mode)
unreadable = []   # (path, errno name)

def add_dirs(rel):
    parts = rel.split("/")
    for i in range(1, len(parts)):
        entries.setdefault("/".join(parts[:i]), ("dir",))

def visit(rel):
    path = "/sys/" + rel
    add_dirs(rel)
    if os.path.islink(path):
        entries[rel] = ("link", os.readlink(path))
    elif os.path.isdir(path):
        entries[rel] = ("dir",)
        for name in sorted(os.listdir(path)):
            visit(rel + "/" + name)
    else:
        mode = os.stat(path).st_mode & 0o777
        if not mode & 0o444:
            entries[rel] = ("file", b"", mode)  # write-only (delete, rescan...): kept, empty
            return
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            unreadable.append((rel, errno.errorcode.get(exc.errno, str(exc.errno))))
            return
        entries[rel] = ("file", data, mode)

def links_in(cls_dir, keep=lambda name: True):
    base = "/sys/" + cls_dir
    if not os.path.isdir(base):
        return []
    names = [n for n in sorted(os.listdir(base)) if keep(n)]
    for name in names:
        visit(cls_dir + "/" + name)
    return [os.path.realpath(base + "/" + n) for n in names]

hosts = links_in("class/iscsi_host")
for cls in ("iscsi_session", "iscsi_connection", "iscsi_iface", "iscsi_endpoint", "scsi_host", "iscsi_transport"):
    links_in("class/" + cls, keep=lambda n: cls != "scsi_host" or os.path.realpath("/sys/class/scsi_host/" + n) in
             [h.rsplit("/iscsi_host/", 1)[0] + "/scsi_host/" + n for h in hosts])
host_dirs = sorted({h.rsplit("/iscsi_host/", 1)[0] for h in hosts})
inside = lambda p: any(p == d or p.startswith(d + "/") for d in host_dirs)
for cls in ("scsi_device", "scsi_disk", "block", "bsg", "scsi_generic"):
    links_in("class/" + cls, keep=lambda n, c=cls: inside(os.path.realpath(f"/sys/class/{c}/{n}")))
links_in("block", keep=lambda n: inside(os.path.realpath("/sys/block/" + n)))
links_in("dev/block", keep=lambda n: inside(os.path.realpath("/sys/dev/block/" + n)))
links_in("bus/scsi/devices", keep=lambda n: inside(os.path.realpath("/sys/bus/scsi/devices/" + n)))
for d in host_dirs:
    visit(os.path.relpath(d, "/sys"))
visit("devices/virtual/iscsi_transport")
for mod in ("scsi_transport_iscsi", "libiscsi", "libiscsi_tcp", "iscsi_tcp"):
    for sub in ("version", "parameters"):
        if os.path.exists(f"/sys/module/{mod}/{sub}"):
            visit(f"module/{mod}/{sub}")

buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
    def info(name, kind, mode):
        ti = tarfile.TarInfo("./" + name if name else ".")
        ti.type, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = kind, mode, 0, 0, 0, "root", "root"
        return ti
    tar.addfile(info("", tarfile.DIRTYPE, 0o755))
    for name in sorted(entries):
        e = entries[name]
        if e[0] == "dir":
            tar.addfile(info(name + "/", tarfile.DIRTYPE, 0o755))
        elif e[0] == "link":
            ti = info(name, tarfile.SYMTYPE, 0o777)
            ti.linkname = e[1]
            tar.addfile(ti)
        else:
            ti = info(name, tarfile.REGTYPE, e[2])
            ti.size = len(e[1])
            tar.addfile(ti, io.BytesIO(e[1]))
with open(out + "/sys-kernel.tar.gz", "wb") as fh:
    with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())

def shown(data):
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes binary>"
    return text.replace("\n", "|")

with open(out + "/sys-kernel.listing.txt", "w") as fh:
    for name in sorted(entries):
        e = entries[name]
        if e[0] == "link":
            fh.write(f"./{name} -> {e[1]}\n")
        elif e[0] == "file":
            fh.write(f"./{name} = {shown(e[1])}\n")
with open(out + "/sys-kernel.unreadable.txt", "w") as fh:
    for rel, err in unreadable:
        fh.write(f"./{rel}: {err}\n")
print(f"{len(entries)} entries, {len(unreadable)} unreadable")
"""


def record(out: Path, workdir: Path) -> None:
    with GuestVM(workdir=workdir, boot_timeout=300) as vm:
        prepare_vm(vm)
        guest = clean_slate(vm)
        tgtd = guest.tgtd((PORTAL,))
        tgtd.add_target(T1, [16 * MiB, 8 * MiB])
        tgtd.add_target(T2, [4 * MiB], chap=CHAP)
        guest.sh(SET_INITIATOR, what="set a fixed initiator name and restart iscsid")
        stage = vm.shared / "captures"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        env = {"OUT": str(stage)}
        guest.sh(PREAMBLE + LOGGED_IN, env=env, timeout=900, what="captures while logged in")
        (stage / "sysfs").mkdir()
        snap = guest.python(SYSFS_SNAPSHOT, str(stage / "sysfs"), timeout=600)
        print("sysfs:", snap.stdout.strip())
        guest.sh(PREAMBLE + LOGGED_OUT, env=env, timeout=600, what="captures after logout")
        clean_slate(vm)
        if out.exists():
            shutil.rmtree(out / "iscsiadm", ignore_errors=True)
            shutil.rmtree(out / "sysfs", ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        for item in stage.iterdir():
            dest = out / item.name
            if item.is_dir():
                shutil.copytree(item, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(item, dest)
    rcs = {p.stem: p.read_text().strip() for p in sorted((out / "iscsiadm").glob("*.rc"))}
    print(textwrap.fill(" ".join(f"{k}={v}" for k, v in rcs.items()), 110))
    print(f"captures written to {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "kernel")
    args = ap.parse_args()
    why = GuestVM.available()
    if why is not None:
        print(f"cannot boot the VM here: {why}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="iscsikit-captures-", dir="/tmp") as tmp:
        record(args.out.resolve(), Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
