"""The LU range lock that makes COMPARE AND WRITE atomic."""

from __future__ import annotations

import asyncio

from iscsikit.target.scsi.rangelock import RangeLock


def test_shared_holders_overlap_freely() -> None:
    async def main() -> list[str]:
        lock, order = RangeLock(), []

        async def reader(name: str) -> None:
            async with lock.shared(0, 10):
                order.append(f"{name}+")
                await asyncio.sleep(0)
                order.append(f"{name}-")

        await asyncio.gather(reader("a"), reader("b"))
        return order

    assert asyncio.run(main()) == ["a+", "b+", "a-", "b-"]


def test_exclusive_waits_for_overlapping_and_blocks_later_arrivals() -> None:
    async def main() -> list[str]:
        lock, order = RangeLock(), []

        async def hold(name: str, lba: int, exclusive: bool, steps: int = 2) -> None:
            cm = lock.exclusive(lba, 4) if exclusive else lock.shared(lba, 4)
            async with cm:
                order.append(f"{name}+")
                for _ in range(steps):
                    await asyncio.sleep(0)
                order.append(f"{name}-")

        first = asyncio.ensure_future(hold("read", 0, False))
        await asyncio.sleep(0)
        caw = asyncio.ensure_future(hold("caw", 2, True))
        await asyncio.sleep(0)
        later = asyncio.ensure_future(hold("write", 3, False, 0))
        elsewhere = asyncio.ensure_future(hold("far", 100, False, 0))
        await asyncio.gather(first, caw, later, elsewhere)
        assert lock.busy == 0
        return order

    order = asyncio.run(main())
    assert order.index("caw+") > order.index("read-")  # waited for the overlapping reader
    assert order.index("write+") > order.index("caw-")  # a later overlapping writer waited for it
    assert order.index("far+") < order.index("caw-")  # a disjoint range never waited


def test_cancelled_waiter_leaves_no_hold() -> None:
    async def main() -> int:
        lock = RangeLock()
        async with lock.exclusive(0, 1):
            waiter = asyncio.ensure_future(lock.exclusive(0, 1).__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        async with lock.exclusive(0, 1):
            pass
        return lock.busy

    assert asyncio.run(main()) == 0
