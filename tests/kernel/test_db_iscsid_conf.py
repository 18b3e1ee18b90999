"""With the real iscsid running, new records take their defaults from iscsid.conf: iscsiadm
asks iscsid for the file, iscsikit sees iscsid listening and reads the same file. The
records both write must be byte-identical (and carry the config's values)."""

from __future__ import annotations

import json
import textwrap

from tests.kernel.conftest import Guest

TARGET = "iqn.2026-11.io.iscsikit.test:dbconf"

CONF = """\
iscsid.startup = /bin/systemctl start iscsid.socket iscsiuio.socket
node.startup = automatic
node.session.timeo.replacement_timeout = 77
node.conn[0].timeo.login_timeout = 13
node.session.initial_login_retry_max = 6
node.session.auth.authmethod = CHAP
node.session.auth.username = confuser
node.session.auth.password = conf secret
node.session.auth.chap_algs = SHA256,MD5
node.conn[0].iscsi.HeaderDigest = CRC32C,None
discovery.sendtargets.auth.authmethod = CHAP
discovery.sendtargets.auth.username = discuser
discovery.sendtargets.timeo.login_timeout = 21
"""

COMPARE = textwrap.dedent(
    f"""
    import json, os, subprocess
    from pathlib import Path
    from iscsikit.db.database import Database
    from iscsikit.db.defaults import iscsid_listening

    root = Path("/etc/iscsi")
    node = root / "nodes/{TARGET}/10.0.0.1,3260,1/default"
    link = root / "static/{TARGET},10.0.0.1,3260,1,default"
    st = root / "send_targets/10.0.0.9,3260/st_config"

    def run(*argv):
        subprocess.run(argv, check=True, capture_output=True)

    def snap():
        return [node.read_text(), oct(node.stat().st_mode & 0o777), os.readlink(link), st.read_text()]

    run("iscsiadm", "-m", "node", "-o", "new", "-T", "{TARGET}", "-p", "10.0.0.1:3260,1")
    run("iscsiadm", "-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "new")
    theirs = snap()
    run("iscsiadm", "-m", "node", "-o", "delete", "-T", "{TARGET}")
    run("iscsiadm", "-m", "discoverydb", "-t", "st", "-p", "10.0.0.9", "-o", "delete")

    db = Database(root)  # defaults="auto": iscsid is asked nothing, only seen listening
    db.new_node("{TARGET}", "10.0.0.1:3260,1")
    db.new_discovery("10.0.0.9")
    mine = snap()
    print(json.dumps({{"listening": iscsid_listening(), "theirs": theirs, "mine": mine,
                      "source": db.new_defaults().source}}))
    """
)


def test_new_records_take_iscsid_conf_defaults_like_iscsiadm(guest: Guest) -> None:
    guest.sh(f"cat > /etc/iscsi/iscsid.conf <<'EOF'\n{CONF}EOF\npgrep -x iscsid")
    out = json.loads(guest.python(COMPARE).stdout)
    assert out["listening"] is True
    assert out["source"] == "/etc/iscsi/iscsid.conf"
    assert out["mine"] == out["theirs"]
    node_text = out["mine"][0]
    assert "node.conn[0].timeo.login_timeout = 13\n" in node_text  # from iscsid.conf, not the compiled 30
    assert "node.session.auth.password = conf secret\n" in node_text
    assert "discovery.sendtargets.timeo.login_timeout = 21\n" in out["mine"][3]
