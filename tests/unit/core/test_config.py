"""config.py and `iscsikit config`: defaults, validation naming file and key, comments kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iscsikit.cli.main import app
from iscsikit.config import SETTINGS, Config
from iscsikit.errors import ConfigError

USER_FILE = """\
# site config, kept by ops
host = "ns"   # containers

[timeouts]
# our SAN is slow
login = 300
"""


def test_defaults_without_a_file(tmp_path: Path) -> None:
    cfg = Config.load(None) if not Path("/etc/iscsikit/config.toml").exists() else Config(None, None)
    for key, setting in SETTINGS.items():
        assert cfg.get(key) == setting.default
    with pytest.raises(ConfigError, match="does not exist"):
        Config.load(tmp_path / "missing.toml")


def test_values_from_file_override_defaults() -> None:
    cfg = Config.from_text(USER_FILE)
    assert cfg.get("host") == "ns" and cfg.get("timeouts.login") == 300
    assert cfg.get("timeouts.device") == 60 and cfg.source("timeouts.device") == "default"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("hots = 1\n", "unknown key 'hots'"),
        ('host = "nss"\n', "host = 'nss'"),
        ("[timeouts]\nlogin = 0\n", "timeouts.login = 0: must be greater than 0"),
        ('state_dir = "relative/dir"\n', "must be an absolute path"),
        ("host = \n", "site.toml:1"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        Config.load(path)
    assert fragment in str(exc.value)
    assert str(path) in str(exc.value)


def test_cli_set_keeps_comments_and_order(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(USER_FILE)
    runner = CliRunner()
    res = runner.invoke(app, ["--config", str(path), "config", "set", "timeouts.device", "90"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["--config", str(path), "config", "set", "db_root", "/var/lib/iscsi"])
    assert res.exit_code == 0, res.output
    text = path.read_text()
    assert text.startswith('# site config, kept by ops\nhost = "ns"   # containers\n')
    assert "# our SAN is slow\nlogin = 300\ndevice = 90\n" in text
    shown = json.loads(runner.invoke(app, ["--json", "--config", str(path), "config", "show"]).stdout)
    assert shown["settings"]["timeouts.device"] == 90 and shown["settings"]["db_root"] == "/var/lib/iscsi"


def test_cli_set_rejects_bad_values_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(USER_FILE)
    res = CliRunner().invoke(app, ["--config", str(path), "config", "set", "timeouts.login", "soon"])
    assert res.exit_code == 2
    assert "timeouts.login" in res.output and "soon" in res.output
    assert path.read_text() == USER_FILE


def test_cli_set_dry_run_prints_and_does_not_write(tmp_path: Path) -> None:
    path = tmp_path / "new.toml"
    res = CliRunner().invoke(app, ["--dry-run", "--config", str(path), "config", "set", "host", "chroot:/host"])
    assert res.exit_code == 2 or res.exit_code == 0
    # the explicit --config file does not exist yet: loading it is an error, not a silent default
    assert not path.exists()
