"""The kernel initiator (open-iscsi in the VM) against the built-in target's initiator ACLs.

The target runs in the guest from a config file with ``[[targets.acls]]`` entries for the
guest's own initiator name (read from /etc/iscsi/initiatorname.iscsi): one entry with its own
one-way CHAP, one with mutual CHAP, on a target that also has target-level CHAP (which that
initiator may not use). The secrets go into open-iscsi's node records with
``iscsiadm -m node -o update`` (the test's own setup). Wrong secrets, on either side, are refused.
"""

from __future__ import annotations

import shlex
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernel.conftest import DEFAULT_PORTAL, SCRATCH, Guest, MiB
from tests.kernel.test_builtin_target import PIDS, BuiltinTarget, stop_builtin_targets

REFUSED = (5, 8, 19, 24, 255)  # iscsiadm: login failure, auth failure, ...


def _iqn(tag: str) -> str:
    return f"iqn.2026-11.io.iscsikit.test:{tag}{uuid.uuid4().hex[:6]}"


@pytest.fixture
def acl_guest(guest: Guest) -> Iterator[Guest]:
    yield guest
    stop_builtin_targets(guest)


def initiator_name(guest: Guest) -> str:
    return guest.sh("sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi").stdout.strip()


def serve_config(guest: Guest, iqn: str, acl: str, secrets: dict[str, str]) -> BuiltinTarget:
    """``iscsikit target serve --config`` with ``acl`` (TOML of the ACL entry) for ``iqn``."""
    name = "a" + uuid.uuid4().hex[:8]
    hidden = _iqn("hidden")
    config = f"""
control = "{PIDS}/{name}.sock"
portals = ["{DEFAULT_PORTAL}"]

[[targets]]
iqn = "{iqn}"
chap_user = "everyone"
chap_secret_file = "{PIDS}/{name}-target.secret"
luns = {{ 1 = "memory:size={32 * MiB}" }}
{acl}

[[targets]]
iqn = "{hidden}"
allow = ["iqn.2026-11.io.iscsikit.test:somebody-else"]
luns = {{ 1 = "memory:size={8 * MiB}" }}
"""
    files = [f"printf %s {shlex.quote(v)} > {PIDS}/{name}-{k}.secret" for k, v in
             {"target": "the-targets-own-secret", **secrets}.items()]  # fmt: skip
    guest.sh(
        "set -e\nmkdir -p " + PIDS + "\numask 077\n" + "\n".join(files)
        + f"\ncat > {PIDS}/{name}.toml <<'EOF'\n{config.replace('@', PIDS + '/' + name + '-')}\nEOF\n"
    )  # fmt: skip
    argv = ["iscsikit", "-vv", "target", "serve", "--config", f"{PIDS}/{name}.toml"]
    target = BuiltinTarget(iqn, 0, (DEFAULT_PORTAL,), {1: ""}, {1: 32 * MiB}, None, None, None, guest, argv, name)
    target.start()
    found = guest.sh(f"iscsiadm -m discovery -t st -p {DEFAULT_PORTAL}").stdout
    assert iqn in found and hidden not in found, found  # SendTargets lists only what this initiator may use
    return target


def io_check(guest: Guest, dev: str) -> None:
    guest.sh(
        f"""
        set -e
        dd if=/dev/urandom of={SCRATCH}/acl-pat bs=1M count=8 status=none
        dd if={SCRATCH}/acl-pat of={dev} bs=1M oflag=direct status=none
        dd if={dev} of={SCRATCH}/acl-back bs=1M count=8 iflag=direct status=none
        cmp {SCRATCH}/acl-pat {SCRATCH}/acl-back
        """,
        what="I/O through the ACL'd session",
        timeout=300,
    )


def relogin(guest: Guest, target: BuiltinTarget, **settings: str) -> Any:
    """Log out, change node record settings, try to log in again; returns the iscsiadm result."""
    node = f"iscsiadm -m node -T {target.iqn} -p {DEFAULT_PORTAL}"
    updates = "\n".join(f"{node} -o update -n node.session.auth.{k} -v {shlex.quote(v)}" for k, v in settings.items())
    guest.sh(f"iscsiadm -m session -u >/dev/null 2>&1 || true\n{updates}")
    return guest.sh(f"timeout 60 {node} --login", ok=(0, *REFUSED))


def test_per_acl_chap(acl_guest: Guest) -> None:
    guest = acl_guest
    me = initiator_name(guest)
    acl = f"""
[[targets.acls]]
initiator = "{me}"
chap_user = "kernel-host"
chap_secret_file = "@own.secret"
"""
    target = serve_config(guest, _iqn("acl"), acl, {"own": "kernel-own-secret-1"})
    target.chap = ("kernel-host", "kernel-own-secret-1")
    dev = guest.login(target)[1]
    io_check(guest, dev)
    (session,) = target.status()["targets"][0]["session_list"]
    assert session["initiator"] == me
    # The target's own CHAP is not this initiator's: refused; so is a wrong secret.
    assert relogin(guest, target, username="everyone", password="the-targets-own-secret").returncode in REFUSED
    assert relogin(guest, target, username="kernel-host", password="a-wrong-secret-00").returncode in REFUSED
    assert relogin(guest, target, username="kernel-host", password="kernel-own-secret-1").returncode == 0
    log = target.stop()
    assert "does not match" in log and "kernel-own-secret-1" not in log and "the-targets-own-secret" not in log


def test_per_acl_mutual_chap(acl_guest: Guest) -> None:
    guest = acl_guest
    me = initiator_name(guest)
    acl = f"""
[[targets.acls]]
initiator = "{me}"
chap_user = "kernel-host"
chap_secret_file = "@own.secret"
mutual_user = "disk-for-kernel"
mutual_secret_file = "@mutual.secret"
"""
    target = serve_config(guest, _iqn("mutual"), acl, {"own": "kernel-own-secret-2", "mutual": "target-mutual-3"})
    target.chap = ("kernel-host", "kernel-own-secret-2")
    target.mutual_chap = ("disk-for-kernel", "target-mutual-3")
    dev = guest.login(target)[1]
    io_check(guest, dev)
    # The kernel checks the target: a wrong expected target secret refuses the login.
    assert relogin(guest, target, password_in="not-the-target-secret").returncode in REFUSED
    # And the target checks the kernel: a wrong initiator secret with the right target secret.
    bad = relogin(guest, target, password_in="target-mutual-3", password="a-wrong-secret-11")
    assert bad.returncode in REFUSED
    assert relogin(guest, target, password="kernel-own-secret-2").returncode == 0
    target.stop()
