"""The controller's range lock: overlapping holders exclude each other, first come first served."""

from __future__ import annotations

import asyncio

from iscsikit.replica.rangelock import RangeLock
from tests.unit.replica.conftest import run


@run
async def test_overlapping_ranges_wait_and_disjoint_ones_do_not() -> None:
    lock = RangeLock()
    order: list[str] = []
    gate = asyncio.Event()

    async def holder(name: str, start: int, end: int, wait: bool = False) -> None:
        async with lock.hold(start, end):
            order.append(f"{name}+")
            if wait:
                await gate.wait()
            order.append(f"{name}-")

    a = asyncio.create_task(holder("a", 0, 100, wait=True))
    await asyncio.sleep(0)
    b = asyncio.create_task(holder("b", 50, 150))  # overlaps a: waits
    c = asyncio.create_task(holder("c", 100, 200))  # overlaps only b, which came first: waits for b
    d = asyncio.create_task(holder("d", 300, 400))  # disjoint: runs at once
    await asyncio.sleep(0.01)
    assert order == ["a+", "d+", "d-"]
    gate.set()
    await asyncio.gather(a, b, c, d)
    assert order == ["a+", "d+", "d-", "a-", "b+", "b-", "c+", "c-"]
    assert lock.held == 0


@run
async def test_a_cancelled_waiter_leaves_no_trace() -> None:
    lock = RangeLock()
    async with lock.hold(0, 10):
        waiter = asyncio.create_task(lock.hold(5, 6).__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    async with lock.hold(5, 6):
        assert lock.held == 1
