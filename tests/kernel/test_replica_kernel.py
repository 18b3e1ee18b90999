"""A replicated LUN under the Linux kernel initiator: ext4 survives a replica dying and rebuilding.

Everything runs in the guest: three ``iscsikit replica serve`` processes, ``iscsikit target
serve`` with a ``replicated:`` LUN over them, open-iscsi logged in to it. The test makes ext4,
writes files, kills one replica with SIGKILL, keeps writing, restarts the replica, waits for
its rebuild, and then checks: fsck clean, every file's checksum right, and, after a clean
stop of the target, the three replica images byte-identical.

It runs twice: with a secret shared by the replicas and the target (``--secret-file`` /
``secret_file=``), and with TLS (mutual certificates from a CA made in the guest with ``openssl``)
plus the secret. Plain replicated LUNs on loopback go through the same kill and rebuild in the
demo's kernel test.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.kernel.conftest import SCRATCH, Guest, MiB
from tests.kernel.test_builtin_target import PIDS, BuiltinTarget, stop_builtin_targets

REPLICAS = f"{SCRATCH}/isk-replicas"
PORTS = (9711, 9712, 9713)
SIZE = 48 * MiB
SECRET = f"{REPLICAS}/vol.secret"
PKI = f"{REPLICAS}/pki"


def make_security(guest: Guest, tls: bool) -> None:
    """A secret, and with ``tls`` a CA and ECDSA certificates for the replicas and the target."""
    certs = ""
    if tls:
        certs = f"""
        mkdir -p {PKI} && cd {PKI}
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj /CN=isk-test-ca \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n' > leaf.ext
        for n in r0 r1 r2 target; do
            openssl ecparam -name prime256v1 -genkey -noout -out $n.key
            openssl req -new -key $n.key -out $n.csr -subj /CN=$n
            openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2 \
                -extfile leaf.ext 2>/dev/null
        done
        """
    guest.sh(
        f"""
        set -e
        mkdir -p {REPLICAS}
        umask 077
        iscsikit replica secret --output {SECRET}
        {certs}
        """,
        what="make the secret" + (" and the certificates" if tls else ""),
        timeout=300,
    )


def server_flags(i: int, tls: bool) -> str:
    flags = f"--secret-file {SECRET}"
    if tls:
        flags += f" --tls-cert {PKI}/r{i}.pem --tls-key {PKI}/r{i}.key --tls-ca {PKI}/ca.pem"
    return flags


def spec_options(tls: bool) -> str:
    opts = f",secret_file={SECRET}"
    if tls:
        opts += f",tls_cert={PKI}/target.pem,tls_key={PKI}/target.key,tls_ca={PKI}/ca.pem"
    return opts


@pytest.fixture
def replica_guest(guest: Guest) -> Iterator[Guest]:
    yield guest
    stop_builtin_targets(guest)
    guest.sh(
        f"""
        for f in {REPLICAS}/*.pid; do [ -e "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
        rm -rf {REPLICAS}
        true
        """,
        what="stop the replica servers",
    )


def start_replica(guest: Guest, i: int, tls: bool) -> None:
    port = PORTS[i]
    guest.sh(
        f"""
        set -e
        mkdir -p {REPLICAS}
        setsid iscsikit replica serve {REPLICAS}/r{i} --size {SIZE} --listen 127.0.0.1:{port} \\
            {server_flags(i, tls)} >>{REPLICAS}/r{i}.log 2>&1 </dev/null &
        echo $! > {REPLICAS}/r{i}.pid
        waitfor 300 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null || {{ cat {REPLICAS}/r{i}.log; exit 1; }}
        """,
        what=f"start replica {i}",
        timeout=360,
    )


def replica_status(guest: Guest, target: BuiltinTarget) -> list[dict[str, object]]:
    out = guest.sh(f"iscsikit --json replica status --control {target.control}").stdout
    volumes = json.loads(out)
    replicas: list[dict[str, object]] = volumes[0]["replicas"]
    return replicas


@pytest.mark.timeout(1800)  # five Python processes under TCG emulation: slow, but it must finish
@pytest.mark.parametrize("security", ["secret", "tls"])
def test_ext4_on_a_replicated_lun_survives_a_replica_kill_and_rebuild(replica_guest: Guest, security: str) -> None:
    guest = replica_guest
    tls = security == "tls"
    make_security(guest, tls)
    for i in range(3):
        start_replica(guest, i, tls)
    iqn = f"iqn.2026-11.io.iscsikit.test:repl{uuid.uuid4().hex[:6]}"
    name = "t" + uuid.uuid4().hex[:8]
    spec = "replicated:" + ",".join(f"tcp://127.0.0.1:{p}" for p in PORTS) + ",timeout=5" + spec_options(tls)
    argv = ["iscsikit", "-v", "target", "serve", "--iqn", iqn, "--control", f"{PIDS}/{name}.sock",
            "--portal", "127.0.0.1:3260", "--lun", f"1={spec}"]  # fmt: skip
    target = BuiltinTarget(iqn, 0, ("127.0.0.1:3260",), {1: spec}, {1: SIZE}, None, None, None, guest, argv, name)
    guest.sh(  # like target.start(), with more patience: three replicas to reach under TCG
        f"""
        set -e
        mkdir -p {PIDS}
        setsid {" ".join(argv)} >>{target.log} 2>&1 </dev/null &
        echo $! > {PIDS}/{name}.pid
        waitfor 300 bash -c 'exec 3<>/dev/tcp/127.0.0.1/3260' 2>/dev/null || {{ cat {target.log}; exit 1; }}
        """,
        what="start the target with a replicated LUN",
        timeout=360,
    )
    dev = guest.login(target)[1]
    mnt = f"{SCRATCH}/mnt"
    guest.sh(
        f"""
        set -e
        mkfs.ext4 -q -F {dev}
        mkdir -p {mnt} && mount {dev} {mnt}
        for i in 1 2 3; do dd if=/dev/urandom of={mnt}/a$i bs=1M count=1 status=none; done
        sync
        kill -9 $(cat {REPLICAS}/r1.pid)
        for i in 1 2 3; do dd if=/dev/urandom of={mnt}/b$i bs=1M count=1 conv=fsync status=none; done
        sync
        """,
        what="mkfs, write, kill a replica, keep writing",
        timeout=900,
    )
    modes = [r["mode"] for r in replica_status(guest, target)]
    assert modes == ["rw", "err", "rw"], modes
    start_replica(guest, 1, tls)
    guest.sh(
        f"""
        set -e
        rebuilt() {{
            iscsikit replica status --control {target.control} | awk 'NR > 1 && $4 == "rw"' | wc -l | grep -qx 3
        }}
        waitfor 180 rebuilt || {{ iscsikit replica status --control {target.control}; exit 1; }}
        for i in 1 2; do dd if=/dev/urandom of={mnt}/c$i bs=1M count=1 conv=fsync status=none; done
        (cd {mnt} && sha256sum a1 a2 a3 b1 b2 b3 c1 c2) > {SCRATCH}/repl-sums
        umount {mnt}
        fsck.ext4 -n -f {dev}
        echo 3 > /proc/sys/vm/drop_caches
        mount {dev} {mnt}
        (cd {mnt} && sha256sum -c {SCRATCH}/repl-sums)
        umount {mnt}
        iscsiadm -m session -u >/dev/null
        """,
        what="rebuild, fsck, checksums",
        timeout=900,
    )
    rebuilt = replica_status(guest, target)[1]
    assert rebuilt["rebuild_progress"] == 1.0
    log = target.stop()
    assert "Traceback" not in log
    assert "rw -> err" in log and "wo -> rw" in log  # the failure and the rebuild were logged
    logs = guest.sh(f"cat {REPLICAS}/r*.log", what="replica logs").stdout
    assert ("shared secret and TLS" if tls else "(shared secret)") in logs
    assert "refused connection" not in logs  # the target always got in
    secret = guest.sh(f"cat {SECRET}", what="the secret").stdout.strip()
    assert secret and secret not in log and secret not in logs
    guest.sh(
        f"set -e; for i in 1 2; do cmp {REPLICAS}/r0/volume.img {REPLICAS}/r$i/volume.img; done",
        what="replica images identical",
        timeout=120,
    )
