"""Shared/exclusive locks over LBA ranges of one logical unit.

COMPARE AND WRITE must read, compare and write as one atomic step (SBC-3 5.2): no other
write may land in its range between the read and the write, and no read may see half of it.
Every read and write holds its range *shared* (they may overlap each other freely, as SCSI
SIMPLE tasks may), COMPARE AND WRITE holds it *exclusive*. A pending exclusive request blocks
new overlapping shared holders, so a stream of reads cannot starve it.

The replicated backend serialises the same range across replicas by running behind this lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["RangeLock"]


class _Hold:
    __slots__ = ("end", "exclusive", "granted", "released", "start")

    def __init__(self, start: int, end: int, exclusive: bool) -> None:
        self.start = start
        self.end = end
        self.exclusive = exclusive
        self.granted = False
        self.released: asyncio.Future[None] | None = None

    def overlaps(self, other: _Hold) -> bool:
        return self.start < other.end and other.start < self.end


class RangeLock:
    """Range locks in block units.

    Hot path (reads and writes)::

        hold = lock.try_shared(lba, blocks) or await lock.acquire(lba, blocks, exclusive=False)
        try: ...
        finally: lock.release(hold)

    :meth:`shared` and :meth:`exclusive` are the same as context managers.
    """

    def __init__(self) -> None:
        self._holds: list[_Hold] = []  # granted and waiting, in arrival order
        self._exclusive = 0  # exclusive holds (granted or waiting)

    @property
    def busy(self) -> int:
        return len(self._holds)

    @property
    def exclusive_holds(self) -> int:
        """Exclusive holds granted or waiting (0: a shared hold would be granted at once)."""
        return self._exclusive

    def try_shared(self, lba: int, blocks: int) -> _Hold | None:
        """A shared hold at once if no exclusive one exists anywhere (the common case), else None."""
        if self._exclusive:
            return None
        hold = _Hold(lba, lba + (blocks or 1), False)
        hold.granted = True
        self._holds.append(hold)
        return hold

    def _blocker(self, hold: _Hold) -> _Hold | None:
        for other in self._holds:
            if other is hold:
                # Only earlier arrivals can block (FIFO among conflicting requests).
                return None
            if (hold.exclusive or other.exclusive) and other.overlaps(hold):
                return other
        return None

    async def acquire(self, lba: int, blocks: int, *, exclusive: bool) -> _Hold:
        hold = _Hold(lba, lba + (blocks or 1), exclusive)
        self._holds.append(hold)
        if exclusive:
            self._exclusive += 1
        elif not self._exclusive:
            hold.granted = True
            return hold
        try:
            while (blocker := self._blocker(hold)) is not None:
                if blocker.released is None:
                    blocker.released = asyncio.get_running_loop().create_future()
                await asyncio.shield(blocker.released)
        except BaseException:
            self.release(hold)
            raise
        hold.granted = True
        return hold

    def release(self, hold: _Hold) -> None:
        self._holds.remove(hold)
        if hold.exclusive:
            self._exclusive -= 1
        if hold.released is not None and not hold.released.done():
            hold.released.set_result(None)

    @asynccontextmanager
    async def shared(self, lba: int, blocks: int) -> AsyncIterator[None]:
        hold = self.try_shared(lba, blocks) or await self.acquire(lba, blocks, exclusive=False)
        try:
            yield
        finally:
            self.release(hold)

    @asynccontextmanager
    async def exclusive(self, lba: int, blocks: int) -> AsyncIterator[None]:
        hold = await self.acquire(lba, blocks, exclusive=True)
        try:
            yield
        finally:
            self.release(hold)
