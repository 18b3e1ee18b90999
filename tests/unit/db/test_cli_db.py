"""``iscsikit node|discovery|iface`` on a scratch DB: the JSON shapes of CLI.md, exit codes,
secrets, bad records, confirmations and dry runs. (Against the real iscsiadm: tests/interop.)"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from iscsikit.cli.main import app, hoist_global_flags
from tests.unit.db.support import tree

T = "iqn.2026-11.test:cli"


class Cli:
    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "db"
        self.root.mkdir()
        config = tmp_path / "config.toml"
        config.write_text(f'lock_dir = "{tmp_path / "lock"}"\n[timeouts]\nlock = 2\n')
        self.env = {"ISCSIKIT_DB_ROOT": str(self.root), "ISCSIKIT_CONFIG": str(config)}

    def __call__(self, *args: str, code: int = 0, input: str | None = None) -> Any:
        result = CliRunner().invoke(app, hoist_global_flags(list(args)), env=self.env, input=input)
        assert result.exit_code == code, f"{args}: exit {result.exit_code}\n{result.output}"
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--json", code=code).stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_node_list_shape(cli: Cli) -> None:
    cli("node", "new", T, "--portal", "10.0.0.1:3260,1")
    cli("node", "new", T, "--portal", "[2001:db8::1]:3261")
    assert cli.json("node", "list") == [
        {"target": T, "address": "10.0.0.1", "port": 3260, "tpgt": 1, "iface": "default"},
        {"target": T, "address": "2001:db8::1", "port": 3261, "tpgt": None, "iface": "default"},
    ]
    assert cli.json("node", "list", "--portal", "10.0.0.1") == cli.json("node", "list", T, "-p", "10.0.0.1:3260,1")
    assert cli.json("node", "list", "iqn.2026-11.other:*") == []


def test_node_show_shape_and_secrets(cli: Cli) -> None:
    cli("node", "new", T, "-p", "10.0.0.1:3260,1", "node.session.auth.authmethod=CHAP", "node.session.auth.password=s3")
    [record] = cli.json("node", "show", T)
    assert set(record) == {"target", "address", "port", "tpgt", "iface", "settings"}
    settings = record["settings"]
    assert settings["node.name"] == T and settings["node.tpgt"] == "1"
    assert settings["node.session.auth.password"] == "********"
    assert settings["node.session.auth.username"] == "<empty>"
    assert "node.session.auth.password_length" not in settings
    assert list(settings)[:4] == ["node.name", "node.tpgt", "node.startup", "node.leading_login"]
    [shown] = cli.json("node", "show", T, "--show-secrets")
    assert shown["settings"]["node.session.auth.password"] == "s3"
    text = cli("node", "show", T).stdout  # piped: iscsiadm's own format
    assert text.startswith("# BEGIN RECORD 2.1.8\nnode.name = ") and text.endswith("# END RECORD\n")
    assert "s3" not in text


def test_secrets_from_a_file_never_on_the_command_line(cli: Cli, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from a file #1\n")
    cli("node", "new", T, "-p", "10.0.0.1:3260,1")
    cli("node", "set", T, "--value-file", f"node.session.auth.password={secret}")
    [shown] = cli.json("node", "show", T, "--show-secrets")
    assert shown["settings"]["node.session.auth.password"] == "from a file #1"


def test_invalid_values_name_the_choices_and_change_nothing(cli: Cli) -> None:
    cli("node", "new", T, "-p", "10.0.0.1:3260,1")
    before = tree(cli.root)
    out = cli("node", "set", T, "node.startup=Automatic", code=2)
    assert "valid choices are manual, automatic, onboot" in out.output
    out = cli("node", "set", T, "node.session.futurekey=1", code=2)
    assert "unknown key" in out.output
    err = cli.json("node", "set", T, "node.tpgt=3", code=2)["error"]
    assert err["name"] == "InvalidSettingError" and err["key"] == "node.tpgt"
    out = cli("node", "set", T, "node.startup", code=2)
    assert "KEY=VALUE" in out.output
    assert tree(cli.root) == before


def test_unknown_target_and_existing_record(cli: Cli) -> None:
    err = cli.json("node", "set", "iqn.2026-11.test:none", "node.startup=manual", code=1)["error"]
    assert err["name"] == "RecordNotFoundError"
    cli("node", "new", T, "-p", "10.0.0.1:3260,1")
    assert "--overwrite" in cli("node", "new", T, "-p", "10.0.0.1:3260,1", code=1).output
    cli("node", "new", T, "-p", "10.0.0.1:3260,1", "--overwrite")
    assert (
        "must start with 'iqn.', 'eui.' or 'naa.'"
        in cli("node", "new", "bogus", "-p", "10.0.0.1:3260,1", code=2).output
    )
    cli("node", "new", "bogus", "-p", "10.0.0.1:3260,1", "--lenient-name")
    assert (
        "escape its directory"
        in cli("node", "new", "../escape", "-p", "10.0.0.1:3260,1", "--lenient-name", code=2).output
    )
    assert not (cli.root.parent / "escape").exists()


def test_a_malformed_record_is_reported_and_the_rest_still_shows(cli: Cli) -> None:
    for name in ("a", "b", "c"):
        cli("node", "new", f"iqn.2026-11.test:{name}", "-p", "10.0.0.1:3260,1")
    bad = cli.root / "nodes/iqn.2026-11.test:b/10.0.0.1,3260,1/default"
    bad.write_text(bad.read_text().replace("node.leading_login = No", "node.leading_login = no"))
    result = cli("node", "show", "--json")
    records = json.loads(result.stdout)
    assert [r["target"] for r in records] == ["iqn.2026-11.test:a", "iqn.2026-11.test:b", "iqn.2026-11.test:c"]
    assert records[1]["problems"] == [
        {
            "path": str(bad),
            "line": 5,
            "severity": "error",
            "message": records[1]["problems"][0]["message"],
        }
    ]
    assert "not one of No, Yes" in records[1]["problems"][0]["message"]
    assert f"error: {bad}:5: " in result.stderr
    assert "problems" not in records[0]
    assert len(cli.json("node", "list")) == 3


def test_delete_asks_before_deleting_several_targets(cli: Cli) -> None:
    for name in ("a", "b"):
        cli("node", "new", f"iqn.2026-11.test:{name}", "-p", "10.0.0.1:3260,1")
    assert "pass --yes" in cli("node", "delete", "iqn.2026-11.test:*", code=2).output
    assert "give a TARGET" in cli("node", "delete", code=2).output
    dry = cli.json("--dry-run", "node", "delete", "--all")
    assert dry["dry_run"] is True and len(dry["nodes"]) == 2
    assert len(cli.json("node", "list")) == 2
    cli("node", "delete", "iqn.2026-11.test:a")  # one target: no question
    done = cli.json("node", "delete", "--all", "--yes")
    assert [n["target"] for n in done["nodes"]] == ["iqn.2026-11.test:b"]
    assert cli.json("node", "list") == []


def test_discovery_commands(cli: Cli) -> None:
    cli("discovery", "new", "10.0.0.9", "discovery.sendtargets.auth.authmethod=CHAP")
    cli("discovery", "new", "10.0.0.8", "--type", "isns")
    assert cli.json("discovery", "list") == [
        {"type": "sendtargets", "address": "10.0.0.9", "port": 3260, "nodes": 0},
        {"type": "isns", "address": "10.0.0.8", "port": 3205, "nodes": 0},
    ]
    cli("discovery", "set", "10.0.0.9", "discovery.sendtargets.auth.password=pw")
    [record] = cli.json("discovery", "show", "10.0.0.9")
    assert record["settings"]["discovery.sendtargets.auth.password"] == "********"
    assert record["nodes"] == []
    cli("discovery", "delete", "10.0.0.9")
    assert [d["type"] for d in cli.json("discovery", "list")] == ["isns"]
    assert "st (sendtargets) or isns" in cli("discovery", "list", "--type", "slp", code=2).output


def test_iface_commands(cli: Cli) -> None:
    cli("iface", "new", "res1", "iface.net_ifacename=lo")
    cli("node", "new", T, "-p", "10.0.0.1:3260,1", "--iface", "res1")
    rows = cli.json("iface", "list")
    assert [r["name"] for r in rows] == ["res1", "default", "iser"]
    assert rows[0] == {
        "name": "res1",
        "transport": "tcp",
        "hwaddress": None,
        "ipaddress": None,
        "netdev": "lo",
        "initiatorname": None,
        "builtin": False,
    }
    cli("iface", "set", "res1", "iface.initiatorname=iqn.2026-11.test:init")
    [node] = cli.json("node", "show", T)
    assert node["settings"]["iface.initiatorname"] == "iqn.2026-11.test:init"
    [shown] = cli.json("iface", "show", "res1")
    assert shown["settings"]["iface.net_ifacename"] == "lo"
    assert "pass --yes" in cli("iface", "delete", "res1", code=2).output
    cli("iface", "delete", "res1", "--yes")
    assert cli.json("node", "list") == []
    assert "special interface" in cli("iface", "delete", "default", code=1).output


def test_lock_timeout_is_reported_with_the_lock_file(cli: Cli, tmp_path: Path) -> None:
    cli("node", "new", T, "-p", "10.0.0.1:3260,1")
    os.link(tmp_path / "lock/lock", tmp_path / "lock/lock.write")
    err = cli.json("node", "set", T, "node.startup=automatic", code=1)["error"]
    assert err["name"] == "LockTimeoutError" and "lock.write" in err["message"]
