"""The CLI contract: global options anywhere, --json errors, exit codes, doctor on this host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from iscsikit import __version__
from iscsikit.cli.main import app, hoist_global_flags, report_error
from iscsikit.errors import IscsiadmError, RecordParseError, UsageError

ISCSIKIT = [sys.executable, "-m", "iscsikit"]


def test_version() -> None:
    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout == f"iscsikit {__version__}\n"


def test_hoisting_moves_only_output_flags() -> None:
    assert hoist_global_flags(["node", "list", "--json", "-q"]) == ["--json", "-q", "node", "list"]
    assert hoist_global_flags(["node", "set", "x", "--", "--json"]) == ["node", "set", "x", "--", "--json"]
    assert hoist_global_flags(["target", "serve", "--config", "f"]) == ["target", "serve", "--config", "f"]


def test_json_flag_after_the_command_works_end_to_end(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('host = "ns"\n')
    out = subprocess.run([*ISCSIKIT, "--config", str(cfg), "config", "show", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["settings"]["host"] == "ns"


def test_bad_host_flag_is_a_usage_error() -> None:
    res = CliRunner().invoke(app, ["--host", "nowhere", "config", "show"])
    assert res.exit_code == 2
    assert "--host must be 'local', 'ns' or 'chroot:DIR'" in res.output


def test_errors_in_json_mode(capsys: object) -> None:
    err = IscsiadmError.from_result(["iscsiadm", "-m", "node"], 21, "", "iscsiadm: No records found\n")
    code = report_error(err, json_mode=True)
    out = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert code == 21
    assert out["error"]["code"] == 21 and out["error"]["name"] == "ISCSI_ERR_NO_OBJS_FOUND"
    assert "No records found" in out["error"]["message"]
    code = report_error(RecordParseError("/x/default", 3, "bad"), json_mode=True)
    out = json.loads(capsys.readouterr().out)  # type: ignore[attr-defined]
    assert code == 1 and out["error"] == {
        "name": "RecordParseError",
        "message": "/x/default:3: bad",
        "path": "/x/default",
        "line": 3,
        "reason": "bad",
        "code": 1,
    }
    assert report_error(UsageError("bad flag"), json_mode=False) == 2
    assert capsys.readouterr().err == "iscsikit: error: bad flag\n"  # type: ignore[attr-defined]


def test_doctor_on_a_host_without_iscsi(tmp_path: Path) -> None:
    """An empty sysfs root is a kernel without iSCSI: doctor says exactly that, with a fix."""
    res = CliRunner().invoke(app, ["--json", "--sysfs-root", str(tmp_path), "doctor"])
    assert res.exit_code == 1
    checks = {c["check"]: c for c in json.loads(res.stdout)}
    assert set(checks) >= {"iscsiadm", "iscsid", "initiator-name", "kernel-iscsi", "db-root", "lock-dir"}
    kernel = checks["kernel-iscsi"]
    assert kernel["ok"] is False
    assert "has no iSCSI initiator" in kernel["detail"] and "iscsi_transport/tcp is missing" in kernel["detail"]
    assert kernel["fix"]
    for check in checks.values():
        assert set(check) == {"check", "ok", "detail", "fix"}
        assert check["ok"] or check["fix"] is not None


def test_doctor_sees_a_loaded_transport(tmp_path: Path) -> None:
    (tmp_path / "class/iscsi_transport/tcp").mkdir(parents=True)
    res = CliRunner().invoke(app, ["--json", "--sysfs-root", str(tmp_path), "doctor"])
    kernel = next(c for c in json.loads(res.stdout) if c["check"] == "kernel-iscsi")
    assert kernel["ok"] is True


def test_plain_output_when_piped(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["--sysfs-root", str(tmp_path), "doctor"])
    lines = res.stdout.splitlines()
    assert lines[0] == "CHECK\tSTATUS\tDETAIL\tFIX"
    assert any(line.startswith("kernel-iscsi\tFAIL\t") for line in lines)


def test_lazy_command_table_matches_the_commands() -> None:
    """`iscsikit --help` shows the table's one-liners without importing commands; they must not drift."""
    from iscsikit.cli.main import COMMANDS, build_command

    for name, (_, _, help_text) in COMMANDS.items():
        cmd = build_command(name)
        assert cmd.name == name
        assert cmd.get_short_help_str(500) == help_text, name


def test_only_the_invoked_command_is_imported() -> None:
    code = (
        "import sys; from iscsikit.cli.main import main\n"
        "try: main(['config', 'get', 'host'])\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('iscsikit.cli.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = out.strip().splitlines()[-1]
    assert (
        "iscsikit.cli.config_cmd" in loaded
        and "iscsikit.cli.node" not in loaded
        and "iscsikit.cli.target" not in loaded
    )


def test_notes_print_brackets_as_text(capsys: object) -> None:
    from iscsikit.cli.context import AppContext
    from iscsikit.cli.output import note

    note(AppContext(), "added node record iqn.2026-11.org.example:d [fd00::5]:3260,1 [bold]x[/bold]")
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err == "added node record iqn.2026-11.org.example:d [fd00::5]:3260,1 [bold]x[/bold]\n"
