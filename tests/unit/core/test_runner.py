"""runner.py: argv only, captured output, group-killing timeouts, host modes, dry-run."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from iscsikit.errors import CommandError, CommandNotFoundError, CommandTimeoutError, UsageError
from iscsikit.runner import HostMode, NamespaceResolver, Runner


def test_output_and_exit_codes_are_kept() -> None:
    r = Runner()
    res = r.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    with pytest.raises(CommandError) as exc:
        r.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert exc.value.returncode == 3 and "boom" in exc.value.stderr and "boom" in str(exc.value)
    assert r.run(["sh", "-c", "exit 3"], ok_codes=(0, 3)).returncode == 3


def test_argv_is_never_a_shell_string() -> None:
    res = Runner().run(["echo", "$(touch /tmp/isk-should-not-exist); `id`"])
    assert res.stdout == "$(touch /tmp/isk-should-not-exist); `id`\n"
    assert not Path("/tmp/isk-should-not-exist").exists()


def test_input_is_passed() -> None:
    assert Runner().run(["cat"], input="abc").stdout == "abc"


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {marker}; echo started; wait"
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError) as exc:
        Runner().run(["sh", "-c", script], timeout=1)
    assert time.monotonic() - started < 30
    assert "timed out after 1 s" in str(exc.value)
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        # a zombie still answers kill(0); check its state
        try:
            if Path(f"/proc/{grandchild}/stat").read_text().split(")")[-1].split()[0] == "Z":
                break
        except OSError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"grandchild {grandchild} survived the timeout")


def test_missing_program() -> None:
    with pytest.raises(CommandNotFoundError) as exc:
        Runner().run(["isk-no-such-program"])
    assert "isk-no-such-program" in str(exc.value)


def test_secrets_are_masked_in_errors_and_dry_run() -> None:
    r = Runner()
    with pytest.raises(CommandError) as exc:
        r.run(["sh", "-c", 'echo "bad secret $0" >&2; exit 1', "hunter2hunter2"], redact=["hunter2hunter2"])
    assert "hunter2hunter2" not in str(exc.value) and "********" in str(exc.value)
    assert "hunter2hunter2" not in json.dumps(exc.value.to_json())  # the argv that --json prints
    with pytest.raises(CommandTimeoutError) as slow:
        r.run(["sh", "-c", "sleep 5", "hunter2hunter2"], redact=["hunter2hunter2"], timeout=0.2)
    assert "hunter2hunter2" not in json.dumps(slow.value.to_json())
    d = Runner(dry_run=True)
    res = d.run(["iscsiadm", "-v", "pa55word!"], mutating=True, redact=["pa55word!"])
    assert res.recorded and d.recorded[0].argv == ["iscsiadm", "-v", "********"]


def test_dry_run_records_changes_but_runs_reads(tmp_path: Path) -> None:
    d = Runner(dry_run=True)
    target = tmp_path / "f"
    d.run(["touch", str(target)], mutating=True)
    d.write_file(tmp_path / "scan", "0 0 1")
    assert not target.exists() and not (tmp_path / "scan").exists()
    assert [a.describe() for a in d.recorded] == [f"touch {target}", f"write '0 0 1' to {tmp_path / 'scan'}"]
    assert d.run(["echo", "read"]).stdout == "read\n"


def test_host_modes_parse() -> None:
    assert str(HostMode.parse("ns")) == "ns"
    assert str(HostMode.parse("chroot:/host")) == "chroot:/host"
    for bad in ("nss", "chroot:", "chroot:relative"):
        with pytest.raises(UsageError):
            HostMode.parse(bad)


def test_chroot_mode_runs_inside_the_root(tmp_path: Path) -> None:
    r = Runner("chroot:/")
    assert r.wrap(["true"]) == ["chroot", "/", "true"]
    assert r.run(["sh", "-c", "echo in-root"]).stdout == "in-root\n"
    with pytest.raises(CommandNotFoundError) as exc:
        r.run(["isk-no-such-program"])
    assert "chroot /" in str(exc.value)


def _fake_proc(root: Path, procs: dict[int, tuple[str, str]]) -> None:
    for pid, (comm, start) in procs.items():
        d = root / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        (d / "comm").write_text(comm + "\n")
        fields = ["S"] + ["0"] * 18 + [start]
        (d / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")


def test_resolver_finds_iscsid_and_notices_a_restart(tmp_path: Path) -> None:
    _fake_proc(tmp_path, {1: ("init", "1"), 57: ("iscsid", "100"), 58: ("iscsid", "101"), 90: ("bash", "5")})
    res = NamespaceResolver(str(tmp_path))
    assert res.find_pid() == 57
    assert res.nsenter_prefix()[:3] == [
        "nsenter",
        f"--mount={tmp_path}/57/ns/mnt",
        f"--net={tmp_path}/57/ns/net",
    ]
    # iscsid restarted: the old pid is gone, a new one appears
    shutil.rmtree(tmp_path / "57")
    shutil.rmtree(tmp_path / "58")
    _fake_proc(tmp_path, {412: ("iscsid", "900")})
    assert res.find_pid() == 412
    # pid reused by another program with a different start time
    shutil.rmtree(tmp_path / "412")
    _fake_proc(tmp_path, {412: ("bash", "950")})
    assert res.find_pid() is None and res.target_pid() == 1


def test_resolver_pinned_to_one_pid(tmp_path: Path) -> None:
    _fake_proc(tmp_path, {57: ("iscsid", "100"), 90: ("other", "5")})
    res = NamespaceResolver(str(tmp_path), pid=90)
    assert res.find_pid() == 90  # not the iscsid: the caller chose this process
    shutil.rmtree(tmp_path / "90")
    assert res.find_pid() is None and res.target_pid() == 1
