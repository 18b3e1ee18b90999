"""A RAM disk: sparse 64 KiB chunks, so a large size costs nothing until written.

Thin by default: UNMAP drops whole chunks (and zeroes partial ones), and never-written or
unmapped ranges read as zeros. Useful for tests, benchmarks of the protocol path, and
scratch LUNs. Contents vanish with the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iscsikit.target.backend import Backend, BackendError, Buffer

__all__ = ["MemoryBackend"]

CHUNK = 64 << 10


class MemoryBackend(Backend):
    """Example::

    backend = MemoryBackend(64 << 20)
    await backend.write(0, b"x" * 512)
    """

    kind = "memory"

    def __init__(self, size: int, *, block_size: int = 512, thin: bool = True) -> None:
        if block_size not in (512, 1024, 2048, 4096):
            raise ValueError(f"block size must be 512, 1024, 2048 or 4096, not {block_size}")
        if size <= 0 or size % block_size:
            raise ValueError(f"size {size} must be a positive multiple of the block size {block_size}")
        self.size = size
        self.block_size = block_size
        self.thin = thin
        self._chunks: dict[int, bytearray] = {}
        self._zero = bytes(CHUNK)

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise BackendError(f"range {offset}+{length} is outside 0..{self.size}", "medium")

    async def read(self, offset: int, length: int) -> Buffer:
        return b"".join(bytes(p) for p in self._pieces(offset, length))

    async def readv(self, offset: int, length: int) -> Sequence[Buffer]:
        return self._pieces(offset, length)

    def _pieces(self, offset: int, length: int) -> list[Buffer]:
        self._check(offset, length)
        out: list[Buffer] = []
        pos, end = offset, offset + length
        while pos < end:
            index, start = divmod(pos, CHUNK)
            n = min(CHUNK - start, end - pos)
            chunk = self._chunks.get(index)
            # bytes() copies: the caller may hold the data while later writes change the chunk.
            out.append(bytes(chunk[start : start + n]) if chunk is not None else self._zero[:n])
            pos += n
        return out

    async def write(self, offset: int, data: Buffer, *, fua: bool = False) -> None:
        view = memoryview(data).cast("B")
        self._check(offset, len(view))
        pos, done = offset, 0
        while done < len(view):
            index, start = divmod(pos, CHUNK)
            n = min(CHUNK - start, len(view) - done)
            chunk = self._chunks.get(index)
            if chunk is None:
                chunk = self._chunks[index] = bytearray(CHUNK)
            chunk[start : start + n] = view[done : done + n]
            pos += n
            done += n

    async def flush(self) -> None:
        return None

    async def unmap(self, offset: int, length: int) -> None:
        self._check(offset, length)
        pos, end = offset, offset + length
        while pos < end:
            index, start = divmod(pos, CHUNK)
            n = min(CHUNK - start, end - pos)
            if n == CHUNK:
                self._chunks.pop(index, None)
            elif index in self._chunks:
                self._chunks[index][start : start + n] = self._zero[:n]
            pos += n

    async def allocation_status(self, offset: int, length: int) -> tuple[int, bool]:
        """(run length, mapped) from ``offset``, at chunk granularity."""
        self._check(offset, length)
        end = offset + length
        index = offset // CHUNK
        mapped = index in self._chunks
        pos = (index + 1) * CHUNK
        while pos < end and ((pos // CHUNK) in self._chunks) == mapped:
            pos += CHUNK
        return min(pos, end) - offset, mapped

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "allocated_bytes": len(self._chunks) * CHUNK, "thin": self.thin}
