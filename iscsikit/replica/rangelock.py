"""Exclusive byte-range locks for the controller, first come first served.

Writes, unmaps and rebuild copy chunks each hold their range for their whole duration, so

* two overlapping writes never reach the replicas at the same time (each replica could
  otherwise apply them in a different order and the replicas would disagree), and
* a rebuild chunk never copies a range while a write to it is on its way, and no write to it
  starts until the copy is done: the copy can never overwrite newer data.

Waiters are served in arrival order among overlapping ranges, so a rebuild cannot be starved
by a stream of writes to the same place (and writes are not starved by the rebuild).

Example::

    locks = RangeLock()
    async with locks.hold(0, 4096):
        ...  # nobody else holds any byte of [0, 4096)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Entry:
    __slots__ = ("end", "granted", "start", "waiter")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.granted = False
        self.waiter: asyncio.Future[None] | None = None


class RangeLock:
    def __init__(self) -> None:
        self._entries: list[_Entry] = []  # in arrival order

    @property
    def held(self) -> int:
        return sum(1 for e in self._entries if e.granted)

    @asynccontextmanager
    async def hold(self, start: int, end: int) -> AsyncIterator[None]:
        entry = _Entry(start, end)
        if self._grantable(entry, len(self._entries)):
            entry.granted = True
            self._entries.append(entry)
        else:
            entry.waiter = asyncio.get_running_loop().create_future()
            self._entries.append(entry)
            try:
                await entry.waiter
            except BaseException:
                if entry.granted:
                    self._release(entry)
                else:
                    self._entries.remove(entry)
                    self._wake()
                raise
        try:
            yield
        finally:
            self._release(entry)

    def _grantable(self, entry: _Entry, before: int) -> bool:
        start, end = entry.start, entry.end
        return not any(other.start < end and start < other.end for other in self._entries[:before])

    def _release(self, entry: _Entry) -> None:
        self._entries.remove(entry)
        self._wake()

    def _wake(self) -> None:
        for i, e in enumerate(self._entries):
            if not e.granted and self._grantable(e, i):
                e.granted = True
                if e.waiter is not None and not e.waiter.done():
                    e.waiter.set_result(None)
