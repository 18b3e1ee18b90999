"""Every command example in docs/replication.md runs, in order, as written.

The examples use fixed ports on 127.0.0.1 and relative paths, so they run inside a private
network namespace (its own loopback) from a temporary directory. A line ending in ``&`` is a
server: it is started in the background and the test waits until its ``--listen``/``--portal``
port answers. Every other command must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tiers import ROOT, require, require_root

DOC = ROOT / "docs/replication.md"


def doc_commands() -> list[str]:
    text = DOC.read_text()
    cmds: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        cmds += [ln.strip() for ln in joined.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return cmds


def test_the_guide_has_examples_of_every_replica_command() -> None:
    cmds = " ".join(doc_commands())
    for sub in ("replica serve", "target serve", "replica status", "replica add", "replica remove", "replica info"):
        assert f"iscsikit {sub}" in cmds


@pytest.fixture
def netns(request: pytest.FixtureRequest) -> Iterator[str]:
    require_root(request)
    require(request, "ip", "qemu-io")
    name = f"iskdoc{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _wait_port(ns: str, port: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    deadline = time.monotonic() + 60
    while subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe], capture_output=True).returncode:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"server did not come up on port {port}:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)


def test_every_example_in_the_guide_runs(netns: str, tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}")
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for n, cmd in enumerate(doc_commands()):
            argv = shlex.split(cmd.removesuffix("&"))
            if cmd.endswith("&"):
                log = tmp_path / f"server{n}.log"
                with open(log, "wb") as fh:
                    proc = subprocess.Popen(["ip", "netns", "exec", netns, *argv], cwd=tmp_path, env=env,
                                            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
                servers.append(proc)
                flag = "--listen" if "--listen" in argv else "--portal"
                _wait_port(netns, argv[argv.index(flag) + 1].rsplit(":", 1)[1], proc, log)
                continue
            res = subprocess.run(["ip", "netns", "exec", netns, *argv], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=300)  # fmt: skip
            assert res.returncode == 0, f"`{cmd}` exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
            if argv[:3] == ["iscsikit", "replica", "status"]:
                assert res.stdout.count("\trw\t") == 3, res.stdout  # all three replicas serving
    finally:
        for proc in reversed(servers):  # the target first: it closes the replicas cleanly
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    images = [(tmp_path / f"r{i}" / "volume.img").read_bytes() for i in (1, 2, 3)]
    assert images[0] == images[1] == images[2]
    assert images[0][: 4 << 20] == b"\x5a" * (4 << 20)
