"""Target config: TOML and flags, validation messages, secrets from files/env only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iscsikit.errors import ConfigError
from iscsikit.target.config import ServeConfig, load_config, merge_flags, parse_lun_arg, parse_portal
from iscsikit.target.proto import PortalInfo

GOOD = """
portals = ["127.0.0.1:3261", "[::1]:3262,7"]
control = "{ctl}"

[limits]
max_burst_length = 524288
first_burst_length = 131072
queue_depth = 32
header_digest = ["CRC32C"]
nop_interval = 10

[discovery]
chap_user = "disc"
chap_secret_file = "{secret}"

[[targets]]
iqn = "iqn.2026-11.org.example:disk1"
allow = ["iqn.2026-11.org.example:host1"]
chap_user = "user1"
chap_secret_env = "ISK_TEST_SECRET"
mutual_user = "tgt1"
mutual_secret_file = "{mutual}"
chap_algorithms = ["SHA256", "MD5"]

[targets.luns]
1 = "memory:size=64M"

[targets.luns.2]
spec = "file:{img},size=1G"
read_only = true
identity = "0f8c1f6e-4a2b-4a47-9d4e-3f3c6f1b9f10"
"""


def write(tmp_path: Path, text: str, **fmt: str) -> Path:
    secret = tmp_path / "secret"
    secret.write_text("discovery-secret\n")
    mutual = tmp_path / "mutual"
    mutual.write_text("mutual-secret-42\n")
    path = tmp_path / "serve.toml"
    path.write_text(text.format(ctl=tmp_path / "ctl.sock", secret=secret, mutual=mutual, img=tmp_path / "d.img", **fmt))
    return path


def test_full_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISK_TEST_SECRET", "initiator-secret")
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.portals == (PortalInfo("127.0.0.1", 3261, 1), PortalInfo("::1", 3262, 7))
    assert cfg.control == tmp_path / "ctl.sock"
    assert cfg.limits.max_burst_length == 524288 and cfg.limits.queue_depth == 32
    assert cfg.limits.header_digests == ("CRC32C",) and cfg.nop_interval == 10
    assert cfg.discovery_auth.chap is not None and cfg.discovery_auth.chap.secret == b"discovery-secret"
    (t,) = cfg.targets
    assert t.acls is not None and [(a.initiator, a.auth) for a in t.acls] == [("iqn.2026-11.org.example:host1", None)]
    assert t.auth.chap is not None and t.auth.chap.secret == b"initiator-secret"
    assert t.auth.mutual is not None and t.auth.mutual.user == "tgt1"
    assert t.auth.algorithms == (7, 5)
    assert [(lc.lun, lc.read_only) for lc in t.luns] == [(1, False), (2, True)]
    assert t.luns[1].identity == "0f8c1f6e-4a2b-4a47-9d4e-3f3c6f1b9f10"


def test_config_under_a_target_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('db_root = "/etc/iscsi"\n[target]\nportals = ["127.0.0.1:3263"]\n')
    assert load_config(path).portals == (PortalInfo("127.0.0.1", 3263, 1),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("portals = [\"1.2.3.4:99999\"]", "portals[0]"),
        ("bogus = 1", "unknown setting(s) bogus"),
        ("[limits]\nfirst_burst_length = 4194304", "first_burst_length must not exceed"),
        ("[limits]\nheader_digest = [\"MD5\"]", "limits.header_digest"),
        ("[[targets]]\niqn = \"not-an-iqn\"", "targets[0].iqn"),
        ("[[targets]]\niqn = \"iqn.2026-11.org.example:a\"\nchap_user = \"u\"\nchap_secret = \"inline-secret-1\"",
         "never written inline"),
        ("[[targets]]\niqn = \"iqn.2026-11.org.example:a\"\nluns = { x = \"memory:size=1M\" }", "targets[0].luns.x"),
        ("[[targets]]\niqn = \"iqn.2026-11.org.example:a\"\nluns = { 1 = \"nonsense\" }", "targets[0].luns.1"),
        ("[[targets]]\niqn = \"iqn.2026-11.org.example:a\"\nchap_user = \"u\"\nchap_secret_env = \"ISK_UNSET_VAR\"",
         "ISK_UNSET_VAR is not set"),
        ("[[targets]]\niqn = \"iqn.2026-11.org.example:a\"\n[[targets]]\niqn = \"iqn.2026-11.org.example:a\"",
         "defined twice"),
        ("portals = [", "serve.toml:"),
    ],
)  # fmt: skip
def test_errors_name_file_and_setting(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load_config(path)
    assert "serve.toml" in str(exc.value)


def test_short_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("short\n")
    with pytest.raises(ConfigError, match="at least 12"):
        merge_flags(ServeConfig(), iqn="iqn.2026-11.org.example:a", chap_user="u", chap_secret_file=tmp_path / "s")


def test_flags_define_a_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISCSIKIT_CHAP_SECRET", "secret-from-env")
    cfg = merge_flags(
        ServeConfig(),
        portals=["127.0.0.1:3300", "127.0.0.2:3300,2"],
        iqn="iqn.2026-11.org.example:cli",
        luns=["1=memory:size=16M", "3=file:/srv/x.img,size=1G"],
        allow=["iqn.2026-11.org.example:h"],
        chap_user="u",
    )
    assert [p.tpgt for p in cfg.portals] == [1, 2]
    (t,) = cfg.targets
    assert [lc.lun for lc in t.luns] == [1, 3]
    assert t.auth.chap is not None and t.auth.chap.secret == b"secret-from-env"
    with pytest.raises(ConfigError, match="need --iqn"):
        merge_flags(ServeConfig(), luns=["1=memory:size=1M"])
    with pytest.raises(ConfigError, match="--mutual-user needs --chap-user"):
        merge_flags(ServeConfig(), iqn="iqn.2026-11.org.example:cli", mutual_user="m")


def test_small_parsers() -> None:
    assert parse_portal("[fe80::1]:3260,5") == PortalInfo("fe80::1", 3260, 5)
    assert parse_portal("10.1.1.1") == PortalInfo("10.1.1.1", 3260, 1)
    assert parse_lun_arg("0=memory:size=1M").lun == 0
    for bad in ("x=memory:size=1M", "1", "1=", "20000=memory:size=1M"):
        with pytest.raises(ConfigError):
            parse_lun_arg(bad)
