"""fsutil.py: the DB's crash-safe writes. A reader sees the old bytes or the new ones, the file
gets iscsiadm's mode whatever the umask, and no temp file is left behind, even when the write
fails or the scratch directory is on another filesystem (the EXDEV fallback)."""

from __future__ import annotations

import errno
import os
import resource
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from iscsikit.db.fsutil import DIR_MODE, FILE_MODE, fsync_dir, write_atomic

SHM = Path("/dev/shm")


def _names(path: Path) -> list[str]:
    return sorted(os.listdir(path))


@pytest.fixture
def umask_open() -> Iterator[None]:
    """A permissive umask, so the modes seen are the ones fsutil set, not the umask's doing."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def other_fs_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory on another filesystem than tmp_path (tmpfs /dev/shm vs the disk)."""
    if not SHM.is_dir() or os.stat(SHM).st_dev == os.stat(tmp_path).st_dev:
        pytest.fail("/dev/shm must be a tmpfs apart from the test's tmp_path (Debian 12 has one)")
    path = SHM / f"isk-fsutil-{os.getpid()}-{tmp_path.name}"
    path.mkdir()
    try:
        yield path
    finally:
        for name in os.listdir(path):
            os.unlink(path / name)
        path.rmdir()


def test_the_modes_are_what_iscsiadm_leaves() -> None:
    assert (FILE_MODE, DIR_MODE) == (0o600, 0o700)  # iscsiadm's umask(0077)


@pytest.mark.parametrize("size", [0, 1, 100_000, 3 * 1024 * 1024 + 7])
def test_write_replaces_the_file_with_exactly_the_bytes(tmp_path: Path, size: int, umask_open: None) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = tmp_path / "rec"
    target.write_bytes(b"old contents\n" * 10)
    data = bytes(i % 251 for i in range(size))
    write_atomic(target, data, scratch)
    assert target.read_bytes() == data
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert _names(scratch) == [] and _names(tmp_path) == ["rec", "scratch"]


def test_a_new_file_gets_the_mode_asked_for_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)  # would take the group bits off 0o640 at create time; fchmod puts them back
    try:
        write_atomic(tmp_path / "a", b"x", tmp_path, mode=0o640)
        write_atomic(tmp_path / "b", b"y", tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "b").st_mode) == 0o600
    assert _names(tmp_path) == ["a", "b"]


def test_a_replaced_file_is_a_new_inode_so_readers_never_see_it_torn(tmp_path: Path) -> None:
    target = tmp_path / "rec"
    target.write_bytes(b"old\n")
    with open(target, "rb") as reader:  # a reader holding the old file keeps the old bytes
        before = os.fstat(reader.fileno()).st_ino
        write_atomic(target, b"new\n", tmp_path)
        assert reader.read() == b"old\n"
    assert os.stat(target).st_ino != before
    assert target.read_bytes() == b"new\n"


def test_every_write_uses_its_own_temp_name(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for i in range(5):
        write_atomic(tmp_path / "rec", f"v{i}".encode(), scratch)
    write_atomic(tmp_path / "other", b"o", scratch)
    assert (tmp_path / "rec").read_bytes() == b"v4" and (tmp_path / "other").read_bytes() == b"o"
    assert _names(scratch) == []


def test_a_failed_rename_raises_and_leaves_no_temp_file(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing-dir" / "rec", b"data", scratch)
    assert _names(scratch) == []
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "inside").write_bytes(b"")
    with pytest.raises(OSError, match=r"Is a directory|Directory not empty"):
        write_atomic(tmp_path / "adir", b"data", scratch)
    assert _names(scratch) == [] and _names(tmp_path / "adir") == ["inside"]


def test_a_missing_scratch_directory_raises_and_touches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "rec"
    target.write_bytes(b"old")
    with pytest.raises(FileNotFoundError):
        write_atomic(target, b"new", tmp_path / "no-scratch")
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["rec"]


def test_scratch_on_another_filesystem_falls_back_to_a_hidden_temp_beside_the_file(
    tmp_path: Path, other_fs_dir: Path, umask_open: None
) -> None:
    target = tmp_path / "rec"
    target.write_bytes(b"old")
    write_atomic(target, b"new bytes", other_fs_dir, mode=0o640)
    assert target.read_bytes() == b"new bytes"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640
    assert _names(other_fs_dir) == [] and _names(tmp_path) == ["rec"]
    write_atomic(tmp_path / "fresh", b"", other_fs_dir)
    assert (tmp_path / "fresh").read_bytes() == b""
    assert stat.S_IMODE(os.stat(tmp_path / "fresh").st_mode) == 0o600
    assert _names(other_fs_dir) == [] and _names(tmp_path) == ["fresh", "rec"]


def test_a_failed_fallback_raises_and_leaves_no_temp_file_on_either_side(tmp_path: Path, other_fs_dir: Path) -> None:
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "inside").write_bytes(b"")
    with pytest.raises(OSError, match=r"Is a directory|Directory not empty"):
        write_atomic(tmp_path / "adir", b"data", other_fs_dir)
    assert _names(other_fs_dir) == [] and _names(tmp_path) == ["adir"]
    assert _names(tmp_path / "adir") == ["inside"]


def test_a_stale_fallback_temp_from_a_killed_writer_is_an_error_not_overwritten(
    tmp_path: Path, other_fs_dir: Path
) -> None:
    """O_EXCL: the fallback never writes through a file (or a planted symlink) it did not create."""
    target = tmp_path / "rec"
    target.write_bytes(b"old")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    stale = tmp_path / f".rec.isk-tmp.{os.getpid()}"
    stale.symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_atomic(target, b"new", other_fs_dir)
    assert victim.read_bytes() == b"keep" and target.read_bytes() == b"old"
    assert _names(other_fs_dir) == []


def test_fsync_dir_takes_a_directory_and_ignores_what_it_cannot_open(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # best effort: durability, never an error of its own
    (tmp_path / "file").write_bytes(b"")
    fsync_dir(tmp_path / "file")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        fsync_dir(tmp_path)
    assert len(os.listdir("/proc/self/fd")) == before  # the directory's fd is closed every time


def test_a_write_stopped_by_a_non_os_error_leaves_no_temp_file(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    target = tmp_path / "rec"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes", scratch)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and _names(scratch) == []


def test_a_short_write_is_an_error_never_a_truncated_record(tmp_path: Path) -> None:
    """A file size limit makes write() write part of the bytes, then fail: the record keeps its
    old bytes instead of being replaced by the first part of the new ones."""
    target = tmp_path / "rec"
    target.write_bytes(b"old")
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        with pytest.raises(OSError) as info:
            write_atomic(target, b"n" * 5000, tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert info.value.errno == errno.EFBIG
    assert target.read_bytes() == b"old" and _names(tmp_path) == ["rec"]
