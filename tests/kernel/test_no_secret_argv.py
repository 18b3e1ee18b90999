"""No CHAP secret on any command line while iscsikit discovers, logs in and connects (issue 13).

A poller in the guest reads ``/proc/*/cmdline`` of every process, over and over, from before
``iscsikit discover`` (with discovery CHAP) until after the connector's connect and
disconnect; in between ``iscsikit login`` logs in to a tgtd target that requires CHAP (the
session secret set with ``iscsikit node set --value-file``) and the real open-iscsi
initiator brings its LUN up. The secrets must never appear, and the logins must succeed.
As a control, the poller must catch a secret that *is* put on a command line on purpose
(``sh -c 'sleep 2' SECRET``) and must have seen iscsiadm's own command lines.
"""

from __future__ import annotations

import json
import os
import textwrap
from typing import Any

MiB = 1024 * 1024
IQN = "iqn.2026-11.io.iscsikit.test:no-secret-argv"
SECRET = "session-s3cret-argv-13"
DISC_SECRET = "discovery-s3cret-argv-13"

POLLER = textwrap.dedent(
    """
    import json, os, sys
    secrets = [open(p, "rb").read() for p in sys.argv[1:3]]
    out, stop = sys.argv[3], sys.argv[4]
    scans, hits, iscsiadm = 0, [], 0
    me = str(os.getpid())
    while True:
        done = os.path.exists(stop)  # one full scan after the stop file appears
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or pid == me:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    line = fh.read()
            except OSError:
                continue
            if b"iscsiadm" in line:
                iscsiadm += 1
            if any(s in line for s in secrets):
                text = line.replace(b"\\0", b" ").decode(errors="replace")
                if text not in hits:
                    hits.append(text)
        scans += 1
        if done:
            break
    json.dump({"scans": scans, "hits": hits, "iscsiadm": iscsiadm}, open(out, "w"))
    """
)

CONNECT = textwrap.dedent(
    """
    import json, sys
    from iscsikit.connector import Chap, Connector, VolumeSpec
    secret, disc_secret = (open(p).read() for p in sys.argv[1:3])
    c = Connector(state_dir=sys.argv[3])
    spec = VolumeSpec(volume_id="v13", target=sys.argv[4], portals=(sys.argv[5],), lun=1, discovery=True,
                      chap=Chap("user13", secret), discovery_chap=Chap("disc13", disc_secret))
    a = c.connect(spec, timeout=120)
    print(json.dumps({"device": a.device}))
    c.disconnect("v13")
    """
)


def test_discover_login_and_connect_never_show_a_secret_in_proc_cmdline(guest: Any) -> None:
    target = guest.target(iqn=IQN, luns=[16 * MiB], chap=("user13", SECRET))  # tgtadm --password: before the poller
    shared = guest.vm.shared / "no-secret-argv"
    shared.mkdir(exist_ok=True)
    secret, disc_secret = shared / "secret", shared / "disc-secret"
    for path, value in ((secret, SECRET), (disc_secret, DISC_SECRET)):
        path.write_text(value)
        os.chmod(path, 0o600)
    (shared / "poller.py").write_text(POLLER)
    (shared / "connect.py").write_text(CONNECT)
    result, stop = shared / "poll.json", shared / "stop"
    for leftover in (result, stop):
        leftover.unlink(missing_ok=True)
    guest.sh(
        f"""
        setsid python {shared}/poller.py {secret} {disc_secret} {result} {stop} </dev/null >{shared}/poller.log 2>&1 &
        waitfor 30 pgrep -f {shared}/poller.py >/dev/null
        """
    )
    try:
        discovered = guest.sh(
            f"iscsikit --json discover {target.portal} --chap-user disc13 --chap-secret-file {disc_secret}"
        )
        assert [t["target"] for t in json.loads(discovered.stdout)] == [IQN]
        guest.sh(
            f"""
            set -e
            iscsikit node set {IQN} node.session.auth.authmethod=CHAP node.session.auth.username=user13 \\
                --value-file node.session.auth.password={secret}
            iscsikit login {IQN} --portal {target.portal} --timeout 60
            waitfor 60 test -e {target.by_path(1)}
            iscsikit logout {IQN}
            """,
            what="iscsikit discover/login with CHAP",
        )
        connected = guest.sh(
            f"python {shared}/connect.py {secret} {disc_secret} /run/iscsikit-test/state-v13 {IQN} {target.portal}",
            what="connector connect with CHAP",
        )
        assert json.loads(connected.stdout.splitlines()[-1])["device"].startswith("/dev/sd")
        # the control: a secret that is on a command line is caught
        guest.sh(f"sh -c 'sleep 2' \"$(cat {secret})\"")
    finally:
        stop.write_text("")
        guest.sh(f"waitfor 60 test -s {result}", what="the poller did not finish")
    seen = json.loads(result.read_text())
    assert seen["scans"] > 10 and seen["iscsiadm"] > 0, seen
    assert seen["hits"] == [f"sh -c sleep 2 {SECRET} "], seen["hits"]
