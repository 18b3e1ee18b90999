"""The storage interface behind a LUN: what the SCSI disk calls and every backend implements.

``file`` and ``memory`` backends live in :mod:`iscsikit.target.backends`; the replicated
controller (:mod:`iscsikit.replica`) implements the same interface, so the protocol and SCSI
code never know whether a write goes to one file or fans out to three replica servers.

Offsets and lengths are in bytes and always multiples of ``block_size`` (the SCSI layer
checks ranges before calling). Every method is a coroutine so a backend can do network or
thread-pool I/O without blocking the event loop.

Errors: raise :class:`BackendError` with a ``kind`` the SCSI layer maps to sense data
(``medium`` -> MEDIUM ERROR, ``unavailable`` -> NOT READY / LOGICAL UNIT COMMUNICATION
FAILURE, ``space`` -> DATA PROTECT space allocation failed). Never return short data and
never report success for a write that was not stored.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, Literal

from iscsikit.errors import IscsikitError

Buffer = bytes | bytearray | memoryview
ErrorKind = Literal["medium", "unavailable", "space"]


class BackendError(IscsikitError):
    """A backend could not complete an operation; ``kind`` selects the SCSI sense."""

    def __init__(self, message: str, kind: ErrorKind = "medium") -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class Backend(abc.ABC):
    """Async block storage of a fixed size. See the module docstring for the contract."""

    #: Size in bytes (a multiple of block_size).
    size: int
    #: Logical block size in bytes reported by READ CAPACITY.
    block_size: int = 512
    #: Whether unmap() really deallocates (thin provisioning): VPD 0xB2 / RC16 LBPME.
    thin: bool = False
    #: Short name for status output: "file", "memory", "replicated".
    kind: str = "?"

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare for I/O (open files, connect replicas). Called once before the first I/O."""

    @abc.abstractmethod
    async def read(self, offset: int, length: int) -> Buffer:
        """Return exactly ``length`` bytes from ``offset``."""

    async def readv(self, offset: int, length: int) -> Sequence[Buffer]:
        """Like read(), as a list of buffers (lets a backend avoid joining pieces)."""
        return [await self.read(offset, length)]

    def read_now(self, offset: int, length: int) -> Sequence[Buffer] | None:
        """Like readv(), synchronously, if it can be done at once without blocking; else None.

        An optional fast path (a page-cache hit) that spares the caller a coroutine per layer.
        None promises nothing happened: the caller then uses :meth:`readv`, which also reports
        errors. The default never has data at once.
        """
        return None

    @abc.abstractmethod
    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        """Store ``data`` at ``offset``; with ``fua`` it must be durable before returning."""

    @abc.abstractmethod
    async def flush(self) -> None:
        """Make every completed write durable (SYNCHRONIZE CACHE)."""

    async def unmap(self, offset: int, length: int) -> None:
        """Deallocate a range; it reads back as zeros afterwards. Default: write zeros."""
        zero = bytes(min(length, 1 << 20))
        done = 0
        while done < length:
            n = min(len(zero), length - done)
            await self.write(offset + done, zero[:n])
            done += n

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Finish in-flight work, flush, release resources."""

    def describe(self) -> dict[str, Any]:
        """Status for ``iscsikit target status``: at least kind and size."""
        return {"backend": self.kind, "size_bytes": self.size}
