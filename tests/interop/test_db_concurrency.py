"""iscsikit beside the real iscsiadm: concurrent writers lose no update, killed writers
leave no torn record, and a held lock is waited for (or reported), never ignored."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iscsikit.db.database import Database
from iscsikit.db.layout import NodeRef
from iscsikit.db.record import parse_record
from iscsikit.db.schema import RecordKind
from iscsikit.errors import LockTimeoutError
from tests.support.sandbox import IscsiadmSandbox
from tests.support.tiers import require, require_root
from tests.unit.db.iscsiadm_harness import iscsiadm, parse_show, private_sandbox, reset, run_in

TARGET = "iqn.2026-11.test:concurrency"
PORTAL = "10.0.0.1:3260,1"
REF = NodeRef(TARGET, "10.0.0.1", 3260, 1)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox(request: pytest.FixtureRequest) -> Iterator[IscsiadmSandbox]:
    require_root(request)
    require(request, "iscsiadm", "nsenter")
    with private_sandbox() as sbx:
        reset(sbx)
        yield sbx


def _db(sandbox: IscsiadmSandbox, timeout: float = 30) -> Database:
    return Database(
        sandbox.db, link_root="/etc/iscsi", lock_dir=sandbox.lock_dir, lock_timeout=timeout, defaults="compiled"
    )


def test_concurrent_writers_lose_no_update(sandbox: IscsiadmSandbox) -> None:
    """iscsiadm sets one key N times while iscsikit sets another N times: both end at N,
    and every record iscsikit reads in between is whole."""
    db = _db(sandbox)
    db.new_node(TARGET, PORTAL, settings={"node.session.timeo.replacement_timeout": "0"})
    keys = list(db.read_node(REF).record.entries)
    rounds = 120
    script = (
        f"for i in $(seq 1 {rounds}); do iscsiadm -m node -T {TARGET} -p 10.0.0.1:3260 -o update "
        "-n node.session.timeo.replacement_timeout -v $i >/dev/null || exit 1; done"
    )
    errors: list[str] = []

    def theirs() -> None:
        result = run_in(sandbox, ["sh", "-c", script], timeout=300)
        if result.returncode != 0:
            errors.append(result.stderr)

    thread = threading.Thread(target=theirs)
    thread.start()
    last_seen = 0
    for i in range(1, rounds + 1):
        db.update(REF, {"node.conn[0].timeo.noop_out_interval": str(i)})
        node = db.read_node(REF)
        assert node.problems == [] and list(node.record.entries) == keys  # a whole record, every time
        assert node.replacement_timeout >= last_seen  # iscsiadm's updates are never undone by ours
        last_seen = node.replacement_timeout
        assert node.noop_out_interval == i  # and ours never by iscsiadm's
    thread.join()
    assert errors == []
    final = db.read_node(REF)
    assert final.replacement_timeout == rounds
    assert final.noop_out_interval == rounds
    shown = parse_show(iscsiadm(sandbox, None, "-m", "node", "-o", "show").stdout)
    assert shown == [final.settings()]


_WRITER = """
import sys
from iscsikit.db.database import Database
from iscsikit.db.layout import NodeRef
db = Database(sys.argv[1], link_root="/etc/iscsi", lock_dir=sys.argv[2], defaults="compiled")
ref = NodeRef({target!r}, "10.0.0.1", 3260, 1)
sets = [
    {{"node.session.auth.username": "alpha", "node.session.auth.password": "a" * 200, "node.startup": "manual"}},
    {{"node.session.auth.username": "beta", "node.session.auth.password": "b" * 10, "node.startup": "automatic"}},
]
print("go", flush=True)
i = 0
while True:
    db.update(ref, sets[i % 2])
    i += 1
"""


def test_a_writer_killed_mid_write_leaves_the_old_record_or_the_new_one(sandbox: IscsiadmSandbox) -> None:
    db = _db(sandbox, timeout=5)
    db.new_node(TARGET, PORTAL)
    record = sandbox.db / REF.relpath
    rng = random.Random(1234)
    for _ in range(40):
        child = subprocess.Popen(
            [sys.executable, "-c", _WRITER.format(target=TARGET), str(sandbox.db), str(sandbox.lock_dir)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "go"
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        # an operator's cleanup after a crash: the lock it held (iscsiadm leaves it too)
        (sandbox.lock_dir / "lock.write").unlink(missing_ok=True)
        text = record.read_text()
        rec = parse_record(text, str(record), RecordKind.NODE, iface_hint="default")
        assert rec.issues == [] and rec.format() == text, "a torn record"
        user = rec.value("node.session.auth.username")
        assert user in ("", "alpha", "beta")
        if user == "alpha":
            assert rec.value("node.session.auth.password") == "a" * 200 and rec.value("node.startup") == "manual"
        if user == "beta":
            assert rec.value("node.session.auth.password") == "b" * 10 and rec.value("node.startup") == "automatic"
        # nothing half-written sits beside the record where iscsiadm would read it as an iface
        assert os.listdir(record.parent) == ["default"]
        listed = iscsiadm(sandbox, None, "-m", "node")
        assert listed.returncode == 0 and listed.stdout.strip() == f"10.0.0.1:3260,1 {TARGET}"
    # the next write clears what the killed writers left in iscsikit's scratch directory
    db.update(REF, {"node.startup": "manual"})
    assert not (sandbox.db / ".iscsikit-tmp").exists()


def test_iscsiadm_waits_for_iscsikit_and_iscsikit_waits_for_iscsiadm(sandbox: IscsiadmSandbox) -> None:
    db = _db(sandbox, timeout=10)
    db.new_node(TARGET, PORTAL)
    with db.lock:
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                "nsenter", f"--mount=/proc/{sandbox.pid}/ns/mnt", "--", "iscsiadm", "-m", "node", "-T", TARGET,
                "-o", "update", "-n", "node.startup", "-v", "automatic",
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
        assert proc.poll() is None  # iscsiadm is waiting for our lock
        assert "node.startup = manual" in (sandbox.db / REF.relpath).read_text()
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - started >= 0.5
    assert db.node(TARGET).startup == "automatic"


def test_a_stale_lock_is_a_clear_error_not_an_unlocked_write(sandbox: IscsiadmSandbox) -> None:
    db = _db(sandbox, timeout=0.3)
    db.new_node(TARGET, PORTAL)
    before = (sandbox.db / REF.relpath).read_bytes()
    os.link(sandbox.lock_dir / "lock", sandbox.lock_dir / "lock.write")  # a crashed holder's leftover
    try:
        with pytest.raises(LockTimeoutError, match=r"lock\.write"):
            db.update(REF, {"node.startup": "automatic"})
        assert (sandbox.db / REF.relpath).read_bytes() == before
        unlocked = Database(sandbox.db, lock_dir=sandbox.lock_dir, lock_timeout=0.3, read_lock=False)
        assert unlocked.node(TARGET).startup == "manual"  # still readable on request
    finally:
        (sandbox.lock_dir / "lock.write").unlink()
