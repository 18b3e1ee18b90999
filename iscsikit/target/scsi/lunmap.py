"""The LUNs of one target, and what SCSI says about LUNs that are not there.

REPORT LUNS is answered here (it is addressed to the target, whatever LUN it names). LUN 0
always answers INQUIRY, even when only LUN 1.. are configured: initiators (Linux's scsi scan,
libiscsi) start at LUN 0, and SPC-4 requires LUN 0 to accept REPORT LUNS and INQUIRY. An
absent LUN answers INQUIRY with peripheral qualifier 3 ("not capable of supporting a device")
and every other command with LOGICAL UNIT NOT SUPPORTED.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator, Mapping

from iscsikit.target.backend import Buffer
from iscsikit.target.scsi import sense
from iscsikit.target.scsi.cdb import Op
from iscsikit.target.scsi.core import Nexus, ScsiResponse, Status, TmfFunction, TmfResponse
from iscsikit.target.scsi.lu import LogicalUnit

__all__ = ["LunMap", "encode_lun"]

MAX_LUN = 0x3FFF  # flat-space / peripheral addressing covers 0..16383


def encode_lun(lun: int) -> bytes:
    """8-byte SAM LUN: peripheral device addressing below 256, flat space addressing above."""
    if lun < 256:
        return struct.pack(">H", lun) + bytes(6)
    return struct.pack(">H", 0x4000 | lun) + bytes(6)


class LunMap:
    """A target's logical units by LUN number; the entry point of the protocol layer."""

    def __init__(self, luns: Mapping[int, LogicalUnit]) -> None:
        for lun in luns:
            if not 0 <= lun <= MAX_LUN:
                raise ValueError(f"LUN {lun} is outside 0..{MAX_LUN}")
        self._luns: dict[int, LogicalUnit] = dict(sorted(luns.items()))

    def __getitem__(self, lun: int) -> LogicalUnit:
        return self._luns[lun]

    def __contains__(self, lun: object) -> bool:
        return lun in self._luns

    def __iter__(self) -> Iterator[int]:
        return iter(self._luns)

    def __len__(self) -> int:
        return len(self._luns)

    def items(self) -> list[tuple[int, LogicalUnit]]:
        return list(self._luns.items())

    async def open(self) -> None:
        """Open every backend (optional: LUs open lazily on their first command)."""
        for lu in self._luns.values():
            await lu.open()

    async def execute(self, lun: int, cdb: bytes, data_out: Buffer | None, nexus: Nexus) -> ScsiResponse:
        if len(cdb) < 16:
            cdb = bytes(cdb).ljust(16, b"\x00") if cdb else b""  # iSCSI carries >= 16; tests may not
        lu = self._luns.get(lun)
        if lu is not None:
            if cdb and cdb[0] == Op.REPORT_LUNS:
                return self._report_luns_via(lu, cdb, nexus)
            return await lu.execute(cdb, data_out, nexus)
        return self._absent(lun, cdb)

    def execute_now(self, lun: int, cdb: bytes, nexus: Nexus) -> ScsiResponse | None:
        """The synchronous fast path of :meth:`execute` (see :meth:`LogicalUnit.execute_now`).

        None: nothing was done, call :meth:`execute`. Used by the server for every command
        without Data-Out; a page-cache READ then costs no coroutine at all.
        """
        lu = self._luns.get(lun)
        if lu is None:
            return None
        return lu.execute_now(cdb, nexus)

    def _report_luns_via(self, lu: LogicalUnit, cdb: bytes, nexus: Nexus) -> ScsiResponse:
        if lu.ua.is_new(nexus):
            lu.ua.register(nexus)
        try:
            return self.report_luns(cdb)
        except sense.SenseError as exc:
            return lu.check_condition(exc)

    def _absent(self, lun: int, cdb: bytes) -> ScsiResponse:
        try:
            if not cdb:
                raise sense.INVALID_OPCODE.error(field=0)
            op = cdb[0]
            if op == Op.REPORT_LUNS:
                return self.report_luns(cdb)
            if op == Op.INQUIRY:
                return self._absent_inquiry(lun, cdb)
            if op == Op.REQUEST_SENSE:
                # SPC-4 6.39: for an absent LUN, return LOGICAL UNIT NOT SUPPORTED as data.
                alloc = cdb[4]
                data = sense.fixed_sense(sense.LU_NOT_SUPPORTED)
                return ScsiResponse.good(data[:alloc])
            if op == Op.TEST_UNIT_READY and lun == 0:
                return ScsiResponse.good()
            raise sense.LU_NOT_SUPPORTED.error()
        except sense.SenseError as exc:
            return ScsiResponse(Status.CHECK_CONDITION, exc.sense())

    def _absent_inquiry(self, lun: int, cdb: bytes) -> ScsiResponse:
        from iscsikit.target.scsi.inquiry import absent_inquiry

        return absent_inquiry(cdb, well_known=(lun == 0))

    def report_luns(self, cdb: bytes) -> ScsiResponse:
        """REPORT LUNS (SPC-4 6.33): SELECT REPORT 0, 1, 2 list every LUN; LUN 0 is always listed."""
        select = cdb[2]
        alloc = struct.unpack_from(">I", cdb, 6)[0] if len(cdb) >= 10 else 0
        if select not in (0x00, 0x01, 0x02):
            raise sense.INVALID_FIELD_IN_CDB.error(field=2)
        if alloc < 16 and alloc != 0:
            # SPC-4: an allocation length under 16 is an error.
            raise sense.INVALID_FIELD_IN_CDB.error(field=6)
        luns = [] if select == 0x01 else sorted(set(self._luns) | {0})
        body = b"".join(encode_lun(n) for n in luns)
        data = struct.pack(">I", len(body)) + bytes(4) + body
        return ScsiResponse.good(data[:alloc])

    def data_out_length(self, lun: int, cdb: bytes) -> int | None:
        lu = self._luns.get(lun)
        if lu is None or not cdb:
            return None
        return lu.data_out_length(cdb)

    async def task_management(self, function: int, lun: int, nexus: Nexus) -> int:
        """SCSI-side effects of a TMF on ``lun`` (target resets: on every LU)."""
        if function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            for lu in self._luns.values():
                await lu.task_management(function, nexus)
            return TmfResponse.COMPLETE
        target_lu = self._luns.get(lun)
        if target_lu is None:
            if lun == 0 and function != TmfFunction.LOGICAL_UNIT_RESET:
                return TmfResponse.COMPLETE
            return TmfResponse.NO_SUCH_LUN
        return await target_lu.task_management(function, nexus)

    def nexus_lost(self, nexus: Nexus) -> None:
        for lu in self._luns.values():
            lu.nexus_lost(nexus)

    def unit_attention_all(self, asc: int, ascq: int) -> None:
        code = _code_for(asc, ascq)
        for lu in self._luns.values():
            lu.unit_attention_all(code)

    async def close(self) -> None:
        """Flush and close every backend, even if some fail; the first failure is re-raised."""
        results = await asyncio.gather(*(lu.close() for lu in self._luns.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


def _code_for(asc: int, ascq: int) -> sense.SenseCode:
    for value in vars(sense).values():
        if (
            isinstance(value, sense.SenseCode)
            and value.key == sense.SenseKey.UNIT_ATTENTION
            and (value.asc, value.ascq) == (asc, ascq)
        ):
            return value
    return sense.SenseCode(sense.SenseKey.UNIT_ATTENTION, asc, ascq)
