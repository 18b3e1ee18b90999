"""locate.py (where the DB is) and defaults.py (what a new record starts from)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from iscsikit.db.defaults import compiled_defaults, conf_defaults, iscsid_listening, new_record_defaults
from iscsikit.db.locate import _root_from_binary, locate_db_root
from iscsikit.errors import DatabaseError


def test_explicit_then_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ISCSIKIT_DB_ROOT", str(tmp_path / "env"))
    assert locate_db_root(tmp_path / "given").path == tmp_path / "given"
    found = locate_db_root()
    assert (found.path, found.source) == (tmp_path / "env", "environment")


def test_the_path_compiled_into_iscsiadm_wins() -> None:
    binary = b"\x00junk/nodes\x00/etc/iscsi/send_targets\x00x/var/lib/iscsi/nodes\x00/var/lib/iscsi/send_targets\x00"
    assert _root_from_binary(binary) == Path("/var/lib/iscsi")
    assert _root_from_binary(b"nothing here") is None


def test_records_then_distribution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ISCSIKIT_DB_ROOT", raising=False)
    monkeypatch.setattr("iscsikit.db.locate.compiled_db_root", lambda runner=None: None)
    a, b = tmp_path / "etc-iscsi", tmp_path / "var-lib-iscsi"
    (b / "nodes/iqn.2026-11.test:x").mkdir(parents=True)
    found = locate_db_root(candidates=(a, b), os_release=tmp_path / "none")
    assert (found.path, found.source) == (b, "records")
    release = tmp_path / "os-release"
    release.write_text('ID=rocky\nID_LIKE="rhel centos fedora"\nPRETTY_NAME="Rocky Linux 9"\n')
    found = locate_db_root(candidates=(a, tmp_path / "empty"), os_release=release)
    assert (str(found.path), found.source) == ("/var/lib/iscsi", "distribution")
    assert "Rocky Linux 9" in found.reason
    (a / "ifaces").mkdir(parents=True)
    (a / "ifaces/x").write_text("")
    with pytest.raises(DatabaseError, match="pass --db-root"):
        locate_db_root(candidates=(a, b), os_release=tmp_path / "none")


def test_iscsid_listening_sees_a_listener_on_the_abstract_socket() -> None:
    name = f"\0isk-test-{os.getpid()}".encode()
    assert not iscsid_listening(name)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(name)
        server.listen(1)
        assert iscsid_listening(name)
    finally:
        server.close()


def test_conf_overlays_the_compiled_defaults_like_idbm_sync_config(tmp_path: Path) -> None:
    text = (
        "# comment\niscsid.startup = /bin/true\nnode.startup = automatic\n"
        "node.conn[0].timeo.login_timeout = 15\nnode.session.auth.chap_algs = SHA256 MD5\n"
        "discovery.sendtargets.auth.authmethod = CHAP\nnode.session.iscsi.FastAbort = no\n"
    )
    conf = conf_defaults(text)
    base = compiled_defaults()
    assert base.node["node.conn[0].timeo.login_timeout"] == "30"
    assert conf.node["node.conn[0].timeo.login_timeout"] == "15"
    assert conf.node["node.startup"] == "automatic"
    assert conf.node["node.session.iscsi.FastAbort"] == "Yes"  # a bad enum keeps the default
    assert conf.sendtargets["discovery.sendtargets.auth.authmethod"] == "CHAP"
    assert conf.sendtargets["node.session.auth.chap_algs"] == "SHA256,MD5"  # the key is shared
    path = tmp_path / "iscsid.conf"
    path.write_text(text)
    assert new_record_defaults("conf", path).source == str(path)
    assert new_record_defaults("compiled", path).source == "compiled"
    missing = new_record_defaults("conf", tmp_path / "missing.conf")
    assert missing.source == "compiled" and missing.warnings  # as iscsiadm: compiled when unreadable
