"""``config show/get --effective``: the values a run uses, with where each comes from."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from iscsikit.cli.main import app


def _run(tmp_path: Path, *args: str) -> dict[str, object]:
    cfg = tmp_path / "config.toml"
    cfg.write_text('host = "ns"\n[timeouts]\nlogin = 30\n')
    env = {"ISCSIKIT_DB_ROOT": str(tmp_path), "ISCSIKIT_HOST": None, "ISCSIKIT_SYSFS_ROOT": None}
    res = CliRunner().invoke(app, ["--json", "--config", str(cfg), "--host", "local", *args], env=env)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_effective_lays_flags_and_environment_over_the_file(tmp_path: Path) -> None:
    doc = _run(tmp_path, "config", "show", "--effective")
    settings, sources = doc["settings"], doc["sources"]
    assert isinstance(settings, dict) and isinstance(sources, dict)
    assert (settings["host"], sources["host"]) == ("local", "flag")  # the file says ns
    assert (settings["db_root"], sources["db_root"]) == (str(tmp_path), "env")
    assert (settings["timeouts.login"], sources["timeouts.login"]) == (30, "file")
    assert (settings["lock_dir"], sources["lock_dir"]) == ("/run/lock/iscsi", "default")


def test_without_effective_the_file_and_defaults_as_before(tmp_path: Path) -> None:
    doc = _run(tmp_path, "config", "show")
    assert "sources" not in doc
    assert isinstance(doc["settings"], dict) and doc["settings"]["host"] == "ns"
    assert doc["settings"]["db_root"] == ""


def test_get_effective(tmp_path: Path) -> None:
    assert _run(tmp_path, "config", "get", "host", "--effective") == {"host": "local"}
    assert _run(tmp_path, "config", "get", "host") == {"host": "ns"}
    assert _run(tmp_path, "config", "get", "db_root", "--effective") == {"db_root": str(tmp_path)}
