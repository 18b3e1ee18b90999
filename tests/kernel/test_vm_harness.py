"""The VM harness itself (iscsikit.vm): what every kernel-tier scenario relies on.

One boot serves all of these (the session ``vm``); the boot-failure and killed-host tests
start their own short-lived QEMU and check that nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iscsikit.errors import GuestCommandError, VMBootError, VMError, VMTimeoutError
from iscsikit.vm import GuestVM, find_kernel
from tests.support import tiers

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def can_boot(request: pytest.FixtureRequest) -> None:
    why = GuestVM.available()
    if why is not None:
        tiers.unavailable(request, f"cannot boot the kernel-tier VM: {why}")


# ---- results: exit codes, streams -----------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "code"),
    [("exit 0", 0), ("true", 0), ("false", 1), ("exit 7", 7), ("exit 255", 255), ("kill -9 $$", -9)],
)
def test_exit_status_is_the_scripts(vm: GuestVM, script: str, code: int) -> None:
    assert vm.run(script).returncode == code


def test_stdout_and_stderr_are_kept_apart_and_in_order(vm: GuestVM) -> None:
    r = vm.run("echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2")
    assert r.stdout == "out-1\nout-2\n"
    assert r.stderr == "err-1\nerr-2\n"


def test_large_output_arrives_whole(vm: GuestVM) -> None:
    r = vm.run("seq 1 200000; seq 1 1000 >&2")
    assert r.stdout == "".join(f"{i}\n" for i in range(1, 200001))
    assert r.stderr.splitlines()[-1] == "1000"


def test_undecodable_output_is_replaced_not_fatal(vm: GuestVM) -> None:
    r = vm.run(r"printf 'a\377b\n'")
    assert r.stdout == "a\ufffdb\n"


def test_check_raises_with_status_and_stderr(vm: GuestVM) -> None:
    with pytest.raises(GuestCommandError) as info:
        vm.run("echo boom >&2; exit 3", check=True)
    assert info.value.returncode == 3
    assert "boom" in str(info.value) and "status 3" in str(info.value)
    with pytest.raises(GuestCommandError):
        vm.run("exit 4").check()


# ---- environment: PATH, cwd, env, python ---------------------------------------------------


def test_venv_tools_are_on_path_and_cwd_is_the_checkout(vm: GuestVM) -> None:
    venv_bin = Path(sys.executable).parent
    r = vm.run("command -v iscsikit; command -v python; pwd", check=True)
    assert r.stdout.split() == [str(venv_bin / "iscsikit"), str(venv_bin / "python"), str(ROOT)]
    assert vm.run("python -c 'import iscsikit.runner, sys; print(sys.prefix)'", check=True).stdout.strip() == sys.prefix


def test_iscsikit_imports_from_the_checkout_without_the_editable_finder(vm: GuestVM) -> None:
    # The guest sees the editable install's .pth as a plain path line (iscsikit.vm explains
    # why); from any directory, iscsikit must still come from this checkout.
    r = vm.run_python(
        "import sys, iscsikit; print(iscsikit.__file__); print(any('editable' in repr(f) for f in sys.meta_path))",
        cwd="/",
        check=True,
    )
    assert r.stdout.splitlines() == [str(ROOT / "iscsikit" / "__init__.py"), "False"]


def test_env_and_cwd_can_be_given(vm: GuestVM) -> None:
    r = vm.run('echo "$GREETING"; pwd', env={"GREETING": "hello guest"}, cwd="/run", check=True)
    assert r.stdout == "hello guest\n/run\n"


def test_run_python_uses_this_python_with_arguments(vm: GuestVM) -> None:
    r = vm.run_python("import sys, iscsikit; print(sys.executable); print(sys.argv[1:])", args=["a b", "c"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [sys.executable, "['a b', 'c']"]


def test_shared_directory_is_seen_by_both_sides(vm: GuestVM) -> None:
    (vm.shared / "from-host.txt").write_text("host says hi\n")
    vm.run(
        f"cat {vm.shared}/from-host.txt > {vm.shared}/from-guest.txt; uname -r >> {vm.shared}/from-guest.txt",
        check=True,
    )
    lines = (vm.shared / "from-guest.txt").read_text().splitlines()
    assert lines == ["host says hi", vm.info["kernel"]]


def test_guest_is_prepared_for_iscsi(vm: GuestVM) -> None:
    r = vm.run(
        """
        set -e
        test -d /sys/module/iscsi_tcp && echo iscsi_tcp
        test -d /sys/module/sd_mod && echo sd_mod
        test -d /run/lock/iscsi && echo lockdir
        pidof iscsid >/dev/null && echo iscsid
        grep -q ISCSIADM_ABSTRACT_NAMESPACE /proc/net/unix && echo iscsid-listens
        pidof systemd-udevd >/dev/null && echo udevd
        sed -n 's/^InitiatorName=//p' /etc/iscsi/initiatorname.iscsi
        """,
        check=True,
    )
    assert r.stdout.splitlines() == [
        "iscsi_tcp", "sd_mod", "lockdir", "iscsid", "iscsid-listens", "udevd", vm.initiator_name,
    ]  # fmt: skip
    assert vm.initiator_name.startswith("iqn.")


# ---- timeouts, persistence, concurrency ----------------------------------------------------


def test_timeout_names_the_script_and_kills_its_process_group(vm: GuestVM) -> None:
    pidfile = vm.shared / "timeout-bg.pid"
    # 15 s, not 1: the script must get as far as `wait` first, and under TCG on a loaded
    # host even starting bash and one `sleep` can take seconds.
    with pytest.raises(VMTimeoutError) as info:
        vm.run(f"sleep 300 & echo $! > {pidfile}; echo started; echo going >&2; wait", timeout=15)
    message = str(info.value)
    assert "timed out after 15 s" in message and "sleep 300 &" in message
    assert info.value.stdout == "started\n"
    assert "going" in info.value.stderr
    bg = pidfile.read_text().strip()
    # The background sleep was in the script's process group: it is gone too.
    assert vm.run(f"kill -0 {bg}").returncode != 0
    assert vm.run("echo still usable").stdout == "still usable\n"


def test_state_set_up_in_one_run_persists_in_the_next(vm: GuestVM) -> None:
    vm.run(
        "echo remembered > /run/harness-state; "
        "setsid sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > /run/harness-bg",
        check=True,
    )
    r = vm.run("cat /run/harness-state; kill -0 $(cat /run/harness-bg) && echo alive", check=True)
    assert r.stdout == "remembered\nalive\n"
    vm.run("kill $(cat /run/harness-bg); rm -f /run/harness-state /run/harness-bg", check=True)


def test_runs_from_several_threads_proceed_together(vm: GuestVM) -> None:
    flag = "/run/harness-flag"
    vm.run(f"rm -f {flag}", check=True)
    results = {}

    def waiter() -> None:
        script = f"end=$((SECONDS + 240)); until [ -e {flag} ]; do [ $SECONDS -ge $end ] && exit 1; sleep 0.1; done"
        results["waiter"] = vm.run(script)

    thread = threading.Thread(target=waiter)
    thread.start()
    # The waiter is still running in the guest while this second request is served.
    vm.run(f"touch {flag}", check=True)
    thread.join(120)
    assert results["waiter"].returncode == 0
    vm.run(f"rm -f {flag}")


def test_requests_are_served_with_the_doorbell_and_without_it(vm: GuestVM) -> None:
    # The agent sleeps until the host rings; when the host end goes away it polls instead,
    # and it takes the doorbell up again once the host reconnects.
    assert vm.info["doorbell"] is True
    assert vm._bell is not None
    vm._bell.close()
    vm._bell = None
    try:
        assert vm.run("echo polled").stdout == "polled\n"
        assert vm.run("echo polled again").stdout == "polled again\n"
    finally:
        vm._connect_bell()
    assert vm._bell is not None
    assert vm.run("echo rung").stdout == "rung\n"


# ---- finding the kernel, failing to boot, never leaving QEMU behind -------------------------


def test_kernel_override_and_missing_kernel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ISCSIKIT_VM_KERNEL", str(tmp_path / "vmlinuz-nope"))
    assert find_kernel() == tmp_path / "vmlinuz-nope"
    why = GuestVM.available()
    assert why is not None and "vmlinuz-nope" in why and "does not exist" in why
    with pytest.raises(VMError, match="does not exist"):
        GuestVM(workdir=tmp_path).start()
    monkeypatch.delenv("ISCSIKIT_VM_KERNEL")
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in ("vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-12-amd64", "vmlinuz-5.10.0-30-amd64"):
        (boot / name).touch()
    assert find_kernel(boot) == boot / "vmlinuz-6.1.0-12-amd64"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_boot_failure_reports_the_console_tail_and_leaves_nothing(can_boot: None, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus-kernel"
    shutil.copy("/bin/true", bogus)  # an ELF QEMU refuses to boot: fails in about a second
    vm = GuestVM(workdir=tmp_path / "vm", kernel=bogus, boot_timeout=120)
    with pytest.raises(VMBootError) as info:
        vm.start()
    message = str(info.value)
    assert "exited during boot" in message
    assert "Error loading" in message  # QEMU's own words, from the console tail
    assert str(vm.console_log) in message
    assert vm.console_log.is_file() and "Error loading" in vm.console_log.read_text()
    assert vm.pid is not None and not _group_alive(vm.pid)
    with pytest.raises(VMError, match="was closed"):
        vm.run("true")


CHILD = """
import sys, threading, time
from pathlib import Path
from iscsikit.vm import GuestVM
vm = GuestVM(workdir=Path(sys.argv[1]))
threading.Thread(target=vm.start, daemon=True).start()
while vm.pid is None:
    time.sleep(0.01)
print(vm.pid, flush=True)
time.sleep(600)
"""


def _qemu_in_group(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and comm.startswith("qemu-system"):
            return True
    return False


def test_qemu_dies_with_the_process_that_started_it(can_boot: None, tmp_path: Path) -> None:
    """SIGKILL to the host process (no cleanup code runs): the reaper still kills QEMU."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "vm")], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert child.stdout is not None
        pgid = int(child.stdout.readline())
        deadline = time.monotonic() + 120
        while not _qemu_in_group(pgid):
            assert time.monotonic() < deadline, "QEMU never started"
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 60
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = _group_alive(pgid)
    if leftover:  # do not leave it running for the rest of the session
        os.killpg(pgid, signal.SIGKILL)
    assert not leftover, "vng/QEMU outlived the killed process that started them"
