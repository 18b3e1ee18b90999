"""Target access control over a real network: the target in a network namespace, on a non-loopback
portal (its veth address), initiators on the host end of the veth (libiscsi's tools, and the
project's asyncio test initiator where a session must stay open).

* ``target serve`` on that portal without CHAP or ACL exits 2 naming the portal and the fix;
  with ``--insecure-open`` it serves, warning at start and at each login.
* An unknown initiator is refused at login and does not see the target in SendTargets; an
  ACL'd initiator with its own CHAP (one-way, and mutual) logs in.
* ``target acl add|remove`` at run time take effect; remove closes the initiator's session;
  ``acl list`` masks secrets.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.netns import NetnsLab, wait_tcp
from tests.support.tiers import ROOT, require, require_root

T = "iqn.2026-11.org.iscsikit.acl:disk"
GOOD = "iqn.2026-11.org.iscsikit.acl:good"
MUTUAL_HOST = "iqn.2026-11.org.iscsikit.acl:mutual"
STRANGER = "iqn.2026-11.org.iscsikit.acl:stranger"
GOOD_SECRET = "good-host-secret-01"
HOST_SECRET = "mutual-host-secret-02"
TARGET_SECRET = "the-target-secret-03"
PORT = 3260
ISCSIKIT = [sys.executable, "-m", "iscsikit"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[NetnsLab]:
    require_root(request)
    require(request, "ip", "iscsi-ls", "iscsi-inq")
    with NetnsLab(1) as lab:
        yield lab


def secret_files(tmp: Path) -> dict[str, Path]:
    out = {}
    for name, value in (("good", GOOD_SECRET), ("host", HOST_SECRET), ("target", TARGET_SECRET)):
        path = tmp / f"{name}.secret"
        path.write_text(value + "\n")
        path.chmod(0o600)
        out[name] = path
    return out


def config(tmp: Path, lab: NetnsLab) -> Path:
    s = secret_files(tmp)
    path = tmp / "serve.toml"
    path.write_text(f"""
portals = ["{lab.addr(0)}:{PORT}"]
control = "{tmp / "ctl.sock"}"

[[targets]]
iqn = "{T}"
luns = {{ 1 = "memory:size=16M" }}

[[targets.acls]]
initiator = "{GOOD}"
chap_user = "good"
chap_secret_file = "{s["good"]}"

[[targets.acls]]
initiator = "{MUTUAL_HOST}"
chap_user = "mhost"
chap_secret_file = "{s["host"]}"
mutual_user = "disk"
mutual_secret_file = "{s["target"]}"
""")
    return path


def start(lab: NetnsLab, tmp: Path, *argv: str) -> subprocess.Popen[Any]:
    log = open(tmp / "serve.log", "a")  # noqa: SIM115 - the child keeps it
    proc = lab.popen(0, [*ISCSIKIT, "target", "serve", *argv], log, env=ENV, cwd=ROOT)
    try:
        wait_tcp(lab.addr(0), PORT, timeout=30)
    except TimeoutError:
        raise AssertionError(f"target did not start: {(tmp / 'serve.log').read_text()}") from None
    iscsikit("target", "status", "--control", str(tmp / "ctl.sock"), "--wait", "30")
    return proc


def stop(proc: subprocess.Popen[Any]) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=120, env=env)


def iscsikit(*argv: str) -> subprocess.CompletedProcess[str]:
    res = run(*ISCSIKIT, *argv, env=ENV)
    assert res.returncode == 0, f"{argv} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def chap_env(user: str = "", secret: str = "", target_user: str = "", target_secret: str = "") -> dict[str, str]:
    """libiscsi reads CHAP from the environment: no secret on the test's command lines either."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIBISCSI_CHAP_")}
    if user:
        env.update(LIBISCSI_CHAP_USERNAME=user, LIBISCSI_CHAP_PASSWORD=secret)
    if target_user:
        env.update(LIBISCSI_CHAP_TARGET_USERNAME=target_user, LIBISCSI_CHAP_TARGET_PASSWORD=target_secret)
    return env


def listed(lab: NetnsLab, initiator: str) -> bool:
    res = run("iscsi-ls", "-i", initiator, f"iscsi://{lab.addr(0)}:{PORT}", env=chap_env())
    assert res.returncode == 0, res.stdout + res.stderr
    return f"Target:{T} " in res.stdout


def inquiry(lab: NetnsLab, initiator: str, env: dict[str, str] | None = None) -> bool:
    res = run("iscsi-inq", "-i", initiator, f"iscsi://{lab.addr(0)}:{PORT}/{T}/1", env=env or chap_env())
    return res.returncode == 0 and "DIRECT_ACCESS" in res.stdout


def test_unprotected_non_loopback_portal_exits_2(lab: NetnsLab, tmp_path: Path) -> None:
    argv = [*ISCSIKIT, "target", "serve", "--portal", f"{lab.addr(0)}:{PORT}", "--iqn", T, "--lun",
            "1=memory:size=1M", "--control", str(tmp_path / "ctl.sock")]  # fmt: skip
    res = subprocess.run(["ip", "netns", "exec", lab.namespaces[0], *argv], capture_output=True, text=True,
                         timeout=60, env=ENV, cwd=ROOT)  # fmt: skip
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert f"portal {lab.addr(0)}:{PORT} is not loopback" in line and "--insecure-open" in line and "--allow" in line
    assert not (tmp_path / "ctl.sock").exists()
    # --insecure-open serves, and says so at start and at each login.
    proc = start(lab, tmp_path, *argv[len(ISCSIKIT) + 2 :], "--insecure-open")
    assert inquiry(lab, STRANGER)
    stop(proc)
    log = (tmp_path / "serve.log").read_text()
    assert "insecure-open: target" in log
    assert f"insecure-open: {STRANGER} logged in" in log


def test_acl_and_per_acl_chap_on_a_non_loopback_portal(lab: NetnsLab, tmp_path: Path) -> None:
    proc = start(lab, tmp_path, "--config", str(config(tmp_path, lab)))
    # An unknown initiator: not listed, refused at login.
    assert not listed(lab, STRANGER)
    assert not inquiry(lab, STRANGER)
    assert not inquiry(lab, STRANGER, chap_env("good", GOOD_SECRET))  # someone else's credentials
    # The ACL'd initiator: listed; logs in with its own CHAP only.
    assert listed(lab, GOOD)
    assert not inquiry(lab, GOOD)
    assert not inquiry(lab, GOOD, chap_env("good", "a-wrong-secret-99"))
    assert inquiry(lab, GOOD, chap_env("good", GOOD_SECRET))
    # Mutual CHAP for its entry; a target answer with another secret is refused by the initiator.
    assert inquiry(lab, MUTUAL_HOST, chap_env("mhost", HOST_SECRET, "disk", TARGET_SECRET))
    assert not inquiry(lab, MUTUAL_HOST, chap_env("mhost", HOST_SECRET, "disk", "not-the-target-secret"))
    stop(proc)
    log = (tmp_path / "serve.log").read_text()
    assert f"initiator '{STRANGER}' is not in {T}'s ACL" in log
    for secret in (GOOD_SECRET, HOST_SECRET, TARGET_SECRET):
        assert secret not in log


def test_acl_changes_at_run_time(lab: NetnsLab, tmp_path: Path) -> None:
    proc = start(lab, tmp_path, "--config", str(config(tmp_path, lab)))
    ctl = ["--control", str(tmp_path / "ctl.sock")]
    doc = json.loads(iscsikit("--json", "target", "acl", "list", *ctl).stdout)
    assert [a["initiator"] for a in doc["acls"]] == [GOOD, MUTUAL_HOST]
    assert doc["acls"][1]["chap_secret"] == "********" and doc["acls"][1]["mutual_secret"] == "********"
    text = iscsikit("target", "acl", "list", *ctl).stdout
    for out in (json.dumps(doc), text):
        assert GOOD_SECRET not in out and HOST_SECRET not in out and TARGET_SECRET not in out

    # Add the stranger with its own CHAP: now it sees the target and logs in with it.
    s = tmp_path / "stranger.secret"
    s.write_text("stranger-secret-0004\n")
    iscsikit("target", "acl", "add", *ctl, STRANGER, "--chap-user", "stranger", "--chap-secret-file", str(s))
    assert listed(lab, STRANGER)
    assert not inquiry(lab, STRANGER)
    assert inquiry(lab, STRANGER, chap_env("stranger", "stranger-secret-0004"))
    # Bad input is exit 2, and changes nothing.
    bad = run(*ISCSIKIT, "target", "acl", "add", *ctl, GOOD, env=ENV)
    assert bad.returncode == 2 and "already has an ACL" in bad.stderr
    same = run(*ISCSIKIT, "target", "acl", "add", *ctl, "iqn.2026-11.org.iscsikit.acl:x", "--chap-user", "x",
               "--chap-secret-file", str(s), "--mutual-user", "y", "--mutual-secret-file", str(s), env=ENV)  # fmt: skip
    assert same.returncode == 2 and "must differ" in same.stderr

    # Remove GOOD while it holds a session: the session is closed, a new login is refused.
    removed, closed = asyncio.run(_remove_while_logged_in(lab.addr(0), ctl, GOOD, ("good", GOOD_SECRET.encode())))
    assert removed["sessions_closed"] == 1 and closed
    assert not listed(lab, GOOD)
    assert not inquiry(lab, GOOD, chap_env("good", GOOD_SECRET))
    assert inquiry(lab, STRANGER, chap_env("stranger", "stranger-secret-0004"))  # the others go on
    stop(proc)


async def _remove_while_logged_in(host: str, ctl: list[str], initiator: str, chap: tuple[str, bytes]) -> Any:
    from iscsikit.target.proto import InitiatorConnection
    from tests.unit.target.proto.aclient import Client

    client = await Client.connect(host, PORT, InitiatorConnection(initiator, target=T, chap=chap))
    try:
        rsp, _ = await client.read(1, 0, 1)
        assert rsp.status in (0, 2)
        res = await asyncio.to_thread(iscsikit, "--json", "target", "acl", "remove", *ctl, initiator)
        return json.loads(res.stdout), await client.closed_by_target()
    finally:
        await client.close()
