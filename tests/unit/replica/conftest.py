"""Fixtures for the replica tests: a tmp cluster of in-process replica servers."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from iscsikit.replica.controller import Mode, ReplicatedBackend

T = TypeVar("T")


def run(fn: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async test function in a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        return asyncio.run(asyncio.wait_for(fn(*args, **kwargs), 120))

    return wrapper


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def all_rw(backend: ReplicatedBackend, n: int | None = None) -> None:
    want = len(backend.replicas) if n is None else n
    await wait_until(
        lambda: sum(r.mode == Mode.RW for r in backend.replicas) == want,
        f"{want} RW replicas (now {[(r.address, r.mode.value) for r in backend.replicas]})",
    )


async def crash(backend: ReplicatedBackend) -> None:
    """The controller process dies: no flush, no clean close, connections just drop."""
    from iscsikit.replica.controller import _cancel_all

    backend._closing = True
    await _cancel_all([t for t in [backend._monitor, *(r.rebuild_task for r in backend.replicas)] if t is not None])
    backend._close_clients()


def fast(addresses: list[str], **kw: Any) -> ReplicatedBackend:
    """A controller with short timeouts and intervals so tests run quickly."""
    opts: dict[str, Any] = dict(timeout=1.0, ping_interval=0.05, reconnect_interval=0.05, start_timeout=5.0)
    opts.update(kw)
    return ReplicatedBackend(addresses, **opts)


logging.getLogger("iscsikit.replica").setLevel(logging.INFO)
