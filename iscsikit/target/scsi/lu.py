"""One logical unit: a :class:`~iscsikit.target.backend.Backend` seen as a SCSI disk (SBC-3).

:meth:`LogicalUnit.execute` takes a complete command (CDB, all Data-Out, the nexus) and
returns a :class:`ScsiResponse`. It runs the checks every command shares, in the order SAM-5
gives them (pending unit attention, reservation conflict), then the command's handler from
the tables in :mod:`.primary`, :mod:`.block` and :mod:`.reservations`. Handlers raise
:class:`~.sense.SenseError`; backend failures become MEDIUM ERROR / NOT READY / DATA PROTECT.

Example::

    lu = LogicalUnit(MemoryBackend(64 << 20), identity=LuIdentity.from_name("t/1"))
    rsp = await lu.execute(bytes([0x25]) + bytes(9), None, nexus)   # READ CAPACITY(10)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from iscsikit.target.backend import Backend, BackendError, Buffer
from iscsikit.target.scsi import sense
from iscsikit.target.scsi.core import Nexus, ScsiResponse, Status, TmfFunction, TmfResponse
from iscsikit.target.scsi.identity import LuIdentity
from iscsikit.target.scsi.modepages import ModePages
from iscsikit.target.scsi.rangelock import RangeLock
from iscsikit.target.scsi.ua import UnitAttentions

__all__ = ["Handler", "LogicalUnit", "Request"]

log = logging.getLogger("iscsikit.target.scsi")


@dataclass(slots=True)
class Request:
    """A command as handlers see it."""

    cdb: bytes
    data_out: Buffer
    nexus: Nexus


Handler = Callable[["LogicalUnit", Request], Awaitable[ScsiResponse]]

#: Commands that report no pending unit attention (SAM-5 5.14): INQUIRY, REPORT LUNS;
#: REQUEST SENSE reports it as its data instead.
_NO_UA = frozenset({0x12, 0xA0, 0x03})

_BACKEND_SENSE = {
    "medium": (sense.READ_ERROR, sense.WRITE_ERROR),
    "unavailable": (sense.LU_COMMUNICATION_FAILURE, sense.LU_COMMUNICATION_FAILURE),
    "space": (sense.SPACE_ALLOCATION_FAILED, sense.SPACE_ALLOCATION_FAILED),
}


class LogicalUnit:
    """A SCSI direct-access block device over a backend.

    ``identity`` gives the NAA designator and serial (keep it stable: see
    :mod:`.identity`); ``read_only`` makes every write fail with DATA PROTECT and sets WP in
    MODE SENSE; ``write_cache`` is the initial WCE bit of the caching mode page.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        identity: LuIdentity,
        read_only: bool = False,
        write_cache: bool = True,
        vendor: str = "ISCSIKIT",
        product: str = "iscsikit disk",
        revision: str = "0001",
        max_transfer_blocks: int | None = None,
    ) -> None:
        self.backend = backend
        self.identity = identity
        self.read_only = read_only
        self.vendor = vendor
        self.product = product
        self.revision = revision
        self.block_size = backend.block_size
        self.mode = ModePages(write_cache=write_cache)
        self.ua = UnitAttentions()
        self.ranges = RangeLock()
        #: MAXIMUM TRANSFER LENGTH (block limits VPD): longer READ/WRITE/VERIFY commands get
        #: INVALID FIELD IN CDB. The server sets it from ``[limits] max_transfer_length``.
        self.max_transfer_blocks = max_transfer_blocks or max(1, (8 << 20) // self.block_size)
        from iscsikit.target.scsi.reservations import Reservations

        self.reservations = Reservations(self)
        self._opened = False
        self._table = _handlers()
        from iscsikit.target.scsi import block

        self._block_read = block.read
        self._block_read_now = block.read_now

    # ------------------------------------------------------------------ properties

    @property
    def num_blocks(self) -> int:
        return self.backend.size // self.block_size

    @property
    def thin(self) -> bool:
        return self.backend.thin

    @property
    def write_protected(self) -> bool:
        return self.read_only or self.mode.swp

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if not self._opened:
            await self.backend.open()
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            self._opened = False
            try:
                await self.backend.flush()
            finally:
                await self.backend.close()

    # ------------------------------------------------------------------ commands

    async def execute(self, cdb: bytes, data_out: Buffer | None, nexus: Nexus) -> ScsiResponse:
        """Run one command to completion. Never raises for SCSI-level errors.

        The checks before the handler are ordered by SAM-5 and kept cheap: this runs for every
        READ and WRITE, and per-command Python overhead is what bounds IOPS.
        """
        if len(cdb) < 16:
            if not cdb:
                return self.check_condition(sense.INVALID_OPCODE.error(field=0))
            cdb = bytes(cdb).ljust(16, b"\x00")
        op = cdb[0]
        ua = self.ua
        sid = nexus.session_id
        if sid not in ua.known:
            ua.register(nexus)
        if sid in ua.waiting and op not in _NO_UA:
            code = ua.pop(sid)
            assert code is not None
            return ScsiResponse(Status.CHECK_CONDITION, sense.build_sense(code, self.mode.d_sense))
        handler = self._table.get(op)
        if handler is None:
            return self.check_condition(sense.INVALID_OPCODE.error(field=0, bit=7))
        if self.reservations.active and self.reservations.conflicts(nexus, cdb):
            return ScsiResponse(Status.RESERVATION_CONFLICT)
        if op in _MEDIUM_WRITES and (self.read_only or self.mode.swp):
            # Before any field or data-length check: a write-protected LU refuses writes as such
            # (libiscsi's ReadOnly suite sends WRITE SAME/UNMAP without data and expects this).
            return self.check_condition(sense.WRITE_PROTECTED.error())
        try:
            if not self._opened:
                await self.open()
            return await handler(self, Request(cdb, b"" if data_out is None else data_out, nexus))
        except sense.SenseError as exc:
            return self.check_condition(exc)
        except BackendError as exc:
            log.warning("LU %s: backend error on opcode 0x%02x: %s", self.identity.wwn, op, exc)
            read_code, write_code = _BACKEND_SENSE.get(exc.kind, _BACKEND_SENSE["medium"])
            return self.check_condition((write_code if _is_write(op) else read_code).error())

    def execute_now(self, cdb: bytes, nexus: Nexus) -> ScsiResponse | None:
        """A READ(10/16) answered synchronously when nothing stands in its way, else None.

        None whenever :meth:`execute` would do more than a plain read: a unit attention to
        report or a new nexus to register, reservations, an unopened backend, a handler table
        without the standard READ, or data the backend cannot give at once. Then call
        :meth:`execute`; nothing has changed.
        """
        op = cdb[0]
        if (op != 0x28 and op != 0x88) or len(cdb) < 16 or not self._opened:
            return None
        ua = self.ua
        sid = nexus.session_id
        if sid not in ua.known or sid in ua.waiting:
            return None
        reservations = self.reservations
        if reservations.spc2_holder is not None or reservations.pr_type:  # Reservations.active
            return None
        if self._table.get(op) is not self._block_read:
            return None
        try:
            return self._block_read_now(self, cdb)
        except sense.SenseError as exc:
            return self.check_condition(exc)

    def check_condition(self, exc: sense.SenseError) -> ScsiResponse:
        return ScsiResponse(Status.CHECK_CONDITION, exc.sense(self.mode.d_sense))

    def data_out_length(self, cdb: bytes) -> int | None:
        """Bytes of Data-Out this CDB implies (None: none / not known)."""
        from iscsikit.target.scsi.opcodes import data_out_length

        return data_out_length(cdb, self.block_size)

    # ------------------------------------------------------------------ events

    async def task_management(self, function: int, nexus: Nexus) -> int:
        """SCSI-side effects of a TMF; aborting the tasks themselves is the protocol layer's job."""
        if function == TmfFunction.LOGICAL_UNIT_RESET:
            self.reset(nexus)
            return TmfResponse.COMPLETE
        if function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            self.reset(nexus)
            return TmfResponse.COMPLETE
        if function in (TmfFunction.ABORT_TASK, TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET):
            if function == TmfFunction.CLEAR_TASK_SET:
                self.ua.post_all(sense.COMMANDS_CLEARED_BY_ANOTHER_INITIATOR, except_session=nexus.session_id)
            return TmfResponse.COMPLETE
        if function == TmfFunction.CLEAR_ACA:
            return TmfResponse.NOT_SUPPORTED
        return TmfResponse.NOT_SUPPORTED

    def reset(self, by: Nexus | None) -> None:
        """LOGICAL UNIT RESET (SAM-5 6.6): release SPC-2 reservations, mode pages to defaults, UA 29/03."""
        self.reservations.reset()
        self.mode.reset()
        self.ua.post_all(sense.LU_RESET)

    def nexus_lost(self, nexus: Nexus) -> None:
        self.reservations.nexus_lost(nexus)
        self.ua.forget(nexus.session_id)

    def unit_attention_all(self, code: sense.SenseCode) -> None:
        self.ua.post_all(code)

    def describe(self) -> dict[str, Any]:
        return {
            "wwn": self.identity.wwn,
            "serial": self.identity.serial,
            "block_size": self.block_size,
            "blocks": self.num_blocks,
            "read_only": self.read_only,
            "thin": self.thin,
            "write_cache": self.mode.wce,
            **self.backend.describe(),
        }


#: Commands that change the medium (WRITE 6/10/12/16, WRITE AND VERIFY, WRITE SAME, UNMAP, CAW, ORWRITE).
_MEDIUM_WRITES = frozenset({0x0A, 0x2A, 0xAA, 0x8A, 0x2E, 0xAE, 0x8E, 0x41, 0x93, 0x42, 0x89, 0x8B})


def _is_write(op: int) -> bool:
    return op in _MEDIUM_WRITES or op in (0x35, 0x91)


_HANDLERS: dict[int, Handler] | None = None


def _handlers() -> dict[int, Handler]:
    global _HANDLERS
    if _HANDLERS is None:
        from iscsikit.target.scsi import block, primary, reservations

        table: dict[int, Handler] = {}
        for module in (primary, block, reservations):
            table.update(module.HANDLERS)
        _HANDLERS = table
    return _HANDLERS
