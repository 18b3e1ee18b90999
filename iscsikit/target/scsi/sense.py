"""Sense data: the codes this disk reports and the two wire formats (SPC-4 4.5).

Command code raises :class:`SenseError` (``raise INVALID_FIELD_IN_CDB.error(field=2)``);
the logical unit turns it into CHECK CONDITION with fixed-format (0x70) sense, or
descriptor-format (0x72) sense when the control mode page's D_SENSE bit is set.

Example::

    >>> fixed_sense(LBA_OUT_OF_RANGE).hex()
    '700005000000000a00000000210000000000'
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "SenseCode",
    "SenseError",
    "SenseKey",
    "build_sense",
    "descriptor_sense",
    "fixed_sense",
]


class SenseKey(enum.IntEnum):
    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


@dataclass(frozen=True, slots=True)
class SenseCode:
    """A sense key with its additional sense code and qualifier."""

    key: SenseKey
    asc: int
    ascq: int
    text: str = ""

    def error(
        self,
        *,
        info: int | None = None,
        field: int | None = None,
        bit: int | None = None,
        in_cdb: bool = True,
    ) -> SenseError:
        """An exception carrying this code; ``field``/``bit`` fill the field pointer."""
        return SenseError(self, info=info, field=field, bit=bit, in_cdb=in_cdb)


class SenseError(Exception):
    """Raised by command handlers; becomes CHECK CONDITION with this sense."""

    def __init__(
        self,
        code: SenseCode,
        *,
        info: int | None = None,
        field: int | None = None,
        bit: int | None = None,
        in_cdb: bool = True,
    ) -> None:
        super().__init__(code.text or f"{code.key.name} {code.asc:02x}/{code.ascq:02x}")
        self.code = code
        self.info = info
        self.field = field
        self.bit = bit
        self.in_cdb = in_cdb

    def sense(self, descriptor: bool = False) -> bytes:
        return build_sense(self.code, descriptor, info=self.info, field=self.field, bit=self.bit, in_cdb=self.in_cdb)


def _sks(field: int | None, bit: int | None, in_cdb: bool) -> bytes | None:
    """Sense-key-specific field pointer bytes (SKSV set), or None."""
    if field is None:
        return None
    b0 = 0x80 | (0x40 if in_cdb else 0)
    if bit is not None:
        b0 |= 0x08 | (bit & 7)
    return bytes([b0]) + struct.pack(">H", field & 0xFFFF)


def fixed_sense(
    code: SenseCode,
    *,
    info: int | None = None,
    field: int | None = None,
    bit: int | None = None,
    in_cdb: bool = True,
) -> bytes:
    """18 bytes of fixed-format current sense (response code 0x70)."""
    buf = bytearray(18)
    buf[0] = 0x70
    buf[2] = int(code.key)
    if info is not None:
        buf[0] |= 0x80  # VALID: the INFORMATION field is meaningful
        buf[3:7] = struct.pack(">I", info & 0xFFFFFFFF)
    buf[7] = 10
    buf[12] = code.asc
    buf[13] = code.ascq
    sks = _sks(field, bit, in_cdb)
    if sks is not None:
        buf[15:18] = sks
    return bytes(buf)


def descriptor_sense(
    code: SenseCode,
    *,
    info: int | None = None,
    field: int | None = None,
    bit: int | None = None,
    in_cdb: bool = True,
) -> bytes:
    """Descriptor-format current sense (response code 0x72)."""
    descriptors = bytearray()
    if info is not None:
        descriptors += bytes([0x00, 0x0A, 0x80, 0x00]) + struct.pack(">Q", info & 0xFFFFFFFFFFFFFFFF)
    sks = _sks(field, bit, in_cdb)
    if sks is not None:
        descriptors += bytes([0x02, 0x06, 0x00, 0x00]) + sks + b"\x00"
    header = bytes([0x72, int(code.key), code.asc, code.ascq, 0, 0, 0, len(descriptors)])
    return header + bytes(descriptors)


def build_sense(
    code: SenseCode,
    descriptor: bool = False,
    *,
    info: int | None = None,
    field: int | None = None,
    bit: int | None = None,
    in_cdb: bool = True,
) -> bytes:
    make = descriptor_sense if descriptor else fixed_sense
    return make(code, info=info, field=field, bit=bit, in_cdb=in_cdb)


def parse_sense(data: bytes) -> tuple[int, int, int]:
    """(key, asc, ascq) of fixed or descriptor sense; for tests and logs."""
    if len(data) >= 4 and data[0] & 0x7F in (0x72, 0x73):
        return data[1] & 0x0F, data[2], data[3]
    if len(data) >= 14 and data[0] & 0x7F in (0x70, 0x71):
        return data[2] & 0x0F, data[12], data[13]
    raise ValueError(f"not sense data: {data.hex()}")


_K = SenseKey

NO_SENSE = SenseCode(_K.NO_SENSE, 0x00, 0x00, "no additional sense information")
# ILLEGAL REQUEST
INVALID_OPCODE = SenseCode(_K.ILLEGAL_REQUEST, 0x20, 0x00, "invalid command operation code")
LBA_OUT_OF_RANGE = SenseCode(_K.ILLEGAL_REQUEST, 0x21, 0x00, "logical block address out of range")
INVALID_FIELD_IN_CDB = SenseCode(_K.ILLEGAL_REQUEST, 0x24, 0x00, "invalid field in CDB")
LU_NOT_SUPPORTED = SenseCode(_K.ILLEGAL_REQUEST, 0x25, 0x00, "logical unit not supported")
INVALID_FIELD_IN_PARAM_LIST = SenseCode(_K.ILLEGAL_REQUEST, 0x26, 0x00, "invalid field in parameter list")
PARAM_LIST_LENGTH_ERROR = SenseCode(_K.ILLEGAL_REQUEST, 0x1A, 0x00, "parameter list length error")
SAVING_PARAMS_NOT_SUPPORTED = SenseCode(_K.ILLEGAL_REQUEST, 0x39, 0x00, "saving parameters not supported")
INVALID_RELEASE_OF_PR = SenseCode(_K.ILLEGAL_REQUEST, 0x26, 0x04, "invalid release of persistent reservation")
INSUFFICIENT_REGISTRATION_RESOURCES = SenseCode(_K.ILLEGAL_REQUEST, 0x55, 0x04, "insufficient registration resources")
# UNIT ATTENTION
POWER_ON_RESET = SenseCode(_K.UNIT_ATTENTION, 0x29, 0x00, "power on, reset, or bus device reset occurred")
POWER_ON_OCCURRED = SenseCode(_K.UNIT_ATTENTION, 0x29, 0x01, "power on occurred")
BUS_RESET = SenseCode(_K.UNIT_ATTENTION, 0x29, 0x02, "SCSI bus reset occurred")
LU_RESET = SenseCode(_K.UNIT_ATTENTION, 0x29, 0x03, "bus device reset function occurred")
NEXUS_LOSS = SenseCode(_K.UNIT_ATTENTION, 0x29, 0x07, "I_T nexus loss occurred")
MODE_PARAMETERS_CHANGED = SenseCode(_K.UNIT_ATTENTION, 0x2A, 0x01, "mode parameters changed")
RESERVATIONS_PREEMPTED = SenseCode(_K.UNIT_ATTENTION, 0x2A, 0x03, "reservations preempted")
RESERVATIONS_RELEASED = SenseCode(_K.UNIT_ATTENTION, 0x2A, 0x04, "reservations released")
REGISTRATIONS_PREEMPTED = SenseCode(_K.UNIT_ATTENTION, 0x2A, 0x05, "registrations preempted")
CAPACITY_DATA_CHANGED = SenseCode(_K.UNIT_ATTENTION, 0x2A, 0x09, "capacity data has changed")
COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = SenseCode(
    _K.UNIT_ATTENTION, 0x2F, 0x00, "commands cleared by another initiator"
)
REPORTED_LUNS_CHANGED = SenseCode(_K.UNIT_ATTENTION, 0x3F, 0x0E, "reported luns data has changed")
# NOT READY
LU_COMMUNICATION_FAILURE = SenseCode(_K.NOT_READY, 0x08, 0x00, "logical unit communication failure")
LU_NOT_READY_MANUAL = SenseCode(_K.NOT_READY, 0x04, 0x03, "logical unit not ready, manual intervention")
MEDIUM_NOT_PRESENT = SenseCode(_K.NOT_READY, 0x3A, 0x00, "medium not present")
# MEDIUM / HARDWARE
READ_ERROR = SenseCode(_K.MEDIUM_ERROR, 0x11, 0x00, "unrecovered read error")
WRITE_ERROR = SenseCode(_K.MEDIUM_ERROR, 0x0C, 0x00, "write error")
INTERNAL_TARGET_FAILURE = SenseCode(_K.HARDWARE_ERROR, 0x44, 0x00, "internal target failure")
# DATA PROTECT
WRITE_PROTECTED = SenseCode(_K.DATA_PROTECT, 0x27, 0x00, "write protected")
SPACE_ALLOCATION_FAILED = SenseCode(_K.DATA_PROTECT, 0x27, 0x07, "space allocation failed write protect")
# MISCOMPARE
MISCOMPARE_DURING_VERIFY = SenseCode(_K.MISCOMPARE, 0x1D, 0x00, "miscompare during verify operation")
# ABORTED COMMAND
COMMAND_ABORTED = SenseCode(_K.ABORTED_COMMAND, 0x00, 0x00, "command aborted")
