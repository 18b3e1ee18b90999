"""lock.py: iscsiadm's link() lock -- exclusion across processes and threads, re-entrancy,
release on error, and a clear failure instead of iscsiadm 2.1.8's unlocked fallback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iscsikit.db.lock import DbLock
from iscsikit.errors import DatabaseError, LockTimeoutError


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


# ---- what a user sees when it goes wrong, and the state left behind ----------------------------


def _foreign_hold(lock_dir: Path) -> None:
    """Take the lock as iscsiadm (or `ln lock lock.write` by hand) would, outside DbLock."""
    lock_dir.mkdir(exist_ok=True)
    (lock_dir / "lock").touch()
    os.link(lock_dir / "lock", lock_dir / "lock.write")


def test_defaults_are_iscsiadms_lock_dir_timeout_and_interval() -> None:
    lock = DbLock()
    assert lock.lock_dir == Path("/run/lock/iscsi")
    assert (lock.lock_file, lock.write_file) == (Path("/run/lock/iscsi/lock"), Path("/run/lock/iscsi/lock.write"))
    assert (lock.timeout, lock.interval) == (30.0, 0.01)  # iscsiadm: 3000 tries, 10 ms apart
    assert not lock.held


def test_the_timeout_message_names_the_limit_the_file_and_since_when(tmp_path: Path) -> None:
    _foreign_hold(tmp_path)
    taken = os.lstat(tmp_path / "lock.write").st_ctime
    while time.time() < taken + 1.5:  # so "at HH:MM:SS" can only be the link's time, not the clock's
        time.sleep(0.1)
    lock = DbLock(tmp_path, timeout=30)
    with pytest.raises(LockTimeoutError) as info:
        lock.acquire(timeout=0.05)  # the argument, not the instance's 30 s
    message = str(info.value)
    match = re.fullmatch(
        rf"timed out after 0\.05 s waiting for open-iscsi's DB lock {re.escape(str(tmp_path / 'lock.write'))}"
        r" \(taken (\d+) s ago, at (\d\d:\d\d:\d\d)\); another iscsiadm or iscsikit holds it\. If none is"
        rf" running, a killed one left it behind: remove {re.escape(str(tmp_path / 'lock.write'))}\."
        r" Nothing was written\.",
        message,
    )
    assert match is not None, message
    assert 1 <= int(match.group(1)) < 3600  # generous: the file was linked a moment ago
    assert match.group(2) == time.strftime("%H:%M:%S", time.localtime(taken))
    assert not lock.held and (tmp_path / "lock.write").exists()


def test_a_timeout_on_another_threads_hold_says_since_when_unless_the_file_is_gone(tmp_path: Path) -> None:
    lock = DbLock(tmp_path, timeout=5)
    ready, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            ready.set()
            done.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert ready.wait(10)
        with pytest.raises(LockTimeoutError, match=r"after 0\.05 s .*\(taken \d+ s ago, at "):
            DbLock(tmp_path, timeout=0.05).acquire()
        os.unlink(tmp_path / "lock.write")  # removed by hand while held: no age to give
        with pytest.raises(LockTimeoutError) as info:
            DbLock(tmp_path).acquire(timeout=0)
        write = tmp_path / "lock.write"
        assert str(info.value) == (
            f"timed out after 0 s waiting for open-iscsi's DB lock {write}; another iscsiadm or iscsikit"
            f" holds it. If none is running, a killed one left it behind: remove {write}. Nothing was written."
        )
    finally:
        done.set()
        t.join()
    assert not lock.is_locked()  # the holder's release did not trip over the missing file
    with lock:  # and the lock works again
        assert lock.is_locked()


def test_a_failed_acquire_holds_nothing_in_any_thread(tmp_path: Path) -> None:
    _foreign_hold(tmp_path)
    lock = DbLock(tmp_path, timeout=0.05)
    with pytest.raises(LockTimeoutError):
        lock.acquire()
    assert not lock.held
    os.unlink(tmp_path / "lock.write")  # the other holder is done
    got: list[bool] = []

    def take() -> None:  # another thread: a leaked in-process hold would time it out
        with DbLock(tmp_path, timeout=5) as other:
            got.append(other.held and (tmp_path / "lock.write").exists())

    t = threading.Thread(target=take)
    t.start()
    t.join()
    assert got == [True]
    with lock:  # and in this thread, it takes the file again (no count left behind)
        assert (tmp_path / "lock.write").exists()
    assert not (tmp_path / "lock.write").exists()


def test_each_acquire_release_pair_tracks_held(tmp_path: Path) -> None:
    lock = DbLock(tmp_path, timeout=1)
    for _ in range(3):
        assert not lock.held
        with lock as entered:
            assert entered is lock
            assert lock.held and lock.is_locked()
            assert os.stat(tmp_path / "lock").st_ino == os.stat(tmp_path / "lock.write").st_ino
        assert not lock.held and not lock.is_locked()


def test_two_lock_directories_are_two_locks(tmp_path: Path) -> None:
    a = DbLock(tmp_path / "a", timeout=1)
    b = DbLock(tmp_path / "b", timeout=1)
    with a:
        with b:
            assert (tmp_path / "a" / "lock.write").exists() and (tmp_path / "b" / "lock.write").exists()
        assert (tmp_path / "a" / "lock.write").exists() and not (tmp_path / "b" / "lock.write").exists()
    assert not (tmp_path / "a" / "lock.write").exists()


def test_the_same_directory_by_another_spelling_is_the_same_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    with DbLock(tmp_path / "d", timeout=1), DbLock("d", timeout=1) as relative:
        assert relative.held
    assert not (tmp_path / "d" / "lock.write").exists()


def test_a_lock_removed_by_hand_while_held_is_released_quietly(tmp_path: Path) -> None:
    lock = DbLock(tmp_path, timeout=1)
    with lock:
        os.unlink(tmp_path / "lock.write")
    assert not lock.held
    with lock:
        assert lock.is_locked()


def test_release_without_acquire_names_the_bug_and_breaks_nothing(tmp_path: Path) -> None:
    lock = DbLock(tmp_path, timeout=1)
    with pytest.raises(RuntimeError, match=r"^DbLock\.release\(\) without a matching acquire\(\)$"):
        lock.release()
    with lock:  # the count is intact: the file is taken and given back as usual
        assert (tmp_path / "lock.write").exists() and lock.held
    assert not (tmp_path / "lock.write").exists() and not lock.held
    with lock, pytest.raises(RuntimeError, match="without a matching"):
        DbLock(tmp_path).release()  # another object in the same thread holds nothing itself
    assert not lock.is_locked()


def test_a_lock_file_removed_while_waiting_is_made_again(tmp_path: Path) -> None:
    """A tmpfs cleanup may remove /run/lock/iscsi/lock; a waiter makes it again and links it."""
    _foreign_hold(tmp_path)
    lock = DbLock(tmp_path, timeout=10, interval=0.005)
    result: list[BaseException | bool] = []

    def wait_for_it() -> None:
        try:
            with lock:
                result.append(os.stat(tmp_path / "lock").st_ino == os.stat(tmp_path / "lock.write").st_ino)
        except BaseException as exc:  # pragma: no cover - reported below
            result.append(exc)

    t = threading.Thread(target=wait_for_it)
    t.start()
    time.sleep(0.2)  # let it reach its retry loop (if not, the test still passes, just less sharply)
    os.unlink(tmp_path / "lock")
    os.unlink(tmp_path / "lock.write")
    t.join(20)
    assert result == [True]
    assert (tmp_path / "lock").exists() and not (tmp_path / "lock.write").exists()


def test_a_lock_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    lock = DbLock(tmp_path / "file" / "iscsi", timeout=1)
    with pytest.raises(
        DatabaseError, match=rf"cannot create the lock directory {tmp_path}/file/iscsi: Not a directory$"
    ):
        lock.acquire()
    assert not lock.held


def test_a_lock_file_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "lock").symlink_to(tmp_path / "missing" / "target")  # a dangling link into nowhere
    lock = DbLock(tmp_path, timeout=1)
    with pytest.raises(
        DatabaseError, match=rf"cannot create the lock file {tmp_path}/lock: No such file or directory$"
    ):
        lock.acquire()
    assert not lock.held and not lock.is_locked()


def test_a_lock_directory_created_meanwhile_is_fine(tmp_path: Path) -> None:
    """Two processes may both see no directory and race to mkdir it: the loser goes on."""
    lock = DbLock(tmp_path / "iscsi", timeout=1)
    (tmp_path / "iscsi").mkdir(mode=0o755)
    with lock:
        assert lock.is_locked()
    assert (os.stat(tmp_path / "iscsi").st_mode & 0o777) == 0o755  # someone else's directory is left as it is


def test_a_link_that_fails_otherwise_is_a_clear_error_not_a_wait(tmp_path: Path) -> None:
    # a path that fits PATH_MAX for "lock" but not for "lock.write": link() fails ENAMETOOLONG
    parts, length = [], len(str(tmp_path))
    while length + 200 + len("/lock") < 4095:
        parts.append("d" * 199)
        length += 200
    parts.append("e" * (4095 - length - 1 - len("/lock") - 1))
    lock_dir = tmp_path.joinpath(*parts)
    assert len(str(lock_dir / "lock")) < 4096 <= len(str(lock_dir / "lock.write"))
    os.makedirs(lock_dir)
    lock = DbLock(lock_dir, timeout=10)
    with pytest.raises(DatabaseError, match=r"cannot take open-iscsi's DB lock .*/lock\.write: File name too long$"):
        lock.acquire()
    assert not lock.held


def test_a_link_refused_for_permissions_hints_at_root(tmp_path: Path) -> None:
    lock_dir = tmp_path / "iscsi"
    lock_dir.mkdir()
    (lock_dir / "lock").touch()
    if os.geteuid() == 0:  # root bypasses modes: an immutable directory refuses new links (EPERM)
        flip = ["chattr", "+i", str(lock_dir)], ["chattr", "-i", str(lock_dir)]
    else:  # others: a directory they cannot write (EACCES)
        flip = ["chmod", "0500", str(lock_dir)], ["chmod", "0700", str(lock_dir)]
    subprocess.run(flip[0], check=True)
    try:
        with pytest.raises(DatabaseError, match=r"cannot take open-iscsi's DB lock .*: .+ \(are you root\?\)$"):
            DbLock(lock_dir, timeout=10).acquire()
    finally:
        subprocess.run(flip[1], check=True)
    assert not (lock_dir / "lock.write").exists()


def test_a_zero_timeout_fails_at_once_while_another_thread_holds_it(tmp_path: Path) -> None:
    """timeout=0 (or less) means "only if free now": it must not wait for the holder's release."""
    lock = DbLock(tmp_path, timeout=5)
    ready, stop = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            ready.set()
            stop.wait(0.9)  # then gives it back: a waiting acquire would get it

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert ready.wait(10)
        for limit in (0.0, -1.0):
            with pytest.raises(LockTimeoutError, match=rf"^timed out after {limit:g} s "):
                DbLock(tmp_path).acquire(timeout=limit)
    finally:
        stop.set()
        t.join()
