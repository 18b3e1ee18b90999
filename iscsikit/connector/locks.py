"""Cross-process locks for the connector: one per target, one for the node DB.

Two CSI calls for LUNs of the same target (or a CSI call and an admin's ``iscsikit``) must
not interleave "is this session still used?" with a login, and concurrent writers corrupt
open-iscsi's DB (longhorn-engine#226, open-iscsi#408). These are ``flock`` locks on files
under ``<state_dir>/locks``, so they work across processes and containers that share the
state dir, and vanish with a crashed holder.

Order: a target lock may be held while taking the DB lock, never the other way round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from iscsikit.errors import LockTimeoutError


class Locks:
    def __init__(self, state_dir: Path | str, *, timeout: float = 120.0) -> None:
        self.dir = Path(state_dir) / "locks"
        self.timeout = timeout

    def _path(self, kind: str, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        return self.dir / f"{kind}-{digest}.lock"

    @contextmanager
    def _hold(self, path: Path, what: str, timeout: float | None) -> Iterator[None]:
        import filelock

        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = filelock.FileLock(str(path), timeout=self.timeout if timeout is None else timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise LockTimeoutError(
                f"could not take the {what} lock {path} within {lock.timeout:g} s; "
                "another iscsikit operation on it is still running"
            ) from None
        try:
            yield
        finally:
            lock.release()

    def target(self, target: str, timeout: float | None = None) -> AbstractContextManager[None]:
        """Serialise operations on one target (login, logout decisions, device changes)."""
        return self._hold(self._path("target", target), f"target {target}", timeout)

    def db(self, timeout: float | None = None) -> AbstractContextManager[None]:
        """Serialise iscsikit's writes to the open-iscsi node/discovery/iface records."""
        return self._hold(self._path("db", "open-iscsi"), "node DB", timeout)
