"""iscsiadm's own DB lock, spoken exactly as open-iscsi 2.1.8 does, so the two never collide.

The protocol (``usr/idbm.c:idbm_lock``): make sure ``LOCK_DIR/lock`` exists, then
``link(lock, lock.write)``; success means you own the database, ``EEXIST`` means someone
else does: sleep 10 ms and try again. Release is ``unlink(lock.write)``. There is no pid
and no stale-lock detection, so a killed holder blocks everyone until the file is removed.

Differences from iscsiadm, on purpose:

* on timeout iscsiadm 2.1.8 goes on *without* the lock; :class:`DbLock` raises
  :class:`~iscsikit.errors.LockTimeoutError` naming the lock file and writes nothing;
* re-entrancy is per thread (an ``RLock`` in front of the file), where iscsiadm counts
  per process: two threads of one program never both believe they hold it.

Example::

    >>> lock = DbLock("/tmp/isk-doc-lock", timeout=1)
    >>> with lock:
    ...     with lock:             # re-entrant
    ...         lock.held
    True
    >>> lock.held
    False
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from iscsikit.errors import DatabaseError, LockTimeoutError

DEFAULT_LOCK_DIR: Final = Path("/run/lock/iscsi")
#: iscsiadm retries 3000 times every 10 ms.
DEFAULT_TIMEOUT: Final = 30.0
RETRY_INTERVAL: Final = 0.01


class _Shared:
    """Per lock directory, per process: who holds the file and how many times."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.refs = 0


_SHARED: dict[str, _Shared] = {}
_SHARED_GUARD = threading.Lock()


def _shared_for(write_file: Path) -> _Shared:
    key = os.path.abspath(write_file)
    with _SHARED_GUARD:
        state = _SHARED.get(key)
        if state is None:
            state = _SHARED[key] = _Shared()
        return state


class DbLock:
    """The ``link()`` lock on ``lock_dir/lock`` -> ``lock_dir/lock.write``.

    Use as a context manager (release happens in ``finally``), or call :meth:`acquire` and
    :meth:`release` in pairs. ``timeout`` is in seconds.
    """

    def __init__(
        self,
        lock_dir: str | os.PathLike[str] = DEFAULT_LOCK_DIR,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        interval: float = RETRY_INTERVAL,
    ) -> None:
        self.lock_dir = Path(lock_dir)
        self.lock_file = self.lock_dir / "lock"
        self.write_file = self.lock_dir / "lock.write"
        self.timeout = timeout
        self.interval = interval
        self._shared = _shared_for(self.write_file)
        self._local = threading.local()

    # ---- state ---------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True if this thread holds the lock through this object."""
        return getattr(self._local, "depth", 0) > 0

    def is_locked(self) -> bool:
        """True if anyone (any process) holds the lock right now."""
        return os.path.lexists(self.write_file)

    # ---- acquire / release ---------------------------------------------------------

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting up to ``timeout`` seconds (default: the instance's)."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        shared = self._shared
        if not shared.rlock.acquire(timeout=max(limit, 0.0)):
            raise self._timeout_error(limit)
        try:
            if shared.refs == 0:
                self._take_file(deadline, limit)
            shared.refs += 1
        except BaseException:
            shared.rlock.release()
            raise
        self._local.depth = getattr(self._local, "depth", 0) + 1

    def release(self) -> None:
        """Give the lock back; the outermost release unlinks ``lock.write``."""
        depth = getattr(self._local, "depth", 0)
        if depth <= 0:
            raise RuntimeError("DbLock.release() without a matching acquire()")
        shared = self._shared
        try:
            shared.refs -= 1
            if shared.refs == 0:
                try:
                    os.unlink(self.write_file)
                except FileNotFoundError:
                    pass  # someone removed it by hand; nothing left to give back
        finally:
            self._local.depth = depth - 1
            shared.rlock.release()

    def __enter__(self) -> DbLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # ---- the file protocol ---------------------------------------------------------

    def _ensure_lock_file(self) -> None:
        if not self.lock_dir.is_dir():
            try:
                os.mkdir(self.lock_dir, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise DatabaseError(f"cannot create the lock directory {self.lock_dir}: {exc.strerror}") from exc
        try:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DatabaseError(f"cannot create the lock file {self.lock_file}: {exc.strerror}") from exc
        os.close(fd)

    def _take_file(self, deadline: float, limit: float) -> None:
        self._ensure_lock_file()
        while True:
            try:
                os.link(self.lock_file, self.write_file)
                return
            except FileExistsError:
                pass
            except FileNotFoundError:
                self._ensure_lock_file()  # removed under us (tmpfs cleanup); make it again
                continue
            except OSError as exc:
                hint = " (are you root?)" if exc.errno in (errno.EACCES, errno.EPERM) else ""
                raise DatabaseError(
                    f"cannot take open-iscsi's DB lock {self.write_file}: {exc.strerror}{hint}"
                ) from exc
            if time.monotonic() >= deadline:
                raise self._timeout_error(limit)
            time.sleep(self.interval)

    def _timeout_error(self, limit: float) -> LockTimeoutError:
        since = ""
        try:
            taken = os.lstat(self.write_file).st_ctime  # link() sets the inode's ctime
            age = time.time() - taken
            since = f" (taken {age:.0f} s ago, at {time.strftime('%H:%M:%S', time.localtime(taken))})"
        except OSError:
            pass
        return LockTimeoutError(
            f"timed out after {limit:g} s waiting for open-iscsi's DB lock {self.write_file}{since}; "
            "another iscsiadm or iscsikit holds it. If none is running, a killed one left it behind: "
            f"remove {self.write_file}. Nothing was written."
        )
