"""lock.py: iscsiadm's link() lock -- exclusion across processes and threads, re-entrancy,
release on error, and a clear failure instead of iscsiadm 2.1.8's unlocked fallback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iscsikit.db.lock import DbLock
from iscsikit.errors import LockTimeoutError


def test_acquire_creates_dir_and_files_like_iscsiadm(tmp_path: Path) -> None:
    lock = DbLock(tmp_path / "iscsi", timeout=1)
    with lock:
        assert (tmp_path / "iscsi" / "lock.write").exists()
        assert os.stat(tmp_path / "iscsi" / "lock").st_ino == os.stat(tmp_path / "iscsi" / "lock.write").st_ino
        assert (os.stat(tmp_path / "iscsi").st_mode & 0o777) == 0o700
        assert (os.stat(tmp_path / "iscsi" / "lock").st_mode & 0o777) == 0o600
    assert not (tmp_path / "iscsi" / "lock.write").exists()
    assert (tmp_path / "iscsi" / "lock").exists()  # iscsiadm leaves it too


def test_reentrant_in_one_thread_and_released_only_by_the_outermost(tmp_path: Path) -> None:
    lock = DbLock(tmp_path, timeout=1)
    other = DbLock(tmp_path, timeout=1)  # a second object on the same directory shares the count
    with lock:
        with other, lock:
            assert lock.held and other.held
        assert (tmp_path / "lock.write").exists()
    assert not (tmp_path / "lock.write").exists()


def test_released_when_the_body_raises(tmp_path: Path) -> None:
    lock = DbLock(tmp_path, timeout=1)
    with pytest.raises(ZeroDivisionError), lock:
        _ = 1 / 0
    assert not lock.is_locked()
    assert not lock.held


def test_timeout_names_the_lock_file_and_does_not_touch_it(tmp_path: Path) -> None:
    (tmp_path / "lock").touch()
    os.link(tmp_path / "lock", tmp_path / "lock.write")  # as `ln lock lock.write` by hand
    lock = DbLock(tmp_path, timeout=0.2)
    started = time.monotonic()
    with pytest.raises(LockTimeoutError) as info:
        lock.acquire()
    assert time.monotonic() - started >= 0.2
    assert str(tmp_path / "lock.write") in str(info.value)
    assert "Nothing was written" in str(info.value)
    assert (tmp_path / "lock.write").exists()  # never breaks someone else's lock
    assert not lock.held


def test_waits_for_another_process_and_then_gets_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom iscsikit.db.lock import DbLock\n"
            f"l = DbLock({str(tmp_path)!r}, timeout=5)\nl.acquire()\nprint('held', flush=True)\n"
            "time.sleep(0.5)\nl.release()\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        lock = DbLock(tmp_path, timeout=5)
        started = time.monotonic()
        with lock:
            waited = time.monotonic() - started
        assert waited > 0.2  # it really waited for the other process
    finally:
        holder.wait(timeout=10)


def test_threads_exclude_each_other(tmp_path: Path) -> None:
    counter_file = tmp_path / "counter"
    counter_file.write_text("0")
    lock = DbLock(tmp_path, timeout=10, interval=0.001)
    errors: list[BaseException] = []

    def bump() -> None:
        try:
            for _ in range(50):
                with lock:
                    value = int(counter_file.read_text())
                    time.sleep(0.0002)
                    counter_file.write_text(str(value + 1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert counter_file.read_text() == "200"


def test_a_thread_waiting_on_another_thread_times_out_cleanly(tmp_path: Path) -> None:
    lock = DbLock(tmp_path, timeout=5)
    ready = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with lock:
            ready.set()
            done.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    ready.wait(5)
    try:
        with pytest.raises(LockTimeoutError):
            DbLock(tmp_path, timeout=0.1).acquire()
    finally:
        done.set()
        t.join()
    assert not lock.is_locked()


def test_release_without_acquire_is_a_bug(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        DbLock(tmp_path).release()
