"""SBC-3 block commands: READ/WRITE 6/10/12/16, WRITE AND VERIFY, VERIFY, ORWRITE, COMPARE AND
WRITE, WRITE SAME 10/16, UNMAP, SYNCHRONIZE CACHE, PRE-FETCH, READ CAPACITY 10/16, GET LBA STATUS.

Order of checks (what libiscsi's conformance tests pin down): reserved/protection fields
(INVALID FIELD IN CDB), then the LBA range (LBA OUT OF RANGE, with 64-bit overflow impossible
since Python ints do not wrap), then command limits, then write protection (DATA PROTECT).

Short Data-Out: when the initiator sends less than the CDB asks for (iSCSI EDTL smaller than
the SCSI transfer length) only the whole blocks received are written and the status is GOOD;
the protocol layer reports the residual overflow (RFC 7143 11.4.5.2). Extra Data-Out is ignored.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from iscsikit.target.scsi import inquiry as inq
from iscsikit.target.scsi import sense
from iscsikit.target.scsi.cdb import SAI_GET_LBA_STATUS, SAI_READ_CAPACITY_16, Op, RwCdb, decode_rw
from iscsikit.target.scsi.core import ScsiResponse

if TYPE_CHECKING:
    from iscsikit.target.backend import Buffer
    from iscsikit.target.scsi.lu import Handler, LogicalUnit, Request

__all__ = ["HANDLERS", "SupportsAllocationStatus"]

#: Bytes per backend write when WRITE SAME repeats a block.
_WS_CHUNK = 1 << 20


@runtime_checkable
class SupportsAllocationStatus(Protocol):
    """Optional backend method for GET LBA STATUS: whether ``offset`` is allocated, and for how long.

    Returns ``(length, mapped)``: the byte run starting at ``offset`` with the same status.
    """

    async def allocation_status(self, offset: int, length: int) -> tuple[int, bool]: ...


def check_range(lu: LogicalUnit, lba: int, blocks: int) -> None:
    if lba > lu.num_blocks or lba + blocks > lu.num_blocks:
        raise sense.LBA_OUT_OF_RANGE.error(info=lba)


def _check_writable(lu: LogicalUnit) -> None:
    if lu.write_protected:
        raise sense.WRITE_PROTECTED.error()


def _rw(lu: LogicalUnit, cdb: bytes) -> RwCdb:
    rw = decode_rw(cdb)
    if rw.protect:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=5)
    check_range(lu, rw.lba, rw.blocks)
    if rw.blocks > lu.max_transfer_blocks:
        # SBC-3 6.5.3: over the MAXIMUM TRANSFER LENGTH of the block limits page.
        raise sense.INVALID_FIELD_IN_CDB.error(field=len(cdb) - 6 if len(cdb) > 6 else 4)
    return rw


_UNPACK10 = struct.Struct(">BBIBH").unpack_from
_UNPACK16 = struct.Struct(">BBQI").unpack_from


def _fast_rw(lu: LogicalUnit, cdb: bytes) -> tuple[int, int, int]:
    """(lba, blocks, flags) of READ/WRITE(10/16): the hot path, without building an RwCdb."""
    op = cdb[0]
    if op == 0x28 or op == 0x2A:
        _, flags, lba, _, blocks = _UNPACK10(cdb)
    elif op == 0x88 or op == 0x8A:
        _, flags, lba, blocks = _UNPACK16(cdb)
    else:
        rw = _rw(lu, cdb)
        return rw.lba, rw.blocks, rw.flags
    if flags & 0xE0:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=5)
    if lba + blocks > lu.num_blocks:
        raise sense.LBA_OUT_OF_RANGE.error(info=lba)
    if blocks > lu.max_transfer_blocks:
        raise sense.INVALID_FIELD_IN_CDB.error(field=len(cdb) - 6)
    return lba, blocks, flags


async def read(lu: LogicalUnit, req: Request) -> ScsiResponse:
    lba, blocks, _ = _fast_rw(lu, req.cdb)
    if not blocks:
        return ScsiResponse.good()
    bs = lu.block_size
    ranges = lu.ranges
    hold = ranges.try_shared(lba, blocks) or await ranges.acquire(lba, blocks, exclusive=False)
    try:
        data = await lu.backend.readv(lba * bs, blocks * bs)
    finally:
        ranges.release(hold)
    return ScsiResponse(0, b"", data)


def read_now(lu: LogicalUnit, cdb: bytes) -> ScsiResponse | None:
    """READ(10/16) at once if the backend has the data at hand (:meth:`Backend.read_now`), else None.

    Nothing can run between the range check and the read, so no range hold is needed; with an
    exclusive hold anywhere on the LU the ordinary path (which waits for it) is used.
    """
    lba, blocks, _ = _fast_rw(lu, cdb)  # SenseError: the caller answers CHECK CONDITION
    if not blocks:
        return ScsiResponse.good()
    if lu.ranges.exclusive_holds:
        return None
    bs = lu.block_size
    data = lu.backend.read_now(lba * bs, blocks * bs)
    if data is None:
        return None
    return ScsiResponse(0, b"", data)


def _received(lu: LogicalUnit, data: Buffer, blocks: int) -> memoryview:
    """The whole blocks of Data-Out that arrived, at most ``blocks``."""
    n = min(blocks, len(data) // lu.block_size)
    return memoryview(data)[: n * lu.block_size]


async def write(lu: LogicalUnit, req: Request) -> ScsiResponse:
    lba, blocks, flags = _fast_rw(lu, req.cdb)
    bs = lu.block_size
    data = req.data_out
    if len(data) != blocks * bs:
        data = _received(lu, data, blocks)
        if not data:
            return ScsiResponse.good()
        blocks = len(data) // bs
    elif not blocks:
        return ScsiResponse.good()
    ranges = lu.ranges
    hold = ranges.try_shared(lba, blocks) or await ranges.acquire(lba, blocks, exclusive=False)
    try:
        await lu.backend.write(lba * bs, data, fua=bool(flags & 0x08) or not lu.mode.wce)
    finally:
        ranges.release(hold)
    return ScsiResponse(0)


async def write_verify(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """WRITE AND VERIFY: the write is read-after-write safe once stored, so verify is the write itself."""
    rw = _rw(lu, req.cdb)
    _check_writable(lu)
    payload = _received(lu, req.data_out, rw.blocks)
    if payload:
        async with lu.ranges.shared(rw.lba, rw.blocks):
            await lu.backend.write(rw.lba * lu.block_size, payload, fua=not lu.mode.wce)
    return ScsiResponse.good()


def _first_difference(a: bytes, b: bytes | memoryview) -> int:
    for i, (x, y) in enumerate(zip(a, bytes(b), strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


async def verify(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """VERIFY with BYTCHK 0 (medium check: nothing to do), 1 (compare all) or 3 (one block to each)."""
    rw = _rw(lu, req.cdb)
    bytchk = (req.cdb[1] >> 1) & 0x03
    if bytchk == 2:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=1)
    if bytchk == 0 or not rw.blocks:
        return ScsiResponse.good()
    bs = lu.block_size
    if bytchk == 1:
        expected = _received(lu, req.data_out, rw.blocks)
    else:
        one = bytes(req.data_out[:bs])
        expected = memoryview(one * rw.blocks) if len(one) == bs else memoryview(b"")
    if len(expected) < rw.blocks * bs:
        raise sense.PARAM_LIST_LENGTH_ERROR.error()
    async with lu.ranges.shared(rw.lba, rw.blocks):
        actual = await lu.backend.read(rw.lba * bs, rw.blocks * bs)
    if actual != expected:
        raise sense.MISCOMPARE_DURING_VERIFY.error(info=_first_difference(bytes(actual), expected))
    return ScsiResponse.good()


async def orwrite(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """ORWRITE(16): medium := medium OR data, atomically for the range."""
    rw = _rw(lu, req.cdb)
    _check_writable(lu)
    payload = _received(lu, req.data_out, rw.blocks)
    if not payload:
        return ScsiResponse.good()
    bs = lu.block_size
    n = len(payload)
    async with lu.ranges.exclusive(rw.lba, n // bs):
        old = await lu.backend.read(rw.lba * bs, n)
        merged = (int.from_bytes(old, "big") | int.from_bytes(payload, "big")).to_bytes(n, "big")
        await lu.backend.write(rw.lba * bs, merged, fua=rw.fua or not lu.mode.wce)
    return ScsiResponse.good()


async def compare_and_write(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """COMPARE AND WRITE (SBC-3 5.2): atomic against every other read and write of the range."""
    cdb = req.cdb
    if cdb[1] >> 5:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=5)
    lba = struct.unpack_from(">Q", cdb, 2)[0]
    blocks = cdb[13]
    check_range(lu, lba, blocks)
    if blocks > inq.MAX_COMPARE_AND_WRITE_BLOCKS:
        raise sense.INVALID_FIELD_IN_CDB.error(field=13)
    _check_writable(lu)
    bs = lu.block_size
    size = blocks * bs
    data = memoryview(req.data_out)
    if len(data) != 2 * size:
        # e.g. NUMBER OF LOGICAL BLOCKS wrapped to 0 while 256 blocks of data came
        raise sense.INVALID_FIELD_IN_CDB.error(field=13)
    if not blocks:
        return ScsiResponse.good()
    verify_part, write_part = data[:size], data[size:]
    async with lu.ranges.exclusive(lba, blocks):
        current = await lu.backend.read(lba * bs, size)
        if current != verify_part:
            raise sense.MISCOMPARE_DURING_VERIFY.error(info=_first_difference(bytes(current), verify_part))
        await lu.backend.write(lba * bs, write_part, fua=bool(cdb[1] & 0x08) or not lu.mode.wce)
    return ScsiResponse.good()


async def write_same(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """WRITE SAME(10/16), with UNMAP (thin LUs: deallocate when the block is zeros) and NDOB."""
    cdb = req.cdb
    ws16 = cdb[0] == Op.WRITE_SAME_16
    flags = cdb[1]
    if flags >> 5:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=5)
    if flags & 0x10:  # ANCHOR: we report ANC_SUP=0
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=4)
    if flags & 0x06:  # PBDATA / LBDATA (obsolete)
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=1)
    if not ws16 and flags & 0x01:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=0)
    unmap = bool(flags & 0x08)
    ndob = ws16 and bool(flags & 0x01)
    if ws16:
        lba, blocks = struct.unpack_from(">QI", cdb, 2)
    else:
        lba, blocks = struct.unpack_from(">IxH", cdb, 2)
    check_range(lu, lba, blocks)
    if blocks == 0:  # WSNZ=0: zero means "to the last LBA"
        blocks = lu.num_blocks - lba
    if blocks > inq.max_write_same_blocks(lu):
        raise sense.INVALID_FIELD_IN_CDB.error(field=10 if ws16 else 7)
    if unmap and not lu.thin:
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=3)
    _check_writable(lu)
    bs = lu.block_size
    if ndob:
        block = bytes(bs)
    else:
        if len(req.data_out) != bs:
            raise sense.INVALID_FIELD_IN_CDB.error(field=10 if ws16 else 7)
        block = bytes(req.data_out)
    if not blocks:
        return ScsiResponse.good()
    fua = not lu.mode.wce
    async with lu.ranges.shared(lba, blocks):
        if unmap:
            # Deallocate whatever the data block says, as tgt and LIO do (and libiscsi's
            # WriteSame*.UnmapUntilEnd expects): the range then reads back as zeros (LBPRZ).
            await lu.backend.unmap(lba * bs, blocks * bs)
            if fua:
                await lu.backend.flush()
            return ScsiResponse.good()
        chunk_blocks = max(1, min(blocks, _WS_CHUNK // bs))
        chunk = block * chunk_blocks
        done = 0
        while done < blocks:
            n = min(chunk_blocks, blocks - done)
            await lu.backend.write((lba + done) * bs, memoryview(chunk)[: n * bs], fua=fua)
            done += n
    return ScsiResponse.good()


async def unmap(lu: LogicalUnit, req: Request) -> ScsiResponse:
    """UNMAP (SBC-3 5.28). Only thin LUs implement it (others: INVALID OPCODE, as tgt)."""
    if not lu.thin:
        raise sense.INVALID_OPCODE.error(field=0)
    cdb = req.cdb
    if cdb[1] & 0x01:  # ANCHOR
        raise sense.INVALID_FIELD_IN_CDB.error(field=1, bit=0)
    length = struct.unpack_from(">H", cdb, 7)[0]
    if length == 0:
        return ScsiResponse.good()
    if length < 8:
        raise sense.PARAM_LIST_LENGTH_ERROR.error()
    _check_writable(lu)
    data = bytes(req.data_out[:length])
    if len(data) < 8:
        raise sense.PARAM_LIST_LENGTH_ERROR.error()
    desc_len = struct.unpack_from(">H", data, 2)[0]
    desc_len = min(desc_len, len(data) - 8) // 16 * 16
    count = desc_len // 16
    if count > inq.MAX_UNMAP_DESCRIPTORS:
        raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=2, in_cdb=False)
    ranges: list[tuple[int, int]] = []
    total = 0
    for i in range(count):
        lba, blocks = struct.unpack_from(">QI", data, 8 + 16 * i)
        check_range(lu, lba, blocks)
        total += blocks
        if blocks:
            ranges.append((lba, blocks))
    if total > inq.MAX_UNMAP_BLOCKS:
        raise sense.INVALID_FIELD_IN_PARAM_LIST.error(field=8, in_cdb=False)
    bs = lu.block_size
    for lba, blocks in ranges:
        async with lu.ranges.shared(lba, blocks):
            await lu.backend.unmap(lba * bs, blocks * bs)
    return ScsiResponse.good()


async def synchronize_cache(lu: LogicalUnit, req: Request) -> ScsiResponse:
    cdb = req.cdb
    if cdb[0] == Op.SYNCHRONIZE_CACHE_16:
        lba, blocks = struct.unpack_from(">QI", cdb, 2)
    else:
        lba, blocks = struct.unpack_from(">IxH", cdb, 2)
    check_range(lu, lba, blocks)
    await lu.backend.flush()
    return ScsiResponse.good()


async def pre_fetch(lu: LogicalUnit, req: Request) -> ScsiResponse:
    cdb = req.cdb
    if cdb[0] == Op.PRE_FETCH_16:
        lba, blocks = struct.unpack_from(">QI", cdb, 2)
    else:
        lba, blocks = struct.unpack_from(">IxH", cdb, 2)
    check_range(lu, lba, blocks)
    return ScsiResponse.good()


async def read_capacity_10(lu: LogicalUnit, req: Request) -> ScsiResponse:
    cdb = req.cdb
    if not cdb[8] & 0x01 and struct.unpack_from(">I", cdb, 2)[0]:
        raise sense.INVALID_FIELD_IN_CDB.error(field=2)  # LBA set without PMI
    last = lu.num_blocks - 1
    return ScsiResponse.good(struct.pack(">II", min(last, 0xFFFFFFFF), lu.block_size))


def read_capacity_16_data(lu: LogicalUnit) -> bytes:
    flags = 0
    if lu.thin:
        flags = 0x80 | 0x40  # LBPME, LBPRZ
    exponent = inq.physical_block_exponent(lu.block_size)
    return struct.pack(">QIBBBB", lu.num_blocks - 1, lu.block_size, 0, exponent, flags, 0) + bytes(16)


async def service_action_in(lu: LogicalUnit, req: Request) -> ScsiResponse:
    cdb = req.cdb
    sa = cdb[1] & 0x1F
    alloc = struct.unpack_from(">I", cdb, 10)[0]
    if sa == SAI_READ_CAPACITY_16:
        return ScsiResponse.good(read_capacity_16_data(lu)[:alloc])
    if sa == SAI_GET_LBA_STATUS:
        return await get_lba_status(lu, struct.unpack_from(">Q", cdb, 2)[0], alloc)
    raise sense.INVALID_FIELD_IN_CDB.error(field=1)


async def get_lba_status(lu: LogicalUnit, lba: int, alloc: int) -> ScsiResponse:
    """GET LBA STATUS (SBC-3 5.7): descriptors from ``lba`` on, as many as fit the allocation length."""
    if lba >= lu.num_blocks:
        raise sense.LBA_OUT_OF_RANGE.error(info=lba)
    bs = lu.block_size
    end = lu.num_blocks
    backend = lu.backend
    room = max(1, (alloc - 8) // 16) if alloc >= 24 else 1
    descriptors = bytearray()
    cur = lba
    while cur < end and len(descriptors) // 16 < min(room, 64):
        if lu.thin and isinstance(backend, SupportsAllocationStatus):
            length, mapped = await backend.allocation_status(cur * bs, (end - cur) * bs)
            blocks = max(1, min(end - cur, -(-length // bs)))
        else:
            blocks, mapped = end - cur, True
        blocks = min(blocks, 0xFFFFFFFF)
        descriptors += struct.pack(">QIB3x", cur, blocks, 0 if mapped else 1)
        cur += blocks
    data = struct.pack(">I4x", len(descriptors) + 4) + bytes(descriptors)
    return ScsiResponse.good(data[:alloc])


HANDLERS: dict[int, Handler] = {
    Op.READ_6: read,
    Op.READ_10: read,
    Op.READ_12: read,
    Op.READ_16: read,
    Op.WRITE_6: write,
    Op.WRITE_10: write,
    Op.WRITE_12: write,
    Op.WRITE_16: write,
    Op.WRITE_VERIFY_10: write_verify,
    Op.WRITE_VERIFY_12: write_verify,
    Op.WRITE_VERIFY_16: write_verify,
    Op.VERIFY_10: verify,
    Op.VERIFY_12: verify,
    Op.VERIFY_16: verify,
    Op.ORWRITE_16: orwrite,
    Op.COMPARE_AND_WRITE: compare_and_write,
    Op.WRITE_SAME_10: write_same,
    Op.WRITE_SAME_16: write_same,
    Op.UNMAP: unmap,
    Op.SYNCHRONIZE_CACHE_10: synchronize_cache,
    Op.SYNCHRONIZE_CACHE_16: synchronize_cache,
    Op.PRE_FETCH_10: pre_fetch,
    Op.PRE_FETCH_16: pre_fetch,
    Op.READ_CAPACITY_10: read_capacity_10,
    Op.SERVICE_ACTION_IN_16: service_action_in,
}
