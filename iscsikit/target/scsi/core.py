"""The small vocabulary shared by the SCSI disk and the iSCSI protocol layer.

``Nexus`` says who sent a command, ``ScsiResponse`` is what comes back; status, task
management function and response codes are plain ``IntEnum`` values so both sides can
compare them with the numbers in SAM-5 / RFC 7143 tables.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from iscsikit.target.backend import Buffer

__all__ = ["Buffer", "Nexus", "ScsiResponse", "Status", "TmfFunction", "TmfResponse"]


class Status(enum.IntEnum):
    """SAM status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class TmfFunction(enum.IntEnum):
    """iSCSI Task Management function codes (RFC 7143 11.5.1)."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8


class TmfResponse(enum.IntEnum):
    """iSCSI Task Management response codes (RFC 7143 11.6.1)."""

    COMPLETE = 0
    NO_SUCH_TASK = 1
    NO_SUCH_LUN = 2
    TASK_STILL_ALLEGIANT = 3
    REASSIGN_NOT_SUPPORTED = 4
    NOT_SUPPORTED = 5
    AUTHORIZATION_FAILED = 6
    REJECTED = 255


@dataclass(frozen=True, slots=True)
class Nexus:
    """The I_T nexus a command arrives on.

    ``session_id`` is unique per iSCSI session within the process; the SCSI layer keys
    unit attentions on it. Reservations key on :attr:`port_key` (initiator port + target
    port), which SPC defines as the I_T nexus identity and which survives a re-login with
    the same ISID.
    """

    initiator_name: str
    isid: bytes
    target_name: str
    tpgt: int
    session_id: int

    @property
    def initiator_port(self) -> str:
        """The iSCSI initiator port name (``<name>,i,0x<isid>``, RFC 7143 / SPC TransportID)."""
        return f"{self.initiator_name},i,0x{self.isid.hex()}"

    @property
    def port_key(self) -> tuple[str, bytes, str, int]:
        """Identity of the I_T nexus for reservations (stable across re-logins)."""
        return (self.initiator_name.lower(), bytes(self.isid), self.target_name.lower(), self.tpgt)


@dataclass(slots=True)
class ScsiResponse:
    """Outcome of one SCSI command.

    ``data`` holds the Data-In payload pieces, never longer than the CDB's allocation
    length. ``sense`` is the raw sense data (fixed format 0x70 or descriptor 0x72)
    without the iSCSI 2-byte SenseLength prefix.
    """

    status: int
    sense: bytes = b""
    data: Sequence[Buffer] = ()

    @property
    def data_length(self) -> int:
        return sum(len(piece) for piece in self.data)

    @classmethod
    def good(cls, *data: Buffer) -> ScsiResponse:
        return cls(Status.GOOD, b"", data)

    def __repr__(self) -> str:
        return (
            f"ScsiResponse(status=0x{self.status:02x}, sense={self.sense.hex() or '-'}, data_length={self.data_length})"
        )
