"""``iscsikit clean`` and ``iscsikit restore`` as users run them: plan output, JSON, exit codes, usage errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from iscsikit.cli.clean import parse_duration
from iscsikit.cli.main import app, hoist_global_flags
from iscsikit.errors import UsageError
from tests.unit.clean.synthetic import SyntheticHost, T, fake_commands


class Cli:
    def __init__(self, host: SyntheticHost, tmp_path: Path) -> None:
        self.host = host
        bin_dir = tmp_path / "bin"
        fake_commands(bin_dir, host.sys)
        self.env = {**host.env(), "PATH": f"{bin_dir}:{os.environ['PATH']}"}

    def __call__(self, *args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(app, hoist_global_flags(list(args)), env=self.env)
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--json", code=code).stdout)


@pytest.fixture
def cli(host: SyntheticHost, tmp_path: Path) -> Cli:
    return Cli(host, tmp_path)


def scene(host: SyntheticHost) -> tuple[int, int]:
    host.db.new_node(f"{T}:healthy", "127.0.0.1:3260,1")
    healthy = host.session(f"{T}:healthy", "127.0.0.1:3260,1")
    host.db.new_node(f"{T}:stale", "127.0.0.1:3261,1")
    stale = host.session(f"{T}:stale", "127.0.0.1:3261,1", state="FAILED", conn_state="failed", luns={1: "blocked"})
    host.db.new_node(f"{T}:orphan", "127.0.0.1:3262,1")
    return healthy, stale


def test_without_yes_only_the_plan_is_printed(cli: Cli, host: SyntheticHost) -> None:
    scene(host)
    before = host.tree()
    out = cli("clean", "--stale-only")
    lines = out.stdout.splitlines()
    assert lines[0].split("\t") == ["ORDER", "KIND", "TARGET", "PORTAL", "DETAIL", "BLOCKED BY"]
    assert [line.split("\t")[1] for line in lines[1:]] == ["remove-device", "logout", "delete-node"]
    assert "Run again with --yes to carry out 3 action(s)." in out.stderr
    assert host.tree() == before and len(os.listdir(host.sys / "class/iscsi_session")) == 2


def test_json_plan_and_dry_run(cli: Cli, host: SyntheticHost) -> None:
    _healthy, stale = scene(host)
    doc = cli.json("clean", "--stale-only")
    assert doc["applied"] is False and doc["summary"] == {
        "total": 3, "blocked": 0, "by_kind": {"remove-device": 1, "logout": 1, "delete-node": 1},
    }  # fmt: skip
    assert [(a["kind"], a["sid"]) for a in doc["actions"]] == [("remove-device", stale), ("logout", stale),
                                                                ("delete-node", None)]  # fmt: skip
    dry = cli.json("clean", "--stale-only", "--yes", "--dry-run")  # --dry-run wins over --yes
    assert dry["applied"] is False and [a["kind"] for a in dry["actions"]] == [a["kind"] for a in doc["actions"]]
    assert len(os.listdir(cli.host.sys / "class/iscsi_session")) == 2


def test_yes_applies_and_reports_with_a_backup(cli: Cli, host: SyntheticHost) -> None:
    healthy, _stale = scene(host)
    doc = cli.json("clean", "--stale-only", "--yes")
    assert doc["applied"] is True and [a["status"] for a in doc["actions"]] == ["done", "done", "done"]
    assert doc["summary"] == {"total": 3, "done": 3, "gone": 0, "blocked": 0, "failed": 0}
    assert Path(doc["backup"]).is_file() and Path(doc["backup"]).parent == host.state / "backups"
    assert os.listdir(host.sys / "class/iscsi_session") == [f"session{healthy}"]
    assert [r.target for r in host.db.nodes()] == [f"{T}:healthy", f"{T}:orphan"]
    # restore, then a second restore is a no-op
    restored = cli.json("restore", doc["backup"])
    assert f"nodes/{T}:stale/127.0.0.1,3261,1/default" in restored["restored"]
    assert [r.target for r in host.db.nodes()] == [f"{T}:healthy", f"{T}:orphan", f"{T}:stale"]
    assert cli.json("restore", doc["backup"])["restored"] == []
    assert "already in place" in cli("restore", doc["backup"]).stdout


def test_blocked_actions_exit_1_and_say_why(cli: Cli, host: SyntheticHost) -> None:
    healthy, _ = scene(host)
    host.mount(host.disks_of(healthy)[0], "/srv/www")
    out = cli("clean", "--target", f"{T}:healthy", "--yes", code=1)
    rows = [line.split("\t") for line in out.stdout.splitlines()[1:]]
    assert [(r[1], r[2]) for r in rows] == [("remove-device", "blocked"), ("logout", "blocked"),
                                            ("delete-node", "blocked")]  # fmt: skip
    assert rows[0][-1] == f"/dev/{host.disks_of(healthy)[0]} is mounted at /srv/www"
    assert "clean: 3 blocked" in out.stderr
    plan = cli.json("clean", "--target", f"{T}:healthy")  # printing a plan with blocked actions is not an error
    assert plan["summary"]["blocked"] == 3


def test_nothing_to_do(cli: Cli) -> None:
    out = cli("clean", "--stale-only", "--yes")
    assert out.stdout == "" and "Nothing to clean (stale only)." in out.stderr
    assert cli.json("clean")["actions"] == []


def test_desired_and_keep_and_reset_flags(cli: Cli, host: SyntheticHost, tmp_path: Path) -> None:
    scene(host)
    desired = tmp_path / "desired.txt"
    desired.write_text(f"{T}:healthy\n")
    doc = cli.json("clean", "--desired", str(desired), "--keep", f"{T}:orphan")
    assert {a["target"] for a in doc["actions"]} == {f"{T}:stale"}
    (host.db_root / "iscsid.conf").write_text("# c\n")
    doc = cli.json("clean", "--reset", "--no-keep-config", "--keep", f"{T}:*")
    assert [a["path"] for a in doc["actions"]][-1] == "iscsid.conf"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--desired", "x", "--target", "y"], "--desired reconciles the whole host"),
        (["--older-than", "5m"], "--older-than only applies with --stale-only"),
        (["--stale-only", "--older-than", "soon"], "--older-than 'soon' is not a duration"),
        (["--no-keep-config"], "--no-keep-config only applies with --reset"),
        (["--portal", "[::1"], "--portal: invalid portal"),
        (["--desired", "/nonexistent/d.txt"], "--desired /nonexistent/d.txt: No such file or directory"),
    ],
)
def test_usage_errors_exit_2_naming_the_flag(cli: Cli, args: list[str], message: str) -> None:
    out = cli("clean", *args, code=2)
    assert message in out.output
    doc = json.loads(cli("clean", *args, "--json", code=2).stdout)
    assert message in doc["error"]["message"] and doc["error"]["code"] == 2


def test_restore_conflict_exits_1_and_lists_it(cli: Cli, host: SyntheticHost) -> None:
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")
    backup = cli.json("clean", "--yes")["backup"]
    host.db.new_node(f"{T}:a", "10.0.0.1:3260,1")  # re-created with other contents (fresh defaults)
    host.db.update(host.db.nodes()[0], {"node.startup": "automatic"})
    doc = cli.json("restore", backup, code=1)
    assert doc["error"]["name"] == "RestoreConflictError"
    assert doc["error"]["conflicts"] == [f"nodes/{T}:a/10.0.0.1,3260,1/default: different content"]
    assert cli.json("restore", backup, "--force")["overwritten"] == [f"nodes/{T}:a/10.0.0.1,3260,1/default"]


def test_restore_of_something_else_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "x.tar.gz").write_text("hello")
    out = cli("restore", str(tmp_path / "x.tar.gz"), code=2)
    assert "not a clean backup tarball" in out.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("0", 0), ("45", 45), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400),
                          ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25), ("1w", 604800)],
)  # fmt: skip
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10x", "-5", "1h-2m", "ten"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match="is not a duration"):
        parse_duration(text)
