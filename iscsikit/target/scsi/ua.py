"""Unit attention conditions, queued per I_T nexus (SAM-5 5.14, SPC-4 5.14).

A new I_T nexus first sees POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (29/00), as tgt and
LIO report and initiators expect. Later conditions (capacity changed, mode parameters changed,
reservations released...) are posted to one nexus, some nexuses or all. Each nexus is keyed by
the session id the protocol layer gives it, so a new session is a new nexus.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from iscsikit.target.scsi import sense
from iscsikit.target.scsi.core import Nexus
from iscsikit.target.scsi.sense import SenseCode

__all__ = ["UnitAttentions"]

#: More than this many pending conditions per nexus and the oldest are dropped.
MAX_PENDING = 8


class UnitAttentions:
    """The pending unit attentions of one logical unit."""

    def __init__(self) -> None:
        self._nexuses: dict[int, Nexus] = {}
        self._pending: dict[int, list[SenseCode]] = {}
        #: session ids seen / with something pending: read directly on the per-command hot path
        self.known = self._nexuses.keys()
        self.waiting = self._pending.keys()

    def is_new(self, nexus: Nexus) -> bool:
        return nexus.session_id not in self._nexuses

    def register(self, nexus: Nexus) -> None:
        """First command on a nexus: remember it and post 29/00 for it."""
        self._nexuses[nexus.session_id] = nexus
        self.post(nexus.session_id, sense.POWER_ON_RESET)

    def nexuses(self) -> Iterable[Nexus]:
        return self._nexuses.values()

    def post(self, session_id: int, code: SenseCode) -> None:
        queue = self._pending.setdefault(session_id, [])
        if code in queue:
            return
        if code.asc == 0x29:
            # A reset supersedes everything older (SAM-5 5.14: reset UAs clear lower ones).
            queue.clear()
        queue.append(code)
        del queue[:-MAX_PENDING]

    def post_where(self, code: SenseCode, predicate: Callable[[Nexus], bool]) -> None:
        for sid, nexus in self._nexuses.items():
            if predicate(nexus):
                self.post(sid, code)

    def post_all(self, code: SenseCode, *, except_session: int | None = None) -> None:
        self.post_where(code, lambda n: n.session_id != except_session)

    def pending(self, session_id: int) -> bool:
        return bool(self._pending.get(session_id))

    def pop(self, session_id: int) -> SenseCode | None:
        queue = self._pending.get(session_id)
        if not queue:
            return None
        code = queue.pop(0)
        if not queue:
            del self._pending[session_id]
        return code

    def clear(self, session_id: int) -> None:
        self._pending.pop(session_id, None)

    def forget(self, session_id: int) -> None:
        """The nexus is gone (session ended): drop it and its pending conditions."""
        self._nexuses.pop(session_id, None)
        self._pending.pop(session_id, None)
