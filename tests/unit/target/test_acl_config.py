"""Target access control in the config: ACL entries, per-ACL CHAP, secret rules, exposure check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from iscsikit.errors import ConfigError
from iscsikit.target.config import ServeConfig, check_exposure, is_loopback, load_config, merge_flags
from iscsikit.target.proto import PortalInfo

T = "iqn.2026-11.org.example:disk1"
H1 = "iqn.2026-11.org.example:host1"
H2 = "iqn.2026-11.org.example:host2"


def secrets(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name, value in [("s1", "host2-secret-0001"), ("m1", "target-mutual-0002"), ("s3", "target-chap-0003"),
                        ("short", "tooshort")]:  # fmt: skip
        f = tmp_path / name
        f.write_text(value + "\n")
        out[name] = str(f)
    return out


def load(tmp_path: Path, text: str) -> ServeConfig:
    path = tmp_path / "serve.toml"
    path.write_text(text.format(**secrets(tmp_path)))
    return load_config(path)


def test_default_portal_is_loopback() -> None:
    assert ServeConfig().portals == (PortalInfo("127.0.0.1", 3260, 1),)
    from iscsikit.target.config import config_from_mapping

    assert config_from_mapping({}).portals == (PortalInfo("127.0.0.1", 3260, 1),)


def test_acls_table_with_own_chap_and_allow_list(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        f"""
[[targets]]
iqn = "{T}"
allow = ["{H1}"]
[[targets.acls]]
initiator = "{H2}"
chap_user = "host2"
chap_secret_file = "{{s1}}"
mutual_user = "disk1"
mutual_secret_file = "{{m1}}"
""",
    )
    (t,) = cfg.targets
    assert t.acls is not None
    by = {a.initiator: a for a in t.acls}
    assert by[H1].auth is None
    a2 = by[H2].auth
    assert a2 is not None and a2.chap is not None and a2.mutual is not None
    assert (a2.chap.user, a2.chap.secret, a2.mutual.user, a2.mutual.secret) == (
        "host2", b"host2-secret-0001", "disk1", b"target-mutual-0002")  # fmt: skip
    assert "host2-secret" not in repr(cfg)  # credentials never show their secret


def test_no_allow_and_no_acls_means_no_acl_but_an_empty_list_is_an_acl(tmp_path: Path) -> None:
    assert load(tmp_path, f'[[targets]]\niqn = "{T}"\n').targets[0].acls is None
    assert load(tmp_path, f'[[targets]]\niqn = "{T}"\nallow = []\n').targets[0].acls == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f'[[targets.acls]]\ninitiator = "{H2}"\nchap_user = "u"\nchap_secret_file = "{{s1}}"\n'
         f'mutual_user = "m"\nmutual_secret_file = "{{s1}}"',
         "targets[0].acls[0]: the mutual (target) secret must differ"),
        (f'[[targets.acls]]\ninitiator = "{H2}"\nchap_user = "u"\nchap_secret = "inline-secret-99"',
         "targets[0].acls[0].chap_secret: secrets are never written inline"),
        (f'[[targets.acls]]\ninitiator = "{H2}"\nchap_user = "u"\nchap_secret_file = "{{short}}"',
         "targets[0].acls[0].chap_secret: the CHAP secret is 8 bytes"),
        (f'[[targets.acls]]\ninitiator = "{H2}"\nmutual_user = "m"\nmutual_secret_file = "{{m1}}"',
         "targets[0].acls[0]: mutual CHAP needs"),
        ('[[targets.acls]]\nchap_user = "u"', "targets[0].acls[0]: initiator is missing"),
        ('[[targets.acls]]\ninitiator = "not an iqn"', "targets[0].acls[0]: invalid initiator"),
        (f'[[targets.acls]]\ninitiator = "{H2}"\nbogus = 1', "targets[0].acls[0]: unknown setting(s) bogus"),
        (f'allow = ["{H2}"]\n[[targets.acls]]\ninitiator = "{H2}"', f"initiator {H2} is in the ACL twice"),
        ('allow = "x"', "targets[0].allow: must be a list"),
        # RFC 7143 12.1.3: a secret proving an initiator somewhere may not prove the target elsewhere.
        (f'chap_user = "t"\nchap_secret_file = "{{s1}}"\n[[targets.acls]]\ninitiator = "{H2}"\nchap_user = "u"\n'
         f'chap_secret_file = "{{s3}}"\nmutual_user = "m"\nmutual_secret_file = "{{s1}}"',
         "mutual (target) secret is also an initiator's CHAP secret"),
    ],
)  # fmt: skip
def test_acl_errors_name_the_setting(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as exc:
        load(tmp_path, f'[[targets]]\niqn = "{T}"\n' + body + "\n")
    assert "serve.toml" in str(exc.value)
    assert "secret-0001" not in str(exc.value) and "mutual-0002" not in str(exc.value)


def test_target_level_mutual_secret_equal_to_chap_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must differ"):
        load(tmp_path, f'[[targets]]\niqn = "{T}"\nchap_user = "u"\nchap_secret_file = "{{s1}}"\nmutual_user = "m"\n'
                       f'mutual_secret_file = "{{s1}}"\n')  # fmt: skip
    with pytest.raises(ConfigError, match="must differ"):
        merge_flags(ServeConfig(), iqn=T, chap_user="u", chap_secret_file=tmp_path / "s1", mutual_user="m",
                    mutual_secret_file=tmp_path / "s1")  # fmt: skip


def test_insecure_open_and_discovery_flags(tmp_path: Path) -> None:
    secrets(tmp_path)
    cfg = merge_flags(
        ServeConfig(), insecure_open=True, discovery_chap_user="disc", discovery_chap_secret_file=tmp_path / "s1",
        discovery_mutual_user="dm", discovery_mutual_secret_file=tmp_path / "m1",
    )  # fmt: skip
    assert cfg.insecure_open
    assert cfg.discovery_auth.chap is not None and cfg.discovery_auth.chap.secret == b"host2-secret-0001"
    assert cfg.discovery_auth.mutual is not None and cfg.discovery_auth.mutual.user == "dm"
    with pytest.raises(ConfigError, match="--discovery-chap-secret-file needs --discovery-chap-user"):
        merge_flags(ServeConfig(), discovery_chap_secret_file=tmp_path / "s1")
    with pytest.raises(ConfigError, match="--discovery-mutual-user needs"):
        merge_flags(ServeConfig(), discovery_mutual_user="x")
    with pytest.raises(ConfigError, match="must differ"):
        merge_flags(ServeConfig(), discovery_chap_user="d", discovery_chap_secret_file=tmp_path / "s1",
                    discovery_mutual_user="m", discovery_mutual_secret_file=tmp_path / "s1")  # fmt: skip
    assert load(tmp_path, "insecure_open = true\n").insecure_open
    with pytest.raises(ConfigError, match="insecure_open must be true or false"):
        load(tmp_path, 'insecure_open = "yes"\n')


def test_allow_flag_adds_entries_without_own_chap(tmp_path: Path) -> None:
    cfg = merge_flags(ServeConfig(), iqn=T, luns=["1=memory:size=1M"], allow=[H1, H1, H2])
    assert cfg.targets[0].acls is not None
    assert [(a.initiator, a.auth) for a in cfg.targets[0].acls] == [(H1, None), (H2, None)]
    with pytest.raises(ConfigError, match="--allow bad: invalid initiator"):
        merge_flags(ServeConfig(), iqn=T, allow=["bad"])


@pytest.mark.parametrize(
    ("address", "loopback"),
    [("127.0.0.1", True), ("127.9.8.7", True), ("::1", True), ("0.0.0.0", False), ("::", False),
     ("10.0.0.1", False), ("128.0.0.1", False), ("localhost", False), ("::ffff:10.0.0.1", False)],
)  # fmt: skip
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_exposure_check(tmp_path: Path) -> None:
    secrets(tmp_path)
    open_target = merge_flags(ServeConfig(), iqn=T, luns=["1=memory:size=1M"])
    assert check_exposure(open_target) == []  # loopback: fine
    exposed = merge_flags(open_target, portals=["127.0.0.1:3260", "10.1.2.3:3260"])
    with pytest.raises(ConfigError) as exc:
        check_exposure(exposed)
    message = str(exc.value)
    assert "\n" not in message
    assert "portal 10.1.2.3:3260 is not loopback" in message and T in message and "--insecure-open" in message
    with pytest.raises(ConfigError, match=re.escape("portal 0.0.0.0:3260")):
        check_exposure(merge_flags(open_target, portals=["0.0.0.0:3260"]))
    (warning,) = check_exposure(merge_flags(exposed, insecure_open=True))
    assert "insecure-open" in warning
    (weak,) = check_exposure(merge_flags(exposed, allow=[H1]))  # an ACL by name alone: allowed, warned
    assert H1 in weak and "name alone" in weak
    assert check_exposure(merge_flags(exposed, chap_user="u", chap_secret_file=tmp_path / "s1")) == []
    # Every target served on the portal counts: a second, open target fails it.
    second = merge_flags(merge_flags(exposed, allow=[H1]), iqn="iqn.2026-11.org.example:other",
                         luns=["1=memory:size=1M"])  # fmt: skip
    with pytest.raises(ConfigError, match=re.escape("iqn.2026-11.org.example:other has neither")):
        check_exposure(second)
