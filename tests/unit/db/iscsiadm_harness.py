"""Running the real iscsiadm for the DB tests: a stand-in for iscsid's config-file answer,
and helpers to reset, snapshot and read a sandboxed DB.

iscsiadm asks iscsid for the path of iscsid.conf (``MGMT_IPC_CONFIG_FILE`` on the abstract
socket ``@ISCSIADM_ABSTRACT_NAMESPACE``) before it creates a node or discovery record, and
applies that file only if it gets an answer. iscsid cannot run on the host, so
:class:`IscsidStandIn` answers that one request, from a private network namespace (abstract
sockets belong to a netns, so nothing on the host or in other tests can see or collide with
it). Its answer is read from a file per request: empty means "no config file" (iscsiadm then
uses its compiled defaults), a path means "apply this iscsid.conf".

Without the stand-in iscsiadm would also work, but it first sleeps a second trying to start
iscsid through ``systemctl``; with it each call takes milliseconds.

Run as a script, this module *is* the stand-in: ``python iscsiadm_harness.py ANSWER_FILE``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iscsikit.runner import CommandResult
    from tests.support.sandbox import IscsiadmSandbox

ABSTRACT_NAME = b"\0ISCSIADM_ABSTRACT_NAMESPACE"
MGMT_IPC_CONFIG_FILE = 10
ISCSI_ERR_INVALID_MGMT_REQ = 16


def serve(answer_file: Path) -> None:  # pragma: no cover - runs in a child process
    """Answer MGMT_IPC_CONFIG_FILE with the contents of ``answer_file``; refuse the rest."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(ABSTRACT_NAME)
    server.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        conn, _ = server.accept()
        with conn:
            header = b""
            while len(header) < 8:
                chunk = conn.recv(8 - len(header))
                if not chunk:
                    break
                header += chunk
            if len(header) < 8:
                continue
            command = struct.unpack("<i", header[:4])[0]
            if command == MGMT_IPC_CONFIG_FILE:
                path = answer_file.read_text().strip().encode()
                reply = struct.pack("<ii", command, 0) + path + b"\0"
            else:
                reply = struct.pack("<ii", command, ISCSI_ERR_INVALID_MGMT_REQ)
            # iscsiadm reads the whole response struct or up to EOF: send ours, then EOF.
            conn.sendall(reply)
            conn.shutdown(socket.SHUT_WR)
            conn.settimeout(2)
            try:
                while conn.recv(65536):  # drain the (large) request before closing
                    pass
            except OSError:
                pass


class IscsidStandIn:
    """The stand-in, alive in its own network namespace until :meth:`close`.

    ``netns`` is the path to give ``nsenter --net=`` so that a command sees it.
    """

    def __init__(self, workdir: Path) -> None:
        self.answer_file = workdir / "iscsid-answer"
        self.answer_file.write_text("")
        self._proc = subprocess.Popen(
            ["unshare", "-n", sys.executable, str(Path(__file__).resolve()), str(self.answer_file)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])},
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if line != "ready":
            self.close()
            raise RuntimeError(f"iscsid stand-in did not start ({line!r})")
        self.netns = f"/proc/{self._proc.pid}/ns/net"

    def answer(self, conf_path: str | None) -> None:
        """What the next CONFIG_FILE requests get: a path (apply it) or None (compiled defaults)."""
        self.answer_file.write_text(conf_path or "")

    def close(self) -> None:
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()


_private_count = 0


def private_sandbox(**kwargs: Any) -> IscsiadmSandbox:
    """An IscsiadmSandbox whose holder process has a name no other test uses.

    Sandbox runners used to find a sandbox by its holder's process name, the same for all of
    them, so a test running at the same time could enter *this* sandbox and write into its DB
    (seen: an ``ifaces/isk-clone`` appearing here). Runners are pinned to a pid now; a unique
    name still keeps anything that looks sandboxes up by name away from the DB tests' ones.
    """
    from tests.support import sandbox as sandbox_module

    global _private_count
    _private_count += 1
    saved = sandbox_module.HOLDER_NAME
    sandbox_module.HOLDER_NAME = f"iskdb{os.getpid() % 100000}-{_private_count}"[:15]
    try:
        return sandbox_module.IscsiadmSandbox(**kwargs)
    finally:
        sandbox_module.HOLDER_NAME = saved


def run_in(
    sandbox: IscsiadmSandbox, argv: list[str], standin: IscsidStandIn | None = None, timeout: float = 120
) -> CommandResult:
    """Run ``argv`` in the sandbox's mount namespace (and the stand-in's network namespace).

    Entered by the holder's pid (and, with a stand-in, the stand-in's network namespace).
    """
    from iscsikit.runner import Runner

    net = standin.netns if standin is not None else f"/proc/{sandbox.pid}/ns/net"
    wrapped = ["nsenter", f"--mount=/proc/{sandbox.pid}/ns/mnt", f"--net={net}", "--", *argv]
    return Runner("local").run(wrapped, timeout=timeout, check=False)


def iscsiadm(sandbox: IscsiadmSandbox, standin: IscsidStandIn | None, *args: str) -> CommandResult:
    """The real iscsiadm in the sandbox; with a stand-in, in the stand-in's network namespace."""
    return run_in(sandbox, ["iscsiadm", *args], standin)


def reset(sandbox: IscsiadmSandbox) -> None:
    """Empty the sandbox DB (keeping iscsid.conf and initiatorname.iscsi) and its lock dir."""
    for entry in sandbox.db.iterdir():
        if entry.name in ("iscsid.conf", "initiatorname.iscsi"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    if sandbox.lock_dir.exists():
        for entry in sandbox.lock_dir.iterdir():
            if entry.name == "lock.write":
                entry.unlink()


def db_tree(sandbox: IscsiadmSandbox) -> dict[str, tuple[str, int, bytes | str]]:
    """The sandbox tree without the two config files the sandbox copied in."""
    return {k: v for k, v in sandbox.tree().items() if k not in ("iscsid.conf", "initiatorname.iscsi")}


def parse_show(text: str) -> list[dict[str, str]]:
    """``iscsiadm ... -o show`` output -> one ordered dict per record."""
    records: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("# BEGIN RECORD"):
            current = {}
        elif line.startswith("# END RECORD"):
            if current is not None:
                records.append(current)
            current = None
        elif current is not None:
            key, _, value = line.partition(" = ")
            current[key] = value
    return records


def wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.01)
    return False


if __name__ == "__main__":  # pragma: no cover
    serve(Path(sys.argv[1]))
