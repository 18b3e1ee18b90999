"""The connector against a real kernel initiator and a real target, inside the VM.

The target comes from the ``target`` fixture, parametrised by kind: tgtd today; the built-in
iscsikit target is added to ``TARGET_KINDS`` when it can serve these scenarios.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from collections.abc import Callable
from typing import Any

import pytest

MiB = 1024 * 1024
TARGET_KINDS = ["tgtd"]


@pytest.fixture(params=TARGET_KINDS)
def make_target(request: pytest.FixtureRequest, guest: Any) -> Callable[..., Any]:
    """``make_target(luns=[...], chap=..., portals=...)`` on a clean guest, of this kind."""

    def make(**kw: Any) -> Any:
        if request.param == "tgtd":
            return guest.target(iqn=f"iqn.2026-11.io.iscsikit.test:{uuid.uuid4().hex[:8]}", **kw)
        raise AssertionError(request.param)

    return make


def run(guest: Any, body: str, *args: str, ok: tuple[int, ...] = (0,), timeout: float = 240) -> Any:
    """Run connector code in the guest; the last stdout line is its JSON answer."""
    code = textwrap.dedent(
        """
        import json, os, sys
        from iscsikit.connector import Chap, Connector, Timeouts, VolumeSpec
        from iscsikit.session.sysfs import Sessions
        STATE = sys.argv[1]
        TARGET = sys.argv[2]
        PORTALS = tuple(sys.argv[3].split(","))
        c = Connector(state_dir=STATE)
        def spec(vid, lun, **kw):
            return VolumeSpec(volume_id=vid, target=TARGET, portals=PORTALS, lun=lun, **kw)
        def sessions():
            return [(s.sid, sorted(d.lun for d in s.devices if d.block)) for s in Sessions().all()]
        """
    ) + textwrap.dedent(body)
    result = guest.python(code, *args, ok=ok, timeout=timeout)
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines and result.returncode == 0 else result


def state_dir() -> str:
    return f"/run/iscsikit-test/state-{uuid.uuid4().hex[:8]}"


def nothing_left(guest: Any) -> None:
    out = guest.sh(
        "ls /sys/class/iscsi_session; ls /dev/disk/by-path | grep -- -iscsi- ; iscsiadm -m node", ok=(0, 1, 2, 21)
    )
    assert out.stdout.strip() == "", f"left behind:\n{out.stdout}"


def test_connect_write_disconnect_leaves_nothing(guest, make_target):
    t = make_target(luns=[32 * MiB])
    st = state_dir()
    a = run(guest, "print(json.dumps(c.connect(spec('v1', 1), timeout=120).to_dict()))", st, t.iqn, t.portal)
    assert a["device"].startswith("/dev/sd") and a["size_bytes"] == 32 * MiB
    assert a["paths"][0]["by_path"] == t.by_path(1)
    assert a["wwn"].startswith("0x") and a["wwid"].startswith("3")
    dev = a["device"]
    guest.sh(
        f"""
        set -e
        mkfs.ext4 -q {dev}
        mkdir -p /run/iscsikit-test/mnt-v1 && mount {dev} /run/iscsikit-test/mnt-v1
        head -c 1048576 /dev/urandom > /run/iscsikit-test/mnt-v1/data && sync
        sha256sum /run/iscsikit-test/mnt-v1/data > /run/iscsikit-test/v1.sum
        umount /run/iscsikit-test/mnt-v1
        """
    )
    # NodeStage again (kubelet retries): same device, nothing new
    again = run(guest, "print(json.dumps(c.connect(spec('v1', 1), timeout=120).to_dict()))", st, t.iqn, t.portal)
    assert again["device"] == dev
    run(guest, "c.disconnect('v1'); print(json.dumps(sessions()))", st, t.iqn, t.portal)
    nothing_left(guest)
    # The data reached the target: attach again and read it back.
    a = run(guest, "print(json.dumps(c.connect(spec('v1', 1), timeout=120).to_dict()))", st, t.iqn, t.portal)
    mnt = "/run/iscsikit-test/mnt-v1"
    guest.sh(f"set -e; mount {a['device']} {mnt}; cd / && sha256sum -c /run/iscsikit-test/v1.sum; umount {mnt}")
    run(guest, "c.disconnect('v1'); print('[]')", st, t.iqn, t.portal)
    nothing_left(guest)


def test_disconnecting_one_lun_keeps_the_session_and_the_other_device(guest, make_target):
    t = make_target(luns=[16 * MiB, 16 * MiB])
    st = state_dir()
    both = run(
        guest,
        "a=c.connect(spec('v1',1)); b=c.connect(spec('v2',2)); print(json.dumps([a.to_dict(), b.to_dict()]))",
        st,
        t.iqn,
        t.portal,
    )
    assert both[0]["sessions"] == both[1]["sessions"]
    dev2 = both[1]["device"]
    pat = "/run/iscsikit-test/pat"
    guest.sh(f"dd if=/dev/urandom of={pat} bs=64k count=4 && dd if={pat} of={dev2} oflag=direct bs=64k")
    left = run(guest, "c.disconnect('v1'); print(json.dumps(sessions()))", st, t.iqn, t.portal)
    assert left == [[both[1]["sessions"][0], [2]]]
    guest.sh(f"cmp -n 262144 /run/iscsikit-test/pat {dev2}")
    run(guest, "c.disconnect('v2'); print('[]')", st, t.iqn, t.portal)
    nothing_left(guest)


def test_killed_between_login_and_device_wait_then_converges(guest, make_target):
    t = make_target(luns=[16 * MiB])
    st = state_dir()
    crashed = run(
        guest,
        """
        c._wait_devices = lambda *a, **kw: os._exit(9)   # SIGKILL-like: no cleanup runs
        c.connect(spec('v1', 1))
        """,
        st,
        t.iqn,
        t.portal,
        ok=(9,),
    )
    assert crashed.returncode == 9
    assert len(guest.sessions()) == 1  # logged in, device never waited for
    a = run(guest, "print(json.dumps(c.connect(spec('v1', 1)).to_dict()))", st, t.iqn, t.portal)
    assert a["state"] == "attached" and a["device"].startswith("/dev/sd") and len(guest.sessions()) == 1
    run(guest, "c.disconnect('v1'); print('[]')", st, t.iqn, t.portal)
    nothing_left(guest)


@pytest.mark.timeout(2400)  # eight Python processes on an emulated 2-CPU guest
def test_eight_parallel_connect_disconnect_lose_nothing(guest, make_target):
    t = make_target(luns=[4 * MiB] * 8)
    st = state_dir()
    worker = (
        "import sys; from iscsikit.connector import Connector, VolumeSpec; "
        f"c = Connector(state_dir='{st}'); n = int(sys.argv[1]); "
        f"s = VolumeSpec(volume_id=f'v{{n}}', target='{t.iqn}', portals=('{t.portal}',), lun=n); "
        "c.connect(s, timeout=900); c.disconnect(s.volume_id, timeout=900); c.connect(s, timeout=900)"
    )
    guest.sh(
        f"""
        pids=""
        for n in 1 2 3 4 5 6 7 8; do
          python -c "{worker}" $n > "$ISCSIKIT_VM_SHARED/w$n.log" 2>&1 & pids="$pids $!"
        done
        rc=0; for p in $pids; do wait $p || rc=1; done
        [ $rc = 0 ] || {{ tail -n 20 "$ISCSIKIT_VM_SHARED"/w*.log; exit 1; }}
        """,
        timeout=2000,
    )
    got = run(
        guest, "print(json.dumps([sorted(a.spec.lun for a in c.attachments()), sessions()]))", st, t.iqn, t.portal
    )
    luns, sessions = got
    assert luns == list(range(1, 9))
    assert len(sessions) == 1 and sessions[0][1] == list(range(1, 9))
    guest.sh(
        f"""
        pids=""
        for n in 1 2 3 4 5 6 7 8; do
          python -c "from iscsikit.connector import Connector; Connector(state_dir='{st}').disconnect('v$n')" &
          pids="$pids $!"
        done
        rc=0; for p in $pids; do wait $p || rc=1; done; exit $rc
        """,
        timeout=1200,
    )
    nothing_left(guest)


def test_chap_right_and_wrong(guest, make_target):
    t = make_target(luns=[8 * MiB], chap=("kituser", "s3cret-pass-1"))
    st = state_dir()
    wrong = run(
        guest,
        """
        from iscsikit.errors import LoginAuthFailedError
        try:
            c.connect(spec('v1', 1, chap=Chap('kituser', 'not-the-secret')), timeout=60)
        except LoginAuthFailedError as exc:
            print(json.dumps({"code": exc.error_code, "msg": str(exc)}))
        """,
        st,
        t.iqn,
        t.portal,
    )
    assert wrong["code"] == 24 and "not-the-secret" not in wrong["msg"]
    a = run(
        guest,
        "print(json.dumps(c.connect(spec('v1', 1, chap=Chap('kituser', 's3cret-pass-1'))).to_dict()))",
        st,
        t.iqn,
        t.portal,
    )
    assert a["device"].startswith("/dev/sd")
    assert "s3cret" not in guest.sh(f"cat {st}/attachments/v1.json").stdout
    run(guest, "c.disconnect('v1'); print('[]')", st, t.iqn, t.portal)
    nothing_left(guest)


def test_custom_initiator_name_through_a_cloned_iface(guest, make_target):
    t = make_target(luns=[8 * MiB])
    st = state_dir()
    name = "iqn.2026-11.io.iscsikit.test:node-a"
    a = run(
        guest,
        f"print(json.dumps(c.connect(spec('v1', 1, initiator_name='{name}')).to_dict()))",
        st,
        t.iqn,
        t.portal,
    )
    sid = a["sessions"][0]
    seen = guest.sh(f"cat /sys/class/iscsi_session/session{sid}/initiatorname").stdout.strip()
    assert seen == name
    run(guest, "c.disconnect('v1'); print('[]')", st, t.iqn, t.portal)
    nothing_left(guest)
    assert guest.sh("iscsiadm -m iface | grep -c isk- || true").stdout.strip() == "0"


def test_iscsid_restarted_between_calls(guest, make_target):
    t = make_target(luns=[8 * MiB, 8 * MiB])
    st = state_dir()
    run(guest, "print(json.dumps(c.connect(spec('v1', 1)).to_dict()))", st, t.iqn, t.portal)
    guest.sh(
        """
        kill $(pidof iscsid); for i in $(seq 100); do pidof iscsid >/dev/null || break; sleep 0.05; done
        setsid iscsid -f >>"$ISCSIKIT_VM_SHARED/iscsid.log" 2>&1 </dev/null &
        for i in $(seq 200); do grep -q ISCSIADM_ABSTRACT_NAMESPACE /proc/net/unix && break; sleep 0.05; done
        """
    )
    b = run(guest, "print(json.dumps(c.connect(spec('v2', 2)).to_dict()))", st, t.iqn, t.portal)
    assert b["device"].startswith("/dev/sd") and len(guest.sessions()) == 1
    run(guest, "c.disconnect('v1'); c.disconnect('v2'); print('[]')", st, t.iqn, t.portal)
    nothing_left(guest)
