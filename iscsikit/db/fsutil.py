"""Crash-safe file operations for the DB: temp file, fsync, rename, fsync the directory.

iscsiadm writes records in place (``fopen("w")`` then ``fprintf``), so a crash leaves a
truncated record. iscsikit writes the new bytes to a file in a scratch directory at the DB
root (iscsiadm never looks there), fsyncs it, and ``rename()``s it over the record: a reader
sees the old record or the new one, never a torn one.
"""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

FILE_MODE = 0o600  # what iscsiadm's umask(0077) leaves
DIR_MODE = 0o700

_counter = itertools.count()


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed, removed) durable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, tmp_dir: Path, *, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` atomically; the temp file lives in ``tmp_dir``.

    Falls back to a hidden temp file beside ``path`` if ``tmp_dir`` is on another filesystem.
    """
    tmp = tmp_dir / f"{path.name}.{os.getpid()}.{next(_counter)}"
    try:
        _write_synced(tmp, data, mode)
        os.rename(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        if exc.errno != errno.EXDEV:
            raise
        tmp = path.with_name(f".{path.name}.isk-tmp.{os.getpid()}")
        try:
            _write_synced(tmp, data, mode)
            os.rename(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


def _write_synced(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # the exact mode whatever the umask, before a secret is in the file
        view = memoryview(data)
        while view:  # a short write (file size limit, disk full) is followed by the error
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
